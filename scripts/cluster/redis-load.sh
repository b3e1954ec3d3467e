#!/usr/bin/env bash
# Redis load of cluster mode (issue 9, measurement b), on a redis-server of this script's own
# (127.0.0.1:$RPORT, no persistence) so that nothing else's commands are counted:
#   idle       commands/s over $WINDOW with 0, 1 and 3 idle instances (and Redis's CPU)
#   connect    1,000 connections opened and closed on one instance of the 3: commands beyond the
#              idle rate over the same time
#   echo       echo messages on /ws: commands beyond the idle rate
#   chat       10,000 chat messages on /ws/chat, one at a time (`bench broadcast -c 1`), then a
#              burst (`bench echo -c 1 -w 64` on /ws/chat): PUBLISH calls against messages
# Each count is `INFO stats` total_commands_processed (or `INFO commandstats` calls) read before
# and after; the INFO calls themselves add 2-3 per reading and are left in.
#
#   scripts/cluster/redis-load.sh            (WINDOW=30 RPORT=6390)
set -euo pipefail
RPORT="${RPORT:-6390}"
REDIS_URL="redis://127.0.0.1:$RPORT"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WINDOW="${WINDOW:-30}"

if redis-cli -p "$RPORT" ping >/dev/null 2>&1; then
    echo "something already answers on 127.0.0.1:$RPORT; set RPORT" >&2
    exit 1
fi
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
BG_PIDS+=($!)
for i in $(seq 1 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
NAME=$(cluster_name load)

total() { redis_stat stats total_commands_processed; }
# commandstats as "cmd calls" lines.
cmdstats() {
    redis-cli -u "$REDIS_URL" info commandstats | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_/ { sub("cmdstat_", "", $1); print $1, $3 }'
}
# cmddiff BEFORE AFTER SECONDS: per-command calls in the window, and per second.
cmddiff() {
    awk -v secs="$3" 'NR == FNR { b[$1] = $2; next } { d = $2 - b[$1]; if (d > 0) printf "%s=%d (%.2f/s) ", $1, d, d / secs }' "$1" "$2"
    echo
}

# window LABEL SECONDS: commands, per-command calls and Redis CPU over SECONDS of quiet.
window() {
    local label=$1 secs=$2 c0 c1 cpu0 cpu1
    cmdstats >"$OUT/cmd-$label-0"
    cpu0=$(redis_cpu); c0=$(total)
    sleep "$secs"
    c1=$(total); cpu1=$(redis_cpu)
    cmdstats >"$OUT/cmd-$label-1"
    printf '%s\t%d commands in %ss\t%.2f/s\tredis cpu %.3fs (%.2f%%)\t%s\n' "$label" $((c1 - c0)) "$secs" \
        "$(echo "$c1 $c0 $secs" | awk '{ print ($1 - $2) / $3 }')" \
        "$(echo "$cpu1 $cpu0" | awk '{ print $1 - $2 }')" \
        "$(echo "$cpu1 $cpu0 $secs" | awk '{ print 100 * ($1 - $2) / $3 }')" \
        "$(cmddiff "$OUT/cmd-$label-0" "$OUT/cmd-$label-1" "$secs")"
}

# during LABEL IDLE_RATE CMD...: runs CMD; commands over its time, and beyond IDLE_RATE/s.
during() {
    local label=$1 rate=$2 c0 c1 t0 t1 secs cpu0 cpu1
    shift 2
    cmdstats >"$OUT/cmd-$label-0"
    cpu0=$(redis_cpu); c0=$(total); t0=$(date +%s.%N)
    "$@" >"$OUT/$label.json"
    t1=$(date +%s.%N); c1=$(total); cpu1=$(redis_cpu)
    cmdstats >"$OUT/cmd-$label-1"
    secs=$(echo "$t1 $t0" | awk '{ print $1 - $2 }')
    printf '%s\t%d commands in %.2fs\tbeyond idle: %.0f\tredis cpu %.3fs\t%s\n' "$label" $((c1 - c0)) "$secs" \
        "$(echo "$c1 $c0 $rate $secs" | awk '{ print ($1 - $2) - $3 * $4 }')" \
        "$(echo "$cpu1 $cpu0" | awk '{ print $1 - $2 }')" \
        "$(cmddiff "$OUT/cmd-$label-0" "$OUT/cmd-$label-1" "$secs")"
}

# Instances are started outside any pipeline (a pipeline's subshell would keep their pids from
# the clean-up on exit); each measurement's lines are appended to the result files.
window idle-0 "$WINDOW" | tee "$OUT/idle.tsv"
start_instance i1 18301 19301 "$NAME" --ping-interval 0
wait_members 19301 1
sleep 2
window idle-1 "$WINDOW" | tee -a "$OUT/idle.tsv"
start_instance i2 18302 19302 "$NAME" --ping-interval 0
start_instance i3 18303 19303 "$NAME" --ping-interval 0
wait_members 19301 3
sleep 2
window idle-3 "$WINDOW" | tee -a "$OUT/idle.tsv"
RATE3=$(awk -F'\t' '$1 == "idle-3" { print $3 + 0 }' "$OUT/idle.tsv")

{
    during connect-1000 "$RATE3" "$BIN" bench idle --url ws://127.0.0.1:18301/ws -c 1000 --hold 2s --json
    echo "  $(jq -r '"\(.opened) opened, held \(.holdSecs) s, closed"' "$OUT/connect-1000.json")"
    during echo "$RATE3" "$BIN" bench echo --url ws://127.0.0.1:18301/ws -c 10 -w 1 -d 2s --warmup 0 --json
    echo "  $(jq -r '"\(.messages) echo messages"' "$OUT/echo.json")"
    during chat-rounds "$RATE3" "$BIN" bench broadcast --url ws://127.0.0.1:18301/ws/chat -c 1 -n 10000 --json
    echo "  $(jq -r '"\(.messages) measured + \(.syncMessages) sync chat messages"' "$OUT/chat-rounds.json")"
    during chat-burst "$RATE3" "$BIN" bench echo --url ws://127.0.0.1:18301/ws/chat -c 1 -w 64 -d 2s --warmup 0 --json
    echo "  $(jq -r '"\(.messagesSent) chat messages sent"' "$OUT/chat-burst.json")"
    echo "  publisher counters of i1: $(curl -s http://127.0.0.1:19301/metrics | grep -E '^wscope_cluster_broadcasts_(sent|undelivered)_total' | tr '\n' ' ')"
} | tee "$OUT/events.tsv"
