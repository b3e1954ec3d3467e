#!/usr/bin/env bash
# Autobahn|Testsuite conformance of `wscope serve`'s /ws echo route, through the PyPI runner kosoku
# pinned in requirements.txt, in two passes against two servers: sections 1-10 (the message and
# frame limits raised to 16 MiB, the size section 9 sends), then sections 12 and 13
# (permessage-deflate) against a server started with --permessage-deflate.
#
#   bash scripts/conformance/run.sh [--write-doc] [--through-proxy] [-- EXTRA `wscope serve` FLAGS...]
#
# Creates or reuses a virtualenv at target/kosoku-venv, builds wscope (release), and for each pass
# serves it on two free loopback ports, runs kosoku's fuzzing client against
# ws://127.0.0.1:PORT/ws and stops the server; then prints a per-section table of both passes
# (summarize.py). Exits non-zero if any case is graded other than OK, NON-STRICT or INFORMATIONAL
# (or closes other than OK/INFORMATIONAL), or if a section did not run.
# --write-doc also rewrites docs/CONFORMANCE.md from the run. The extra flags go to both servers.
# --through-proxy runs the same two passes (named proxy-plain, proxy-deflate) through `wscope
# proxy`: each pass's server gets a proxy in front of it (`--upstream http://127.0.0.1:PORT`, on two
# more free ports, with the pass's flags and the extra ones: each hop negotiates compression on its
# own), kosoku talks to the proxy's /ws, and the proxy is stopped before the server; --write-doc
# then rewrites docs/CONFORMANCE-PROXY.md instead.
#
# Reports (JSON + HTML): target/conformance/report-PASS/index.html; server logs:
# target/conformance/server-PASS.log, proxies' target/conformance/proxy-PASS.log. Environment:
# KOSOKU_TIMEOUT (seconds for each kosoku run, default 1200, 2400 through the proxy: each message
# crosses two hops, each inflating and compressing it); WSCOPE_* variables reach the servers
# (and proxies) as usual (e.g. WSCOPE_ENGINE=tungstenite).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

write_doc=()
through_proxy=()
serve_extra=()
while (($#)); do
  case "$1" in
    --write-doc) write_doc=(--write-doc); shift ;;
    --through-proxy) through_proxy=(--through-proxy); shift ;;
    --) shift; serve_extra=("$@"); break ;;
    -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if ((${#through_proxy[@]})); then
  KOSOKU_TIMEOUT="${KOSOKU_TIMEOUT:-2400}"
else
  KOSOKU_TIMEOUT="${KOSOKU_TIMEOUT:-1200}"
fi
# The passes: each its sections and the flags its server gets (before the extra ones).
PASSES=(plain deflate)
declare -A PASS_SECTIONS=([plain]="1 2 3 4 5 6 7 9 10" [deflate]="12 13")
# Both servers leave out their keepalive pings (`--ping-interval 0`): a case takes a ping it did
# not ask for as a wrong answer, and a ping every 30 s would fail whichever case was running.
declare -A PASS_FLAGS=(
  # Section 9 sends messages of up to 16 MiB in one frame; the defaults (1 MiB) would refuse them.
  [plain]="--ping-interval 0 --max-message-size 16MiB --max-frame-size 16MiB"
  [deflate]="--ping-interval 0 --permessage-deflate"
)
# Through the proxy: the same passes, prefixed, each with a proxy on the same flags in front.
if ((${#through_proxy[@]})); then
  for pass in "${PASSES[@]}"; do
    PASS_SECTIONS[proxy-$pass]="${PASS_SECTIONS[$pass]}"
    PASS_FLAGS[proxy-$pass]="${PASS_FLAGS[$pass]}"
  done
  PASSES=(proxy-plain proxy-deflate)
fi
VENV="$ROOT/target/kosoku-venv"
REQ="$ROOT/scripts/conformance/requirements.txt"
OUT="$ROOT/target/conformance"
started=$SECONDS

die() { echo "conformance: error: $*" >&2; exit 1; }
say() { echo "== conformance: $*"; }

mkdir -p "$OUT"
# One run at a time per checkout: the venv and the report directory are shared.
if command -v flock >/dev/null; then
  exec 9>"$OUT/.lock"
  flock -w 1800 9 || die "another run.sh held $OUT/.lock for 30 minutes"
fi

# --- Python and the virtualenv ---------------------------------------------------------------
command -v python3 >/dev/null || die "python3 not found; kosoku needs Python >= 3.10"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "kosoku needs Python >= 3.10, but python3 is $(python3 -V 2>&1)"

venv_ok() { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; }
if ! venv_ok; then
  say "creating virtualenv $VENV"
  rm -rf "$VENV"
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null || ! python3 -m venv "$VENV"; then
    rm -rf "$VENV"
    die "'python3 -m venv' is not available or failed for $(python3 -V 2>&1).
  Install the venv module (Debian/Ubuntu: apt-get install python3-venv, or python3.X-venv
  matching 'python3 -V'), then run this script again."
  fi
fi
if ! cmp -s "$REQ" "$VENV/.requirements.txt" || ! "$VENV/bin/python" -c 'import kosoku' 2>/dev/null; then
  say "installing $(grep -v '^#' "$REQ" | xargs) into $VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r "$REQ" \
    || die "pip could not install $REQ (is PyPI, or PIP_INDEX_URL, reachable?)"
  cp "$REQ" "$VENV/.requirements.txt"
fi
kosoku_version="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kosoku"))')"

# --- wscope ------------------------------------------------------------------------------------
say "building wscope (release)"
cargo build --release --locked -p wscope
target_dir="$(cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$target_dir/release/wscope"
[[ -x "$BIN" ]] || die "no binary at $BIN after the build"

# The engine, for the record: --engine among the extra flags, else WSCOPE_ENGINE, else the default.
engine="${WSCOPE_ENGINE:-}"
for ((i = 0; i < ${#serve_extra[@]}; i++)); do
  case "${serve_extra[i]}" in
    --engine=*) engine="${serve_extra[i]#--engine=}" ;;
    --engine) engine="${serve_extra[i + 1]:-}" ;;
  esac
done
if [[ -z $engine ]]; then
  engine="$("$BIN" serve --help | tr '\n' ' ' | sed -n 's/.*--engine <NAME> *WebSocket implementation[^[]*\[default: *\([^]]*\)\].*/\1/p')"
  engine="${engine:+$engine (default)}"
fi

server_pid=""
proxy_pid=""
kosoku_pid=""
# Stops the process whose pid is in the variable named $1 (a `what`, for the messages: server,
# proxy) with SIGTERM, then SIGKILL after 15 s; empties the variable; returns its exit status.
stop_process() {
  local -n pid_var=$1
  local what=$2
  [[ -n $pid_var ]] || return 0
  local pid=$pid_var status=0
  pid_var=""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "conformance: $what $pid still running 15 s after SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || status=$?
  return "$status"
}
stop_server() { stop_process server_pid server; }
stop_proxy() { stop_process proxy_pid proxy; }
cleanup() {
  if [[ -n $kosoku_pid ]] && kill -0 "$kosoku_pid" 2>/dev/null; then
    kill -TERM "$kosoku_pid" 2>/dev/null || true # timeout(1) passes it on to kosoku
    wait "$kosoku_pid" 2>/dev/null || true
  fi
  stop_proxy || true
  stop_server || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() {
  python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()'
}
healthy() {
  python3 -c '
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
        sys.exit(r.status != 200)
except Exception:
    sys.exit(1)' "http://127.0.0.1:$1/health"
}

# Starts the command "${launch_cmd[@]}" (`what`: wscope serve, wscope proxy) listening on $port,
# its output in $log and its pid in the variable named $pid_name, and waits up to 30 s for its
# /health. Returns 0 once healthy; 1 (the variable emptied) when it exited before, as when its
# port was taken meanwhile; dies when it neither answers nor exits.
declare -a launch_cmd
launch() {
  local what=$1 port=$2 log=$3 attempt=$4 i
  local -n pid_ref=$5
  "${launch_cmd[@]}" >"$log" 2>&1 &
  pid_ref=$!
  for ((i = 0; i < 300; i++)); do # 30 s
    kill -0 "$pid_ref" 2>/dev/null || break
    healthy "$port" && return 0
    sleep 0.1
  done
  if kill -0 "$pid_ref" 2>/dev/null; then
    cat "$log" >&2
    die "$what did not answer /health on 127.0.0.1:$port within 30 s"
  fi
  wait "$pid_ref" 2>/dev/null || true
  pid_ref=""
  echo "conformance: $what exited before it was ready (attempt $attempt):" >&2
  tail -n 5 "$log" >&2
  return 1
}

# Starts the pass's server (and, for a proxy- pass, its proxy) on free ports, trying a few times
# (a port picked this way can be taken before the server binds it). Sets `port`, the one kosoku
# talks to (the proxy's, for a proxy- pass), and `shown_hops`, the server's (and proxy's)
# commands as the summary shows them.
start_hops() {
  local pass=$1 log=$2 attempt serve_port admin_port proxy_port proxy_admin
  local -a serve_cmd
  port=""
  for attempt in 1 2 3 4 5; do
    read -r serve_port admin_port < <(free_ports)
    launch_cmd=("$BIN" serve --listen "127.0.0.1:$serve_port" --admin-listen "127.0.0.1:$admin_port"
      --stats-interval 0 "${flags[@]}" "${serve_extra[@]}")
    say "$pass: starting wscope serve on 127.0.0.1:$serve_port (admin $admin_port), engine ${engine:-?}, ${flags[*]}"
    launch "wscope serve" "$serve_port" "$log" "$attempt" server_pid && port=$serve_port && break
  done
  [[ -n $port ]] || die "wscope serve did not start; see $log"
  shown_hops=("$(q wscope serve --listen 127.0.0.1:PORT --admin-listen 127.0.0.1:PORT2 \
    --stats-interval 0 "${flags[@]}" "${serve_extra[@]}")")
  [[ $pass == proxy-* ]] || return 0

  local proxy_log="$OUT/proxy-$pass.log"
  port=""
  for attempt in 1 2 3 4 5; do
    read -r proxy_port proxy_admin < <(free_ports)
    launch_cmd=("$BIN" proxy --upstream "http://127.0.0.1:$serve_port" --listen "127.0.0.1:$proxy_port"
      --admin-listen "127.0.0.1:$proxy_admin" --stats-interval 0 "${flags[@]}" "${serve_extra[@]}")
    say "$pass: starting wscope proxy on 127.0.0.1:$proxy_port (admin $proxy_admin) in front of 127.0.0.1:$serve_port"
    launch "wscope proxy" "$proxy_port" "$proxy_log" "$attempt" proxy_pid && port=$proxy_port && break
  done
  [[ -n $port ]] || die "wscope proxy did not start; see $proxy_log"
  shown_hops+=("$(q wscope proxy --upstream http://127.0.0.1:PORT --listen 127.0.0.1:PORT3 \
    --admin-listen 127.0.0.1:PORT4 --stats-interval 0 "${flags[@]}" "${serve_extra[@]}")")
}

# After kosoku: whether the process in the variable named $1 (`what`, its log $3) outlived the
# run and then stopped cleanly on SIGTERM. Returns 0 if so, 1 (with the reason on stderr) if not.
check_stop() {
  local pid_name=$1 what=$2 log=$3 pass=$4 status=0 rc=0
  local -n pid_val=$pid_name
  if ! kill -0 "$pid_val" 2>/dev/null; then
    echo "conformance: $pass: $what exited during the run; its log:" >&2
    tail -n 20 "$log" >&2
    rc=1
  fi
  stop_process "$pid_name" "${what#wscope }" || {
    status=$?
    echo "conformance: $pass: $what exited with status $status after SIGTERM" >&2
    rc=1
  }
  return "$rc"
}

# One pass: start a server (and its proxy) with the pass's flags, run kosoku on its sections, stop
# them. Sets KOSOKU_RC, SERVER_RC and KOSOKU_SECONDS for the pass; records the commands shown.
declare -A KOSOKU_RC SERVER_RC KOSOKU_SECONDS SHOWN_SERVE SHOWN_PROXY SHOWN_KOSOKU
run_pass() {
  local pass=$1 log="$OUT/server-$1.log" report="$OUT/report-$1" port
  local -a flags sections selection kosoku_cmd shown_hops
  read -r -a flags <<<"${PASS_FLAGS[$pass]}"
  read -r -a sections <<<"${PASS_SECTIONS[$pass]}"
  start_hops "$pass" "$log"

  selection=()
  for i in "${sections[@]}"; do selection+=(-i "$i.*"); done
  rm -rf "$report"
  kosoku_cmd=("$VENV/bin/kosoku" "ws://127.0.0.1:$port/ws" "${selection[@]}" -o "$report")
  say "$pass: kosoku $kosoku_version, sections ${sections[*]} (at most ${KOSOKU_TIMEOUT}s)"
  local kosoku_started=$SECONDS rc=0
  # In the background and waited for, so that a signal to this script is acted on at once
  # (timeout(1) runs kosoku in a process group of its own, out of reach of a terminal's Ctrl-C).
  timeout --kill-after=30 "$KOSOKU_TIMEOUT" "${kosoku_cmd[@]}" &
  kosoku_pid=$!
  wait "$kosoku_pid" || rc=$?
  kosoku_pid=""
  KOSOKU_RC[$pass]=$rc
  KOSOKU_SECONDS[$pass]=$((SECONDS - kosoku_started))
  if ((rc == 124 || rc == 137)); then
    echo "conformance: $pass: kosoku did not finish within ${KOSOKU_TIMEOUT}s" >&2
  fi

  SERVER_RC[$pass]=0
  # The proxy first: the server then sees the proxy's closes, not a vanished client.
  if [[ -n $proxy_pid ]]; then
    check_stop proxy_pid "wscope proxy" "$OUT/proxy-$pass.log" "$pass" || SERVER_RC[$pass]=1
  fi
  check_stop server_pid "wscope serve" "$log" "$pass" || SERVER_RC[$pass]=1

  SHOWN_SERVE[$pass]="${shown_hops[0]}"
  SHOWN_PROXY[$pass]="${shown_hops[1]:-}"
  SHOWN_KOSOKU[$pass]="$(q kosoku ws://127.0.0.1:PORT/ws "${selection[@]}" -o "target/conformance/report-$pass")"
}
q() { python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@"; }

for pass in "${PASSES[@]}"; do
  run_pass "$pass"
done

# --- summary ---------------------------------------------------------------------------------
shown_run=(bash scripts/conformance/run.sh "${write_doc[@]}" "${through_proxy[@]}")
((${#serve_extra[@]})) && shown_run+=(-- "${serve_extra[@]}")
summary_args=()
all_sections=()
for pass in "${PASSES[@]}"; do
  summary_args+=(--pass "$pass" "$OUT/report-$pass" "${SHOWN_SERVE[$pass]}" "${SHOWN_KOSOKU[$pass]}"
    "${KOSOKU_SECONDS[$pass]}")
  [[ -z ${SHOWN_PROXY[$pass]} ]] || summary_args+=(--proxy "$pass" "${SHOWN_PROXY[$pass]}")
  read -r -a sections <<<"${PASS_SECTIONS[$pass]}"
  all_sections+=("${sections[@]}")
done
set +e
"$VENV/bin/python" "$ROOT/scripts/conformance/summarize.py" "${write_doc[@]}" "${through_proxy[@]}" \
  "${summary_args[@]}" \
  --sections "$(
    IFS=,
    echo "${all_sections[*]}"
  )" \
  --kosoku-version "$kosoku_version" \
  --command "$(q "${shown_run[@]}")" \
  --engine "${engine:-unknown}"
summary_rc=$?
set -e

total_kosoku=0
for pass in "${PASSES[@]}"; do total_kosoku=$((total_kosoku + KOSOKU_SECONDS[$pass])); done
say "wall time $((SECONDS - started)) s (kosoku ${total_kosoku} s); HTML reports: target/conformance/report-{$(IFS=,; echo "${PASSES[*]}")}/index.html"
if ((summary_rc != 0)); then
  exit "$summary_rc"
fi
for pass in "${PASSES[@]}"; do
  if ((KOSOKU_RC[$pass] != 0)); then
    die "$pass: kosoku exited with status ${KOSOKU_RC[$pass]}"
  fi
  if ((SERVER_RC[$pass] != 0)); then
    if [[ $pass == proxy-* ]]; then
      die "$pass: wscope serve or proxy did not shut down cleanly; see $OUT/server-$pass.log and $OUT/proxy-$pass.log"
    fi
    die "$pass: wscope serve did not shut down cleanly; see $OUT/server-$pass.log"
  fi
done
say "OK"
