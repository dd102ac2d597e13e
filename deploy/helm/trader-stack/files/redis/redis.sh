#!/bin/sh
# This pod's Redis, with the append-only file on the data volume: the master when current_master names this pod,
# otherwise a replica of the master it names (Sentinel moves it to a new master after a failover). It waits for a
# majority of the sentinels, which start at once from the state they keep on their volumes.
# A replica starts with replica-priority 0 (Sentinel never promotes it) and takes the default 100 once its link to the
# master is up: when the whole set restarts and the master is not listening yet, a failover must not pick a replica
# that never copied the master's data, whose full sync would then wipe the master's writes.
set -eu
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

# promotable_once_synced PID: replica-priority 100 once this replica's link is up, while PID (redis-server) runs.
# (Its parent is then redis-server, which reaps it at its next fork.)
promotable_once_synced() {
  ps_port=$(port_of "$me")
  ps_waited=0
  while kill -0 "$1" 2>/dev/null; do
    sleep 1
    if timeout 2 redis-cli -p "$ps_port" info replication 2>/dev/null | tr -d '\r' | grep -qx 'master_link_status:up' &&
      timeout 2 redis-cli -p "$ps_port" config set replica-priority 100 2>/dev/null | grep -qx OK; then
      log "synced with the master: this replica may be promoted from now on"
      return
    fi
    ps_waited=$((ps_waited + 1))
    if [ "$ps_waited" -eq 60 ]; then
      log "not synced with $master after 60 s: no failover will promote this replica until it is"
    fi
  done
}

master=$(current_master wait)
# Named master with an empty volume (a lost or new PVC): in a set that has run before (a failover seen, or replicas
# known, by a majority's answer), leading would have every replica copy the empty data set. It waits instead for
# the sentinels, which see no master, to promote a replica, and joins it.
if [ "$master" = "$me" ] && [ ! -d "$DATA_DIR/appendonlydir" ]; then
  answers=$(ask_sentinels)
  until majority "$answers"; do
    sleep 1
    answers=$(ask_sentinels)
  done
  if known_before "$answers"; then
    log "named master, but the data volume is empty: waiting for the sentinels to promote a replica (if none can" \
      "be: redis-cli -p 6379 config set replica-priority 100 on the replica to keep, then" \
      "redis-cli -p 26379 sentinel failover $MASTER_NAME)"
    until [ -n "$master" ] && [ "$master" != "$me" ]; do
      sleep 2
      master=$(settled "$(ask_sentinels)")
    done
    log "the sentinels promoted $master"
  fi
fi
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
  set -- "$@" --replicaof "$(host_of "$master")" "$(port_of "$master")" --replica-priority 0
  promotable_once_synced "$$" &
fi
exec redis-server "$@"
