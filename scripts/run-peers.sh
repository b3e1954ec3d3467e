#!/usr/bin/env bash
# The peer benchmark suite (issue 3, items 4 and 5): builds wscope and the plain axum example,
# installs the Node `ws` and Bun peers, then one peer at a time on loopback starts the server on
# free ports, runs every scenario with `wscope bench ... --json`, stops the server, and finally
# writes scripts/results/latest.json and (through scripts/report.py) the "Peer comparison"
# section of docs/BENCHMARKS.md and the chart docs/peers.svg.
#
#   scripts/run-peers.sh [--quick] [--peers "wscope axum_plain node-ws bun"] [--skip-build]
#                        [--skip-install] [--out FILE] [--no-docs]
#
#   --quick         small counts and short durations (about 2 minutes after the build)
#   (default)       the full run (about 9-10 minutes after the build: 10k idle connections,
#                   3 runs of each echo shape of 10 s after 2 s warm-up)
#   --peers LIST    which peers, space- or comma-separated, in order; the names are
#                   wscope (default engine: wscope's own; WSCOPE_ENGINE picks another),
#                   wscope-tungstenite, wscope-tokio-websockets, wscope-fastwebsockets,
#                   wscope-wscope (the engines by name, tracked: idle and echo only, for the
#                   engine comparison),
#                   axum_tuned (axum_plain with wscope's engine settings: same engine, untracked;
#                   the tracking-overhead baseline), axum_plain (axum defaults), node-ws, bun
#                   [default: all eight]
#   --skip-build    use the binaries already in target/release
#   --skip-install  do not run `npm ci` (use the node_modules already there)
#   --out FILE      where the results JSON goes [default: scripts/results/latest.json]
#   --no-docs       do not run scripts/report.py afterwards
#   --pin S:C       run every server on CPUs S and every load generator on CPUs C (taskset lists,
#                   e.g. `--pin 0:1`): server and client then do not take turns on one core, so
#                   a figure measures the server, not the scheduler; a server that starts a
#                   runtime per core sees only the CPUs of S [default: not pinned]
#
# Any count or duration can be overridden from the environment, e.g.
#   IDLE_CONNS=19000 ECHO_DURATION=20s scripts/run-peers.sh
# (see the "settings" block below for the names).
#
# To compare two builds of wscope with the same load generator, point SERVER_BIN at the other
# build's binary: the wscope peers run its `serve`, while `wscope bench` stays the one built here.
#   SERVER_BIN=../old/target/release/wscope scripts/run-peers.sh --quick --skip-build
#
# Every wait is bounded, only 127.0.0.1 is used, and whatever server or load generator the script
# started is stopped on exit, Ctrl-C included.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
PEERS="wscope wscope-tungstenite wscope-tokio-websockets wscope-fastwebsockets axum_tuned axum_plain node-ws bun"
SKIP_BUILD=0
SKIP_INSTALL=0
OUT="scripts/results/latest.json"
DOCS=1
PIN=""
ARGV_ORIG="$*"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --peers) PEERS="${2:?--peers needs a list}"; shift ;;
        --peers=*) PEERS="${1#--peers=}" ;;
        --skip-build) SKIP_BUILD=1 ;;
        --skip-install) SKIP_INSTALL=1 ;;
        --out) OUT="${2:?--out needs a file}"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        --no-docs) DOCS=0 ;;
        --pin) PIN="${2:?--pin needs SERVER_CPUS:CLIENT_CPUS}"; shift ;;
        --pin=*) PIN="${1#--pin=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run-peers: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
PEERS="${PEERS//,/ }"
SERVER_PIN=()
if [ -n "$PIN" ]; then
    [[ "$PIN" =~ ^[0-9,-]+:[0-9,-]+$ ]] \
        || { echo "run-peers: --pin wants SERVER_CPUS:CLIENT_CPUS (e.g. 0:1), not $PIN" >&2; exit 2; }
    command -v taskset > /dev/null || { echo "run-peers: --pin needs taskset (util-linux)" >&2; exit 2; }
    SERVER_PIN=(taskset -c "${PIN%%:*}")
    CLIENT_CPUS="${PIN#*:}"   # read by bench-lib.sh's bench_cmd
fi

# ---- settings ------------------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
    : "${ECHO_DURATION:=3s}" "${ECHO_WARMUP:=1s}" "${ECHO_REPEAT:=1}"
    : "${IDLE_CONNS:=2000}" "${IDLE_HOLD:=2s}" "${STATS_HOLD:=5s}"
    : "${CHURN_WORKERS:=50}" "${CHURN_DURATION:=3s}"
    : "${BCAST_LISTENERS:=100}" "${BCAST_MESSAGES:=100}"
    : "${STATS_SAMPLES:=5}"
else
    : "${ECHO_DURATION:=10s}" "${ECHO_WARMUP:=2s}" "${ECHO_REPEAT:=3}"
    : "${IDLE_CONNS:=10000}" "${IDLE_HOLD:=5s}" "${STATS_HOLD:=10s}"
    : "${CHURN_WORKERS:=50}" "${CHURN_DURATION:=10s}"
    : "${BCAST_LISTENERS:=1000}" "${BCAST_MESSAGES:=500}"
    : "${STATS_SAMPLES:=9}"
fi
: "${ECHO_A_CONNS:=100}" "${ECHO_A_INFLIGHT:=1}"
: "${ECHO_B_CONNS:=1000}" "${ECHO_B_INFLIGHT:=4}"
: "${ECHO_SIZE:=64}"
: "${HANDSHAKE_CONCURRENCY:=200}"
: "${REF_FIELDS:=id,age,idleTime,state,remoteAddress,userAgent}"   # the reference's stats row
: "${NOFILE:=20000}"            # open-file limit asked for the servers and the load generator
: "${HEALTH_WAIT:=20}"          # seconds a server may take to answer /health
: "${STOP_WAIT:=10}"            # seconds between SIGTERM and SIGKILL
: "${SCENARIO_GRACE:=120}"      # seconds a scenario may run past its planned length

WSCOPE="$ROOT/target/release/wscope"
AXUM_PLAIN="$ROOT/target/release/examples/axum_plain"
NODE_DIR="$ROOT/scripts/peers/node-ws"
BUN_DIR="$ROOT/scripts/peers/bun"
BUN_BIN="$BUN_DIR/node_modules/.bin/bun"
CLK_TCK="$(getconf CLK_TCK)"

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/wscope-peers.XXXXXX")"
STARTED_AT="$(date +%s)"

log() { printf '[run-peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

# ---- cleanup: whatever this script started is stopped -------------------------------------
PEER_PID=""
BG_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$BG_PID" 5
    BG_PID=""
    stop_pid "$PEER_PID" "$STOP_WAIT"
    PEER_PID=""
    if [ "$rc" -ne 0 ]; then
        log "stopped (exit $rc); raw outputs kept in $RUN_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

raise_nofile $((IDLE_CONNS + 1000)) "IDLE_CONNS+1000"

# ---- helpers ------------------------------------------------------------------------------
cpu_ticks() { # utime + stime of PID in clock ticks (fields 14 and 15 of /proc/PID/stat)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

have_mode() { "$WSCOPE" bench "$1" --help >/dev/null 2>&1; }
has_flag() { "$WSCOPE" bench "$1" --help 2>/dev/null | grep -q -- "$2"; }

skip() { # skip DIR SCENARIO REASON
    printf '%s\n' "$3" > "$1/$2.skipped"
    log "  $2: skipped: $3"
}

# ---- build and install --------------------------------------------------------------------
if [ "$SKIP_BUILD" = 0 ]; then
    log "building wscope and the axum_plain example (release)"
    # Every engine compiled in: the engine variants are peers too.
    cargo build --release --locked -p wscope --features all-engines --bin wscope --example axum_plain
fi
[ -x "$WSCOPE" ] || { log "no $WSCOPE: build failed or --skip-build without a build"; exit 1; }
# Run copies, so that a rebuild by someone else during the run cannot swap binaries half-way.
BIN_DIR="$RUN_DIR/bin"
mkdir -p "$BIN_DIR"
cp "$WSCOPE" "$BIN_DIR/wscope"
WSCOPE="$BIN_DIR/wscope"
# The binary whose `serve` the wscope peers run (SERVER_BIN, else the one built here).
SERVER="$WSCOPE"
if [ -n "${SERVER_BIN:-}" ]; then
    [ -x "$SERVER_BIN" ] || { log "SERVER_BIN=$SERVER_BIN is not an executable"; exit 1; }
    cp "$SERVER_BIN" "$BIN_DIR/wscope-server"
    SERVER="$BIN_DIR/wscope-server"
    log "wscope peers run $SERVER_BIN (copied); the load generator is $WSCOPE"
fi
if [ -x "$AXUM_PLAIN" ]; then
    cp "$AXUM_PLAIN" "$BIN_DIR/axum_plain"
    AXUM_PLAIN="$BIN_DIR/axum_plain"
fi
if ! "$WSCOPE" bench --help >/dev/null 2>&1; then
    log "this wscope has no working 'bench' command yet: nothing to measure"
    exit 1
fi

declare -A PEER_SKIP=()

if ! command -v node >/dev/null 2>&1; then
    PEER_SKIP[node-ws]="node is not installed"
    PEER_SKIP[bun]="node/npm are not installed (Bun comes from the npm registry)"
else
    NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
    [ "$NODE_MAJOR" = 20 ] || log "note: Node $(node --version), the reference figures are for Node 20"
fi
if [ ! -x "$AXUM_PLAIN" ]; then
    PEER_SKIP[axum_plain]="target/release/examples/axum_plain was not built"
    PEER_SKIP[axum_tuned]="target/release/examples/axum_plain was not built"
fi

install_peer() { # install_peer NAME DIR
    local name="$1" dir="$2"
    [ -z "${PEER_SKIP[$name]:-}" ] || return 0
    if [ "$SKIP_INSTALL" = 1 ] && [ -d "$dir/node_modules" ]; then return 0; fi
    log "installing $name (npm ci in ${dir#"$ROOT"/})"
    if ! (cd "$dir" && timeout 600 npm ci --no-audit --no-fund --loglevel=error) > "$RUN_DIR/npm-$name.log" 2>&1; then
        PEER_SKIP[$name]="npm ci failed: $(tail -n 3 "$RUN_DIR/npm-$name.log" | tr '\n' ' ')"
        log "$name: ${PEER_SKIP[$name]}"
    fi
}
case " $PEERS " in *" node-ws "*) install_peer node-ws "$NODE_DIR" ;; esac
case " $PEERS " in
    *" bun "*)
        install_peer bun "$BUN_DIR"
        if [ -z "${PEER_SKIP[bun]:-}" ] && ! "$BUN_BIN" --version >/dev/null 2>&1; then
            # The `bun` npm package links the binary from its platform package in a postinstall
            # step; run it by hand when npm did not (install scripts disabled).
            (cd "$BUN_DIR" && timeout 120 node node_modules/bun/install.js) > "$RUN_DIR/bun-postinstall.log" 2>&1 || true
            if ! "$BUN_BIN" --version >/dev/null 2>&1; then
                PEER_SKIP[bun]="the bun binary from the npm package does not run on this machine ($(uname -sm); see $RUN_DIR/bun-postinstall.log)"
                log "bun: ${PEER_SKIP[bun]}"
            fi
        fi
        ;;
esac

# ---- one peer ------------------------------------------------------------------------------
start_peer() { # start_peer NAME DIR: sets PEER_PID PEER_PORT PEER_ADMIN
    local name="$1" dir="$2"
    PEER_PORT="$(free_port)"
    PEER_ADMIN=""
    local cmd
    case "$name" in
        wscope)
            PEER_ADMIN="$(free_port)"
            cmd=("$SERVER" serve --listen "127.0.0.1:$PEER_PORT" --admin-listen "127.0.0.1:$PEER_ADMIN") ;;
        wscope-tungstenite|wscope-tokio-websockets|wscope-fastwebsockets|wscope-wscope)
            PEER_ADMIN="$(free_port)"
            cmd=("$SERVER" serve --listen "127.0.0.1:$PEER_PORT" --admin-listen "127.0.0.1:$PEER_ADMIN" --engine "${name#wscope-}") ;;
        axum_plain)
            cmd=("$AXUM_PLAIN" --listen "127.0.0.1:$PEER_PORT") ;;
        axum_tuned)
            # The same engine as wscope serve (tungstenite 0.29) with wscope's settings, untracked.
            cmd=("$AXUM_PLAIN" --listen "127.0.0.1:$PEER_PORT" --nodelay --read-buffer-size 512 --write-buffer-size 16384) ;;
        node-ws)
            PEER_ADMIN="$(free_port)"
            cmd=(node "$NODE_DIR/server.mjs" --port "$PEER_PORT" --admin-port "$PEER_ADMIN") ;;
        bun)
            PEER_ADMIN="$(free_port)"
            cmd=("$BUN_BIN" "$BUN_DIR/server.ts" --port "$PEER_PORT" --admin-port "$PEER_ADMIN") ;;
        *) log "unknown peer $name"; return 1 ;;
    esac
    local shown="${cmd[*]}"
    shown="${shown//"$BIN_DIR"\/wscope/target/release/wscope}"
    shown="${shown//"$BIN_DIR"\/axum_plain/target/release/examples/axum_plain}"
    shown="${shown//"$ROOT"\//}"
    printf '%s\n' "${SERVER_PIN[*]}${SERVER_PIN[*]:+ }$shown" > "$dir/server.cmd"
    cut -d' ' -f1-3 /proc/loadavg > "$dir/loadavg"
    log "starting $name: ${cmd[*]}"
    (
        ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        exec "${SERVER_PIN[@]}" "${cmd[@]}"
    ) > "$dir/server.log" 2>&1 &
    PEER_PID=$!
    printf '%s\n' "$PEER_PID" > "$dir/server.pid"
    printf '%s %s\n' "$PEER_PORT" "${PEER_ADMIN:-0}" > "$dir/server.ports"
    local i
    for ((i = 0; i < HEALTH_WAIT * 10; i++)); do
        if ! kill -0 "$PEER_PID" 2>/dev/null; then
            log "$name exited during start-up: $(tail -n 3 "$dir/server.log" | tr '\n' ' ')"
            wait "$PEER_PID" 2>/dev/null || true
            PEER_PID=""
            return 1
        fi
        if curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$PEER_PORT/health" 2>/dev/null; then
            log "$name (pid $PEER_PID) is up on 127.0.0.1:$PEER_PORT${PEER_ADMIN:+, admin 127.0.0.1:$PEER_ADMIN}; open-file limit $(awk '/Max open files/ {print $4}' "/proc/$PEER_PID/limits")"
            return 0
        fi
        sleep 0.1
    done
    log "$name did not answer /health within ${HEALTH_WAIT}s"
    return 1
}

# echo_run DIR NAME CONNS INFLIGHT: one echo scenario, with the server's CPU ticks around it
echo_run() {
    local dir="$1" name="$2" conns="$3" inflight="$4"
    local planned=$(( $(secs_of "$ECHO_DURATION") + $(secs_of "$ECHO_WARMUP") + 10 ))
    local t0 t1
    t0="$(cpu_ticks "$PEER_PID")"
    run_bench "$dir" "$name" "$planned" echo --url "ws://127.0.0.1:$PEER_PORT/ws" \
        -c "$conns" -w "$inflight" -s "$ECHO_SIZE" -d "$ECHO_DURATION" --warmup "$ECHO_WARMUP" \
        --pid "$PEER_PID"
    t1="$(cpu_ticks "$PEER_PID" 2>/dev/null || echo "$t0")"
    printf '{"ticks": %s, "clkTck": %s}\n' "$((t1 - t0))" "$CLK_TCK" > "$dir/$name.proc.json"
    wait_drained "$PEER_ADMIN"
}

# stats_run DIR: hold IDLE_CONNS connections and time GET /api/stats with the full list
stats_run() {
    local dir="$1"
    local planned=$(( IDLE_CONNS / 1000 + $(secs_of "$STATS_HOLD") + 10 ))
    local limit=$((planned + SCENARIO_GRACE))
    local args=(idle --url "ws://127.0.0.1:$PEER_PORT/ws" -c "$IDLE_CONNS"
        --handshake-concurrency "$HANDSHAKE_CONCURRENCY" --hold "$STATS_HOLD")
    # A wscope peer also answers the reference's row (REF_FIELDS: what the Node and Bun peers
    # list), timed in turn with the full one: the same content as theirs (the full row has up to
    # 19 fields, theirs 6).
    local ref=0
    [[ "${dir##*/}" != wscope* ]] || ref=1
    printf '%s bench %s --json\n' "$(bench_cmd target/release/wscope)" "${args[*]}" > "$dir/stats.cmd"
    printf 'curl -s -o /dev/null -w %%{time_total} http://127.0.0.1:%s/api/stats   # 1 warm-up + %s timed\n' \
        "$PEER_ADMIN" "$STATS_SAMPLES" >> "$dir/stats.cmd"
    [ "$ref" = 0 ] || printf 'curl -s -o /dev/null -w %%{time_total} "http://127.0.0.1:%s/api/stats?fields=%s"   # %s timed, in turn\n' \
        "$PEER_ADMIN" "$REF_FIELDS" "$STATS_SAMPLES" >> "$dir/stats.cmd"
    log "  stats: wscope bench ${args[*]} --json  (in the background), then GET /api/stats ×$STATS_SAMPLES"
    timeout --kill-after=10 "$limit" $(bench_cmd) bench "${args[@]}" --json > "$dir/stats-idle.json" 2> "$dir/stats-idle.err" &
    BG_PID=$!
    local i n=-1 want=$(( IDLE_CONNS * 99 / 100 ))
    for ((i = 0; i < (planned + 30) * 5; i++)); do
        kill -0 "$BG_PID" 2>/dev/null || break
        n="$(active_connections "$PEER_ADMIN")"
        [ "$n" -ge "$want" ] && break
        sleep 0.2
    done
    if [ "$n" -lt "$want" ]; then
        skip "$dir" stats "only $n of $IDLE_CONNS connections were open when the stats were to be timed"
    else
        # The warm-up answer is kept (its rows are counted); the timed ones go to /dev/null, so
        # that writing the body to a file is not part of the time.
        local out="$dir/stats-body.out" times=() ref_times=()
        timed_get() { # timed_get URL: "SECONDS BYTES HTTP_CODE" of one GET
            curl -sS --max-time 30 -o /dev/null -w '%{time_total} %{size_download} %{http_code}' \
                "$1" 2>/dev/null || echo "nan 0 0"
        }
        curl -sS --max-time 30 -o "$out" "http://127.0.0.1:$PEER_ADMIN/api/stats" || true
        for ((i = 0; i < STATS_SAMPLES; i++)); do
            times+=("$(timed_get "http://127.0.0.1:$PEER_ADMIN/api/stats")")
            [ "$ref" = 0 ] || ref_times+=("$(timed_get "http://127.0.0.1:$PEER_ADMIN/api/stats?fields=$REF_FIELDS")")
        done
        REF_TIMES="${ref_times[*]}" python3 - "$out" "$n" "${times[@]}" > "$dir/stats.json" <<'EOF'
import json, os, statistics, sys
body, open_conns, samples = sys.argv[1], int(sys.argv[2]), sys.argv[3:]


def timed(samples):
    secs, size, codes = [], 0, []
    for s in samples:
        t, z, c = s.split()
        codes.append(int(c))
        if c == "200":
            secs.append(float(t)); size = int(z)
    return secs, size, codes


secs, size, codes = timed(samples)
try:
    stats = json.load(open(body))
    listed, total = len(stats.get("connections", [])), stats.get("totalConnections")
except Exception:
    listed, total = None, None
words = os.environ.get("REF_TIMES", "").split()
ref = None
if words:
    rsecs, rsize, rcodes = timed([" ".join(words[i:i + 3]) for i in range(0, len(words), 3)])
    ref = {"httpCodes": rcodes, "secs": rsecs, "bodyBytes": rsize,
           "medianMs": statistics.median(rsecs) * 1000 if rsecs else None}
print(json.dumps({
    "samples": len(samples), "okSamples": len(secs), "httpCodes": codes,
    "secs": secs, "medianMs": statistics.median(secs) * 1000 if secs else None,
    "minMs": min(secs) * 1000 if secs else None, "maxMs": max(secs) * 1000 if secs else None,
    "bodyBytes": size, "connectionsListed": listed, "totalConnections": total,
    "openWhenTimed": open_conns, "referenceFields": ref,
}))
EOF
        log "  stats: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("median %.1f ms, %s connections listed, %s bytes" % (d["medianMs"], d["connectionsListed"], d["bodyBytes"]))' "$dir/stats.json" 2>/dev/null || echo '?')"
    fi
    local rc=0
    wait "$BG_PID" || rc=$?
    BG_PID=""
    [ "$rc" -eq 0 ] || log "  stats: the holding 'wscope bench idle' exited $rc: $(tail -n 2 "$dir/stats-idle.err" | tr '\n' ' ')"
    wait_drained "$PEER_ADMIN"
}

run_peer() {
    local name="$1" dir="$RUN_DIR/$1"
    mkdir -p "$dir"
    if [ -n "${PEER_SKIP[$name]:-}" ]; then
        printf '%s\n' "${PEER_SKIP[$name]}" > "$dir/skipped.txt"
        log "=== $name: skipped: ${PEER_SKIP[$name]}"
        return 0
    fi
    if [ "${name#wscope-}" != "$name" ] && ! "$SERVER" serve --help 2>/dev/null | grep -q -- '--engine'; then
        printf 'wscope serve has no --engine flag\n' > "$dir/skipped.txt"
        log "=== $name: skipped: wscope serve has no --engine flag"
        return 0
    fi
    log "=== $name"
    local t_start
    t_start="$(date +%s)"
    if ! start_peer "$name" "$dir"; then
        printf 'did not start: %s\n' "$(tail -n 3 "$dir/server.log" | tr '\n' ' ')" > "$dir/skipped.txt"
        stop_pid "$PEER_PID" "$STOP_WAIT"; PEER_PID=""
        return 0
    fi
    # Engine variants: idle (memory, handshakes) and echo only; the rest is engine-independent.
    local engine_only=0
    [ "${name#wscope-}" != "$name" ] && engine_only=1

    # Idle first, on a fresh process, so that earlier scenarios' garbage does not blur the RSS.
    if true; then
        if have_mode idle; then
            local idle_args=(idle --url "ws://127.0.0.1:$PEER_PORT/ws" -c "$IDLE_CONNS"
                --handshake-concurrency "$HANDSHAKE_CONCURRENCY" --pid "$PEER_PID")
            has_flag idle --hold && idle_args+=(--hold "$IDLE_HOLD")
            run_bench "$dir" idle $(( IDLE_CONNS / 1000 + $(secs_of "$IDLE_HOLD") + 10 )) "${idle_args[@]}"
            wait_drained "$PEER_ADMIN"
            if [ -z "$PEER_ADMIN" ]; then
                skip "$dir" stats "no admin API (untracked baseline)"
            elif [ "$engine_only" = 1 ]; then
                skip "$dir" stats "engine variant: the stats path does not depend on the engine"
            elif ! has_flag idle --hold; then
                skip "$dir" stats "'wscope bench idle' has no --hold to keep the connections open"
            else
                stats_run "$dir"
            fi
        else
            skip "$dir" idle "'wscope bench idle' is not available in this build"
            skip "$dir" stats "'wscope bench idle' is not available in this build"
        fi
    fi

    if have_mode echo; then
        local r
        for ((r = 1; r <= ECHO_REPEAT; r++)); do
            echo_run "$dir" "echo-a.$r" "$ECHO_A_CONNS" "$ECHO_A_INFLIGHT"
            echo_run "$dir" "echo-b.$r" "$ECHO_B_CONNS" "$ECHO_B_INFLIGHT"
        done
    else
        skip "$dir" echo-a "'wscope bench echo' is not available in this build"
        skip "$dir" echo-b "'wscope bench echo' is not available in this build"
    fi

    if [ "$engine_only" = 0 ]; then
        if have_mode churn; then
            run_bench "$dir" churn $(( $(secs_of "$CHURN_DURATION") + 10 )) churn \
                --url "ws://127.0.0.1:$PEER_PORT/ws" -c "$CHURN_WORKERS" -d "$CHURN_DURATION"
            wait_drained "$PEER_ADMIN"
        else
            skip "$dir" churn "'wscope bench churn' is not available in this build"
        fi
        if have_mode broadcast; then
            run_bench "$dir" broadcast $(( BCAST_LISTENERS / 500 + BCAST_MESSAGES / 50 + 20 )) broadcast \
                --url "ws://127.0.0.1:$PEER_PORT/ws/chat" -c "$BCAST_LISTENERS" --messages "$BCAST_MESSAGES"
            wait_drained "$PEER_ADMIN"
        else
            skip "$dir" broadcast "'wscope bench broadcast' is not available in this build"
        fi
    fi

    log "stopping $name (SIGTERM, SIGKILL after ${STOP_WAIT}s)"
    stop_pid "$PEER_PID" "$STOP_WAIT"
    PEER_PID=""
    printf '%s\n' "$(( $(date +%s) - t_start ))" > "$dir/elapsed_secs"
    log "=== $name done in $(cat "$dir/elapsed_secs") s"
}

for peer in $PEERS; do
    run_peer "$peer"
    sleep 1
done

# ---- results and report -------------------------------------------------------------------
cat > "$RUN_DIR/settings.json" <<EOF
{
  "mode": "$([ "$QUICK" = 1 ] && echo quick || echo full)",
  "argv": "$ARGV_ORIG",
  "pin": "$PIN",
  "peers": "$PEERS",
  "echoDuration": "$ECHO_DURATION", "echoWarmup": "$ECHO_WARMUP", "echoRepeat": $ECHO_REPEAT,
  "echoA": {"connections": $ECHO_A_CONNS, "inFlight": $ECHO_A_INFLIGHT},
  "echoB": {"connections": $ECHO_B_CONNS, "inFlight": $ECHO_B_INFLIGHT},
  "echoSize": $ECHO_SIZE,
  "idleConnections": $IDLE_CONNS, "idleHold": "$IDLE_HOLD", "statsHold": "$STATS_HOLD",
  "statsSamples": $STATS_SAMPLES, "handshakeConcurrency": $HANDSHAKE_CONCURRENCY,
  "churnWorkers": $CHURN_WORKERS, "churnDuration": "$CHURN_DURATION",
  "broadcastListeners": $BCAST_LISTENERS, "broadcastMessages": $BCAST_MESSAGES,
  "startedAt": $STARTED_AT, "finishedAt": $(date +%s)
}
EOF
mkdir -p "$(dirname "$OUT")"
python3 scripts/report.py collect "$RUN_DIR" --out "$OUT"
log "results: $OUT (raw outputs in $RUN_DIR)"
if [ "$DOCS" = 1 ]; then
    python3 scripts/report.py render "$OUT" --md docs/BENCHMARKS.md --svg docs/peers.svg
    log "wrote docs/BENCHMARKS.md (peer section) and docs/peers.svg"
fi
log "total $(( $(date +%s) - STARTED_AT )) s"
