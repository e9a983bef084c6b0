#!/usr/bin/env bash
# Latency a composition adds over its slowest backend call (issue 19's budget: at most 1 ms
# at the median, at moderate load). The backend's /delay/10 answers after 10 ms; Torii's
# /compose-slow (conf/torii-compose.yaml.tmpl) makes three such calls in parallel. Each
# round runs wrk with --latency at CONNS connections against the backend directly and
# against Torii, alternating which goes first, and prints both medians and their
# difference; the last line is the median of the per-round differences.
#
# Usage: bench/compose-latency.sh TORII_BINARY      # ROUNDS=5 DURATION=8 CONNS=8
# Needs wrk, curl, python3, taskset and the backend built (cd bench/backend && cargo build
# --release --locked).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${1:?usage: compose-latency.sh TORII_BINARY}
BACKEND_BIN=${BACKEND_BIN:-$HERE/backend/target/release/bench-backend}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
CONNS=${CONNS:-8}
CLIENT_CPU=${CLIENT_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
BASE_PORT=${BASE_PORT:-18380}
DELAY_MS=${DELAY_MS:-10}

die() { echo "compose-latency.sh: error: $*" >&2; exit 1; }
for tool in wrk curl python3 taskset; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y wrk curl)"
done
for b in "$BIN" "$BACKEND_BIN"; do [ -x "$b" ] || die "not executable: $b"; done

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

backend_port=$BASE_PORT
torii_port=$((BASE_PORT + 10))
taskset -c "$SERVER_CPU" "$BACKEND_BIN" "$backend_port" 1 >"$work/backend.log" 2>&1 &
pids+=($!)
python3 "$HERE/lib/torii_config.py" "$HERE/conf/torii-compose.yaml.tmpl" "$work/torii.yaml" 1 \
  "127.0.0.1:$torii_port" "127.0.0.1:$((torii_port + 1))" "127.0.0.1:$backend_port" >/dev/null
sed -i "s#/delay/10#/delay/$DELAY_MS#g" "$work/torii.yaml"
TORII_LOG=warn taskset -c "$SERVER_CPU" "$BIN" run --config "$work/torii.yaml" >"$work/torii.log" 2>&1 &
pids+=($!)
for url in "http://127.0.0.1:$backend_port/hello" "http://127.0.0.1:$torii_port/compose-slow"; do
  ok() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ]; }
  for _ in $(seq 300); do ok && break; sleep 0.1; done
  ok || die "no 200 from $url (logs in $work)"
done

median_ms() { # url -> the median latency in ms
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$1" | python3 -c '
import re, sys
for line in sys.stdin:
    m = re.match(r"\s+50%\s+([\d.]+)(us|ms|s)\s*$", line)
    if m:
        v, u = float(m.group(1)), m.group(2)
        print(v / 1000 if u == "us" else v * 1000 if u == "s" else v)
        break'
}
direct="http://127.0.0.1:$backend_port/delay/$DELAY_MS"
composed="http://127.0.0.1:$torii_port/compose-slow"
: >"$work/results"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then d=$(median_ms "$direct"); c=$(median_ms "$composed");
  else c=$(median_ms "$composed"); d=$(median_ms "$direct"); fi
  echo "$d $c" >>"$work/results"
  echo "round $r: backend_p50_ms=$d composed_p50_ms=$c added_ms=$(python3 -c "print(round($c - $d, 3))")"
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
added = [c - d for d, c in rows]
print(f"COMPOSE_LATENCY backend_p50_ms={statistics.median(d for d, _ in rows):.3f} "
      f"composed_p50_ms={statistics.median(c for _, c in rows):.3f} "
      f"added_p50_ms={statistics.median(added):.3f} max_added_ms={max(added):.3f} rounds={len(rows)}")
PY
