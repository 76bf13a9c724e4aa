#!/usr/bin/env bash
# The analytics benchmark in one run: builds the release laurel-analytics and
# laurel-analytics-bench, starts the analytics service on a fresh schema (it
# applies its migrations before it listens), makes the Python virtual
# environment of the comparison side (deploy/bench/analytics/requirements.txt:
# DuckDB and lifetimes from PyPI), then runs the bench: it generates 1,000,000
# members and 10,000,000 purchases, loads them with COPY (untimed), times
# RecomputeRfm and FitClvModel with the service's peak memory, the same work
# in DuckDB and lifetimes, FitClvModel and lifetimes on CDNOW, and
# GetRecommendations beside echo under h2load, and prints the ratios against
# the issue's targets.
#
#   deploy/bench/analytics.sh [--quick] [--members N] [--purchases N] [bench flags...]
#
#   --quick          a smoke run: 100,000 members, 1,000,000 purchases, short
#                    h2load runs
#   --members N      members to generate (default 1000000)
#   --purchases N    purchases to aim at (default 10000000)
#   other flags go to laurel-analytics-bench (see its --help), e.g.
#   --line-share 0.5, --no-python, --no-recommendations, --reco-wait 300
#
# Postgres and Redis come from scripts/stack.sh (DATABASE_URL / REDIS_URL when
# set, throwaway servers otherwise, with fsync on). The service runs with
# LAUREL_DEV_MODE=1, a request deadline raised to 30 minutes (runs and fits on
# a million members take longer than the default 10 s) and its scoring job
# parked (LAUREL_ANALYTICS_JOB_INTERVAL_MS: its first pass finds no programme,
# the next would come after the run), so that no scheduled RFM run or value
# scoring competes with the timed calls; after them the bench starts a second
# replica on the same schema with a 1 s job interval, whose scoring job builds
# the recommendation models, and stops it once they are stored. The virtual
# environment is kept in target/analytics-bench-venv (LAUREL_BENCH_VENV
# elsewhere) and remade when requirements.txt changes. The scratch schema,
# Redis prefix and generated files are removed at exit. Needs python3 with venv, h2load (apt-get install
# nghttp2-client) and about 3 GB of free disk under TMPDIR for the full size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

log() { printf 'analytics: %s\n' "$*" >&2; }

members=1000000
purchases=10000000
quick=""
bench_args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1 ;;
    --members) members=$2; shift ;;
    --members=*) members=${1#*=} ;;
    --purchases) purchases=$2; shift ;;
    --purchases=*) purchases=${1#*=} ;;
    *) bench_args+=("$1") ;;
  esac
  shift
done
if [[ -n $quick ]]; then
  members=100000
  purchases=1000000
  bench_args=(--h2load-n 20000 --h2load-warmup 2000 --h2load-rounds 3 --cdnow-rounds 3 "${bench_args[@]}")
fi

if ! command -v h2load >/dev/null 2>&1; then
  log "h2load not found: apt-get install -y nghttp2-client"
  exit 1
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  log "python3 with venv and ensurepip is needed (apt-get install -y python3-venv)"
  exit 1
fi

# The comparison side's environment, remade when its requirements change.
requirements=$repo/deploy/bench/analytics/requirements.txt
venv=${LAUREL_BENCH_VENV:-${CARGO_TARGET_DIR:-$repo/target}/analytics-bench-venv}
stamp=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || $(cat "$venv/.requirements" 2>/dev/null || true) != "$stamp" ]]; then
  log "making the Python environment in $venv (duckdb, lifetimes, pandas from PyPI) ..."
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  echo "$stamp" >"$venv/.requirements"
fi
"$venv/bin/python" -c 'import duckdb, lifetimes, pandas' || {
  log "the Python environment in $venv does not import duckdb, lifetimes and pandas"
  exit 1
}

laurel_stack_up
cargo build --release -q -p laurel-analytics -p laurel-bench
bin=${CARGO_TARGET_DIR:-$repo/target}/release

run_id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
schema=bench_${run_id}_analytics
prefix=bench-$run_id
work=$(mktemp -d "${TMPDIR:-/tmp}/laurel-analytics-bench.XXXXXX")
server_pid=""

# shellcheck disable=SC2317 # called from the exit hook
stop_all() {
  local i
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for ((i = 0; i < 250; i++)); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  laurel_drop_scratch "$schema" "$prefix"
  rm -rf "$work"
}
laurel_at_exit stop_all

port=$(laurel_free_port)
metrics=$(laurel_free_port)
(
  trap - INT QUIT TERM HUP EXIT
  exec env DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" \
    LAUREL_DB_SCHEMA="$schema" LAUREL_REDIS_PREFIX="$prefix" LAUREL_DEV_MODE=1 \
    RUST_LOG="${RUST_LOG:-warn}" LAUREL_GRPC_ADDR="127.0.0.1:$port" \
    LAUREL_METRICS_ADDR="127.0.0.1:$metrics" \
    LAUREL_REQUEST_TIMEOUT_MS=1800000 LAUREL_ANALYTICS_JOB_INTERVAL_MS=86400000 \
    "$bin/laurel-analytics" serve
) </dev/null >"$work/analytics.log" 2>&1 &
server_pid=$!

for ((i = 0; i < 1200; i++)); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    log "laurel-analytics exited; its log:"
    tail -n 30 "$work/analytics.log" >&2
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
log "laurel-analytics pid $server_pid on $port (metrics $metrics), schema $schema; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# The bench inherits the service's settings: it starts a second replica with
# them after the timed calls, whose scoring job builds the recommendation
# models (--scorer-bin).
rc=0
env LAUREL_DB_SCHEMA="$schema" LAUREL_REDIS_PREFIX="$prefix" LAUREL_DEV_MODE=1 \
  LAUREL_REQUEST_TIMEOUT_MS=1800000 \
  "$bin/laurel-analytics-bench" \
  --addr "http://127.0.0.1:$port" \
  --database-url "$DATABASE_URL" --schema "$schema" \
  --server-pid "$server_pid" --metrics-url "http://127.0.0.1:$metrics/metrics" \
  --members "$members" --purchases "$purchases" \
  --python "$venv/bin/python" --scripts "$repo/deploy/bench/analytics" \
  --cdnow "$repo/services/analytics/models/data/cdnow/CDNOW_sample.txt" \
  --scorer-bin "$bin/laurel-analytics" \
  --work "$work" "${bench_args[@]}" || rc=$?
if [[ $rc -ne 0 ]]; then
  log "laurel-analytics log ends with:"
  tail -n 20 "$work/analytics.log" >&2 || true
fi
exit "$rc"
