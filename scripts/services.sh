#!/usr/bin/env bash
# Throwaway Redis and PostgreSQL for tests, used when REDIS_URL / DATABASE_URL are unset.
# Sourced by scripts/test.sh; defines start_services [redis] [postgres] (both when none is
# named), which exports the URLs and stops the servers on exit. In CI (CI=true) a server that
# cannot be started is a failure.

_need_pkg() {
  command -v "$1" >/dev/null 2>&1 && return 0
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_services() {
  local tmp want=" ${*:-redis postgres} "
  tmp=$(mktemp -d)
  trap 'stop_services' EXIT
  if [[ -z "${REDIS_URL:-}" && "$want" == *" redis "* ]]; then
    if ! _need_pkg redis-server redis-server; then
      if [[ "${CI:-}" == "true" ]]; then echo "redis-server unavailable" >&2; exit 1; fi
      echo "warning: no redis-server; the Redis tests will be skipped" >&2
      return 0
    fi
    local rp; rp=$(_free_port)
    redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --pidfile "$tmp/redis.pid" --dir "$tmp" >/dev/null
    for _ in $(seq 50); do redis-cli -p "$rp" ping >/dev/null 2>&1 && break; sleep 0.1; done
    if ! redis-cli -p "$rp" ping >/dev/null 2>&1; then
      echo "the throwaway redis-server did not start" >&2
      [[ "${CI:-}" == "true" ]] && exit 1
    fi
    export REDIS_URL="redis://127.0.0.1:$rp"
    _TORII_REDIS_PID_FILE="$tmp/redis.pid"
  fi
  if [[ -z "${DATABASE_URL:-}" && "$want" == *" postgres "* ]]; then
    local bin; bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1)
    if [[ -z "$bin" ]]; then _need_pkg initdb postgresql; bin=$(ls -d /usr/lib/postgresql/*/bin | tail -1); fi
    local pp; pp=$(_free_port)
    chown -R postgres "$tmp" 2>/dev/null || true
    su postgres -c "$bin/initdb -D $tmp/pg -A trust -U postgres" >/dev/null 2>&1 || "$bin/initdb" -D "$tmp/pg" -A trust -U postgres >/dev/null
    su postgres -c "$bin/pg_ctl -D $tmp/pg -o '-p $pp -k $tmp -c listen_addresses=127.0.0.1' -w start" >/dev/null 2>&1 \
      || "$bin/pg_ctl" -D "$tmp/pg" -o "-p $pp -k $tmp -c listen_addresses=127.0.0.1" -w start >/dev/null
    export DATABASE_URL="postgres://postgres@127.0.0.1:$pp/postgres"
    _TORII_PG_DIR="$tmp/pg"; _TORII_PG_BIN="$bin"
  fi
}

stop_services() {
  [[ -n "${_TORII_REDIS_PID_FILE:-}" && -f "$_TORII_REDIS_PID_FILE" ]] && kill "$(cat "$_TORII_REDIS_PID_FILE")" 2>/dev/null || true
  if [[ -n "${_TORII_PG_DIR:-}" ]]; then
    su postgres -c "$_TORII_PG_BIN/pg_ctl -D $_TORII_PG_DIR -m fast stop" >/dev/null 2>&1 || "$_TORII_PG_BIN/pg_ctl" -D "$_TORII_PG_DIR" -m fast stop >/dev/null 2>&1 || true
  fi
}
