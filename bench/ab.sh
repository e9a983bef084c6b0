#!/usr/bin/env bash
# Paired A/B of two Torii binaries on the benchmark setup: CPU time per proxied request.
#
# run-torii.sh compares Torii with nginx; between two of its runs this box drifts by several
# per cent (nginx's own figure moved from 19 to 23 µs/req), more than most single changes
# are worth. This script runs both binaries at once (same backend, same pinning: Torii A,
# Torii B and the backend on SERVER_CPU, wrk on CLIENT_CPU) and alternates the load between
# them round by round (A B B A A B ...), so drift hits both alike. Each round reads the
# process's utime+stime from /proc/PID/stat before and after a wrk run and divides by the
# requests wrk completed.
#
# Usage:
#   bench/ab.sh A_BINARY B_BINARY                # ROUNDS=8 DURATION=8
#   ROUNDS=12 NICE=-15 bench/ab.sh /tmp/a /tmp/b
#   B_CONF=bench/conf/torii-resilience.yaml.tmpl bench/ab.sh T T   # one binary, two configs
#
# A_CONF / B_CONF [conf/torii.yaml.tmpl]: the config template of each side.
# WRK_SCRIPT: a wrk Lua script for both sides (e.g. lib/keys.lua: 1,000 distinct x-client keys).
# BENCH_PATH [/hello]: the path requested (/json: the backend's ~1 KiB JSON document).
# A_PATH / B_PATH [BENCH_PATH]: a path per side (a composite route against proxying one call).
#
# Prints one line per round and, at the end, the median CPU µs/req of each, the median of
# the per-pair ratios B/A (< 1: B is cheaper) and the median ratio of requests served per
# round (the backend shares the gateways' CPU, so this understates a gateway-bound loss). Needs wrk, curl, python3, taskset and the
# backend built (cd bench/backend && cargo build --release --locked).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
A_BIN=${1:?usage: ab.sh A_BINARY B_BINARY}
B_BIN=${2:?usage: ab.sh A_BINARY B_BINARY}
BACKEND_BIN=${BACKEND_BIN:-$HERE/backend/target/release/bench-backend}
ROUNDS=${ROUNDS:-8}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-50}
CLIENT_CPU=${CLIENT_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
NICE=${NICE:-0}
BASE_PORT=${BASE_PORT:-18280}
WRK_SCRIPT=${WRK_SCRIPT:-}
wrk_extra=()
[ -n "$WRK_SCRIPT" ] && wrk_extra=(-s "$WRK_SCRIPT")
A_CONF=${A_CONF:-$HERE/conf/torii.yaml.tmpl}
B_CONF=${B_CONF:-$HERE/conf/torii.yaml.tmpl}
A_PATH=${A_PATH:-${BENCH_PATH:-/hello}}
B_PATH=${B_PATH:-${BENCH_PATH:-/hello}}

die() { echo "ab.sh: error: $*" >&2; exit 1; }
for tool in wrk curl python3 taskset; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y wrk curl)"
done
for b in "$A_BIN" "$B_BIN" "$BACKEND_BIN"; do [ -x "$b" ] || die "not executable: $b"; done
[[ $ROUNDS =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 50 ] || die "ROUNDS must be 1..50"
[[ $DURATION =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 1 ] || die "DURATION must be a positive number"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
nice_prefix=()
[ "$NICE" != 0 ] && nice_prefix=(nice -n "$NICE")

backend_port=$BASE_PORT
"${nice_prefix[@]}" taskset -c "$SERVER_CPU" "$BACKEND_BIN" "$backend_port" 1 >"$work/backend.log" 2>&1 &
pids+=($!)

start() { # name binary port admin_port template -> prints pid
  python3 "$HERE/lib/torii_config.py" "$5" "$work/$1.yaml" 1 \
    "127.0.0.1:$3" "127.0.0.1:$4" "127.0.0.1:$backend_port" >/dev/null
  TORII_LOG=warn "${nice_prefix[@]}" taskset -c "$SERVER_CPU" "$2" run --config "$work/$1.yaml" \
    >"$work/$1.log" 2>&1 &
  echo $!
}
a_port=$((BASE_PORT + 10)); b_port=$((BASE_PORT + 20))
a_pid=$(start a "$A_BIN" "$a_port" $((a_port + 1)) "$A_CONF"); pids+=("$a_pid")
b_pid=$(start b "$B_BIN" "$b_port" $((b_port + 1)) "$B_CONF"); pids+=("$b_pid")
for port in "$a_port" "$b_port"; do
  # Ready when it answers at all (a route behind key_auth answers 401 to this probe).
  answered() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/hello")" != 000 ]; }
  for _ in $(seq 300); do
    answered && break
    sleep 0.1
  done
  answered || die "no answer on port $port (logs in $work)"
done

ticks() { # pid -> utime+stime in clock ticks
  local f
  read -r -a f < <(sed 's/^.*) //' "/proc/$1/stat")
  echo $((f[11] + f[12]))
}
hz=$(getconf CLK_TCK)
run() { # pid port path -> "requests cpu_us_per_req"
  local t0 t1 out n
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${wrk_extra[@]}" "http://127.0.0.1:$2$3" >/dev/null
  t0=$(ticks "$1")
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "${wrk_extra[@]}" "http://127.0.0.1:$2$3")
  t1=$(ticks "$1")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  [ -n "$n" ] && [ "$n" -gt 0 ] || die "wrk completed no requests on port $2"
  python3 -c "print($n, round(($t1 - $t0) * 1e6 / $hz / $n, 3))"
}

: >"$work/results"
for r in $(seq "$ROUNDS"); do
  # ABBA order: A first on odd rounds, B first on even ones.
  if [ $((r % 2)) = 1 ]; then order="a b"; else order="b a"; fi
  for w in $order; do
    if [ "$w" = a ]; then res=$(run "$a_pid" "$a_port" "$A_PATH"); else res=$(run "$b_pid" "$b_port" "$B_PATH"); fi
    echo "$r $w $res" >>"$work/results"
    echo "round $r $w: requests=${res% *} cpu_us_per_req=${res#* }"
  done
done
python3 - "$work/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
cpu = {"a": {}, "b": {}}
reqs = {"a": {}, "b": {}}
for r, w, n, c in rows:
    cpu[w][int(r)] = float(c)
    reqs[w][int(r)] = int(n)
ratios = [cpu["b"][r] / cpu["a"][r] for r in cpu["a"] if r in cpu["b"]]
served = [reqs["b"][r] / reqs["a"][r] for r in reqs["a"] if r in reqs["b"]]
ma, mb = statistics.median(cpu["a"].values()), statistics.median(cpu["b"].values())
print(f"AB_RESULT a_cpu_us_per_req={ma:.3f} b_cpu_us_per_req={mb:.3f} "
      f"b_over_a_median={statistics.median(ratios):.4f} "
      f"b_over_a_min={min(ratios):.4f} b_over_a_max={max(ratios):.4f} rounds={len(ratios)} "
      f"b_over_a_requests_median={statistics.median(served):.4f}")
EOF
