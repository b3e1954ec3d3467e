#!/usr/bin/env bash
# Autobahn|Testsuite conformance of `wscope serve`'s /ws echo route, through the PyPI runner kosoku
# pinned in requirements.txt, in two passes against two servers: sections 1-10 (the message and
# frame limits raised to 16 MiB, the size section 9 sends), then sections 12 and 13
# (permessage-deflate) against a server started with --permessage-deflate.
#
#   bash scripts/conformance/run.sh [--write-doc] [-- EXTRA `wscope serve` FLAGS...]
#
# Creates or reuses a virtualenv at target/kosoku-venv, builds wscope (release), and for each pass
# serves it on two free loopback ports, runs kosoku's fuzzing client against
# ws://127.0.0.1:PORT/ws and stops the server; then prints a per-section table of both passes
# (summarize.py). Exits non-zero if any case is graded other than OK, NON-STRICT or INFORMATIONAL
# (or closes other than OK/INFORMATIONAL), or if a section did not run.
# --write-doc also rewrites docs/CONFORMANCE.md from the run. The extra flags go to both servers.
#
# Reports (JSON + HTML): target/conformance/report-PASS/index.html; server logs:
# target/conformance/server-PASS.log. Environment: KOSOKU_TIMEOUT (seconds for each kosoku run,
# default 1200); WSCOPE_* variables reach the servers as usual (e.g. WSCOPE_ENGINE=tungstenite).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

write_doc=()
serve_extra=()
while (($#)); do
  case "$1" in
    --write-doc) write_doc=(--write-doc); shift ;;
    --) shift; serve_extra=("$@"); break ;;
    -h | --help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

KOSOKU_TIMEOUT="${KOSOKU_TIMEOUT:-1200}"
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
kosoku_pid=""
stop_server() {
  [[ -n $server_pid ]] || return 0
  local pid=$server_pid status=0
  server_pid=""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "conformance: server $pid still running 15 s after SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || status=$?
  return "$status"
}
cleanup() {
  if [[ -n $kosoku_pid ]] && kill -0 "$kosoku_pid" 2>/dev/null; then
    kill -TERM "$kosoku_pid" 2>/dev/null || true # timeout(1) passes it on to kosoku
    wait "$kosoku_pid" 2>/dev/null || true
  fi
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

# One pass: start a server with the pass's flags, run kosoku on its sections, stop the server.
# Sets kosoku_rc, server_rc and kosoku_seconds for the pass; records the commands shown.
declare -A KOSOKU_RC SERVER_RC KOSOKU_SECONDS SHOWN_SERVE SHOWN_KOSOKU
run_pass() {
  local pass=$1 log="$OUT/server-$1.log" report="$OUT/report-$1"
  local -a flags sections selection serve_cmd kosoku_cmd
  read -r -a flags <<<"${PASS_FLAGS[$pass]}"
  read -r -a sections <<<"${PASS_SECTIONS[$pass]}"
  # A port picked this way can be taken before the server binds it: try a few times.
  local port="" admin_port attempt i
  for attempt in 1 2 3 4 5; do
    read -r port admin_port < <(free_ports)
    serve_cmd=("$BIN" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port"
      --stats-interval 0 "${flags[@]}" "${serve_extra[@]}")
    say "$pass: starting wscope serve on 127.0.0.1:$port (admin $admin_port), engine ${engine:-?}, ${flags[*]}"
    "${serve_cmd[@]}" >"$log" 2>&1 &
    server_pid=$!
    for ((i = 0; i < 300; i++)); do # 30 s
      kill -0 "$server_pid" 2>/dev/null || break
      healthy "$port" && break 2
      sleep 0.1
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      cat "$log" >&2
      die "wscope serve did not answer /health on 127.0.0.1:$port within 30 s"
    fi
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    echo "conformance: wscope serve exited before it was ready (attempt $attempt):" >&2
    tail -n 5 "$log" >&2
    port=""
  done
  [[ -n $port ]] || die "wscope serve did not start; see $log"

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
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "conformance: $pass: wscope serve exited during the run; its log:" >&2
    tail -n 20 "$log" >&2
    SERVER_RC[$pass]=1
  fi
  stop_server || { echo "conformance: $pass: wscope serve exited with status $? after SIGTERM" >&2; SERVER_RC[$pass]=1; }

  SHOWN_SERVE[$pass]="$(q wscope serve --listen 127.0.0.1:PORT --admin-listen 127.0.0.1:PORT2 \
    --stats-interval 0 "${flags[@]}" "${serve_extra[@]}")"
  SHOWN_KOSOKU[$pass]="$(q kosoku ws://127.0.0.1:PORT/ws "${selection[@]}" -o "target/conformance/report-$pass")"
}
q() { python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@"; }

for pass in "${PASSES[@]}"; do
  run_pass "$pass"
done

# --- summary ---------------------------------------------------------------------------------
shown_run=(bash scripts/conformance/run.sh "${write_doc[@]}")
((${#serve_extra[@]})) && shown_run+=(-- "${serve_extra[@]}")
summary_args=()
all_sections=()
for pass in "${PASSES[@]}"; do
  summary_args+=(--pass "$pass" "$OUT/report-$pass" "${SHOWN_SERVE[$pass]}" "${SHOWN_KOSOKU[$pass]}"
    "${KOSOKU_SECONDS[$pass]}")
  read -r -a sections <<<"${PASS_SECTIONS[$pass]}"
  all_sections+=("${sections[@]}")
done
set +e
"$VENV/bin/python" "$ROOT/scripts/conformance/summarize.py" "${write_doc[@]}" "${summary_args[@]}" \
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
    die "$pass: wscope serve did not shut down cleanly; see $OUT/server-$pass.log"
  fi
done
say "OK"
