#!/usr/bin/env bash
# The whole benchmark in one run: builds the release binaries, starts two
# replicas of the member service (A and B: same Postgres, same Redis), the
# points service (asking A about members, consuming the member events) and
# the bare tonic echo server on free ports, runs laurel-bench with everything
# (h2load and the tonic client beside echo and bare echo, A's memory under
# load, B's staleness after writes on A, the points paths, and pgbench running
# the statements of one Earn per transaction on a scratch schema), prints the
# report and stops it all.
#
# The tier service runs too (asking A about members, learning them from the
# member events; A and B ask it and the points service for the card's tier
# and balance): the tier paths, and at the end a re-evaluation of 1,000,000
# members seeded into its schema after a ladder change (--reevaluate; skip it
# with --no-reevaluate or LAUREL_BENCH_REEVALUATE=0, or set another count
# there).
#
#   deploy/bench/run-all.sh [--no-reevaluate] [laurel-bench flags...]
#   deploy/bench/run-all.sh --duration 5 --h2load-n 50000 --json
#
# Postgres and Redis come from scripts/stack.sh (DATABASE_URL / REDIS_URL when
# set, throwaway servers otherwise, with fsync on). The services get fresh
# schemas (member, points, and one for pgbench made by `laurel-points
# migrate`) and one Redis prefix, all dropped afterwards when psql and
# redis-cli are at hand, a generated LAUREL_PII_KEY and LAUREL_DEV_MODE=1; A
# and the points service serve metrics, so the gRPC codes of the h2load runs
# and the group commit's batch sizes can be read. Needs h2load (apt-get
# install nghttp2-client) and pgbench (postgresql-client). Exits with
# laurel-bench's status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

log() { printf 'run-all: %s\n' "$*" >&2; }

if ! command -v h2load >/dev/null 2>&1; then
  log "h2load not found: apt-get install -y nghttp2-client"
  exit 1
fi
if ! command -v pgbench >/dev/null 2>&1; then
  log "pgbench not found: apt-get install -y postgresql-client"
  exit 1
fi

laurel_stack_up
cargo build --release -q -p laurel-member -p laurel-points -p laurel-tier -p laurel-bench
bin=${CARGO_TARGET_DIR:-$repo/target}/release

run_id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
schema=bench_$run_id
points_schema=bench_${run_id}_points
pgbench_schema=bench_${run_id}_pgbench
tier_schema=bench_${run_id}_tier
prefix=bench-$run_id
pii_key=$(head -c 32 /dev/urandom | base64)
work=$(mktemp -d /tmp/laurel-bench.XXXXXX)
declare -A PIDS=()

# shellcheck disable=SC2317 # called from the exit hook
stop_all() {
  local pid i alive
  for pid in "${!PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 250; i++)); do
    alive=""
    for pid in "${!PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ -n $alive ]] || break
    sleep 0.1
  done
  for pid in "${!PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  laurel_drop_scratch "$schema" "$prefix"
  laurel_drop_scratch "$points_schema" "$prefix"
  laurel_drop_scratch "$pgbench_schema" "$prefix"
  laurel_drop_scratch "$tier_schema" "$prefix"
  rm -rf "$work"
}
laurel_at_exit stop_all

# Starts a process in the background with its output in $work/<name>.log;
# sets STARTED_PID.
start() {
  local name=$1
  shift
  (
    trap - INT QUIT TERM HUP EXIT
    exec "$@"
  ) </dev/null >"$work/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS[$STARTED_PID]=$name
}

# Waits until 127.0.0.1:$2 accepts connections while pid $1 lives.
wait_port() {
  local pid=$1 port=$2 name=$3 i
  for ((i = 0; i < 1200; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited; its log:"
      tail -n 30 "$work/$name.log" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not listen on $port within 120 s"
  return 1
}

# The points and tier services' ports first: the member service asks them
# for the card's balance and tier.
points_port=$(laurel_free_port)
points_metrics=$(laurel_free_port)
tier_port=$(laurel_free_port)
tier_metrics=$(laurel_free_port)

member_env=(
  env DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL"
  LAUREL_DB_SCHEMA="$schema" LAUREL_REDIS_PREFIX="$prefix"
  LAUREL_PII_KEY="$pii_key" LAUREL_DEV_MODE=1 RUST_LOG="${RUST_LOG:-warn}"
  LAUREL_POINTS_ADDR="http://127.0.0.1:$points_port"
  LAUREL_TIER_ADDR="http://127.0.0.1:$tier_port"
)

a_port=$(laurel_free_port)
a_metrics=$(laurel_free_port)
# A first: it applies the migrations before it listens.
start member-a "${member_env[@]}" LAUREL_GRPC_ADDR="127.0.0.1:$a_port" \
  LAUREL_METRICS_ADDR="127.0.0.1:$a_metrics" "$bin/laurel-member" serve
a_pid=$STARTED_PID
wait_port "$a_pid" "$a_port" member-a

b_port=$(laurel_free_port)
start member-b "${member_env[@]}" LAUREL_GRPC_ADDR="127.0.0.1:$b_port" \
  LAUREL_METRICS_ADDR=off "$bin/laurel-member" serve
b_pid=$STARTED_PID

bare_port=$(laurel_free_port)
start bare-echo "$bin/laurel-bare-echo" "127.0.0.1:$bare_port"
bare_pid=$STARTED_PID

# The points service: its own schema, the members' Redis prefix (it consumes
# their events), member A to ask about members it has not seen.
start points env DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" \
  LAUREL_DB_SCHEMA="$points_schema" LAUREL_REDIS_PREFIX="$prefix" \
  LAUREL_DEV_MODE=1 RUST_LOG="${RUST_LOG:-warn}" \
  LAUREL_GRPC_ADDR="127.0.0.1:$points_port" LAUREL_METRICS_ADDR="127.0.0.1:$points_metrics" \
  LAUREL_MEMBER_ADDR="http://127.0.0.1:$a_port" "$bin/laurel-points" serve
points_pid=$STARTED_PID

# The tier service: the same, in its own schema.
start tier env DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" \
  LAUREL_DB_SCHEMA="$tier_schema" LAUREL_REDIS_PREFIX="$prefix" \
  LAUREL_DEV_MODE=1 RUST_LOG="${RUST_LOG:-warn}" \
  LAUREL_GRPC_ADDR="127.0.0.1:$tier_port" LAUREL_METRICS_ADDR="127.0.0.1:$tier_metrics" \
  LAUREL_MEMBER_ADDR="http://127.0.0.1:$a_port" "$bin/laurel-tier" serve
tier_pid=$STARTED_PID

# pgbench's scratch schema: the points tables, made as a migration Job would.
env DATABASE_URL="$DATABASE_URL" LAUREL_DB_SCHEMA="$pgbench_schema" RUST_LOG=warn \
  "$bin/laurel-points" migrate >"$work/pgbench-migrate.log" 2>&1 || {
  log "laurel-points migrate for pgbench failed:"
  tail -n 20 "$work/pgbench-migrate.log" >&2
  exit 1
}

wait_port "$b_pid" "$b_port" member-b
wait_port "$bare_pid" "$bare_port" bare-echo
wait_port "$points_pid" "$points_port" points
wait_port "$tier_pid" "$tier_port" tier
log "member A pid $a_pid on $a_port (metrics $a_metrics), member B pid $b_pid on $b_port, bare echo pid $bare_pid on $bare_port, points pid $points_pid on $points_port (metrics $points_metrics), tier pid $tier_pid on $tier_port (metrics $tier_metrics)"

# The re-evaluation of many members after a ladder change, last.
reevaluate=${LAUREL_BENCH_REEVALUATE:-1000000}
bench_args=()
for arg in "$@"; do
  if [[ $arg == --no-reevaluate ]]; then reevaluate=0; else bench_args+=("$arg"); fi
done
reevaluate_args=()
if [[ $reevaluate != 0 ]]; then reevaluate_args=(--reevaluate "$reevaluate"); fi

rc=0
"$bin/laurel-bench" \
  --addr "http://127.0.0.1:$a_port" \
  --replica-addr "http://127.0.0.1:$b_port" \
  --bare-addr "http://127.0.0.1:$bare_port" \
  --metrics-url "http://127.0.0.1:$a_metrics/metrics" \
  --server-pid "$a_pid" \
  --points-addr "http://127.0.0.1:$points_port" \
  --points-metrics-url "http://127.0.0.1:$points_metrics/metrics" \
  --pgbench-url "$DATABASE_URL" --pgbench-schema "$pgbench_schema" \
  --tier-addr "http://127.0.0.1:$tier_port" \
  --tier-metrics-url "http://127.0.0.1:$tier_metrics/metrics" \
  --tier-pid "$tier_pid" \
  --tier-database-url "$DATABASE_URL" --tier-schema "$tier_schema" \
  "${reevaluate_args[@]}" \
  --h2load "${bench_args[@]}" || rc=$?
if [[ $rc -ne 0 ]]; then
  for name in member-a member-b bare-echo points tier; do
    log "$name log ends with:"
    tail -n 15 "$work/$name.log" >&2 || true
  done
fi
exit "$rc"
