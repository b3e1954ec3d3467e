#!/usr/bin/env bash
# Scale run (issue 9, measurement c): four instances of one cluster over Redis, each holding
# $PER idle connections from its own `wscope bench idle` process (one bench process per
# instance keeps each under the 20,000 open-file limit). While they hold:
#   - GET /api/cluster/stats on instance 1 must say totalConnections = 4 × $PER, and the four
#     instances' own GET /api/stats?connections=0 must add up to it;
#   - 50 × GET /api/cluster/stats and 50 × GET /api/cluster/connections?limit=100 on instance 1,
#     timed with curl (p50/p99/max), beside 50 × instance 1's own GET /api/stats?connections=0,
#     and the same before any connection is opened;
#   - each instance's RSS; each bench run reports the server's bytes per connection (--pid).
# Client sockets are spread over 127.0.0.1-127.0.0.N at $PER_SOURCE per bench process each, so
# the four processes together keep every source address at 4 × $PER_SOURCE ports.
#
#   ulimit -n 20000; scripts/cluster/scale.sh            (PER=15000 HOLD=90s PER_SOURCE=2500)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PER="${PER:-15000}"
HOLD="${HOLD:-90s}"
PER_SOURCE="${PER_SOURCE:-2500}"
N=4
TOTAL=$((N * PER))
NAME=$(cluster_name scale)
PIDS=()
for i in $(seq 1 $N); do
    start_instance "n$i" $((18400 + i)) $((19400 + i)) "$NAME" --max-connections 0 --ping-interval 0
    PIDS+=("$LAST_PID")
done
wait_members 19401 $N

# timed PATH LABEL: 50 GETs of PATH on instance 1's admin listener; p50/p99/max in ms.
timed() {
    local i
    for i in $(seq 1 50); do
        curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:19401$1"
    done | sort -n | awk -v l="$2" '{ t[NR] = $1 * 1000 } END {
        printf "%s\tp50 %.1f ms\tp99 %.1f ms\tmax %.1f ms\n", l, t[int(NR * 0.5 + 0.5)], t[int(NR * 0.99 + 0.5)], t[NR] }'
}
rss() { awk '/^VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$1/status"; }

{
    echo "before any connection:"
    timed /api/cluster/stats "  GET /api/cluster/stats"
    timed "/api/cluster/connections?limit=100" "  GET /api/cluster/connections?limit=100"
    timed "/api/stats?connections=0" "  GET /api/stats?connections=0 (n1 alone)"
    for i in $(seq 1 $N); do echo "  n$i RSS $(rss "${PIDS[$((i - 1))]}")"; done
} | tee "$OUT/scale-before.txt"

for i in $(seq 1 $N); do
    "$BIN" bench idle --url "ws://127.0.0.1:$((18400 + i))/ws" -c "$PER" --hold "$HOLD" \
        --per-source "$PER_SOURCE" --pid "${PIDS[$((i - 1))]}" --timeout 300s --json \
        >"$OUT/scale-idle-n$i.json" 2>"$OUT/scale-idle-n$i.err" &
    BG_PIDS+=($!)
done
BENCH_PIDS=("${BG_PIDS[@]: -$N}")

# Wait (at most 120 s) for the cluster to count every connection.
T0=$(date +%s)
got=0
for t in $(seq 1 240); do
    got=$(curl -s http://127.0.0.1:19401/api/cluster/stats | jq -r '.totalConnections // 0')
    [ "$got" = "$TOTAL" ] && break
    sleep 0.5
done
echo "cluster counts $got connections after $(( $(date +%s) - T0 )) s (want $TOTAL)" | tee "$OUT/scale.txt"
sleep 2
{
    curl -s http://127.0.0.1:19401/api/cluster/stats >"$OUT/cluster-stats.json"
    echo "GET /api/cluster/stats on n1: totalConnections $(jq .totalConnections "$OUT/cluster-stats.json"), instancesCounted $(jq .instancesCounted "$OUT/cluster-stats.json"), per instance $(jq -c '[.instances[] | {(.instanceId): .totalConnections}] | add' "$OUT/cluster-stats.json"), unanswered $(jq -c .unanswered "$OUT/cluster-stats.json")"
    sum=0
    for i in $(seq 1 $N); do
        own=$(curl -s "http://127.0.0.1:$((19400 + i))/api/stats?connections=0" | jq .totalConnections)
        sum=$((sum + own))
        echo "  n$i own /api/stats: $own, RSS $(rss "${PIDS[$((i - 1))]}")"
    done
    echo "  sum of own stats: $sum"
    timed /api/cluster/stats "GET /api/cluster/stats"
    timed "/api/cluster/connections?limit=100" "GET /api/cluster/connections?limit=100"
    timed "/api/stats?connections=0" "GET /api/stats?connections=0 (n1 alone)"
    curl -s "http://127.0.0.1:19401/api/cluster/connections?limit=100" >"$OUT/cluster-connections.json"
    echo "  connections page: $(jq -c '{n: (.connections // .items // [] | length), keys: keys}' "$OUT/cluster-connections.json")"
    echo "  bytes: stats $(wc -c <"$OUT/cluster-stats.json"), connections page $(wc -c <"$OUT/cluster-connections.json")"
    echo "  redis: $(redis_stat clients connected_clients) clients, $(redis_stat memory used_memory_human) used"
    echo "  kernel: $(grep '^TCP:' /proc/net/sockstat) (mem in pages of $(getconf PAGESIZE) B, both ends of every loopback connection)"
    echo "  memory: $(free -m | awk '/^Mem:/ { print $3 " MiB used, " $7 " MiB available" }')"
} | tee -a "$OUT/scale.txt"

for p in "${BENCH_PIDS[@]}"; do wait "$p" || true; done
{
    for i in $(seq 1 $N); do
        echo "bench idle n$i: $(jq -c '{opened, held, dropped, failed, firstError, sourceAddresses, handshakesPerSec: (.handshakesPerSec | floor), serverBytesPerConnection: (.serverBytesPerConnection | floor), rssAfterMiB: ((.server.rssAfter // 0) / 1048576 | floor)}' "$OUT/scale-idle-n$i.json" 2>/dev/null || cat "$OUT/scale-idle-n$i.err")"
    done
} | tee -a "$OUT/scale.txt"
