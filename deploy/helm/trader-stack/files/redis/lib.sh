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
# knows the master, or nothing. `moving`: it leads a failover, and until the failover ends its config epoch may
# already be the new one while SENTINEL MASTER still names the old master; the address is the one it gives clients,
# which is the promoted replica from then on (asked second, so a failover starting in between reads as settled on
# the old master, never as the new epoch on the old master).
ask_sentinel() {
  as_host=$(host_of "$1")
  as_port=$(port_of "$1")
  as_state=$(timeout 3 redis-cli -h "$as_host" -p "$as_port" --raw sentinel master "$MASTER_NAME" 2>/dev/null |
    tr -d '\r' | awk 'NR % 2 == 1 { key = $0; next } { v[key] = $0 }
      END { if (v["config-epoch"] ~ /^[0-9]+$/ && v["num-slaves"] ~ /^[0-9]+$/)
              print v["config-epoch"], (v["flags"] ~ /(^|,)failover_in_progress(,|$)/ ? "moving" : "settled"),
                v["num-slaves"] }') || true
  [ -n "$as_state" ] || return 0
  as_address=$(timeout 3 redis-cli -h "$as_host" -p "$as_port" --raw sentinel get-master-addr-by-name "$MASTER_NAME" \
    2>/dev/null | tr -d '\r' | awk 'NR == 1 { ip = $0 } NR == 2 && $0 ~ /^[0-9]+$/ && ip != "" { print ip ":" $0 }') ||
    true
  [ -n "$as_address" ] || return 0
  printf '%s %s\n' "$as_address" "$as_state" | awk '{ print $2, $1, $3, $4 }'
}

# ask_sentinels: one line per sentinel that answers.
ask_sentinels() {
  # shellcheck disable=SC2086
  for s in $SENTINEL_NODES; do ask_sentinel "$s"; done
}

# shellcheck disable=SC2086
sentinel_count=$(printf '%s\n' $SENTINEL_NODES | wc -l)

# answering ANSWERS: how many sentinels answered.
answering() { printf '%s\n' "$1" | grep -c . || true; }

# majority ANSWERS: whether more than half of the sentinels answered.
majority() { [ "$(answering "$1")" -gt $((sentinel_count / 2)) ]; }

# newest ANSWERS: the master of the answer with the highest config epoch (the latest failover any of them saw).
newest() { printf '%s\n' "$1" | sort -k1,1nr | head -n 1 | cut -d ' ' -f 2; }

# settled ANSWERS: the newest master when a majority answered, none of them leads a failover and every answer at
# the highest epoch names the same master; nothing otherwise.
settled() {
  majority "$1" || return 0
  printf '%s\n' "$1" | sort -k1,1nr |
    awk 'NR == 1 { top = $1; master = $2 } $3 == "moving" || ($1 == top && $2 != master) { unsure = 1 }
      END { if (!unsure) print master }'
}

# known_before ANSWERS: whether the sentinels that answer have seen a failover or know replicas: not a new install.
known_before() { printf '%s\n' "$1" | awk '$1 > 0 || $4 > 0 { found = 1 } END { exit !found }'; }

# current_master [wait]: host:port of the master. With `wait`, until the answers are settled (up to MASTER_WAIT_S,
# 60 s): the one named in the answer with the highest config epoch, so a sentinel that slept through a failover
# cannot bring an old master back. Without that in time, the newest of the answers there are; with none answering,
# what this pod's sentinel last wrote to its config on the data volume; with neither (a new install), the first pod.
current_master() {
  cm_deadline=$(($(date +%s) + ${MASTER_WAIT_S:-60}))
  while :; do
    cm_answers=$(ask_sentinels)
    cm_master=$(settled "$cm_answers")
    if [ -n "$cm_master" ]; then
      log "$(answering "$cm_answers") of $sentinel_count sentinels answer; the newest of them names $cm_master"
      printf '%s\n' "$cm_master"
      return
    fi
    if [ "${1:-}" != wait ] || [ "$(date +%s)" -ge "$cm_deadline" ]; then
      break
    fi
    sleep 1
  done
  if [ "$(answering "$cm_answers")" -gt 0 ]; then
    log "$(answering "$cm_answers") of $sentinel_count sentinels answer, not settled:" \
      "$(printf '%s; ' "$cm_answers")the newest of them names $(newest "$cm_answers")"
    newest "$cm_answers"
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
