#!/bin/sh
# This pod's Redis, with the append-only file on the data volume: the master when current_master names this pod,
# otherwise a replica of the master it names (Sentinel moves it to a new master after a failover). It waits for a
# majority of the sentinels, which start at once from the state they keep on their volumes.
set -eu
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

master=$(current_master wait)
set -- --port "$(port_of "$me")" --protected-mode no --dir "$DATA_DIR" --appendonly yes --save "" \
  --replica-announce-ip "$(host_of "$me")" \
  --min-replicas-to-write "$MIN_REPLICAS_TO_WRITE" --min-replicas-max-lag "$MIN_REPLICAS_MAX_LAG"
if [ -n "${REDIS_BIND:-}" ]; then
  set -- "$@" --bind "$REDIS_BIND"
fi
if [ "$master" = "$me" ]; then
  log "starting $me as the master"
else
  log "starting $me as a replica of $master"
  set -- "$@" --replicaof "$(host_of "$master")" "$(port_of "$master")"
fi
exec redis-server "$@"
