# Shared by the scripts in scripts/cluster/ (sourced, not run): start `wscope serve` instances on
# loopback, alone or as members of one cluster over Redis, wait until they are ready, read their
# admin API, and on exit (Ctrl-C included) stop every instance started here and delete the keys
# of every cluster named here.
#
#   BIN        the wscope binary [default: target/release/wscope]
#   REDIS_URL  [default: redis://127.0.0.1:6379]
#   OUT        where logs and JSON results go [default: a new directory under /tmp]

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="${BIN:-target/release/wscope}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
OUT="${OUT:-$(mktemp -d /tmp/wscope-cluster.XXXXXX)}"
mkdir -p "$OUT"
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p wscope" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli is needed" >&2; exit 1; }

SERVER_PIDS=()
CLUSTERS=()
BG_PIDS=()

cleanup() {
    local p c
    for p in "${BG_PIDS[@]}" "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${BG_PIDS[@]}" "${SERVER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for c in "${CLUSTERS[@]}"; do drop_keys "$c"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A cluster name no other run shares.
cluster_name() { echo "bench-$1-$$-$(date +%s%N)"; }

# Deletes every key of cluster $1.
drop_keys() {
    redis-cli -u "$REDIS_URL" --scan --pattern "wscope:$1:*" | xargs -r redis-cli -u "$REDIS_URL" unlink >/dev/null
}

# start_instance ID PORT ADMIN_PORT CLUSTER [serve flags...]: starts `wscope serve` on
# 127.0.0.1:PORT (admin on ADMIN_PORT), a member of CLUSTER (standalone when CLUSTER is "-"), and
# waits (at most 20 s) until its admin API answers. Its pid is in $LAST_PID. Call it in the
# script's own shell, never inside a pipeline or $(...): a subshell's pids escape the clean-up.
start_instance() {
    local id=$1 port=$2 admin=$3 cluster=$4
    shift 4
    local cluster_flags=()
    if [ "$cluster" != "-" ]; then
        cluster_flags=(--redis-url "$REDIS_URL" --cluster-name "$cluster" --instance-id "$id")
        case " ${CLUSTERS[*]} " in *" $cluster "*) ;; *) CLUSTERS+=("$cluster") ;; esac
    fi
    "$BIN" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --stats-interval 0 "${cluster_flags[@]}" "$@" >/dev/null 2>"$OUT/serve-$id-$port.log" &
    LAST_PID=$!
    SERVER_PIDS+=("$LAST_PID")
    local i
    for i in $(seq 1 200); do
        curl -sf -o /dev/null "http://127.0.0.1:$admin/api/stats?connections=0" && return 0
        kill -0 "$LAST_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "instance $id on $port did not start; see $OUT/serve-$id-$port.log" >&2
    tail -5 "$OUT/serve-$id-$port.log" >&2
    exit 1
}

# stop_instances: stops every instance started so far (SIGTERM, then waits).
stop_instances() {
    local p
    for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${SERVER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    SERVER_PIDS=()
}

# wait_members ADMIN_PORT N: waits (at most 20 s) until the instance's cluster stats count N
# instances.
wait_members() {
    local admin=$1 n=$2 i got
    for i in $(seq 1 200); do
        got=$(curl -sf "http://127.0.0.1:$admin/api/cluster/stats" | jq -r '.instancesCounted // 0' 2>/dev/null || echo 0)
        [ "$got" = "$n" ] && return 0
        sleep 0.1
    done
    echo "the cluster on admin port $admin counts $got instances, not $n" >&2
    exit 1
}

# redis_stat SECTION FIELD: one field of INFO SECTION.
redis_stat() {
    redis-cli -u "$REDIS_URL" info "$1" | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'
}

# redis_calls CMD: calls= of cmdstat_CMD (0 if never called).
redis_calls() {
    redis-cli -u "$REDIS_URL" info commandstats | tr -d '\r' |
        awk -F'[:=,]' -v c="cmdstat_$1" '$1 == c { print $3; found = 1 } END { if (!found) print 0 }'
}

# redis_cpu: used_cpu_sys + used_cpu_user, in seconds.
redis_cpu() {
    redis-cli -u "$REDIS_URL" info cpu | tr -d '\r' |
        awk -F: '$1 == "used_cpu_sys" || $1 == "used_cpu_user" { s += $2 } END { printf "%.3f\n", s }'
}
