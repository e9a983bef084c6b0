#!/usr/bin/env bash
# Gateway performance yardstick: direct-to-backend vs nginx vs haproxy [vs Torii or any other
# gateway]. Copied from the shared yardstick (shared/bench/run.sh); for Torii use
# ./run-torii.sh, which builds Torii, renders its config and calls this script with GATEWAY_CMD.
#
# Usage:
#   ./run.sh                         # baseline: direct, nginx (1 and 2 workers), haproxy
#   ./run.sh http://127.0.0.1:18090  # + an already-running gateway (path BENCH_PATH is appended
#                                    #   when the URL has no path); it must proxy to BACKEND_ADDR
#   GATEWAY_CMD='../target/release/torii run --config results/torii.yaml' \
#     ./run.sh http://127.0.0.1:18090  # run.sh starts the gateway itself, pinned like the proxies,
#                                      # accounts its CPU time, and stops it at the end
#
# Everything listens on 127.0.0.1 only. Every process this script starts is tracked by PID and
# stopped by PID on exit (no pkill/killall). All loops are bounded.
#
# The LAST line printed is machine-parsable, e.g.
#   BENCH_RESULT path=/hello rounds=3 ... ratio_vs_nginx=NA
# (ratio_vs_nginx = median over rounds of gateway_rps / reference-nginx_rps in the same round).
#
# Environment knobs (defaults in brackets):
#   DURATION [10]  seconds per measured wrk run      WARMUP [2]   seconds of unmeasured warm-up
#   ROUNDS [3]     interleaved rounds (order rotates; use 5+ to decide close calls)
#   CONNS [50]     wrk connections                     WRK_THREADS [1]
#   BENCH_PATH [/hello]  (/json = ~1 KiB body; /svc* = /hello's body)
#   BASE_PORT [18080] backend; nginx1, nginx2 and haproxy use +1, +2 and +3
#   PIN [split]    split = wrk on CLIENT_CPUS, backend+proxy/gateway on SERVER_CPUS; none = no taskset
#   CLIENT_CPUS [0]  SERVER_CPUS [1] (proxies/gateway)  BACKEND_CPUS [=SERVER_CPUS]
#   BACKEND_THREADS [1] tokio workers in the backend
#   NICE [0]       CPU priority for everything started here (e.g. -15 on a shared, busy box; needs
#                  root). Applied to this run's own autogroup (setsid) when sched_autogroup is on.
#   HAPROXY_THREADS [#server cpus]
#   TARGETS ["direct nginx1 nginx2 haproxy"] (the gateway is added when a gateway URL is given)
#   REF [auto]     reference for ratio_vs_nginx: nginx1 | nginx2 | auto (= nginx with as many
#                  workers as SERVER_CPUS has cores; nginx2 when PIN=none)
#   GATEWAY_CMD    command that runs the gateway in the foreground (env BACKEND_ADDR/BACKEND_URL set).
#                  Preferred: the gateway then gets the same CPU pinning and NICE as nginx.
#   GATEWAY_PID    PID of an already running gateway: used for CPU accounting, and with PIN=split
#                  its threads are re-pinned to SERVER_CPUS (start it with `taskset -c 1` anyway,
#                  so its runtime sizes itself for one CPU). It does not get NICE.
#   NGINX_TMPL [conf/nginx.conf.tmpl]  nginx config template (conf/nginx-parity.conf.tmpl adds the
#                  forwarding and request-id headers that Torii adds, for a feature-matched reference)
#   QUIET_WAIT [0] seconds to wait (bounded) before each run for other load to drop under 10%
#   RESULTS_DIR [results/<timestamp>]
#   BENCH_LABELS   extra key=value words put at the start of the BENCH_RESULT line (e.g. gateway=torii)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-1}
BENCH_PATH=${BENCH_PATH:-/hello}
BASE_PORT=${BASE_PORT:-18080}
PIN=${PIN:-split}
CLIENT_CPUS=${CLIENT_CPUS:-0}
SERVER_CPUS=${SERVER_CPUS:-1}
BACKEND_CPUS=${BACKEND_CPUS:-$SERVER_CPUS}
NICE=${NICE:-0}
BACKEND_THREADS=${BACKEND_THREADS:-1}
TARGETS=${TARGETS:-"direct nginx1 nginx2 haproxy"}
REF=${REF:-auto}
QUIET_WAIT=${QUIET_WAIT:-0}
GATEWAY_URL=${1:-${GATEWAY_URL:-}}
GATEWAY_CMD=${GATEWAY_CMD:-}
GATEWAY_PID=${GATEWAY_PID:-}
BACKEND_BIN=${BACKEND_BIN:-$HERE/backend/target/release/bench-backend}
NGINX_TMPL=${NGINX_TMPL:-$HERE/conf/nginx.conf.tmpl}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}

BACKEND_PORT=$BASE_PORT
NGINX1_PORT=$((BASE_PORT + 1))
NGINX2_PORT=$((BASE_PORT + 2))
HAPROXY_PORT=$((BASE_PORT + 3))

die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# ---------- preflight ----------
for tool in wrk nginx curl python3 taskset ss; do
  command -v "$tool" >/dev/null || die "missing tool: $tool (apt-get install nginx wrk curl)"
done
if [[ " $TARGETS " == *" haproxy "* ]]; then
  command -v haproxy >/dev/null || die "missing tool: haproxy (apt-get install haproxy)"
fi
[ -r "$NGINX_TMPL" ] || die "no nginx template: $NGINX_TMPL"
[ -x "$BACKEND_BIN" ] || die "backend not built: (cd $HERE/backend && cargo build --release)"
case "$PIN" in split|none) ;; *) die "PIN must be split or none";; esac
[[ $NICE =~ ^-?[0-9]+$ ]] || die "NICE must be an integer"
for n in DURATION WARMUP ROUNDS CONNS WRK_THREADS BASE_PORT BACKEND_THREADS QUIET_WAIT; do
  [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a non-negative integer"
done
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || die "ROUNDS must be 1..20"
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 300 ] || die "DURATION must be 1..300"

expand_cpus() { # "0,2-3" -> "0 2 3"
  local out=() part a b i
  IFS=',' read -r -a parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
      a=${BASH_REMATCH[1]}; b=${BASH_REMATCH[2]}
      for ((i = a; i <= b && i < 1024; i++)); do out+=("$i"); done
    elif [[ $part =~ ^[0-9]+$ ]]; then out+=("$part")
    else die "bad cpu list: $1"; fi
  done
  echo "${out[@]}"
}
NCPU=$(nproc --all)
# CPU priority on a shared box. With kernel.sched_autogroup_enabled=1 (Debian default) the
# scheduler first splits CPU time evenly between *sessions* (autogroups), so a plain `nice`
# inside our session does nothing against other sessions' builds. We therefore re-run this
# script in its own session (setsid) and set that autogroup's nice value. Without autogroup,
# fall back to nice on each process we start.
NICE_PREFIX=()
if [ "$NICE" != 0 ]; then
  if [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo 0)" = 1 ] && [ -w /proc/self/autogroup ]; then
    if [ -z "${BENCH_IN_OWN_SESSION:-}" ]; then
      BENCH_IN_OWN_SESSION=1 setsid -w "$BASH" "${BASH_SOURCE[0]}" "$@" &
      child=$!
      trap 'kill -TERM "$child" 2>/dev/null' INT TERM
      rc=0; wait "$child" || rc=$?
      # interrupted by a signal: let the child finish its own cleanup (bounded by its run time)
      if [ "$rc" -gt 128 ] && kill -0 "$child" 2>/dev/null; then rc=0; wait "$child" || rc=$?; fi
      exit "$rc"
    fi
    echo "$NICE" >/proc/self/autogroup 2>/dev/null || die "cannot set autogroup nice (need root)"
  else
    NICE_PREFIX=(nice -n "$NICE")
  fi
fi
if [ "$PIN" = split ]; then
  for c in $(expand_cpus "$CLIENT_CPUS") $(expand_cpus "$SERVER_CPUS") $(expand_cpus "$BACKEND_CPUS"); do
    [ "$c" -lt "$NCPU" ] || die "cpu $c does not exist (nproc --all = $NCPU)"
  done
  CLIENT_PREFIX=("${NICE_PREFIX[@]}" taskset -c "$CLIENT_CPUS")
  SERVER_PREFIX=("${NICE_PREFIX[@]}" taskset -c "$SERVER_CPUS")
  BACKEND_PREFIX=("${NICE_PREFIX[@]}" taskset -c "$BACKEND_CPUS")
  N_SERVER_CPUS=$(wc -w <<<"$(expand_cpus "$SERVER_CPUS")")
  CLIENT_LIST=$(expand_cpus "$CLIENT_CPUS"); SERVER_LIST=$(expand_cpus "$SERVER_CPUS")
else
  CLIENT_PREFIX=("${NICE_PREFIX[@]}"); SERVER_PREFIX=("${NICE_PREFIX[@]}"); BACKEND_PREFIX=("${NICE_PREFIX[@]}")
  N_SERVER_CPUS=$NCPU
  CLIENT_LIST=""; SERVER_LIST=""
fi
if [ "$REF" = auto ]; then
  if [ "$N_SERVER_CPUS" -ge 2 ]; then REF=nginx2; else REF=nginx1; fi
fi
case "$REF" in nginx1|nginx2) ;; *) die "REF must be nginx1, nginx2 or auto";; esac

HAPROXY_THREADS=${HAPROXY_THREADS:-$N_SERVER_CPUS}

for p in $BACKEND_PORT $NGINX1_PORT $NGINX2_PORT $HAPROXY_PORT; do
  if ss -Hltn "sport = :$p" | grep -q .; then die "port $p already in use on this host"; fi
done

if [ -n "$GATEWAY_URL" ]; then
  [[ $GATEWAY_URL =~ ^http://(127\.0\.0\.1|localhost|\[::1\]):[0-9]+(/.*)?$ ]] \
    || die "gateway URL must be http:// on loopback, got: $GATEWAY_URL"
  # no path (or bare "/") -> append BENCH_PATH so every target serves the same route
  if [[ $GATEWAY_URL =~ ^http://[^/]+/?$ ]]; then GATEWAY_URL="${GATEWAY_URL%/}$BENCH_PATH"; fi
  TARGETS="$TARGETS gateway"
fi
# the reference nginx must be measured when a gateway is
if [ -n "$GATEWAY_URL" ] && ! grep -qw "$REF" <<<"$TARGETS"; then TARGETS="$REF $TARGETS"; fi
grep -qw direct <<<"$TARGETS" || TARGETS="direct $TARGETS"
read -r -a TARGET_ARR <<<"$TARGETS"

mkdir -p "$RESULTS_DIR/raw" "$RESULTS_DIR/run"
RUNDIR="$RESULTS_DIR/run"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------- process management ----------
declare -A PIDS=()   # name -> pid (only processes started by this script)
stop_all() {
  local name pid i
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name ($pid) ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

wait_http() { # url -> waits (bounded: ~5 s) until it answers 200
  local i
  for ((i = 0; i < 100; i++)); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" || true)" = 200 ]; then return 0; fi
    sleep 0.05
  done
  return 1
}
render() { # template out key=value...
  local tmpl=$1 out=$2; shift 2
  local sedargs=() kv
  for kv in "$@"; do sedargs+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${sedargs[@]}" "$tmpl" >"$out"
}
start_bg() { # name logfile cmd... (pinned to SERVER cpus, or BACKEND cpus for the backend)
  local name=$1 logf=$2; shift 2
  if [ "$name" = backend ]; then
    "${BACKEND_PREFIX[@]}" "$@" >"$logf" 2>&1 &
  else
    "${SERVER_PREFIX[@]}" "$@" >"$logf" 2>&1 &
  fi
  PIDS[$name]=$!
}

log "results -> $RESULTS_DIR"
start_bg backend "$RUNDIR/backend.log" "$BACKEND_BIN" "$BACKEND_PORT" "$BACKEND_THREADS"
wait_http "http://127.0.0.1:$BACKEND_PORT/hello" || die "backend did not come up (see $RUNDIR/backend.log)"
export BACKEND_ADDR="127.0.0.1:$BACKEND_PORT" BACKEND_URL="http://127.0.0.1:$BACKEND_PORT"

declare -A URL=() SUTPID=()
URL[direct]="http://127.0.0.1:$BACKEND_PORT$BENCH_PATH"
for t in "${TARGET_ARR[@]}"; do
  case "$t" in
    direct) ;;
    nginx1|nginx2)
      w=${t#nginx}; port=$NGINX1_PORT; [ "$w" = 2 ] && port=$NGINX2_PORT
      mkdir -p "$RUNDIR/$t.tmp"
      render "$NGINX_TMPL" "$RUNDIR/$t.conf" \
        WORKERS="$w" PORT="$port" BACKEND_PORT="$BACKEND_PORT" RUNDIR="$RUNDIR" NAME="$t"
      nginx -t -q -p "$RUNDIR" -e "$RUNDIR/$t.error.log" -c "$RUNDIR/$t.conf" -g 'daemon off;' \
        || die "nginx config test failed for $t"
      start_bg "$t" "$RUNDIR/$t.out" nginx -p "$RUNDIR" -e "$RUNDIR/$t.error.log" \
        -c "$RUNDIR/$t.conf" -g 'daemon off;'
      URL[$t]="http://127.0.0.1:$port$BENCH_PATH"; SUTPID[$t]=${PIDS[$t]} ;;
    haproxy)
      render "$HERE/conf/haproxy.cfg.tmpl" "$RUNDIR/haproxy.cfg" \
        PORT="$HAPROXY_PORT" BACKEND_PORT="$BACKEND_PORT" THREADS="$HAPROXY_THREADS"
      haproxy -c -q -f "$RUNDIR/haproxy.cfg" || die "haproxy config check failed"
      start_bg haproxy "$RUNDIR/haproxy.out" haproxy -db -f "$RUNDIR/haproxy.cfg"
      URL[haproxy]="http://127.0.0.1:$HAPROXY_PORT$BENCH_PATH"; SUTPID[haproxy]=${PIDS[haproxy]} ;;
    gateway)
      URL[gateway]=$GATEWAY_URL
      if [ -n "$GATEWAY_CMD" ]; then
        start_bg gateway "$RUNDIR/gateway.out" bash -c "exec $GATEWAY_CMD"
        SUTPID[gateway]=${PIDS[gateway]}
      elif [ -n "$GATEWAY_PID" ]; then
        kill -0 "$GATEWAY_PID" 2>/dev/null || die "GATEWAY_PID $GATEWAY_PID is not running"
        SUTPID[gateway]=$GATEWAY_PID
        if [ "$PIN" = split ]; then
          taskset -a -cp "$SERVER_CPUS" "$GATEWAY_PID" >/dev/null \
            || die "cannot pin gateway PID $GATEWAY_PID to cpus $SERVER_CPUS"
          log "gateway PID $GATEWAY_PID re-pinned to cpus $SERVER_CPUS (not started here; no NICE)"
        fi
      else
        log "WARNING: gateway at $GATEWAY_URL is neither started here (GATEWAY_CMD) nor given by"
        log "         GATEWAY_PID: it is not pinned like nginx and its CPU/req cannot be measured"
      fi ;;
    *) die "unknown target: $t" ;;
  esac
done

# sanity: every target answers 200 with exactly the backend's body
curl -s --max-time 2 "${URL[direct]}" >"$RUNDIR/expected.body"
[ -s "$RUNDIR/expected.body" ] || die "backend returned an empty body for $BENCH_PATH"
for t in "${TARGET_ARR[@]}"; do
  wait_http "${URL[$t]}" || die "$t (${URL[$t]}) is not answering 200 (see $RUNDIR)"
  curl -s --max-time 2 "${URL[$t]}" >"$RUNDIR/$t.body"
  cmp -s "$RUNDIR/expected.body" "$RUNDIR/$t.body" || die "$t returned a different body than the backend"
done
log "targets OK: ${TARGET_ARR[*]}"

# ---------- measurement helpers ----------
CLK_TCK=$(getconf CLK_TCK)
proc_ticks() { # pid [pid...] -> utime+stime ticks of these processes and their direct children
  local sum=0 p c f
  local all=()
  for p in "$@"; do
    [ -n "$p" ] || continue
    all+=("$p")
    for c in $(ps -o pid= --ppid "$p" 2>/dev/null || true); do all+=("$c"); done
  done
  for p in "${all[@]}"; do
    [ -r "/proc/$p/stat" ] || continue
    read -r -a f < <(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null || true)
    [ "${#f[@]}" -gt 12 ] && sum=$((sum + f[11] + f[12]))
  done
  echo "$sum"
}
cpu_busy() { # "cpuN ..." list -> busy ticks (user+nice+system+irq+softirq+steal) for: all client server
  awk -v client="$CLIENT_LIST" -v server="$SERVER_LIST" '
    BEGIN { n = split(client, cl, " "); for (i = 1; i <= n; i++) C["cpu" cl[i]] = 1;
            n = split(server, sl, " "); for (i = 1; i <= n; i++) S["cpu" sl[i]] = 1 }
    /^cpu/ { b = $2 + $3 + $4 + $7 + $8 + $9
             if ($1 == "cpu") all = b; if ($1 in C) c += b; if ($1 in S) s += b }
    END { printf "%d %d %d\n", all, c, s }' /proc/stat
}
wait_quiet() { # bounded wait (QUIET_WAIT s) until the whole box is < 10 % busy over 1 s
  [ "$QUIET_WAIT" -gt 0 ] || return 0
  local i a b
  for ((i = 0; i < QUIET_WAIT; i++)); do
    read -r a _ _ < <(cpu_busy); sleep 1; read -r b _ _ < <(cpu_busy)
    if [ $(( (b - a) * 100 / CLK_TCK )) -lt $((10 * NCPU)) ]; then return 0; fi
  done
  log "machine still busy after ${QUIET_WAIT}s, measuring anyway (run will be flagged)"
}

TSV="$RESULTS_DIR/runs.tsv"
printf 'round\ttarget\twrk_out\twrk_cpu_s\tsut_cpu_s\tbackend_cpu_s\tbusy_all_s\tbusy_client_s\tbusy_server_s\telapsed_s\tbackend_estab\tbackend_timewait\n' >"$TSV"

measure() { # round target
  local r=$1 t=$2 url=${URL[$2]} out="$RESULTS_DIR/raw/r$1-$2.txt"
  local sp=${SUTPID[$t]:-} bp=${PIDS[backend]}
  wait_quiet
  "${CLIENT_PREFIX[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null 2>&1 || true
  local s0 b0 a0 c0 v0 t0 s1 b1 a1 c1 v1 t1
  s0=$(proc_ticks "$sp"); b0=$(proc_ticks "$bp"); read -r a0 c0 v0 < <(cpu_busy); t0=$(date +%s.%N)
  local TIMEFORMAT='%3U %3S'
  { time "${CLIENT_PREFIX[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$out" 2>&1 ; } 2>"$out.cpu"
  t1=$(date +%s.%N); read -r a1 c1 v1 < <(cpu_busy); s1=$(proc_ticks "$sp"); b1=$(proc_ticks "$bp")
  local est tw
  est=$(ss -Htn state established "dport = :$BACKEND_PORT" 2>/dev/null | wc -l)
  tw=$(ss -Htn state time-wait "dport = :$BACKEND_PORT" 2>/dev/null | wc -l)
  awk -v r="$r" -v t="$t" -v o="$out" -v hz="$CLK_TCK" -v s="$((s1 - s0))" -v b="$((b1 - b0))" \
      -v a="$((a1 - a0))" -v c="$((c1 - c0))" -v v="$((v1 - v0))" -v t0="$t0" -v t1="$t1" \
      -v est="$est" -v tw="$tw" -v sp="$sp" '
    { wcpu = $1 + $2 }
    END { printf "%s\t%s\t%s\t%.3f\t%s\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\n", r, t, o, wcpu,
            (sp == "" ? "NA" : sprintf("%.3f", s / hz)), b / hz, a / hz, c / hz, v / hz, t1 - t0, est, tw }' \
      "$out.cpu" >>"$TSV"
  log "round $r $t: $(awk '/Requests\/sec/ {print $2 " req/s"}' "$out")"
}

# ---------- run ----------
{
  echo "date_utc=$(date -u +%FT%TZ) host=$(hostname) kernel=$(uname -r) nproc=$NCPU"
  echo "cpu_model=$(awk -F: '/model name/ {gsub(/^ +/, "", $2); gsub(/ /, "_", $2); print $2; exit}' /proc/cpuinfo)"
  echo "nginx_version=$(nginx -v 2>&1 | sed 's/.*nginx\///') haproxy_version=$(command -v haproxy >/dev/null && haproxy -v | awk 'NR==1 {print $3}') wrk_version=$(wrk -v 2>&1 | awk 'NR==1 {print $2}')"
  echo "pin=$PIN client_cpus=$CLIENT_CPUS server_cpus=$SERVER_CPUS backend_cpus=$BACKEND_CPUS nice=$NICE autogroup=$(tr ' ' '_' </proc/self/autogroup 2>/dev/null || echo none) backend_threads=$BACKEND_THREADS haproxy_threads=$HAPROXY_THREADS"
  echo "nginx_tmpl=$(basename "$NGINX_TMPL")"
  echo "wrk=-t$WRK_THREADS,-c$CONNS,-d${DURATION}s,--latency warmup=${WARMUP}s path=$BENCH_PATH rounds=$ROUNDS ref=$REF"
  for t in "${TARGET_ARR[@]}"; do echo "url.$t=${URL[$t]}"; done
  echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS_DIR/env.txt"

n=${#TARGET_ARR[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  # rotate the order every round so no target always runs first/last
  for ((k = 0; k < n; k++)); do
    measure "$r" "${TARGET_ARR[$(( (k + r - 1) % n ))]}"
  done
done

stop_all
python3 "$HERE/lib/summarize.py" "$RESULTS_DIR" "$REF" | tee "$RESULTS_DIR/summary.txt"
