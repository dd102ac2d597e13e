#!/bin/sh
# preStop of the redis container: a master about to stop (a rolling update, a drain) first hands its role to a
# replica through the other pods' sentinels, so no write lands on it while the failover would race its return.
# A sentinel answers NOGOODSLAVE until it has seen a replica become promotable (its INFO every 10 s): ask again.
set -eu
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

is_master() { timeout 2 redis-cli -p "$(port_of "$me")" info replication | tr -d '\r' | grep -qx 'role:master'; }

asked=""
i=0
while [ "$i" -lt 20 ] && is_master; do
  if [ -z "$asked" ]; then
    # shellcheck disable=SC2086
    for s in $SENTINEL_NODES; do
      [ "$s" = "$my_sentinel" ] && continue
      if timeout 3 redis-cli -h "$(host_of "$s")" -p "$(port_of "$s")" sentinel failover "$MASTER_NAME" |
        grep -qx OK; then
        asked=$s
        log "asked $s to fail over before this master stops"
        break
      fi
    done
  fi
  sleep 1
  i=$((i + 1))
done
if is_master; then
  log "still the master after ${i} s (${asked:-no sentinel would fail over}): stopping as the master"
fi
