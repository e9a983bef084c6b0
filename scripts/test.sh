#!/usr/bin/env bash
# Runs every test of the workspace. This is the README's test command and what CI runs.
#
# Tests that need Redis read REDIS_URL. When it is unset this script starts a throwaway
# redis-server on a free port (installing the package if missing) and stops it on exit; the
# tests that stop Redis on purpose start their own redis-server. In CI (CI=true) a Redis that
# cannot be started is a failure, never a skip. (PostgreSQL, DATABASE_URL, comes with the
# cluster-config work: `TORII_TEST_SERVICES=all` starts it too.)
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/services.sh
if [[ "${TORII_TEST_SERVICES:-}" == "all" ]]; then
  start_services redis postgres
else
  start_services redis
fi

cargo test --workspace --all-targets --locked "$@"
