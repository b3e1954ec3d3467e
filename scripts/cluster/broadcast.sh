#!/usr/bin/env bash
# Cross-instance broadcast (issue 9, measurement a): three instances A, B, C of one cluster over
# Redis and one standalone instance S, all on loopback.
#
# Fan-out latency, twice, alternating, for each size (C listeners × N messages, one at a time):
#   cross     the sender on A, the listeners on C   (every message goes A → Redis → C)
#   local     the sender and the listeners on A     (same cluster running: A still publishes each)
#   alone     the sender and the listeners on S     (no --redis-url: the baseline)
# each `wscope bench broadcast --url L --sender-url S -c C -n N --json`.
#
# Sustained rate, twice, alternating, for each window W: one node listener on C counts arrivals
# while `wscope bench echo -c 1 -w W` sends on A's chat as fast as its own echoes come back (the
# sender is A's only chat member, so its echoes are its messages); A's and C's cluster counters,
# C's and Redis's CPU over the run. The baseline: the same on S alone.
#
#   scripts/cluster/broadcast.sh
#   SIZES="1000x1000 10x2000" WINDOWS="4 16 64" SUSTAIN=5s scripts/cluster/broadcast.sh
#
# Results (JSON per run) and logs go to $OUT; tables are printed. Every instance started here is
# stopped and the cluster's keys deleted on exit. Needs node (>= 20, for its WebSocket client).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES="${SIZES:-1000x1000 10x2000}"
WINDOWS="${WINDOWS:-4 16 64}"
SUSTAIN="${SUSTAIN:-5s}"
NAME=$(cluster_name broadcast)
A=18201 B=18202 C=18203 S=18210

start_instance a $A 19201 "$NAME" --ping-interval 0
APID=$LAST_PID
start_instance b $B 19202 "$NAME" --ping-interval 0
start_instance c $C 19203 "$NAME" --ping-interval 0
CPID=$LAST_PID
start_instance s $S 19210 - --ping-interval 0
SPID=$LAST_PID
wait_members 19201 3
echo "cluster $NAME: a b c up; s standalone; results in $OUT" >&2

run() { # label conns messages url sender-url pid
    local label=$1 conns=$2 messages=$3 url=$4 sender=$5 pid=$6
    "$BIN" bench broadcast --url "$url" --sender-url "$sender" -c "$conns" -n "$messages" \
        --pid "$pid" --timeout 120s --json >"$OUT/broadcast-$label.json"
    jq -r --arg l "$label" '[$l, .listeners, .messages, .deliveries, .missed,
        (.deliveriesPerSec | floor), .lastReceiverLatency.p50, .lastReceiverLatency.p99,
        (.messages / .elapsedSecs | floor), .errors] | @tsv' "$OUT/broadcast-$label.json"
}

ws() { echo "ws://127.0.0.1:$1/ws/chat"; }
{
    printf 'run\tlisteners\tmessages\tdeliveries\tmissed\tdeliveries/s\tp50 µs\tp99 µs\tmessages/s\terrors\n'
    for size in $SIZES; do
        c=${size%x*} n=${size#*x}
        for round in 1 2; do
            run "cross-$c-$round" "$c" "$n" "$(ws $C)" "$(ws $A)" "$CPID"
            run "local-$c-$round" "$c" "$n" "$(ws $A)" "$(ws $A)" "$APID"
            run "alone-$c-$round" "$c" "$n" "$(ws $S)" "$(ws $S)" "$SPID"
        done
    done
} | tee "$OUT/broadcast.tsv"

# metric NAME ADMIN_PORT: one counter from /metrics.
metric() {
    curl -s "http://127.0.0.1:$2/metrics" | awk -v m="$1" '$1 == m { s += $2 } END { print s + 0 }'
}

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# pct TICKS_NOW TICKS_BEFORE SECONDS: CPU in % of one core.
pct() { echo "$1 $2 $HZ $3" | awk '{ printf "%.0f", 100 * ($1 - $2) / $3 / $4 }'; }

sustain() { # label window listen-port send-port send-pid listen-pid
    local label=$1 w=$2 lport=$3 sport=$4 spid=$5 lpid_srv=$6
    node --experimental-websocket --no-warnings scripts/cluster/listen.mjs "$(ws "$lport")" 1 60 \
        >"$OUT/sustain-$label-listen.json" 2>"$OUT/sustain-$label-listen.err" &
    local lpid=$!
    BG_PIDS+=("$lpid")
    local i
    for i in $(seq 1 100); do grep -q ready "$OUT/sustain-$label-listen.err" 2>/dev/null && break; sleep 0.1; done
    local sent0 undel0 recv0 drop0 rcpu0 scpu0 lcpu0 t0 t1 rcpu scpu lcpu secs
    sent0=$(metric wscope_cluster_broadcasts_sent_total 19201)
    undel0=$(metric wscope_cluster_broadcasts_undelivered_total 19201)
    recv0=$(metric wscope_cluster_broadcasts_received_total 19203)
    drop0=$(metric wscope_cluster_deliveries_dropped_total 19203)
    rcpu0=$(redis_cpu)
    scpu0=$(ticks "$spid")
    lcpu0=$(ticks "$lpid_srv")
    t0=$(date +%s.%N)
    "$BIN" bench echo --url "$(ws "$sport")" -c 1 -w "$w" -s 64 -d "$SUSTAIN" --warmup 0 \
        --timeout 120s --json >"$OUT/sustain-$label-send.json"
    t1=$(date +%s.%N)
    secs=$(echo "$t1 $t0" | awk '{ print $1 - $2 }')
    rcpu=$(echo "$(redis_cpu) $rcpu0 $secs" | awk '{ printf "%.0f", 100 * ($1 - $2) / $3 }')
    scpu=$(pct "$(ticks "$spid")" "$scpu0" "$secs")
    lcpu=$(pct "$(ticks "$lpid_srv")" "$lcpu0" "$secs")
    wait "$lpid" || true
    jq -r --arg l "$label" --arg w "$w" \
        --arg sent "$(( $(metric wscope_cluster_broadcasts_sent_total 19201) - sent0 ))" \
        --arg undel "$(( $(metric wscope_cluster_broadcasts_undelivered_total 19201) - undel0 ))" \
        --arg recv "$(( $(metric wscope_cluster_broadcasts_received_total 19203) - recv0 ))" \
        --arg drop "$(( $(metric wscope_cluster_deliveries_dropped_total 19203) - drop0 ))" \
        --arg scpu "$scpu" --arg lcpu "$lcpu" --arg rcpu "$rcpu" \
        --slurpfile s "$OUT/sustain-$label-send.json" \
        '[$l, $w, $s[0].messages, ($s[0].messagesPerSec | floor), .total, .perListenerPerSec,
          $sent, $undel, $recv, $drop, $scpu, $lcpu, $rcpu,
          ($s[0].clientCpu.percent | floor)] | @tsv' "$OUT/sustain-$label-listen.json"
}
{
    printf 'run\twindow\tsent\tsent/s\tlistener got\tlistener/s\tA published\tA undelivered\tC received\tC dropped\tsending server CPU %%\tlistening server CPU %%\tredis CPU %%\tbench CPU %%\n'
    for w in $WINDOWS; do
        for round in 1 2; do
            sustain "cross-w$w-$round" "$w" $C $A "$APID" "$CPID"
            sustain "alone-w$w-$round" "$w" $S $S "$SPID" "$SPID"
        done
    done
} | tee "$OUT/sustain.tsv"
