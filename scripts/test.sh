#!/usr/bin/env bash
# Run every test against the Postgres and Redis that scripts/stack.sh ensures
# (throwaway ones unless DATABASE_URL / REDIS_URL are set): the Rust
# workspace's tests, then the Python client suite (tests/clients/python)
# against running member and points services. Extra arguments go to
# `cargo test` and skip the Python suite unless LAUREL_TEST_PYTHON=1, e.g.
#   scripts/test.sh -p laurel-member
#   scripts/test.sh -- --nocapture
# Exits non-zero if any part failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z ${_LAUREL_TEST_INNER:-} ]]; then
  # A throwaway Postgres for tests need not survive a power cut.
  export LAUREL_PG_FSYNC=${LAUREL_PG_FSYNC:-off}
  # Let the test harness pick its own parallelism.
  unset RUST_TEST_THREADS
  exec env _LAUREL_TEST_INNER=1 scripts/stack.sh "$0" "$@"
fi

status=0
cargo test --workspace --all-targets "$@" || status=1
if [[ $# -eq 0 || ${LAUREL_TEST_PYTHON:-} == 1 ]]; then
  echo "test: Python client suite" >&2
  scripts/test-python.sh || status=1
fi
exit "$status"
