#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind (callgrind): a deterministic figure
# for A/B-testing a change to the hot path on a noisy machine, where CPU time per request moves
# by +-5 % between runs and a 2 % improvement is invisible. It complements bench/run-torii.sh
# (which gives the real CPU time and throughput against nginx); it does not replace it:
# instruction counts ignore cache misses, system calls and scheduling.
#
# Usage:
#   bench/instructions.sh [TORII_BIN]      # default target/release/torii
#   OUT=/tmp/cg bench/instructions.sh      # keep the profile (callgrind_annotate $OUT.1)
#   VALGRIND_ARGS=--dump-line=yes ...      # extra callgrind options (per-line costs of calls)
#   ROUTES=10000 bench/instructions.sh     # with run-torii.sh's 10,000 generated routes
#   BENCH_PATH=/svc5006/items/42 ...       # request another path (default: run-torii.sh's)
#   CONF_TMPL=bench/conf/torii-resilience.yaml.tmpl ...  # another config template
#   WRK_SCRIPT=bench/lib/api-keys.lua ...  # a wrk Lua script (headers per request)
#
# It renders the benchmark config (ROUTES routes as in run-torii.sh, default 1 catch-all route;
# keep-alive upstream, no access log),
# starts the benchmark backend and Torii under callgrind, warms up with wrk, zeroes the
# counters, sends DURATION seconds of wrk load (CONNS connections), dumps the counters and
# prints `requests=N instructions_per_request=M`. Needs valgrind (apt-get install valgrind),
# wrk, and the backend built (cd bench/backend && cargo build --release --locked).
# Under valgrind Torii serves ~2-3k requests/s; the count per request is stable to ~0.5 %.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
TORII_BIN=${1:-$REPO/target/release/torii}
BACKEND_BIN=${BACKEND_BIN:-$HERE/backend/target/release/bench-backend}
DURATION=${DURATION:-10}
CONNS=${CONNS:-10}
BASE_PORT=${BASE_PORT:-18180}
PORT=${PORT:-18190}
ADMIN_PORT=${ADMIN_PORT:-18191}
OUT=${OUT:-$(mktemp -u /tmp/torii-callgrind.XXXXXX)}
# Torii on one CPU, as in run-torii.sh: that gives it the current-thread runtime the benchmark
# measures (with more CPUs it runs the multi-threaded one, which counts differently).
TORII_CPUS=${TORII_CPUS:-1}

die() { echo "instructions.sh: error: $*" >&2; exit 1; }
for tool in valgrind callgrind_control callgrind_annotate wrk curl python3 taskset; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y valgrind wrk curl)"
done
[ -x "$TORII_BIN" ] || die "no Torii binary at $TORII_BIN (cargo build --release -p torii)"
[ -x "$BACKEND_BIN" ] || die "no backend at $BACKEND_BIN (cd bench/backend && cargo build --release --locked)"

BACKEND_PORT=$BASE_PORT
# shellcheck source=lib/single.sh
. "$HERE/lib/single.sh"
start_backend
TORII_LOG=warn taskset -c "$TORII_CPUS" valgrind --tool=callgrind --callgrind-out-file="$OUT" --dump-instr=no ${VALGRIND_ARGS:-} \
  "$TORII_BIN" run --config "$work/torii.yaml" >"$work/torii.log" 2>&1 &
vg=$!
pids+=($vg)
# Loading 10,000 routes under valgrind takes a while.
WAIT_SECONDS=${WAIT_SECONDS:-600} wait_for_torii "$vg"
url="http://127.0.0.1:$PORT${BENCH_PATH:-$bench_path}"
wrk_extra=()
[ -n "${WRK_SCRIPT:-}" ] && wrk_extra=(-s "$WRK_SCRIPT")
wrk -t1 -c"$CONNS" -d3s "${wrk_extra[@]}" "$url" >/dev/null
callgrind_control -z "$vg" >/dev/null
wrk -t1 -c"$CONNS" -d"${DURATION}s" "${wrk_extra[@]}" "$url" >"$work/wrk.out"
callgrind_control -d "$vg" >/dev/null
requests=$(awk '/requests in/{print $1}' "$work/wrk.out")
[ -s "$OUT.1" ] || die "no callgrind dump at $OUT.1"
total=$(callgrind_annotate "$OUT.1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
echo "requests=$requests instructions_total=$total instructions_per_request=$((total / requests)) profile=$OUT.1"
