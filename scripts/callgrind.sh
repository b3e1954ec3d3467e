#!/usr/bin/env bash
# Instructions `wscope serve` spends per connection or per echoed message, counted by callgrind
# (the same for the same binary and inputs however loaded the machine is).
#
#   scripts/callgrind.sh conn BIN [N]     # N idle connections (default 1,000) opened, held 1 s, closed;
#                                         # minus a run with none; ÷ N
#   scripts/callgrind.sh echo BIN [C W]   # C connections × W in flight (default 100 × 4) echo 64 B
#                                         # for 5 s; total ÷ messages echoed (connects included)
#
# BIN is the server under test; the load generator is target/release/wscope (LOAD_BIN names another). Loopback only; the
# server is stopped with SIGTERM after each run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GEN="${LOAD_BIN:-$ROOT/target/release/wscope}"
MODE=${1:?conn or echo}; BIN=${2:?server binary}
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }

# run N_OR_ECHO: prints "instructions [messages]"
run() {
    local port admin out pid msgs=""
    port=$((20000 + RANDOM % 20000)); admin=$((port + 1)); out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" serve \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$admin/health" && break; sleep 0.2; done
    case "$1" in
        0) ;;
        echo) msgs=$("$GEN" bench echo --url "ws://127.0.0.1:$port/ws" -c "$C" -w "$W" -d 5s --warmup 0s --json \
                  | python3 -c 'import json,sys; print(json.load(sys.stdin)["messagesReceived"])') ;;
        *) "$GEN" bench idle --url "ws://127.0.0.1:$port/ws" -c "$1" --handshake-concurrency 50 --hold 1s --json >/dev/null ;;
    esac
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    echo "$(awk '/^summary:/ {print $2}' "$out") $msgs"
    rm -f "$out"
}

case "$MODE" in
    conn)
        N=${3:-1000}
        read -r none _ < <(run 0)
        read -r some _ < <(run "$N")
        echo "instructions per connection: $(( (some - none) / N )) ($some with $N, $none with none)"
        ;;
    echo)
        C=${3:-100}; W=${4:-4}
        read -r total msgs < <(run echo)
        echo "instructions per echoed message: $(( total / msgs )) ($total for $msgs messages)"
        ;;
    *) echo "callgrind.sh: unknown mode $MODE (conn or echo)" >&2; exit 2 ;;
esac
