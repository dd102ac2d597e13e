# Sourced by redis.sh, sentinel.sh and ready.sh: who this pod is, and who the master is.
# From the StatefulSet: POD_NAME (<statefulset>-<ordinal>), REDIS_NODES and SENTINEL_NODES (host:port of every
# pod's Redis and Sentinel, in ordinal order), MASTER_NAME, DATA_DIR; REDIS_BIND and SENTINEL_BIND (addresses to
# listen on) are unset in the pods, which listen on every address of their own network namespace.

log() { printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${0##*/}" "$*" >&2; }
die() { log "$*"; exit 1; }

# nth N WORD...: the Nth word (from 0), or nothing.
nth() {
  n=$1
  shift
  [ "$#" -gt "$n" ] || return 0
  shift "$n"
  printf '%s\n' "$1"
}

host_of() { printf '%s\n' "${1%:*}"; }
port_of() { printf '%s\n' "${1##*:}"; }

index=${POD_NAME##*-}
case $index in '' | *[!0-9]*) die "POD_NAME=$POD_NAME does not end in -<ordinal>" ;; esac
# shellcheck disable=SC2086 # the node lists are words on purpose
me=$(nth "$index" $REDIS_NODES)
# shellcheck disable=SC2086
my_sentinel=$(nth "$index" $SENTINEL_NODES)
[ -n "$me" ] && [ -n "$my_sentinel" ] || die "pod $index has no entry in REDIS_NODES/SENTINEL_NODES"
# shellcheck disable=SC2086
first=$(nth 0 $REDIS_NODES)
sentinel_conf=$DATA_DIR/sentinel/sentinel.conf

# ask_sentinel HOST:PORT: the master's host:port as that sentinel names it, or nothing.
ask_sentinel() {
  answer=$(timeout 3 redis-cli -h "$(host_of "$1")" -p "$(port_of "$1")" --raw \
    sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | tr -d '\r' | tr '\n' ' ') || return 0
  # shellcheck disable=SC2086 # split into host and port
  set -- $answer
  [ "$#" -eq 2 ] || return 0
  case $2 in '' | *[!0-9]*) return 0 ;; esac
  printf '%s:%s\n' "$1" "$2"
}

# current_master: host:port of the master. What most of the sentinels that answer say; with none answering (a new
# install, or every pod restarting at once), what this pod's sentinel last wrote to its config on the data volume
# (Sentinel rewrites it at every failover, so it names the last master it knew); with neither, the first pod.
current_master() {
  # shellcheck disable=SC2086
  voted=$(for s in $SENTINEL_NODES; do ask_sentinel "$s"; done | sort | uniq -c | sort -rn | head -n 1)
  if [ -n "$voted" ]; then
    # shellcheck disable=SC2086 # split into count and address
    set -- $voted
    log "the sentinels ($1 agreeing) name $2 as master"
    printf '%s\n' "$2"
    return
  fi
  if [ -f "$sentinel_conf" ]; then
    remembered=$(awk -v m="$MASTER_NAME" '$1 == "sentinel" && $2 == "monitor" && $3 == m { print $4 ":" $5 }' \
      "$sentinel_conf")
    if [ -n "$remembered" ]; then
      log "no sentinel answers; this pod's sentinel last knew $remembered as master"
      printf '%s\n' "$remembered"
      return
    fi
  fi
  log "no sentinel answers and none ran here before: a new install, the first pod ($first) is master"
  printf '%s\n' "$first"
}
