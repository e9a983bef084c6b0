#!/usr/bin/env bash
# Accuracy of rate_limit's `policy: redis` across a fleet: N gateway processes share one limit
# of LIMIT per hour for one key, each loaded by its own wrk (20 connections) for DUR seconds,
# all at once. Prints the requests sent, the request rate, how many were admitted (2xx) and
# refused, and the decisions made without Redis (must be 0: fail_closed would show them).
#
# Usage: bench/accuracy.sh N LIMIT [DUR]      e.g. bench/accuracy.sh 4 1000 5
# Needs Redis on 127.0.0.1:6379 (REDIS_URL to change it), wrk, curl, the release build
# (TORII_BIN, default target/release/torii) and the bench backend.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
N=${1:?usage: accuracy.sh N LIMIT [DUR]}; LIMIT=${2:?usage: accuracy.sh N LIMIT [DUR]}; DUR=${3:-5}
BIN=${TORII_BIN:-$HERE/../target/release/torii}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379}
W=$(mktemp -d); KEY="acc-$N-$(date +%s%N)"
"$HERE/backend/target/release/bench-backend" 18690 1 >/dev/null 2>&1 & BE=$!
pids=()
for i in $(seq 1 "$N"); do
  cat > $W/g$i.yaml <<YAML
listeners: [{name: p, bind: 127.0.0.1:$((18700 + i))}]
admin: {bind: 127.0.0.1:$((18800 + i))}
access_log: {enabled: false}
server: {watch_config: false}
redis: {url: '$REDIS', timeout: 50ms}
upstreams: [{name: be, targets: [{url: 'http://127.0.0.1:18690'}]}]
routes:
  - name: all
    match: {path_prefix: /}
    upstream: be
    plugins:
      rate_limit: {limits: [{requests: $LIMIT, per: 1h}], key: [{header: x-client}], policy: redis, on_redis_failure: fail_closed}
YAML
  TORII_LOG=warn $BIN run --config $W/g$i.yaml >$W/g$i.log 2>&1 & pids+=($!)
done
for i in $(seq 1 "$N"); do for _ in $(seq 100); do curl -sf -o /dev/null -H "x-client: warm" http://127.0.0.1:$((18700 + i))/hello && break; sleep 0.05; done; done
wpids=()
for i in $(seq 1 "$N"); do
  wrk -t1 -c20 -d${DUR}s -H "x-client: $KEY" http://127.0.0.1:$((18700 + i))/hello > $W/w$i.out & wpids+=($!)
done
wait "${wpids[@]}"
total=0; non=0
for i in $(seq 1 "$N"); do
  r=$(awk '/requests in/ {print $1}' $W/w$i.out); x=$(awk '/Non-2xx/ {print $5}' $W/w$i.out); x=${x:-0}
  total=$((total + r)); non=$((non + x))
done
# Every refusal is a 429 (fail_closed would give 503): check the degraded counter stayed 0.
deg=0; for i in $(seq 1 "$N"); do d=$(curl -s http://127.0.0.1:$((18800 + i))/metrics | awk '/torii_rate_limit_degraded_total/ && !/^#/ {s+=$2} END {print s+0}'); deg=$((deg + d)); done
echo "gateways=$N limit=$LIMIT requests=$total rate_per_s=$((total / DUR)) admitted=$((total - non)) refused=$non degraded=$deg"
kill "${pids[@]}" $BE 2>/dev/null || true
rm -rf "$W"
