#!/bin/sh
# This pod's Sentinel. The state Sentinel keeps in its config (its id, the epochs, the master after the last
# failover it saw, the replicas and sentinels it knows) stays on the data volume across restarts, so a sentinel that
# missed a failover is put right by the others' newer epoch; the settings the chart owns are written anew each start.
# A new sentinel (no config yet) monitors the master the others name, or the first pod on a new install.
set -eu
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

mkdir -p "$(dirname "$sentinel_conf")"
state=""
monitor=""
if [ -f "$sentinel_conf" ]; then
  state=$(grep -E "^sentinel (myid|current-epoch|config-epoch $MASTER_NAME|leader-epoch $MASTER_NAME|known-replica $MASTER_NAME|known-sentinel $MASTER_NAME) " "$sentinel_conf" || true)
  monitor=$(awk -v m="$MASTER_NAME" '$1 == "sentinel" && $2 == "monitor" && $3 == m { print $4 ":" $5 }' \
    "$sentinel_conf")
fi
if [ -n "$monitor" ]; then
  log "keeping this sentinel's state: it last knew $monitor as master"
else
  monitor=$(current_master)
fi
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
  echo "sentinel monitor $MASTER_NAME $(host_of "$monitor") $(port_of "$monitor") $QUORUM"
  echo "sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS"
  echo "sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT_MS"
  echo "sentinel parallel-syncs $MASTER_NAME $PARALLEL_SYNCS"
  if [ -n "$state" ]; then echo "$state"; fi
} >"$next"
mv "$next" "$sentinel_conf"
log "starting sentinel $my_sentinel, monitoring $MASTER_NAME at $monitor (quorum $QUORUM)"
exec redis-server "$sentinel_conf" --sentinel
