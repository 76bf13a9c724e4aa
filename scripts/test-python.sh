#!/usr/bin/env bash
# Run the Python client suite (tests/clients/python) against a real member
# service, started here from a debug build on a free port.
#
#   scripts/test-python.sh [pytest args...]
#   scripts/stack.sh scripts/test-python.sh -k reflection
#
# Postgres and Redis come from scripts/stack.sh: DATABASE_URL and REDIS_URL
# when set, throwaway servers otherwise. The service gets a fresh schema and
# Redis prefix (dropped afterwards when psql and redis-cli are at hand), a
# generated LAUREL_PII_KEY, LAUREL_DEV_MODE=1 and no metrics listener.
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

# --- the member service ------------------------------------------------------
# shellcheck source=scripts/stack.sh
source scripts/stack.sh
laurel_stack_up

cargo build -q -p laurel-member
bin=${CARGO_TARGET_DIR:-$repo/target}/debug/laurel-member

run_id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
schema=pyclient_$run_id
prefix=pyclient-$run_id
port=$(laurel_free_port)
work=$(mktemp -d /tmp/laurel-pyclient.XXXXXX)
service_log=$work/member.log
service_pid=""

# shellcheck disable=SC2317 # called from the exit hook
cleanup() {
  local i
  if [[ -n $service_pid ]]; then
    kill -TERM "$service_pid" 2>/dev/null || true
    for ((i = 0; i < 250; i++)); do
      kill -0 "$service_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$service_pid" 2>/dev/null || true
  fi
  laurel_drop_scratch "$schema" "$prefix"
  rm -rf "$work"
}
laurel_at_exit cleanup

(
  trap - INT QUIT TERM HUP EXIT
  LAUREL_PII_KEY=$(head -c 32 /dev/urandom | base64)
  export LAUREL_GRPC_ADDR=127.0.0.1:$port LAUREL_METRICS_ADDR=off \
    LAUREL_DB_SCHEMA=$schema LAUREL_REDIS_PREFIX=$prefix LAUREL_DEV_MODE=1 \
    LAUREL_PII_KEY
  exec "$bin" serve
) </dev/null >"$service_log" 2>&1 &
service_pid=$!
log "member (pid $service_pid) on 127.0.0.1:$port, schema $schema"

if ! "$py" "$suite/wait_serving.py" "127.0.0.1:$port" "$service_pid" 120; then
  log "the member service did not become SERVING; its log:"
  tail -n 40 "$service_log" >&2
  exit 1
fi

rc=0
LAUREL_MEMBER_ADDR=127.0.0.1:$port "$py" -m pytest -c "$suite/pytest.ini" \
  --rootdir "$suite" -p no:cacheprovider "$suite" "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
  log "pytest collected no tests: counted as a failure"
  rc=1
fi
if [[ $rc -ne 0 ]]; then
  log "pytest exited $rc; the member service's log ends with:"
  tail -n 40 "$service_log" >&2
fi
exit "$rc"
