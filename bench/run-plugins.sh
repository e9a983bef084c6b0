#!/usr/bin/env bash
# Plugin overhead: CPU microseconds per request of Torii on the same route with and without a
# plugin, with a realistic population (10,000 consumers; 1,000 distinct keys or tokens cycled
# by wrk). Scenarios run interleaved, ROUNDS times, in one Torii process:
#   plain (no plugins) | key (key_auth) | jwths (jwt HS256) | jwtes (jwt ES256) |
#   jwtes0 (jwt ES256 without the verified-token cache: a signature check per request)
#
# Usage:
#   bench/run-plugins.sh                       # ROUNDS=5, DURATION=10
#   NICE=-15 bench/run-plugins.sh              # with CPU priority on a shared box (root)
#   ROUNDS=1 DURATION=3 bench/run-plugins.sh   # smoke run
#
# Knobs: ROUNDS [5] DURATION [10] WARMUP [2] CONNS [50] NICE [0] SKIP_BUILD [0]
#        CLIENT_CPUS [0] SERVER_CPUS [1] (Torii and the backend share SERVER_CPUS, wrk on CLIENT_CPUS)
#        SCENARIOS ["plain key jwths jwtes jwtes0"] CONSUMERS [10000] DISTINCT [1000]
# Prints one BENCH_PLUGIN line per scenario (median over rounds, and overhead over plain).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-10}; WARMUP=${WARMUP:-2}; CONNS=${CONNS:-50}
NICE=${NICE:-0}; SKIP_BUILD=${SKIP_BUILD:-0}
CLIENT_CPUS=${CLIENT_CPUS:-0}; SERVER_CPUS=${SERVER_CPUS:-1}
SCENARIOS=${SCENARIOS:-"plain key jwths jwtes jwtes0"}
CONSUMERS=${CONSUMERS:-10000}; DISTINCT=${DISTINCT:-1000}
PORT=${PORT:-18190}; ADMIN_PORT=${ADMIN_PORT:-18191}; BACKEND_PORT=${BACKEND_PORT:-18180}
TORII_BIN=$REPO/target/release/torii
BACKEND_BIN=$HERE/backend/target/release/bench-backend
OUT=${RESULTS_DIR:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)-plugins}
HZ=$(getconf CLK_TCK)

die() { echo "run-plugins.sh: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
for t in wrk taskset curl python3; do command -v $t >/dev/null || die "missing $t"; done

if [ "$SKIP_BUILD" != 1 ]; then
  (cd "$REPO" && cargo build --release -p torii) || die "Torii build failed"
  (cd "$HERE/backend" && cargo build --release --locked) || die "backend build failed"
fi
mkdir -p "$OUT"
python3 "$HERE/lib/plugin_bench.py" "$OUT" "127.0.0.1:$PORT" "127.0.0.1:$ADMIN_PORT" \
  "127.0.0.1:$BACKEND_PORT" "$CONSUMERS" "$DISTINCT" || die "cannot render the config"
"$TORII_BIN" validate --config "$OUT/torii.yaml" >&2 || die "Torii rejected the config"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
run_bg() { nice -n "$NICE" taskset -c "$SERVER_CPUS" "$@" & PIDS+=($!); }
run_bg "$BACKEND_BIN" "$BACKEND_PORT" 1 >"$OUT/backend.log" 2>&1
TORII_LOG=warn run_bg "$TORII_BIN" run --config "$OUT/torii.yaml" >"$OUT/torii.log" 2>&1
TORII_PID=${PIDS[1]}
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/plain" >/dev/null 2>&1 && break; sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/plain" >/dev/null || die "Torii did not come up (see $OUT/torii.log)"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/key")" = 401 ] \
  || die "/key does not require a key"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
header_of() { case $1 in key) echo x-api-key;; jwt*) echo authorization;; *) echo x-bench;; esac; }
prefix_of() { case $1 in jwt*) echo "Bearer ";; *) echo "";; esac; }
TSV=$OUT/runs.tsv; printf 'round\tscenario\trequests\tcpu_s\tus_per_req\trps\n' >"$TSV"
for r in $(seq 1 "$ROUNDS"); do
  for s in $SCENARIOS; do
    export BENCH_HEADER=$(header_of "$s") BENCH_PREFIX=$(prefix_of "$s") BENCH_VALUES=$OUT/$s.values
    url="http://127.0.0.1:$PORT/$s"
    nice -n "$NICE" taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$HERE/lib/cycle.lua" "$url" >/dev/null
    t0=$(ticks "$TORII_PID")
    nice -n "$NICE" taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$HERE/lib/cycle.lua" "$url" >"$OUT/r$r-$s.txt"
    t1=$(ticks "$TORII_PID")
    grep -q "Non-2xx" "$OUT/r$r-$s.txt" && die "$s: non-2xx responses (see $OUT/r$r-$s.txt)"
    reqs=$(awk '/requests in/ {print $1}' "$OUT/r$r-$s.txt")
    rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/r$r-$s.txt")
    awk -v r="$r" -v s="$s" -v n="$reqs" -v d="$((t1 - t0))" -v hz="$HZ" -v rps="$rps" \
      'BEGIN { cpu = d / hz; printf "%s\t%s\t%d\t%.3f\t%.3f\t%s\n", r, s, n, cpu, cpu * 1e6 / n, rps }' >>"$TSV"
    log "round $r $s: $(tail -1 "$TSV" | cut -f5) us/req, $rps req/s"
  done
done
awk -F'\t' 'NR > 1 { v[$2] = v[$2] " " $5; q[$2] = q[$2] " " $6 }
  function median(list,   a, n, i, j, t) { n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  END { base = median(v["plain"]); for (s in v) { m = median(v[s])
    printf "BENCH_PLUGIN scenario=%s us_per_req=%.2f overhead_us=%.2f rps=%.0f runs=%s\n", s, m, m - base, median(q[s]), v[s] } }' \
  "$TSV" | sort
log "results in $OUT"
