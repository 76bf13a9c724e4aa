#!/usr/bin/env bash
# Run the Laurel suite locally: every service below, against the Postgres and
# Redis that scripts/stack.sh ensures (throwaway ones unless DATABASE_URL /
# REDIS_URL are set). Ctrl-C stops the services and the throwaway servers.
#
#   scripts/run.sh              all services: member 50051, points 50052,
#                               tier 50053, analytics 50055 (gRPC on
#                               127.0.0.1; metrics 9464 to 9466 and 9468)
#   scripts/run.sh member       only the named ones
#
# The services are built once (release), then each is started with
# `<bin> serve` (which applies its migrations) in the background with its own
# LAUREL_GRPC_ADDR and LAUREL_METRICS_ADDR, and with LAUREL_<OTHER>_ADDR
# (http://host:port) pointing at every other service of the list (member
# asks points for balances and tier for tiers, points and tier ask member
# about members they never saw, analytics asks points for the rewards of the
# next best offer), unless the environment sets that address already. All
# share the environment's LAUREL_REDIS_PREFIX (default laurel), so they read
# one another's events and card fields (analytics keeps its facts from the
# member, points and tier events); each keeps its own Postgres schema (its
# name). If one exits, all stop and the script exits with that service's
# status. Other settings the services read (LAUREL_PII_KEYS, LAUREL_API_KEYS,
# LAUREL_POINTS_API_KEY, LAUREL_TIER_API_KEY, LAUREL_MEMBER_API_KEY,
# LAUREL_ANALYTICS_*, RUST_LOG, ...) pass through from the environment.
# LAUREL_DEV_MODE defaults to 1 here (see below), for every service.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

HOST=${LAUREL_RUN_HOST:-127.0.0.1}

# One line per service: name, gRPC port, metrics port (each binary's own
# defaults; 50054 and 9467 are kept for the campaign service). The cargo
# package is laurel-<name>.
SERVICES=(
  "member 50051 9464"
  "points 50052 9465"
  "tier 50053 9466"
  "analytics 50055 9468"
)

selected=()
if [[ $# -gt 0 ]]; then
  for want in "$@"; do
    found=""
    for line in "${SERVICES[@]}"; do
      read -r name _ <<<"$line"
      if [[ $name == "$want" ]]; then selected+=("$line"); found=1; fi
    done
    [[ -n $found ]] || { echo "run: unknown service '$want'" >&2; exit 2; }
  done
else
  selected=("${SERVICES[@]}")
fi

packages=()
for line in "${selected[@]}"; do
  read -r name _ <<<"$line"
  packages+=(-p "laurel-$name")
done

laurel_stack_up

# The services refuse to start without API keys and a PII key unless the
# development switch is on. This script is for trying Laurel locally, so it
# turns the switch on unless the caller decided otherwise, and says so.
export LAUREL_DEV_MODE=${LAUREL_DEV_MODE:-1}
if [[ $LAUREL_DEV_MODE == 1 ]]; then
  echo "run: LAUREL_DEV_MODE=1: development mode (no API keys: authentication off; a development PII key unless LAUREL_PII_KEYS is set). Never use it in production." >&2
fi

cargo build --release "${packages[@]}"
# The binaries of that one build: `cargo run -p` per service would select
# one package at a time, unify dependency features differently and rebuild.
bin_dir=${CARGO_TARGET_DIR:-$PWD/target}/release

declare -A PIDS=()
# shellcheck disable=SC2317 # called from the exit hook
stop_services() {
  local pid i
  for pid in "${!PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 250; i++)); do
    local alive=""
    for pid in "${!PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ -n $alive ]] || return 0
    sleep 0.1
  done
  for pid in "${!PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
laurel_at_exit stop_services

for line in "${selected[@]}"; do
  read -r name grpc_port metrics_port <<<"$line"
  # The subshell execs the binary, so $! is the service itself. Default SIGINT
  # handling is restored so Ctrl-C reaches it as a graceful shutdown.
  (
    trap - INT QUIT TERM HUP EXIT
    export LAUREL_GRPC_ADDR="$HOST:$grpc_port" LAUREL_METRICS_ADDR="$HOST:$metrics_port"
    for peer in "${SERVICES[@]}"; do
      read -r peer_name peer_port _ <<<"$peer"
      [[ $peer_name != "$name" ]] || continue
      var="LAUREL_${peer_name^^}_ADDR"
      [[ -n ${!var:-} ]] || export "$var=http://$HOST:$peer_port"
    done
    exec "$bin_dir/laurel-$name" serve
  ) </dev/null &
  PIDS[$!]=$name
  echo "run: $name gRPC on $HOST:$grpc_port, metrics on http://$HOST:$metrics_port/metrics (pid $!)" >&2
done

# Report each service once its gRPC port accepts connections.
for pid in "${!PIDS[@]}"; do
  for line in "${selected[@]}"; do
    read -r name grpc_port _ <<<"$line"
    [[ $name == "${PIDS[$pid]}" ]] || continue
    for ((i = 0; i < 1200; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      if (exec 3<>"/dev/tcp/$HOST/$grpc_port") 2>/dev/null; then
        echo "run: $name ready at $HOST:$grpc_port" >&2
        break
      fi
      sleep 0.1
    done
  done
done

summary=""
for line in "${selected[@]}"; do
  read -r name grpc_port _ <<<"$line"
  summary+="${summary:+, }$name $HOST:$grpc_port"
done
echo "run: all started ($summary); Ctrl-C stops everything" >&2
rc=0
exited=""
wait -n -p exited "${!PIDS[@]}" || rc=$?
if [[ -n $exited ]]; then
  echo "run: ${PIDS[$exited]} exited with status $rc; stopping the rest" >&2
  unset "PIDS[$exited]"
fi
exit "$rc"
