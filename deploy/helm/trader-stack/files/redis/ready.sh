#!/bin/sh
# Readiness of this pod's Redis: the master, or a replica whose link to the master is up (so a disruption budget
# never counts a replica still syncing as a copy of the data).
set -eu
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

info=$(timeout 2 redis-cli -p "$(port_of "$me")" info replication | tr -d '\r')
case $info in
  *role:master*) exit 0 ;;
  *master_link_status:up*) exit 0 ;;
esac
exit 1
