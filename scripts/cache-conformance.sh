#!/usr/bin/env bash
# Runs the HTTP caching tests (http-tests/cache-tests, the suite of cache-tests.fyi) against
# a Torii route with the cache plugin, and prints the counts the way the site counts them
# (a test passes only when the tests it depends on pass). See docs/caching.md#conformance.
#
# Usage: CACHE_TESTS_DIR=/path/to/cache-tests scripts/cache-conformance.sh [TORII_BIN]
#   CACHE_TESTS_DIR  a checkout of github.com/http-tests/cache-tests with `npm i --omit=dev`
#                    done (or the npm package http-cache-tests); needs node >= 14.8
#   TORII_BIN        default target/debug/torii (cargo build -p torii)
# Ports 47800 (origin), 47801 (gateway), 47802 (admin) must be free. Takes about a minute.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TORII_BIN=${1:-$REPO/target/debug/torii}
DIR=${CACHE_TESTS_DIR:?set CACHE_TESTS_DIR to a cache-tests checkout}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cat >"$work/torii.yaml" <<YAML
listeners:
  - name: public
    bind: 127.0.0.1:47801
admin:
  bind: 127.0.0.1:47802
access_log:
  enabled: false
upstreams:
  - name: origin
    targets: [{url: 'http://127.0.0.1:47800'}]
    retries: {attempts: 1}   # the suite counts the origin's requests
routes:
  - name: all
    match: {path_prefix: /}
    upstream: origin
    plugins:
      cache: {}
YAML
(cd "$DIR" && npm run --silent server --port=47800 >"$work/origin.log" 2>&1) &
pids+=($!)
"$TORII_BIN" run --config "$work/torii.yaml" >"$work/torii.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -s -o /dev/null http://127.0.0.1:47801/ && break
  sleep 0.1
done
(cd "$DIR" && npm run --silent cli --base=http://127.0.0.1:47801) >"$work/results.json"
cat >"$work/count.mjs" <<'JS'
import fs from 'fs'
const dir = process.argv[2]
const { determineTestResult, resultTypes } = await import(dir + '/test-engine/lib/results.mjs')
const tests = (await import(dir + '/tests/index.mjs')).default
const names = Object.fromEntries(Object.entries(resultTypes).map(([k, v]) => [v[2], k]))
const res = JSON.parse(fs.readFileSync(process.argv[3]))
const c = {}
for (const suite of tests) for (const t of suite.tests) {
  const kind = t.kind || 'required'
  const n = names[determineTestResult(tests, t.id, res)[2]]
  c[kind] = c[kind] || { total: 0 }
  c[kind].total++
  c[kind][n] = (c[kind][n] || 0) + 1
  if (kind === 'required' && n !== 'pass') console.log('  not passed:', t.id, n)
}
for (const k of ['required', 'optimal']) console.log(k, JSON.stringify(c[k]))
JS
node "$work/count.mjs" "$(cd "$DIR" && pwd)" "$work/results.json"
