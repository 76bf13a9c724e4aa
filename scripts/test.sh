#!/usr/bin/env bash
# Run every test in the workspace against the Postgres and Redis that
# scripts/stack.sh ensures (throwaway ones unless DATABASE_URL / REDIS_URL are
# set). Extra arguments go to `cargo test`, e.g.
#   scripts/test.sh -p laurel-member
#   scripts/test.sh -- --nocapture
# Exits with cargo's status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A throwaway Postgres for tests need not survive a power cut.
export LAUREL_PG_FSYNC=${LAUREL_PG_FSYNC:-off}
# Let the test harness pick its own parallelism.
unset RUST_TEST_THREADS
exec scripts/stack.sh cargo test --workspace --all-targets "$@"
