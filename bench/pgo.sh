#!/usr/bin/env bash
# Profile-guided build of Torii (PGO): an instrumented build serves a proxy workload, the
# profile it writes is merged with llvm-profdata, and a second build uses it to lay out and
# inline the hot path. On the benchmark it cuts instructions per proxied request by ~21 % and
# CPU time by ~4 % (docs/performance.md, "Profile-guided build").
#
# Usage:
#   bench/pgo.sh                       # -> target/pgo/release/torii
#   SKIP_BUILD=1 TORII_BIN=target/pgo/release/torii NICE=-15 bench/run-torii.sh
#
# Needs: llvm-profdata from an LLVM no older than the profile format rustc writes (Debian 12:
# apt-get install -y llvm-19; rustc's LLVM 22 raw profiles are read by llvm-profdata-19), wrk,
# curl, python3, taskset, and the benchmark backend built (cd bench/backend && cargo build
# --release --locked). Knobs: TRAIN_SECONDS [10], PORT [18390], ADMIN_PORT [18391],
# BACKEND_PORT [18380], PROFDATA (path of llvm-profdata; default: the newest llvm-profdata-N).
#
# The training load is the benchmark's own shape (HTTP/1.1 keep-alive through one route to a
# pooled upstream, small and 976-byte bodies): the profile favours the proxy path, which is
# what a gateway spends its time on. Paths it does not exercise are compiled as usual, only
# without profile hints.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
TRAIN_SECONDS=${TRAIN_SECONDS:-10}
PORT=${PORT:-18390}
ADMIN_PORT=${ADMIN_PORT:-18391}
BACKEND_PORT=${BACKEND_PORT:-18380}
BACKEND_BIN=${BACKEND_BIN:-$HERE/backend/target/release/bench-backend}
GEN_DIR=$REPO/target/pgo-gen
USE_DIR=$REPO/target/pgo
DATA=$REPO/target/pgo-data

die() { echo "pgo.sh: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

if [ -z "${PROFDATA:-}" ]; then
  PROFDATA=$(compgen -c llvm-profdata- | sort -t- -k3 -n | tail -1 || true)
  [ -n "$PROFDATA" ] || PROFDATA=llvm-profdata
fi
for tool in "$PROFDATA" wrk curl python3 taskset; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y llvm-19 wrk curl)"
done
[ -x "$BACKEND_BIN" ] || die "no backend at $BACKEND_BIN (cd bench/backend && cargo build --release --locked)"

log "instrumented build -> $GEN_DIR"
rm -rf "$DATA"
mkdir -p "$DATA"
(cd "$REPO" && RUSTFLAGS="-Cprofile-generate=$DATA/build" \
  cargo build --release -p torii --locked --target-dir "$GEN_DIR")

# shellcheck source=lib/single.sh
. "$HERE/lib/single.sh"
ROUTES=1 start_backend  # the training load is the 1-route benchmark
# One CPU, as in the benchmark: the current-thread runtime is the one measured.
LLVM_PROFILE_FILE="$DATA/torii-%p-%m.profraw" TORII_LOG=warn taskset -c 1 \
  "$GEN_DIR/release/torii" run --config "$work/torii.yaml" >"$work/torii.log" 2>&1 &
torii=$!
pids+=($torii)
wait_for_torii "$torii"
log "training: ${TRAIN_SECONDS}s of /hello, $((TRAIN_SECONDS / 2))s of /json"
taskset -c 0 wrk -t1 -c50 -d"${TRAIN_SECONDS}s" "http://127.0.0.1:$PORT/hello" | grep Requests/sec
taskset -c 0 wrk -t1 -c50 -d"$((TRAIN_SECONDS / 2))s" "http://127.0.0.1:$PORT/json" | grep Requests/sec
# The profile is written when the process exits normally (SIGTERM: graceful shutdown, exit 0).
kill -TERM "$torii"
wait "$torii" || die "Torii did not exit cleanly: $(tail -5 "$work/torii.log")"
compgen -G "$DATA/torii-*.profraw" >/dev/null || die "no profile written in $DATA"
"$PROFDATA" merge -o "$DATA/torii.profdata" "$DATA"/torii-*.profraw

log "optimised build -> $USE_DIR"
(cd "$REPO" && RUSTFLAGS="-Cprofile-use=$DATA/torii.profdata" \
  cargo build --release -p torii --locked --target-dir "$USE_DIR")
log "done: $USE_DIR/release/torii"
