#!/usr/bin/env bash
# Autobahn|Testsuite conformance of `wscope serve`'s /ws echo route, sections 1-10 (12 and 13,
# permessage-deflate, are left out), through the PyPI runner kosoku pinned in requirements.txt.
#
#   bash scripts/conformance/run.sh [--write-doc] [-- EXTRA `wscope serve` FLAGS...]
#
# Creates or reuses a virtualenv at target/kosoku-venv, builds wscope (release), serves it on two
# free loopback ports, runs kosoku's fuzzing client against ws://127.0.0.1:PORT/ws, stops the
# server and prints a per-section table (summarize.py). Exits non-zero if any case is graded other
# than OK, NON-STRICT or INFORMATIONAL (or closes other than OK/INFORMATIONAL), or if no case ran.
# --write-doc also rewrites docs/CONFORMANCE.md from the run.
#
# Reports (JSON + HTML): target/conformance/report/index.html; server log: target/conformance/.
# Environment: KOSOKU_TIMEOUT (seconds for the kosoku run, default 1200); WSCOPE_* variables
# reach the server as usual (e.g. WSCOPE_ENGINE=tungstenite).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

write_doc=()
serve_extra=()
while (($#)); do
  case "$1" in
    --write-doc) write_doc=(--write-doc); shift ;;
    --) shift; serve_extra=("$@"); break ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

KOSOKU_TIMEOUT="${KOSOKU_TIMEOUT:-1200}"
SECTIONS=(1 2 3 4 5 6 7 9 10)
VENV="$ROOT/target/kosoku-venv"
REQ="$ROOT/scripts/conformance/requirements.txt"
OUT="$ROOT/target/conformance"
REPORT="$OUT/report"
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
  engine="$("$BIN" serve --help | tr '\n' ' ' | sed -n 's/.*WebSocket engine:[^[]*\[default: *\([^]]*\)\].*/\1/p')"
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

# A port picked this way can be taken before the server binds it: try a few times.
port=""
for attempt in 1 2 3 4 5; do
  read -r port admin_port < <(free_ports)
  serve_cmd=("$BIN" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port"
    --stats-interval 0 "${serve_extra[@]}")
  say "starting wscope serve on 127.0.0.1:$port (admin $admin_port), engine ${engine:-?}"
  "${serve_cmd[@]}" >"$OUT/server.log" 2>&1 &
  server_pid=$!
  for ((i = 0; i < 300; i++)); do # 30 s
    kill -0 "$server_pid" 2>/dev/null || break
    healthy "$port" && break 2
    sleep 0.1
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    cat "$OUT/server.log" >&2
    die "wscope serve did not answer /health on 127.0.0.1:$port within 30 s"
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  echo "conformance: wscope serve exited before it was ready (attempt $attempt):" >&2
  tail -n 5 "$OUT/server.log" >&2
  port=""
done
[[ -n $port ]] || die "wscope serve did not start; see $OUT/server.log"

# --- kosoku --------------------------------------------------------------------------------------
selection=()
for s in "${SECTIONS[@]}"; do selection+=(-i "$s.*"); done
selection+=(-x '12.*' -x '13.*')
rm -rf "$REPORT"
kosoku_cmd=("$VENV/bin/kosoku" "ws://127.0.0.1:$port/ws" "${selection[@]}" -o "$REPORT")
say "kosoku $kosoku_version: sections ${SECTIONS[*]} (at most ${KOSOKU_TIMEOUT}s)"
kosoku_started=$SECONDS
# In the background and waited for, so that a signal to this script is acted on at once
# (timeout(1) runs kosoku in a process group of its own, out of reach of a terminal's Ctrl-C).
timeout --kill-after=30 "$KOSOKU_TIMEOUT" "${kosoku_cmd[@]}" &
kosoku_pid=$!
kosoku_rc=0
wait "$kosoku_pid" || kosoku_rc=$?
kosoku_pid=""
kosoku_seconds=$((SECONDS - kosoku_started))
if ((kosoku_rc == 124 || kosoku_rc == 137)); then
  echo "conformance: kosoku did not finish within ${KOSOKU_TIMEOUT}s" >&2
fi

server_rc=0
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "conformance: wscope serve exited during the run; its log:" >&2
  tail -n 20 "$OUT/server.log" >&2
  server_rc=1
fi
stop_server || { echo "conformance: wscope serve exited with status $? after SIGTERM" >&2; server_rc=1; }

# --- summary ---------------------------------------------------------------------------------
q() { python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@"; }
shown_kosoku=("kosoku" "ws://127.0.0.1:PORT/ws" "${selection[@]}" -o "target/conformance/report")
shown_serve=("wscope" serve --listen 127.0.0.1:PORT --admin-listen 127.0.0.1:PORT2 --stats-interval 0
  "${serve_extra[@]}")
shown_run=(bash scripts/conformance/run.sh "${write_doc[@]}")
((${#serve_extra[@]})) && shown_run+=(-- "${serve_extra[@]}")
set +e
"$VENV/bin/python" "$ROOT/scripts/conformance/summarize.py" "$REPORT" "${write_doc[@]}" \
  --sections "$(
    IFS=,
    echo "${SECTIONS[*]}"
  )" \
  --kosoku-version "$kosoku_version" \
  --command "$(q "${shown_run[@]}")" \
  --kosoku-command "$(q "${shown_kosoku[@]}")" \
  --serve-command "$(q "${shown_serve[@]}")" \
  --engine "${engine:-unknown}" \
  --kosoku-seconds "$kosoku_seconds"
summary_rc=$?
set -e

say "wall time $((SECONDS - started)) s (kosoku ${kosoku_seconds} s); HTML report: ${REPORT#"$ROOT"/}/index.html"
if ((summary_rc != 0)); then
  exit "$summary_rc"
fi
if ((kosoku_rc != 0)); then
  die "kosoku exited with status $kosoku_rc"
fi
if ((server_rc != 0)); then
  die "wscope serve did not shut down cleanly; see $OUT/server.log"
fi
say "OK"
