#!/usr/bin/env bash
# Does `wscope serve` give back what connections took? Starts one server on free loopback ports,
# reads its RSS (VmRSS of /proc/PID/status) once it answers /health, then runs
# `wscope bench churn` (connect, echo one message, close) in blocks of BLOCK_DURATION until CYCLES
# connections have completed, reading the RSS after each block once the server counts no connection; prints one
# line per reading and, at the end, the last reading against the first and against the one after
# the first block (the allocator's and the registry's warm-up). Issue 16's goal: RSS after 100,000
# connect/close cycles within 5 % of where it started.
#
# Every reading splits the RSS into anonymous memory (the heap: what connections could leave
# behind) and file-backed pages (the binary's code and data, paged in as code runs for the first
# time, not memory a connection keeps). After the last block the server is left alone for SETTLE
# (default 12s: jemalloc gives back freed pages after 10 s) and read once more, the "settled" row.
#
#   scripts/rss-cycles.sh [--out FILE] [-- EXTRA `wscope serve` FLAGS...]
#
#   CYCLES=100000 BLOCK_DURATION=3s WORKERS=50 SERVER_BIN=target/release/wscope scripts/rss-cycles.sh
#
# The load generator is target/release/wscope (`cargo build --release -p wscope` first); the server
# is SERVER_BIN, else the same binary. Only 127.0.0.1 is used; every wait is bounded; the server
# and the load generator are stopped on exit, Ctrl-C included.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT=""
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="${2:?--out needs a file}"; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "rss-cycles: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

: "${CYCLES:=100000}" "${BLOCK_DURATION:=3s}" "${WORKERS:=50}" "${SETTLE:=12}"
: "${NOFILE:=20000}" "${SCENARIO_GRACE:=120}"
WSCOPE="$ROOT/target/release/wscope"
SERVER="${SERVER_BIN:-$WSCOPE}"
[ -x "$WSCOPE" ] || { echo "rss-cycles: no $WSCOPE (cargo build --release -p wscope)" >&2; exit 1; }
[ -x "$SERVER" ] || { echo "rss-cycles: SERVER_BIN=$SERVER is not an executable" >&2; exit 1; }

log() { printf '[rss-cycles %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/wscope-rss.XXXXXX")"
PID=""
BG_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$BG_PID" 5
    stop_pid "$PID" 10
    [ "$rc" -eq 0 ] || log "stopped (exit $rc); outputs kept in $RUN_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
raise_nofile 2000 "a few thousand sockets"

# "RSS anon file" in KiB, one reading.
rss_kib() { awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print r, a, f }' "/proc/$PID/status"; }

PORT="$(free_port)"
ADMIN="$(free_port)"
"$SERVER" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" "${EXTRA[@]}" \
    > "$RUN_DIR/server.log" 2>&1 &
PID=$!
for ((i = 0; i < 200; i++)); do
    [ "$(active_connections "$ADMIN")" = -1 ] || break
    kill -0 "$PID" 2>/dev/null || { log "server exited: $(tail -n 3 "$RUN_DIR/server.log")"; exit 1; }
    sleep 0.1
done
[ "$(active_connections "$ADMIN")" != -1 ] || { log "server did not answer /health in 20 s"; exit 1; }

readings=()
start="$(rss_kib)"
log "server $SERVER ${EXTRA[*]} (pid $PID): RSS, anon, file at start: $start KiB"
readings+=("0 $start")
done_cycles=0
block=0
while [ "$done_cycles" -lt "$CYCLES" ] && [ "$block" -lt 1000 ]; do
    block=$((block + 1))
    run_bench "$RUN_DIR" "churn-$block" "$(secs_of "$BLOCK_DURATION")" churn \
        --url "ws://127.0.0.1:$PORT/ws" -c "$WORKERS" -d "$BLOCK_DURATION"
    [ ! -e "$RUN_DIR/churn-$block.failed" ] || { log "churn block $block failed: $(cat "$RUN_DIR/churn-$block.failed")"; exit 1; }
    got="$("${PY:-python3}" -c 'import json,sys; print(json.load(open(sys.argv[1]))["completed"])' "$RUN_DIR/churn-$block.json")"
    [ "$got" -gt 0 ] || { log "churn block $block completed no cycle"; exit 1; }
    done_cycles=$((done_cycles + got))
    wait_drained "$ADMIN"
    r="$(rss_kib)"
    readings+=("$done_cycles $r")
    log "after $done_cycles cycles: RSS, anon, file: $r KiB"
done
sleep "$SETTLE"
r="$(rss_kib)"
readings+=("-$done_cycles $r")
log "settled ($SETTLE s later): RSS, anon, file: $r KiB"

"${PY:-python3}" - "${OUT:-/dev/null}" "${readings[@]}" <<'PYEOF'
import json, sys
out = sys.argv[1]
rows = [tuple(int(x) for x in r.split()) for r in sys.argv[2:]]
first, warm = rows[0], rows[1]
print("| cycles | RSS KiB | anon KiB | file KiB | RSS vs start | RSS vs after the first block | anon vs start | anon vs after the first block |")
print("|---|---|---|---|---|---|---|---|")
for c, r, a, f in rows:
    label = f"{-c:,}, settled" if c < 0 else f"{c:,}"
    print(f"| {label} | {r:,} | {a:,} | {f:,} | {r / first[1]:.3f}× | {r / warm[1]:.3f}× "
          f"| {a / first[2]:.3f}× | {a / warm[2]:.3f}× |")
last, settled = rows[-2], rows[-1]
res = {"readings": [{"cycles": abs(c), "settled": c < 0, "rssKiB": r, "anonKiB": a, "fileKiB": f}
                    for c, r, a, f in rows],
       "lastVsStart": last[1] / first[1], "lastVsFirstBlock": last[1] / warm[1],
       "settledVsStart": settled[1] / first[1], "settledAnonVsStart": settled[2] / first[2],
       "settledAnonVsFirstBlock": settled[2] / warm[2]}
if out != "/dev/null":
    json.dump(res, open(out, "w"), indent=2)
PYEOF
