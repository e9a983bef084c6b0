#!/usr/bin/env bash
# Runs every test of the workspace. This is the README's test command and what CI runs.
#
# Tests that need Redis read REDIS_URL, those that need PostgreSQL (cluster mode) read
# DATABASE_URL. When one is unset this script starts a throwaway server on a free port
# (installing the package if missing) and stops it on exit; the tests that stop Redis on
# purpose start their own redis-server, and the cluster tests cut PostgreSQL off with a TCP
# forwarder. In CI (CI=true) a server that cannot be started is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/services.sh
start_services redis postgres

cargo test --workspace --all-targets --locked "$@"
