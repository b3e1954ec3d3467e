#!/usr/bin/env bash
# What one connection (open, hold, close) costs `wscope serve` in instructions (callgrind) or in
# allocations (DHAT): the server runs under valgrind twice, once while `wscope bench idle` opens
# CONNECTIONS connections and holds them HOLD, once with none; the difference of the two totals,
# divided by CONNECTIONS, is printed. Instructions are the same for the same binary and inputs
# however loaded the machine is; allocations nearly so.
#
#   scripts/conn-cost.sh callgrind|dhat [-- EXTRA `wscope serve` FLAGS...]
#
#   CONNECTIONS=1000 CONCURRENCY=50 HOLD=1s SERVER_BIN=target/release/wscope scripts/conn-cost.sh callgrind
#
# With ECHO set (`wscope bench echo` flags, e.g. ECHO="-c 100 -w 4 -d 5s"), the second run echoes
# 64-byte messages instead of holding idle connections, and the difference is divided by the
# messages echoed: what one message costs (its connections' handshakes and closes included, a few
# instructions a message).
#
# The load generator is target/release/wscope (under $CARGO_TARGET_DIR when set; `cargo build
# --release -p wscope` first); the server is SERVER_BIN, else the same binary. Only 127.0.0.1 is
# used; every wait is bounded; the server is stopped with SIGTERM (its drain runs under valgrind
# too, in both runs). The valgrind output files stay in the run directory printed at the end,
# for callgrind_annotate or DHAT's viewer.

set -euo pipefail
# A load generator that fails inside `$(run ...)` stops the script instead of yielding a total
# over the connections it never opened.
shopt -s inherit_errexit
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOL="${1:-}"
shift || true
case "$TOOL" in
    callgrind|dhat) ;;
    -h|--help|"") awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "conn-cost: the tool is callgrind or dhat, not $TOOL (see --help)" >&2; exit 2 ;;
esac
EXTRA=()
if [ "${1:-}" = "--" ]; then
    shift
    EXTRA=("$@")
fi

: "${CONNECTIONS:=1000}" "${CONCURRENCY:=50}" "${HOLD:=1s}"
: "${NOFILE:=$((CONNECTIONS + 100 > 4096 ? CONNECTIONS + 100 : 4096))}"
WSCOPE="${CARGO_TARGET_DIR:-$ROOT/target}/release/wscope"
SERVER="${SERVER_BIN:-$WSCOPE}"
[ -x "$WSCOPE" ] || { echo "conn-cost: no $WSCOPE (cargo build --release -p wscope)" >&2; exit 1; }
[ -x "$SERVER" ] || { echo "conn-cost: SERVER_BIN=$SERVER is not an executable" >&2; exit 1; }
command -v valgrind > /dev/null || { echo "conn-cost: valgrind is not installed" >&2; exit 1; }

log() { printf '[conn-cost %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/wscope-conn-cost.XXXXXX")"
PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$PID" 60
    [ "$rc" -eq 0 ] || log "stopped (exit $rc); outputs kept in $RUN_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
raise_nofile $((CONNECTIONS + 100)) "the connections and the server's own files"

# run NAME N: the server under valgrind, N connections held against it, then SIGTERM; prints the
# run's total (instructions, or blocks allocated).
run() {
    local name="$1" n="$2" out="$RUN_DIR/$1.out" port admin i
    port="$(free_port)"
    admin="$(free_port)"
    local vg=(valgrind --tool=callgrind "--callgrind-out-file=$out")
    [ "$TOOL" = dhat ] && vg=(valgrind --tool=dhat "--dhat-out-file=$out")
    "${vg[@]}" "$SERVER" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        "${EXTRA[@]}" > "$RUN_DIR/$name.log" 2>&1 &
    PID=$!
    for ((i = 0; i < 600; i++)); do
        [ "$(active_connections "$admin")" = -1 ] || break
        kill -0 "$PID" 2>/dev/null || { log "server exited: $(tail -n 3 "$RUN_DIR/$name.log")"; exit 1; }
        sleep 0.2
    done
    [ "$(active_connections "$admin")" != -1 ] || { log "server did not answer /health in 120 s"; exit 1; }
    if [ "$n" -gt 0 ] && [ -n "${ECHO:-}" ]; then
        # shellcheck disable=SC2086 # ECHO is a list of flags
        "$WSCOPE" bench echo --url "ws://127.0.0.1:$port/ws" $ECHO --warmup 0s --connect-timeout 60s \
            --json > "$RUN_DIR/$name.bench.json"
    elif [ "$n" -gt 0 ]; then
        "$WSCOPE" bench idle --url "ws://127.0.0.1:$port/ws" -c "$n" \
            --handshake-concurrency "$CONCURRENCY" --hold "$HOLD" --connect-timeout 60s --json \
            > "$RUN_DIR/$name.bench.json"
    fi
    stop_pid "$PID" 120
    PID=""
    "${PY:-python3}" - "$TOOL" "$out" <<'PYEOF'
import json, re, sys
tool, path = sys.argv[1], sys.argv[2]
if tool == "callgrind":
    total = next(int(m.group(1)) for line in open(path) if (m := re.match(r"summary: (\d+)", line)))
else:
    total = sum(pp["tbk"] for pp in json.load(open(path))["pps"])
print(total)
PYEOF
}

if [ -n "${ECHO:-}" ]; then
    log "$TOOL: $SERVER ${EXTRA[*]}, echo $ECHO"
else
    log "$TOOL: $SERVER ${EXTRA[*]}, $CONNECTIONS connections held $HOLD"
fi
none="$(run none 0)"
held="$(run held "$CONNECTIONS")"
unit="instructions"
[ "$TOOL" = dhat ] && unit="allocations"
per="connection"
n="$CONNECTIONS"
if [ -n "${ECHO:-}" ]; then
    per="message"
    n="$("${PY:-python3}" -c 'import json, sys; print(json.load(open(sys.argv[1]))["messagesReceived"])' "$RUN_DIR/held.bench.json")"
fi
"${PY:-python3}" -c 'import sys; n, a, b = map(int, sys.argv[1:4]); print(f"{(b - a) / n:,.1f} {sys.argv[4]} per {sys.argv[5]} ({b:,} - {a:,} over {n:,})")' \
    "$n" "$none" "$held" "$unit" "$per"
log "outputs in $RUN_DIR"
