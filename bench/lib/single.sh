# Shared by instructions.sh and pgo.sh (sourced, not run): one backend and one Torii on the
# benchmark config, in a temporary directory that is removed, with both processes, on exit.
# The caller sets HERE, PORT, ADMIN_PORT, BACKEND_PORT, BACKEND_BIN and defines die().

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Renders the benchmark config ($CONF_TMPL, default conf/torii.yaml.tmpl; $ROUTES routes,
# default 1) to $work/torii.yaml, sets
# $bench_path (the path the benchmark requests with that many routes) and starts the backend.
start_backend() {
  bench_path=$(python3 "$HERE/lib/torii_config.py" "${CONF_TMPL:-$HERE/conf/torii.yaml.tmpl}" "$work/torii.yaml" \
    "${ROUTES:-1}" "127.0.0.1:$PORT" "127.0.0.1:$ADMIN_PORT" "127.0.0.1:$BACKEND_PORT")
  "$BACKEND_BIN" "$BACKEND_PORT" 1 >"$work/backend.log" 2>&1 &
  pids+=($!)
}

# Waits (up to WAIT_SECONDS, default 60) until Torii, process $1 logging to $work/torii.log,
# answers on /hello.
wait_for_torii() {
  local url="http://127.0.0.1:$PORT/hello"
  for _ in $(seq $((${WAIT_SECONDS:-60} * 10))); do
    # Any HTTP answer (a route behind key_auth answers 401 to this probe).
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" != 000 ] && return 0
    kill -0 "$1" 2>/dev/null || die "Torii exited: $(tail -5 "$work/torii.log")"
    sleep 0.1
  done
  die "Torii did not answer on $url"
}
