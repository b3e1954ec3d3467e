#!/usr/bin/env bash
# The reverse-proxy comparison: `wscope proxy` against nginx, HAProxy and Caddy, each in front of
# the same `wscope serve` echo upstream, and the upstream reached directly as the baseline. One
# proxy at a time on loopback, the load generator is `wscope bench ... --json`; the results go to
# one JSON file (every bench run with its command and the proxy's /proc figures) and a markdown
# table with ratios against nginx and against direct is printed (scripts/proxies/report.py).
#
#   scripts/run-proxies.sh [--quick] [--proxies "direct wscope nginx haproxy caddy"]
#                          [--out FILE] [--skip-build] [--no-reload] [--with-wscope-reload]
#                          [--write-doc]
#
#   --quick               3 s runs and fewer connections (about 2 minutes after the build)
#   (default)             10 s runs: "thru" echo 1,000 connections × 4 in flight, "lat" echo
#                         100 × 1, idle 2,000 connections, churn 50 workers (about 5 minutes)
#   --proxies LIST        which, space- or comma-separated, in order [default: all five;
#                         a proxy whose program is not installed is skipped and said so]
#   --out FILE            the results JSON [default: scripts/results/proxies.json]
#   --skip-build          use target/release/wscope as it is
#   --no-reload           skip the reload-under-load run (`nginx -s reload` during an echo run)
#   --with-wscope-reload  also run it through `wscope proxy` with `kill -HUP` (wscope's own
#                         reload is not merged yet: see wscope_reload_under_load below)
#   --write-doc           fill the table of the "Proxies" section of docs/BENCHMARKS.md (between
#                         <!-- proxies:begin --> and <!-- proxies:end -->) from this run
#
# Fairness: every proxy gets PROXY_THREADS threads or processes [default: nproc]: nginx
# `worker_processes`, HAProxy `nbthread` (one process), Caddy GOMAXPROCS, wscope proxy the Tokio
# worker threads (TOKIO_WORKER_THREADS). nginx's CPU and memory are those of its master and
# workers summed (scripts/proxies/proctree.py); the others are one process. "direct" measures
# the upstream `wscope serve` itself.
#
# Counts and durations can be overridden from the environment, e.g.
#   THRU_CONNS=2000 ECHO_DURATION=20s scripts/run-proxies.sh   (see "settings" below)
#
# Every wait is bounded, only 127.0.0.1 is used, and every process the script started is stopped
# on exit, Ctrl-C included.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
PROXIES="direct wscope nginx haproxy caddy"
OUT="scripts/results/proxies.json"
SKIP_BUILD=0
RELOAD=1
WSCOPE_RELOAD=0
WRITE_DOC=0
ARGV_ORIG="$*"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --proxies) PROXIES="${2:?--proxies needs a list}"; shift ;;
        --proxies=*) PROXIES="${1#--proxies=}" ;;
        --out) OUT="${2:?--out needs a file}"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        --skip-build) SKIP_BUILD=1 ;;
        --no-reload) RELOAD=0 ;;
        --with-wscope-reload) WSCOPE_RELOAD=1 ;;
        --write-doc) WRITE_DOC=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run-proxies: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
PROXIES="${PROXIES//,/ }"

# ---- settings ------------------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
    : "${ECHO_DURATION:=3s}" "${ECHO_WARMUP:=1s}"
    : "${THRU_CONNS:=200}" "${LAT_CONNS:=50}" "${IDLE_CONNS:=500}" "${IDLE_HOLD:=2s}"
    : "${CHURN_WORKERS:=20}" "${CHURN_DURATION:=3s}"
    : "${RELOAD_CONNS:=100}" "${RELOAD_DURATION:=6s}"
else
    : "${ECHO_DURATION:=10s}" "${ECHO_WARMUP:=2s}"
    : "${THRU_CONNS:=1000}" "${LAT_CONNS:=100}" "${IDLE_CONNS:=2000}" "${IDLE_HOLD:=3s}"
    : "${CHURN_WORKERS:=50}" "${CHURN_DURATION:=10s}"
    : "${RELOAD_CONNS:=200}" "${RELOAD_DURATION:=10s}"
fi
: "${THRU_INFLIGHT:=4}" "${LAT_INFLIGHT:=1}" "${ECHO_SIZE:=64}"
: "${RELOAD_AT:=3}"                 # seconds after the reload run's bench starts
: "${HANDSHAKE_CONCURRENCY:=200}"
: "${PROXY_THREADS:=$(nproc)}"      # threads/worker processes every proxy gets
: "${NOFILE:=20000}"                # open-file limit asked for every process started here
: "${HEALTH_WAIT:=20}"              # seconds a process may take to answer /health
: "${STOP_WAIT:=10}"                # seconds between SIGTERM and SIGKILL
: "${SCENARIO_GRACE:=60}"           # seconds a bench run may last past its planned length

PY="python3"
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3   # skips a version manager's slow shim
PROCTREE="$ROOT/scripts/proxies/proctree.py"
TEMPLATES="$ROOT/scripts/proxies"
WSCOPE="$ROOT/target/release/wscope"
CLK_TCK="$(getconf CLK_TCK)"
RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/wscope-proxies.XXXXXX")"
STARTED_AT="$(date +%s)"

log() { printf '[run-proxies %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

# ---- cleanup: whatever this script started is stopped -------------------------------------
UPSTREAM_PID=""
PROXY_PID=""
BG_PID=""

stop_proxy() { # the proxy and, for nginx, the workers it forked (SIGTERM to the master stops them)
    local pids
    [ -n "$PROXY_PID" ] || return 0
    pids="$("$PY" "$PROCTREE" pids "$PROXY_PID" 2>/dev/null | tail -n +2 || true)"
    stop_pid "$PROXY_PID" "$STOP_WAIT"
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    PROXY_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$BG_PID" 5
    BG_PID=""
    stop_proxy
    stop_pid "$UPSTREAM_PID" "$STOP_WAIT"
    UPSTREAM_PID=""
    [ "$rc" -eq 0 ] || log "stopped (exit $rc); raw outputs kept in $RUN_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

raise_nofile $((IDLE_CONNS * 2 + 1000)) "2×IDLE_CONNS+1000"

# ---- helpers ------------------------------------------------------------------------------
tree_ticks() { "$PY" "$PROCTREE" ticks "$1" 2>/dev/null || echo 0; }

wait_health() { # wait_health PORT PID NAME LOG: until GET /health through PORT answers 2xx
    local port="$1" pid="$2" name="$3" logf="$4" i
    for ((i = 0; i < HEALTH_WAIT * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during start-up: $(tail -n 3 "$logf" | tr '\n' ' ')"
            wait "$pid" 2>/dev/null || true
            return 1
        fi
        curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null && return 0
        sleep 0.1
    done
    log "$name did not answer /health on 127.0.0.1:$port within ${HEALTH_WAIT}s"
    return 1
}

# ---- build ---------------------------------------------------------------------------------
if [ "$SKIP_BUILD" = 0 ]; then
    log "building wscope (release)"
    cargo build --release --locked -p wscope
fi
[ -x "$WSCOPE" ] || { log "no $WSCOPE: build failed or --skip-build without a build"; exit 1; }
# A run copy, so that a rebuild by someone else during the run cannot swap binaries half-way.
mkdir -p "$RUN_DIR/bin"
cp "$WSCOPE" "$RUN_DIR/bin/wscope"
WSCOPE="$RUN_DIR/bin/wscope"
for mode in echo idle churn; do
    "$WSCOPE" bench "$mode" --help >/dev/null 2>&1 || { log "this wscope has no 'bench $mode'"; exit 1; }
done
"$WSCOPE" proxy --help >/dev/null 2>&1 || log "this wscope has no 'proxy' command: the wscope proxy is skipped"

# ---- the upstream --------------------------------------------------------------------------
start_upstream() {
    UPSTREAM_PORT="$(free_port)"
    UPSTREAM_ADMIN="$(free_port)"
    local cmd=("$WSCOPE" serve --listen "127.0.0.1:$UPSTREAM_PORT" --admin-listen "127.0.0.1:$UPSTREAM_ADMIN"
        --ping-interval 0 --stats-interval 0 --max-connections 0)
    printf '%s\n' "${cmd[*]//"$RUN_DIR"\/bin\//target/release/}" > "$RUN_DIR/upstream.cmd"
    log "starting the upstream: ${cmd[*]}"
    (
        ulimit -n "$NOFILE" 2>/dev/null || true
        exec "${cmd[@]}"
    ) > "$RUN_DIR/upstream.log" 2>&1 &
    UPSTREAM_PID=$!
    wait_health "$UPSTREAM_PORT" "$UPSTREAM_PID" upstream "$RUN_DIR/upstream.log" || { UPSTREAM_PID=""; exit 1; }
    log "upstream wscope serve (pid $UPSTREAM_PID) on 127.0.0.1:$UPSTREAM_PORT, admin 127.0.0.1:$UPSTREAM_ADMIN"
}

# ---- the proxies ---------------------------------------------------------------------------
declare -A MISSING=()
command -v nginx >/dev/null 2>&1 || MISSING[nginx]="nginx is not installed (apt-get install nginx)"
command -v haproxy >/dev/null 2>&1 || MISSING[haproxy]="haproxy is not installed (apt-get install haproxy)"
command -v caddy >/dev/null 2>&1 || MISSING[caddy]="caddy is not installed (apt-get install caddy)"
"$WSCOPE" proxy --help >/dev/null 2>&1 || MISSING[wscope]="this wscope has no 'proxy' command"

fill_template() { # fill_template TEMPLATE OUT DIR PORT: the @NAME@ placeholders
    sed -e "s|@WORKERS@|$PROXY_THREADS|g" -e "s|@NOFILE@|$NOFILE|g" -e "s|@DIR@|$3|g" \
        -e "s|@MAXCONN@|$(( (NOFILE - 1000) / 2 ))|g" -e "s|@USER@|$(id -un)|g" -e "s|@GROUP@|$(id -gn)|g" \
        -e "s|@LISTEN_PORT@|$4|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" "$1" > "$2"
}

version_of() { # one line naming the proxy's version
    case "$1" in
        direct|wscope) "$WSCOPE" --version 2>/dev/null ;;
        nginx) nginx -v 2>&1 ;;
        haproxy) haproxy -v 2>/dev/null ;;
        caddy) caddy version 2>/dev/null ;;
    esac | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?[^ ]*' | head -n 1
}

# start_proxy NAME DIR: sets PROXY_PID and PROXY_PORT (for direct: the upstream, PROXY_PID empty)
start_proxy() {
    local name="$1" dir="$2" cmd=() envs=()
    if [ "$name" = direct ]; then
        PROXY_PORT="$UPSTREAM_PORT"
        return 0
    fi
    PROXY_PORT="$(free_port)"
    case "$name" in
        wscope)
            cmd=("$WSCOPE" proxy --upstream "http://127.0.0.1:$UPSTREAM_PORT"
                --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$(free_port)"
                --ping-interval 0 --stats-interval 0 --max-connections 0)
            envs=("TOKIO_WORKER_THREADS=$PROXY_THREADS") ;;
        nginx)
            fill_template "$TEMPLATES/nginx.conf.tmpl" "$dir/nginx.conf" "$dir" "$PROXY_PORT"
            cmd=(nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/startup.log") ;;
        haproxy)
            fill_template "$TEMPLATES/haproxy.cfg.tmpl" "$dir/haproxy.cfg" "$dir" "$PROXY_PORT"
            cmd=(haproxy -db -f "$dir/haproxy.cfg") ;;
        caddy)
            fill_template "$TEMPLATES/Caddyfile.tmpl" "$dir/Caddyfile" "$dir" "$PROXY_PORT"
            cmd=(caddy run --adapter caddyfile --config "$dir/Caddyfile")
            envs=("GOMAXPROCS=$PROXY_THREADS" "HOME=$dir" "XDG_DATA_HOME=$dir" "XDG_CONFIG_HOME=$dir") ;;
        *) log "unknown proxy $name"; return 1 ;;
    esac
    printf '%s %s\n' "${envs[*]}" "${cmd[*]//"$RUN_DIR"\/bin\//target/release/}" > "$dir/proxy.cmd"
    log "starting $name: ${envs[*]} ${cmd[*]}"
    (
        ulimit -n "$NOFILE" 2>/dev/null || true
        exec env "${envs[@]}" "${cmd[@]}"
    ) > "$dir/proxy.log" 2>&1 &
    PROXY_PID=$!
    if ! wait_health "$PROXY_PORT" "$PROXY_PID" "$name" "$dir/proxy.log"; then
        stop_proxy
        return 1
    fi
    log "$name (pid $PROXY_PID, $("$PY" "$PROCTREE" pids "$PROXY_PID" | wc -l) process(es)) on 127.0.0.1:$PROXY_PORT"
}

# echo_run DIR NAME CONNS INFLIGHT: one echo run, with the measured process tree's CPU ticks
echo_run() {
    local dir="$1" name="$2" conns="$3" inflight="$4" t0 t1
    local planned=$(( $(secs_of "$ECHO_DURATION") + $(secs_of "$ECHO_WARMUP") + conns / 500 + 5 ))
    t0="$(tree_ticks "$MEASURED_PID")"
    run_bench "$dir" "$name" "$planned" echo --url "ws://127.0.0.1:$PROXY_PORT/ws" \
        -c "$conns" -w "$inflight" -s "$ECHO_SIZE" -d "$ECHO_DURATION" --warmup "$ECHO_WARMUP" \
        --handshake-concurrency "$HANDSHAKE_CONCURRENCY" --pid "$MEASURED_PID"
    t1="$(tree_ticks "$MEASURED_PID")"
    printf '{"ticks": %s, "clkTck": %s}\n' "$((t1 - t0))" "$CLK_TCK" > "$dir/$name.proc.json"
    wait_drained "$UPSTREAM_ADMIN"
}

# idle_run DIR: IDLE_CONNS idle connections held IDLE_HOLD; the tree's RSS sampled meanwhile
idle_run() {
    local dir="$1"
    local planned=$(( IDLE_CONNS / 500 + $(secs_of "$IDLE_HOLD") + 5 )) base
    base="$("$PY" "$PROCTREE" rss "$MEASURED_PID")"
    NO_WAIT=1 run_bench "$dir" idle "$planned" idle --url "ws://127.0.0.1:$PROXY_PORT/ws" \
        -c "$IDLE_CONNS" --handshake-concurrency "$HANDSHAKE_CONCURRENCY" --hold "$IDLE_HOLD" \
        --pid "$MEASURED_PID"
    "$PY" "$PROCTREE" peak-rss "$MEASURED_PID" --while "$BG_PID" --baseline "$base" > "$dir/idle.proc.json" 2>/dev/null \
        || printf '{}\n' > "$dir/idle.proc.json"
    finish_bench "$dir" idle
    wait_drained "$UPSTREAM_ADMIN"
}

run_proxy() {
    local name="$1" dir="$RUN_DIR/$1" t_start
    mkdir -p "$dir"
    version_of "$name" > "$dir/version" || true
    if [ -n "${MISSING[$name]:-}" ]; then
        printf '%s\n' "${MISSING[$name]}" > "$dir/skipped.txt"
        log "=== $name: skipped: ${MISSING[$name]}"
        return 0
    fi
    log "=== $name"
    t_start="$(date +%s)"
    if ! start_proxy "$name" "$dir"; then
        printf 'did not start: %s\n' "$(tail -n 3 "$dir/proxy.log" 2>/dev/null | tr '\n' ' ')" > "$dir/skipped.txt"
        return 0
    fi
    MEASURED_PID="${PROXY_PID:-$UPSTREAM_PID}"
    "$PY" "$PROCTREE" pids "$MEASURED_PID" | wc -l > "$dir/processes"
    cut -d' ' -f1-3 /proc/loadavg > "$dir/loadavg"
    # Idle first, on a fresh process, so that earlier runs' garbage does not blur the RSS.
    idle_run "$dir"
    echo_run "$dir" thru "$THRU_CONNS" "$THRU_INFLIGHT"
    echo_run "$dir" lat "$LAT_CONNS" "$LAT_INFLIGHT"
    run_bench "$dir" churn $(( $(secs_of "$CHURN_DURATION") + 5 )) churn \
        --url "ws://127.0.0.1:$PROXY_PORT/ws" -c "$CHURN_WORKERS" -d "$CHURN_DURATION" -s "$ECHO_SIZE"
    wait_drained "$UPSTREAM_ADMIN"
    if [ "$RELOAD" = 1 ] && [ "$name" = nginx ]; then
        reload_under_load "$dir" reload nginx_reload
    fi
    if [ "$WSCOPE_RELOAD" = 1 ] && [ "$name" = wscope ]; then
        reload_under_load "$dir" reload wscope_reload_under_load
    fi
    [ "$name" = direct ] || log "stopping $name"
    stop_proxy
    printf '%s\n' "$(( $(date +%s) - t_start ))" > "$dir/elapsed_secs"
    log "=== $name done in $(cat "$dir/elapsed_secs") s"
}

# ---- reload under load ---------------------------------------------------------------------
nginx_reload() { # nginx's own graceful reload: new workers, the old ones finish their connections
    nginx -p "$1" -c "$1/nginx.conf" -e "$1/startup.log" -s reload
}

# >>> wscope reload: NOT MERGED YET. `wscope proxy` has no SIGHUP handler on main, so today this
# most likely ends the proxy (SIGHUP's default action); the run records whether it survived.
# Called only with --with-wscope-reload; once the reload lands, this is the one place to adapt.
wscope_reload_under_load() {
    kill -HUP "$PROXY_PID"
}
# <<< wscope reload

# reload_under_load DIR NAME RELOAD_FN: an echo run of RELOAD_CONNS × 1 for RELOAD_DURATION,
# RELOAD_FN called RELOAD_AT seconds after it started; what bench reports as errors and lost
# connections is what the reload cost.
reload_under_load() {
    local dir="$1" name="$2" fn="$3" rc=0 before after t0 t1
    local planned=$(( $(secs_of "$RELOAD_DURATION") + 5 ))
    before="$("$PY" "$PROCTREE" pids "$PROXY_PID" | wc -l)"
    t0="$(date +%s.%N)"
    NO_WAIT=1 run_bench "$dir" "$name" "$planned" echo --url "ws://127.0.0.1:$PROXY_PORT/ws" \
        -c "$RELOAD_CONNS" -w 1 -s "$ECHO_SIZE" -d "$RELOAD_DURATION" --warmup 0s
    sleep "$RELOAD_AT"
    t1="$(date +%s.%N)"
    log "  $name: $fn at ${RELOAD_AT}s"
    "$fn" "$dir" > "$dir/$name.signal.log" 2>&1 || rc=$?
    sleep 1
    after="$("$PY" "$PROCTREE" pids "$PROXY_PID" 2>/dev/null | wc -l)"
    finish_bench "$dir" "$name"
    local alive=true
    kill -0 "$PROXY_PID" 2>/dev/null || alive=false
    printf '{"action": "%s", "atSecs": %s, "actionExit": %s, "processesBefore": %s, "processesAfter": %s, "aliveAfter": %s}\n' \
        "$fn" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" "$rc" "$before" "$after" "$alive" \
        > "$dir/$name.proc.json"
    "$alive" || { log "  $name: the proxy did not survive $fn"; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=""; }
    wait_drained "$UPSTREAM_ADMIN"
}

# ---- the run -------------------------------------------------------------------------------
start_upstream
for proxy in $PROXIES; do
    run_proxy "$proxy"
done

cat > "$RUN_DIR/settings.json" <<EOF
{
  "mode": "$([ "$QUICK" = 1 ] && echo quick || echo full)",
  "argv": "$ARGV_ORIG",
  "proxies": "$PROXIES",
  "proxyThreads": $PROXY_THREADS,
  "echoDuration": "$ECHO_DURATION", "echoWarmup": "$ECHO_WARMUP", "echoSize": $ECHO_SIZE,
  "thru": {"connections": $THRU_CONNS, "inFlight": $THRU_INFLIGHT},
  "lat": {"connections": $LAT_CONNS, "inFlight": $LAT_INFLIGHT},
  "idleConnections": $IDLE_CONNS, "idleHold": "$IDLE_HOLD",
  "handshakeConcurrency": $HANDSHAKE_CONCURRENCY,
  "churnWorkers": $CHURN_WORKERS, "churnDuration": "$CHURN_DURATION",
  "reload": {"connections": $RELOAD_CONNS, "duration": "$RELOAD_DURATION", "atSecs": $RELOAD_AT},
  "upstream": "$(cat "$RUN_DIR/upstream.cmd")",
  "startedAt": $STARTED_AT, "finishedAt": $(date +%s)
}
EOF
mkdir -p "$(dirname "$OUT")"
doc_args=()
[ "$WRITE_DOC" = 1 ] && doc_args=(--write-doc docs/BENCHMARKS.md)
"$PY" scripts/proxies/report.py "$RUN_DIR" --out "$OUT" "${doc_args[@]}"
log "results: $OUT (raw outputs in $RUN_DIR)"
log "total $(( $(date +%s) - STARTED_AT )) s"
