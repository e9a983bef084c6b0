#!/usr/bin/env bash
# Torii vs nginx on the bench/ yardstick.
#
#   1. builds the benchmark origin (bench/backend, its own cargo workspace) and Torii: by default
#      the profile-guided release build that Torii ships (bench/pgo.sh, decision 0012; ~11 min,
#      needs llvm-profdata: apt-get install -y llvm-19), or with BUILD=plain the everyday
#      `cargo build --release -p torii`;
#   2. renders conf/torii.yaml.tmpl (ROUTES=1: a single catch-all route; ROUTES=N: N generated
#      routes in front of it) and checks it with `torii validate`;
#   3. runs ./run.sh with GATEWAY_CMD, so run.sh starts Torii itself with exactly nginx's CPU
#      pinning and NICE, meters its CPU time, checks that it returns the backend's body, and
#      stops it at the end.
#
# Usage (from anywhere):
#   bench/run-torii.sh                              # 1 route, ROUNDS=5
#   NICE=-15 bench/run-torii.sh                     # same, with CPU priority on a shared box (root)
#   ROUTES=10000 NICE=-15 bench/run-torii.sh        # 10,000 routes; request /svc5006/items/42
#   ROUNDS=1 DURATION=3 WARMUP=1 bench/run-torii.sh # smoke run (~30 s after the builds)
#
# Knobs (defaults in brackets), plus every run.sh knob (DURATION, WARMUP, CONNS, PIN, NICE, ...):
#   ROUNDS [5]          interleaved rounds
#   ROUTES [1]          1, or the number of generated routes (e.g. 10000)
#   TARGETS ["direct nginx1 haproxy"]  run.sh targets besides Torii (add nginx2 if wanted);
#                       HAPROXY_THREADS [1 with PIN=split's one server CPU]
#   TORII_PORT [18090]  TORII_ADMIN_PORT [18091]   (BASE_PORT [18080] is the backend)
#   BENCH_PATH [/hello, or /svc<middle param route>/items/42 when ROUTES>1]
#   NGINX_PARITY [0]    1 = nginx also adds Torii's forwarding and X-Request-ID headers
#                       (conf/nginx-parity.conf.tmpl): a feature-matched reference
#   BUILD [pgo]         pgo = bench/pgo.sh, binary target/pgo/release/torii;
#                       plain = cargo build --release, binary target/release/torii
#   TORII_BIN [the BUILD's binary]
#   SKIP_BUILD [0]      1 = use the existing Torii and backend binaries
#   TORII_LOG [warn]    Torii's log filter (its log goes to results/<run>/run/gateway.out)
#   RESULTS_DIR [results/<timestamp>-torii-r<ROUTES>]
#
# The last line printed is run.sh's BENCH_RESULT line, prefixed with gateway=torii and routes=N;
# its gateway_* keys are Torii's figures, nginx1_* nginx's (1 worker on the same core) and
# haproxy_* HAProxy's (its threads on the same core), with cpu_ratio_vs_haproxy and
# ratio_vs_haproxy beside the nginx ratios.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export ROUNDS=${ROUNDS:-5}
ROUTES=${ROUTES:-1}
export TARGETS=${TARGETS:-"direct nginx1 haproxy"}
BASE_PORT=${BASE_PORT:-18080}
TORII_PORT=${TORII_PORT:-18090}
TORII_ADMIN_PORT=${TORII_ADMIN_PORT:-18091}
SKIP_BUILD=${SKIP_BUILD:-0}
export TORII_LOG=${TORII_LOG:-warn}
BUILD=${BUILD:-pgo}
case $BUILD in
  pgo) TORII_BIN=${TORII_BIN:-$REPO/target/pgo/release/torii} ;;
  plain) TORII_BIN=${TORII_BIN:-$REPO/target/release/torii} ;;
  *) echo "run-torii.sh: error: BUILD must be pgo or plain" >&2; exit 1 ;;
esac
BACKEND_BIN=${BACKEND_BIN:-$HERE/backend/target/release/bench-backend}
export RESULTS_DIR=${RESULTS_DIR:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)-torii-r$ROUTES}

die() { echo "run-torii.sh: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

[[ $ROUTES =~ ^[0-9]+$ ]] && [ "$ROUTES" -ge 1 ] && [ "$ROUTES" -le 200000 ] \
  || die "ROUTES must be 1..200000"
[[ $ROUNDS =~ ^[0-9]+$ ]] || die "ROUNDS must be a number"
for n in BASE_PORT TORII_PORT TORII_ADMIN_PORT; do
  [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a port number"
done

src_state() { # commit + number of uncommitted changes in the sources Torii is built from
  echo "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo NA)+$(git -C "$REPO" status \
    --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | wc -l)dirty"
}

# ---------- build ----------
SRC_BEFORE=$(src_state)
if [ "$SKIP_BUILD" != 1 ]; then
  log "building the benchmark backend in $HERE/backend"
  (cd "$HERE/backend" && cargo build --release --locked) || die "backend build failed"
  if [ "$BUILD" = pgo ]; then
    log "building Torii (profile-guided release, bench/pgo.sh) in $REPO"
    "$HERE/pgo.sh" || die "profile-guided build failed (it needs llvm-profdata: apt-get install -y llvm-19; or run with BUILD=plain)"
  else
    log "building Torii (release) in $REPO"
    (cd "$REPO" && cargo build --release -p torii) || die "Torii release build failed"
  fi
fi
SRC_AFTER=$(src_state)
if [ "$SKIP_BUILD" != 1 ] && [ "$SRC_BEFORE" != "$SRC_AFTER" ]; then
  log "WARNING: the sources changed during the build ($SRC_BEFORE -> $SRC_AFTER): the binary may"
  log "         mix both states; run again (an up-to-date build finishes without compiling)"
fi
[ -x "$TORII_BIN" ] || die "no Torii binary at $TORII_BIN (run without SKIP_BUILD=1)"
[ -x "$BACKEND_BIN" ] || die "no backend binary at $BACKEND_BIN (run without SKIP_BUILD=1)"
export BACKEND_BIN

# ---------- config ----------
mkdir -p "$RESULTS_DIR"
CONF="$RESULTS_DIR/torii.yaml"
path=$(python3 "$HERE/lib/torii_config.py" "$HERE/conf/torii.yaml.tmpl" "$CONF" "$ROUTES" \
  "127.0.0.1:$TORII_PORT" "127.0.0.1:$TORII_ADMIN_PORT" "127.0.0.1:$BASE_PORT") \
  || die "cannot render the Torii config"
export BENCH_PATH=${BENCH_PATH:-$path}
"$TORII_BIN" validate --config "$CONF" >&2 || die "Torii rejected $CONF"

# what was measured: the Torii source state (another engineer may be editing crates/); with
# SKIP_BUILD=1 the source_* fields describe the tree now, not necessarily the binary's (see mtime)
{
  echo "torii_bin=$TORII_BIN build=$BUILD"
  echo "torii_version=$("$TORII_BIN" --version 2>&1 | head -1)"
  echo "torii_bin_mtime=$(date -u -r "$TORII_BIN" +%FT%TZ)"
  echo "source_before_build=$SRC_BEFORE source_after_build=$SRC_AFTER skip_build=$SKIP_BUILD"
  echo "rustc=$(rustc --version 2>/dev/null || echo NA)"
  echo "routes=$ROUTES bench_path=$BENCH_PATH config=$CONF"
  echo "loadavg_at_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS_DIR/torii.txt"
git -C "$REPO" status --porcelain -- crates >"$RESULTS_DIR/git-status-crates.txt" 2>/dev/null || true
if [ "$ROUTES" = 1 ]; then rdesc="1 catch-all route"; else rdesc="$ROUTES generated routes + a catch-all"; fi
log "Torii config: $CONF ($rdesc), benchmark path $BENCH_PATH"

# ---------- run ----------
if [ "${NGINX_PARITY:-0}" = 1 ]; then export NGINX_TMPL="$HERE/conf/nginx-parity.conf.tmpl"; fi
export BASE_PORT
export GATEWAY_CMD="$TORII_BIN run --config $CONF"
export BENCH_LABELS="gateway=torii routes=$ROUTES nginx_parity=${NGINX_PARITY:-0} ${BENCH_LABELS:-}"
exec "$HERE/run.sh" "http://127.0.0.1:$TORII_PORT"
