#!/bin/sh
# This pod's Sentinel. Its config is written anew at each start, monitoring the master current_master names; the
# id and epoch of the previous run are kept, so the other sentinels see the same sentinel come back.
set -eu
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

mkdir -p "$(dirname "$sentinel_conf")"
kept=""
if [ -f "$sentinel_conf" ]; then
  kept=$(grep -E '^sentinel (myid|current-epoch) ' "$sentinel_conf" || true)
fi
master=$(current_master)
next=$sentinel_conf.new
{
  echo "port $(port_of "$my_sentinel")"
  if [ -n "${SENTINEL_BIND:-}" ]; then echo "bind $SENTINEL_BIND"; fi
  echo "protected-mode no"
  echo "dir $(dirname "$sentinel_conf")"
  # Pods come back with new IP addresses: everyone is known by its stable DNS name.
  echo "sentinel resolve-hostnames yes"
  echo "sentinel announce-hostnames yes"
  echo "sentinel announce-ip $(host_of "$my_sentinel")"
  echo "sentinel announce-port $(port_of "$my_sentinel")"
  if [ -n "$kept" ]; then echo "$kept"; fi
  echo "sentinel monitor $MASTER_NAME $(host_of "$master") $(port_of "$master") $QUORUM"
  echo "sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS"
  echo "sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT_MS"
  echo "sentinel parallel-syncs $MASTER_NAME $PARALLEL_SYNCS"
} >"$next"
mv "$next" "$sentinel_conf"
log "starting sentinel $my_sentinel, monitoring $MASTER_NAME at $master (quorum $QUORUM)"
exec redis-server "$sentinel_conf" --sentinel
