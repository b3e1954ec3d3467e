# Shared by scripts/run-peers.sh and scripts/run-proxies.sh (sourced, not run): the open-file
# limit, stopping a process within a bounded wait, free loopback ports, durations in seconds, one
# `wscope bench` run into DIR/NAME.json under a time limit, and waiting until a server has no
# connection left.
#
# The sourcing script defines `log MESSAGE...` and sets NOFILE (the open-file limit wanted),
# WSCOPE (the wscope binary), SCENARIO_GRACE (seconds a bench run may last past its planned
# length) and BG_PID (the bench run in progress, stopped by its cleanup trap); PY is the Python
# to use [default: python3].

# raise_nofile NEEDED WHY: the open-file limit up to NOFILE (else the hard limit), logged, with a
# warning when it stays below NEEDED (WHY says what NEEDED is)
raise_nofile() {
    ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    log "open-file limit for this run: $(ulimit -n)"
    if [ "$(ulimit -n)" -lt "$1" ]; then
        log "warning: open-file limit $(ulimit -n) is below $2 = $1"
    fi
}

stop_pid() { # stop_pid PID WAIT_SECONDS: SIGTERM, then SIGKILL after the bounded wait
    local pid="$1" wait_s="$2" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still running ${wait_s}s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

free_port() {
    "${PY:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

secs_of() { # "10s" / "500ms" / "2m" / "7" -> whole seconds, rounded up
    "${PY:-python3}" - "$1" <<'PYEOF'
import math, re, sys
m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m)?\s*", sys.argv[1])
v = float(m.group(1)); u = m.group(2) or "s"
print(math.ceil(v / 1000 if u == "ms" else v * 60 if u == "m" else v))
PYEOF
}

# bench_cmd [PROGRAM]: the load generator's command words: PROGRAM (default "$WSCOPE"), under
# `taskset -c "$CLIENT_CPUS"` when CLIENT_CPUS is set (run-peers.sh --pin); with PROGRAM
# target/release/wscope, the words the .cmd files record. Unquoted by its callers: no word may
# hold a space.
bench_cmd() {
    printf '%s%s' "${CLIENT_CPUS:+taskset -c $CLIENT_CPUS }" "${1:-$WSCOPE}"
}

# run_bench DIR NAME PLANNED_SECONDS ARGS...: `wscope bench ARGS --json` into DIR/NAME.json (its
# command in NAME.cmd, stderr in NAME.err, NAME.failed when it failed), in the background as
# BG_PID so that Ctrl-C reaches the trap at once (timeout puts the load generator in its own
# process group, out of reach of the terminal's SIGINT). Waits for it, unless NO_WAIT=1: then the
# caller does what it needs meanwhile and calls finish_bench DIR NAME. Always returns 0.
run_bench() {
    local dir="$1" name="$2" planned="$3"
    shift 3
    printf '%s bench %s --json\n' "$(bench_cmd target/release/wscope)" "$*" > "$dir/$name.cmd"
    log "  $name: wscope bench $* --json"
    timeout --kill-after=10 "$((planned + SCENARIO_GRACE))" $(bench_cmd) bench "$@" --json \
        > "$dir/$name.json" 2> "$dir/$name.err" &
    BG_PID=$!
    [ "${NO_WAIT:-0}" = 1 ] || finish_bench "$dir" "$name"
}

finish_bench() { # finish_bench DIR NAME: waits for BG_PID and checks that it wrote JSON
    local dir="$1" name="$2" rc=0
    wait "$BG_PID" || rc=$?
    BG_PID=""
    if [ "$rc" -ne 0 ]; then
        log "  $name: failed (exit $rc): $(tail -n 3 "$dir/$name.err" | tr '\n' ' ')"
        printf '%s\n' "exit $rc: $(tail -n 5 "$dir/$name.err")" > "$dir/$name.failed"
        return 0
    fi
    "${PY:-python3}" -c 'import json,sys; json.load(open(sys.argv[1]))' "$dir/$name.json" 2>/dev/null \
        || { printf 'output is not JSON\n' > "$dir/$name.failed"; log "  $name: output is not JSON"; }
    return 0
}

active_connections() { # active_connections ADMIN_PORT: a wscope's /health activeConnections, or -1
    curl -sS --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null \
        | "${PY:-python3}" -c 'import json,sys; print(json.load(sys.stdin).get("activeConnections", -1))' 2>/dev/null \
        || echo -1
}

# wait_drained ADMIN_PORT: until the wscope (or tracked peer) behind ADMIN_PORT counts no
# connection, at most 15 s, so that runs do not overlap; without a port, one second
wait_drained() {
    local i n
    [ -n "$1" ] || { sleep 1; return 0; }
    for ((i = 0; i < 75; i++)); do
        n="$(active_connections "$1")"
        [ "$n" = 0 ] && return 0
        sleep 0.2
    done
    log "  note: the server still counts $n connections 15 s after the last scenario"
}
