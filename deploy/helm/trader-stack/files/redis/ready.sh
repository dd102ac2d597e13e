#!/bin/sh
# Readiness of this pod's Redis: the master, or a replica whose link to the master is up and which a failover may
# promote (redis.sh raises its replica-priority once synced), so a disruption budget or a rolling update never
# counts a replica still syncing as a copy of the data.
set -eu
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

port=$(port_of "$me")
info=$(timeout 2 redis-cli -p "$port" info replication | tr -d '\r')
case $info in
  *role:master*) exit 0 ;;
  *master_link_status:up*) ;;
  *) exit 1 ;;
esac
priority=$(timeout 2 redis-cli -p "$port" config get replica-priority | tr -d '\r' | sed -n 2p)
case $priority in '' | *[!0-9]* | 0) exit 1 ;; esac
