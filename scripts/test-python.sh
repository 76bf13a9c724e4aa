#!/usr/bin/env bash
# Run the Python client suite (tests/clients/python) against real member,
# points, tier and analytics services, started here from debug builds on
# free ports and pointed at each other.
#
#   scripts/test-python.sh [pytest args...]
#   scripts/stack.sh scripts/test-python.sh -k reflection
#
# Postgres and Redis come from scripts/stack.sh: DATABASE_URL and REDIS_URL
# when set, throwaway servers otherwise. Each service gets a fresh schema,
# all one fresh Redis prefix (dropped afterwards when psql and redis-cli
# are at hand); LAUREL_DEV_MODE=1, no metrics listener, for member a
# generated LAUREL_PII_KEY, and for analytics a fast scoring job (200 ms)
# with recommendations rebuilt whenever order lines changed and no cache, so
# a purchase shows in its answers within a tick. pytest sees
# LAUREL_<SERVICE>_ADDR for each (LAUREL_MEMBER_ADDR, ...).
#
# The virtualenv lives in tests/clients/python/.venv (gitignored) and is
# (re)installed from tests/clients/python/requirements.txt when that file
# changes. PYTHON picks the interpreter (default python3). On Debian,
# `python3 -m venv` needs the python3-venv package.
#
# Exits with pytest's status; "no tests collected" (pytest's 5) is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
suite=$repo/tests/clients/python
venv=$suite/.venv
python=${PYTHON:-python3}

log() { printf 'test-python: %s\n' "$*" >&2; }

# --- virtualenv --------------------------------------------------------------
if ! command -v "$python" >/dev/null 2>&1; then
  log "$python not found: install Python 3.11+ (apt-get install -y python3 python3-venv)"
  exit 1
fi
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  log "$python cannot create virtualenvs: apt-get install -y python3-venv"
  exit 1
fi
stamp=$venv/.requirements.sha256
want=$( {
  sha256sum "$suite/requirements.txt"
  "$python" -c 'import sys; print(sys.version)'
} | sha256sum | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  log "creating $venv from requirements.txt"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$suite/requirements.txt"
  echo "$want" >"$stamp"
fi
py=$venv/bin/python

# --- the services ------------------------------------------------------------
# shellcheck source=scripts/stack.sh
source scripts/stack.sh
laurel_stack_up

# name: the cargo package is laurel-<name>. Member asks points for balances
# and tier for tiers (GetMemberCard); points and tier ask member about
# members they never saw; analytics asks points for rewards (next best
# offer) and keeps its facts from the others' events.
services=(member points tier analytics)
packages=()
for name in "${services[@]}"; do packages+=(-p "laurel-$name"); done
cargo build -q "${packages[@]}"
bin_dir=${CARGO_TARGET_DIR:-$repo/target}/debug

run_id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
prefix=pyclient-$run_id
work=$(mktemp -d /tmp/laurel-pyclient.XXXXXX)
declare -A port=() pid=()
taken=" "
for name in "${services[@]}"; do
  # Nothing listens yet, so two draws could meet: draw again.
  until [[ -n ${port[$name]:-} && $taken != *" ${port[$name]} "* ]]; do
    port[$name]=$(laurel_free_port)
  done
  taken+="${port[$name]} "
done

# shellcheck disable=SC2317 # called from the exit hook
cleanup() {
  local name i
  for name in "${!pid[@]}"; do kill -TERM "${pid[$name]}" 2>/dev/null || true; done
  for name in "${!pid[@]}"; do
    for ((i = 0; i < 250; i++)); do
      kill -0 "${pid[$name]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${pid[$name]}" 2>/dev/null || true
  done
  for name in "${services[@]}"; do
    laurel_drop_scratch "pyclient_${run_id}_$name" "$prefix"
  done
  rm -rf "$work"
}
laurel_at_exit cleanup

show_logs() {
  local name
  for name in "${services[@]}"; do
    log "the $name service's log ends with:"
    tail -n 40 "$work/$name.log" >&2 || true
  done
}

for name in "${services[@]}"; do
  (
    trap - INT QUIT TERM HUP EXIT
    # Each service its own schema, all one Redis prefix (events, the card).
    export LAUREL_GRPC_ADDR=127.0.0.1:${port[$name]} LAUREL_METRICS_ADDR=off \
      LAUREL_DB_SCHEMA=pyclient_${run_id}_$name LAUREL_REDIS_PREFIX=$prefix LAUREL_DEV_MODE=1
    for peer in "${services[@]}"; do
      [[ $peer == "$name" ]] || export "LAUREL_${peer^^}_ADDR=http://127.0.0.1:${port[$peer]}"
    done
    if [[ $name == member ]]; then
      LAUREL_PII_KEY=$(head -c 32 /dev/urandom | base64)
      export LAUREL_PII_KEY
    fi
    if [[ $name == analytics ]]; then
      export LAUREL_ANALYTICS_JOB_INTERVAL_MS=200 LAUREL_ANALYTICS_RECOMMEND_INTERVAL_S=0 \
        LAUREL_ANALYTICS_RECOMMEND_CACHE_MS=0 LAUREL_ANALYTICS_RECOMMEND_GRACE_MS=500
    fi
    exec "$bin_dir/laurel-$name" serve
  ) </dev/null >"$work/$name.log" 2>&1 &
  pid[$name]=$!
  log "$name (pid ${pid[$name]}) on 127.0.0.1:${port[$name]}, schema pyclient_${run_id}_$name"
done

for name in "${services[@]}"; do
  if ! "$py" "$suite/wait_serving.py" "127.0.0.1:${port[$name]}" "${pid[$name]}" 120; then
    log "the $name service did not become SERVING"
    show_logs
    exit 1
  fi
done

rc=0
LAUREL_MEMBER_ADDR=127.0.0.1:${port[member]} LAUREL_POINTS_ADDR=127.0.0.1:${port[points]} \
  LAUREL_TIER_ADDR=127.0.0.1:${port[tier]} LAUREL_ANALYTICS_ADDR=127.0.0.1:${port[analytics]} \
  "$py" -m pytest -c "$suite/pytest.ini" \
  --rootdir "$suite" -p no:cacheprovider "$suite" "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
  log "pytest collected no tests: counted as a failure"
  rc=1
fi
if [[ $rc -ne 0 ]]; then
  log "pytest exited $rc"
  show_logs
fi
exit "$rc"
