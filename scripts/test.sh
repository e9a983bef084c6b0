#!/usr/bin/env bash
# Runs every test of the workspace. This is the README's test command and what CI runs.
#
# Tests that need Redis or PostgreSQL read REDIS_URL / DATABASE_URL. When those are unset this
# script starts throwaway instances on free ports (installing the server packages if missing)
# and stops them on exit. In CI (CI=true) a service that cannot be started is a failure.
# (The current test suite needs neither yet; the hook is here so later suites plug in.)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${TORII_TEST_SERVICES:-}" == "1" ]]; then
  source scripts/services.sh
  start_services
fi

cargo test --workspace --all-targets --locked "$@"
