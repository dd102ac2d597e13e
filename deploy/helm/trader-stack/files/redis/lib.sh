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

# ask_sentinel HOST:PORT: "<config epoch> <master host:port> settled|moving <replicas it knows>" as that sentinel
# knows the master, or nothing. `moving`: it leads a failover, and until the failover ends its config epoch may already be the new one
# while SENTINEL MASTER still names the old master; the address is the one it gives clients, which is the promoted
# replica from then on.
ask_sentinel() {
  host=$(host_of "$1")
  port=$(port_of "$1")
  state=$(timeout 3 redis-cli -h "$host" -p "$port" --raw sentinel master "$MASTER_NAME" 2>/dev/null | tr -d '\r' |
    awk 'NR % 2 == 1 { key = $0; next } { v[key] = $0 }
      END { if (v["config-epoch"] ~ /^[0-9]+$/ && v["num-slaves"] ~ /^[0-9]+$/)
              print v["config-epoch"], (v["flags"] ~ /(^|,)failover_in_progress(,|$)/ ? "moving" : "settled"),
                v["num-slaves"] }') ||
    true
  [ -n "$state" ] || return 0
  address=$(timeout 3 redis-cli -h "$host" -p "$port" --raw sentinel get-master-addr-by-name "$MASTER_NAME" \
    2>/dev/null | tr -d '\r' | awk 'NR == 1 { ip = $0 } NR == 2 && $0 ~ /^[0-9]+$/ && ip != "" { print ip ":" $0 }') ||
    true
  [ -n "$address" ] || return 0
  printf '%s %s\n' "$address" "$state" | awk '{ print $2, $1, $3, $4 }'
}

# ask_sentinels: one line per sentinel that answers.
ask_sentinels() {
  # shellcheck disable=SC2086
  for s in $SENTINEL_NODES; do ask_sentinel "$s"; done
}

# newest ANSWERS: the master of the answer with the highest config epoch (the latest failover any of them saw).
newest() { printf '%s\n' "$1" | sort -k1,1nr | head -n 1 | cut -d ' ' -f 2; }

# known_before ANSWERS: whether the sentinels that answer have seen a failover or know replicas: not a new install.
known_before() { printf '%s\n' "$1" | awk '$1 > 0 || $4 > 0 { found = 1 } END { exit !found }'; }

# shellcheck disable=SC2086
sentinel_count=$(printf '%s\n' $SENTINEL_NODES | wc -l)

# current_master [wait]: host:port of the master. With `wait`, until a majority of the sentinels answer and none of
# them is in the middle of a failover (up to MASTER_WAIT_S, 60 s): the one named in the answer with the highest
# config epoch, so a sentinel that slept through a failover cannot bring an old master back. Without that in time,
# what the sentinels that do answer say; with none answering, what this pod's sentinel last wrote to its config on
# the data volume; with neither (a new install), the first pod.
current_master() {
  deadline=$(($(date +%s) + ${MASTER_WAIT_S:-60}))
  while :; do
    answers=$(ask_sentinels)
    count=$(printf '%s\n' "$answers" | grep -c . || true)
    moving=$(printf '%s\n' "$answers" | grep -c ' moving ' || true)
    if [ "$count" -gt $((sentinel_count / 2)) ] && [ "$moving" -eq 0 ]; then
      log "$count of $sentinel_count sentinels answer; the newest of them names $(newest "$answers")"
      newest "$answers"
      return
    fi
    if [ "${1:-}" != wait ] || [ "$(date +%s)" -ge "$deadline" ]; then
      break
    fi
    sleep 1
  done
  if [ "$count" -gt 0 ]; then
    log "$count of $sentinel_count sentinels answer, $moving of them failing over; the newest of them names" \
      "$(newest "$answers")"
    newest "$answers"
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
