#!/usr/bin/env bash
# Fuzzes the admin API from its own OpenAPI document with schemathesis (a standard tool), the
# way the issue says it will be attacked: every operation, generated valid and invalid input,
# stateful sequences (create, read, change, delete). Fails on any 5xx, a response that does not
# match the document, or a panic in the gateway's log. CI runs it after the tests.
#
# Usage: scripts/admin-fuzz.sh [TORII_BIN]       # default target/debug/torii
#        EXAMPLES=100 scripts/admin-fuzz.sh       # more cases per operation (default 25)
# Installs schemathesis with pip when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

BIN=${1:-target/debug/torii}
EXAMPLES=${EXAMPLES:-25}
VERSION=4.32.5

if ! python3 -m schemathesis.cli --version >/dev/null 2>&1; then
  python3 -m pip --version >/dev/null 2>&1 || _need_pkg pip3 python3-pip
  # schemathesis 4.32 needs Python 3.11 or later (its package metadata); pip's own error says
  # what is missing.
  python3 -m pip install -q --break-system-packages "schemathesis==$VERSION" 2>/dev/null \
    || python3 -m pip install -q "schemathesis==$VERSION"
fi

tmp=$(mktemp -d)
pid=
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

public=$(_free_port)
admin=$(_free_port)
# A route behind key_auth and an upstream, so consumers, routes and upstreams all have
# something to refer to; the upstream is never reached (port 9, discard).
cat > "$tmp/torii.yaml" <<EOF
listeners:
  - name: public
    bind: 127.0.0.1:$public
admin:
  bind: 127.0.0.1:$admin
access_log:
  enabled: false
server:
  watch_config: false
upstreams:
  - name: backend
    targets: [{url: 'http://127.0.0.1:9'}]
routes:
  - name: r
    match: {path: /}
    upstream: backend
    plugins: {key_auth: {}}
EOF
"$BIN" run -c "$tmp/torii.yaml" --data-dir "$tmp/data" > "$tmp/torii.log" 2>&1 &
pid=$!
ready=
for _ in $(seq 100); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && { ready=1; break; }
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/torii.log"; echo "torii exited" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$ready" ]] || { cat "$tmp/torii.log"; echo "admin-fuzz: torii did not become ready" >&2; exit 1; }

status=0
# From the temporary directory: schemathesis keeps a cache (`.schemathesis/`) where it runs.
cd "$tmp"
python3 -m schemathesis.cli run "http://127.0.0.1:$admin/openapi.json" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "$EXAMPLES" --workers 2 --no-color ${SEED:+--seed "$SEED"} > "$tmp/st.txt" 2>&1 || status=$?
tail -25 "$tmp/st.txt" || true
cp "$tmp/st.txt" /tmp/admin-fuzz-last.txt 2>/dev/null || true
if grep -qi "panicked" "$tmp/torii.log"; then
  { grep -i -A5 "panicked" "$tmp/torii.log" || true; } | head -40 || true
  echo "admin-fuzz: the gateway panicked" >&2
  exit 1
fi
kill -0 "$pid" 2>/dev/null || { echo "admin-fuzz: the gateway died" >&2; exit 1; }
if [[ $status -ne 0 ]]; then
  { grep -E -B2 -A25 "^_+ |Schema-violating|Server error|Undocumented" "$tmp/st.txt" || true; } | head -150 || true
  echo "admin-fuzz: schemathesis found failures (exit $status)" >&2
  exit "$status"
fi
echo "admin-fuzz: no failures"
