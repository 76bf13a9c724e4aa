#!/usr/bin/env bash
# Ensure a Postgres and a Redis for Laurel, then run a command against them.
#
#   scripts/stack.sh <command...>   run the command with DATABASE_URL, REDIS_URL
#                                   and REDIS_SERVER_BIN exported, then tear
#                                   down; exits with the command's exit code
#   scripts/stack.sh                start, print the exports, wait for Ctrl-C
#   source scripts/stack.sh         library: laurel_stack_up, laurel_stack_down,
#                                   laurel_at_exit, laurel_free_port,
#                                   laurel_drop_scratch,
#                                   laurel_redact_url
#
# DATABASE_URL and REDIS_URL, when set, are used as they are (each on its own).
# Otherwise a throwaway server is started from the installed Debian binaries
# under a fresh /tmp/laurel-stack.XXXXXX, on a free 127.0.0.1 port, and it is
# stopped and removed on exit, Ctrl-C or SIGTERM. No root, Docker or network.
#
# Knobs: LAUREL_PG_BIN (directory holding initdb/pg_ctl), LAUREL_PG_USER (the
# unprivileged user that runs Postgres when we are root; default postgres, else
# nobody), LAUREL_PG_FSYNC=off (fsync, synchronous_commit and full_page_writes
# off: faster, for tests; the default is on, as in production, so benchmarks
# stay honest), LAUREL_STACK_KEEP=1 (leave the temp dir behind for a
# post-mortem).

_laurel_log() { printf 'stack: %s\n' "$*" >&2; }

# Print a connection URL with any password (user:PASSWORD@ or a password=
# query parameter) replaced by ***, so that logs never show it.
laurel_redact_url() {
  sed -E -e 's|^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^/?#]*@|\1:***@|' \
    -e 's/([?&][Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]=)[^&]*/\1***/' <<<"$1"
}

_LAUREL_STACK_DIR=""
_LAUREL_PG_DATA=""
_LAUREL_PG_BIN=""
_LAUREL_PG_USER=""
_LAUREL_REDIS_PID=""
_LAUREL_REDIS_PORT=""
_LAUREL_EXIT_HOOKS=()
_LAUREL_DOWN_DONE=""
_LAUREL_CHILD_PID=""

# Print a TCP port on 127.0.0.1 that nothing listens on right now.
laurel_free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' && return 0
  fi
  local port i
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  _laurel_log "no free port found"
  return 1
}

# Drop a scratch Postgres schema and every Redis key under a prefix (what a
# test or benchmark run made), when psql and redis-cli are at hand.
laurel_drop_scratch() {
  local schema=$1 prefix=$2 psql="" candidate
  for candidate in "$(command -v psql || true)" /usr/lib/postgresql/*/bin/psql; do
    if [[ -x $candidate ]]; then
      psql=$candidate
      break
    fi
  done
  if [[ -n $psql ]]; then
    "$psql" -X -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  fi
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -u "$REDIS_URL" --scan --pattern "$prefix*" 2>/dev/null |
      xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
  fi
}

# Register a command to run on exit, before the servers are torn down.
# Hooks run last-registered first.
laurel_at_exit() {
  _LAUREL_EXIT_HOOKS+=("$*")
}

# Run a command as the unprivileged Postgres owner (as-is when not root).
_laurel_as_pg() {
  if [[ $(id -u) -ne 0 ]]; then
    (cd "$_LAUREL_STACK_DIR" && "$@")
  elif command -v runuser >/dev/null 2>&1; then
    (cd "$_LAUREL_STACK_DIR" && runuser -u "$_LAUREL_PG_USER" -- "$@")
  else
    local q
    q=$(printf '%q ' "$@")
    (cd "$_LAUREL_STACK_DIR" && su -s /bin/sh "$_LAUREL_PG_USER" -c "$q")
  fi
}

_laurel_find_pg_bin() {
  if [[ -n ${LAUREL_PG_BIN:-} ]]; then
    echo "$LAUREL_PG_BIN"
    return 0
  fi
  local d best=""
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb && -x $d/pg_ctl ]] || continue
    best=$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n 1)
  done
  if [[ -n $best ]]; then
    echo "$best"
    return 0
  fi
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  return 1
}

_laurel_stack_dir() {
  if [[ -z $_LAUREL_STACK_DIR ]]; then
    _LAUREL_STACK_DIR=$(mktemp -d /tmp/laurel-stack.XXXXXX)
    chmod 755 "$_LAUREL_STACK_DIR"
  fi
}

_laurel_start_postgres() {
  if ! _LAUREL_PG_BIN=$(_laurel_find_pg_bin); then
    _laurel_log "no Postgres server binaries (initdb, pg_ctl) found under /usr/lib/postgresql/*/bin or on PATH"
    _laurel_log "install them (apt-get install -y postgresql) or set DATABASE_URL"
    return 1
  fi
  _laurel_stack_dir
  _LAUREL_PG_DATA=$_LAUREL_STACK_DIR/pg
  mkdir -m 700 "$_LAUREL_PG_DATA"
  if [[ $(id -u) -eq 0 ]]; then
    if [[ -n ${LAUREL_PG_USER:-} ]]; then
      _LAUREL_PG_USER=$LAUREL_PG_USER
    elif id -u postgres >/dev/null 2>&1; then
      _LAUREL_PG_USER=postgres
    else
      _LAUREL_PG_USER=nobody
    fi
    chown "$_LAUREL_PG_USER:" "$_LAUREL_PG_DATA"
  else
    _LAUREL_PG_USER=$(id -un)
  fi

  if ! _laurel_as_pg "$_LAUREL_PG_BIN/initdb" -D "$_LAUREL_PG_DATA" -U postgres \
    --auth=trust --encoding=UTF8 --no-locale --no-sync \
    >"$_LAUREL_STACK_DIR/initdb.log" 2>&1; then
    _laurel_log "initdb failed:"
    cat "$_LAUREL_STACK_DIR/initdb.log" >&2
    return 1
  fi

  local fsync=on
  if [[ ${LAUREL_PG_FSYNC:-} == off ]]; then fsync=off; fi
  local port attempt
  for attempt in 1 2 3 4 5; do
    port=$(laurel_free_port) || return 1
    cat >"$_LAUREL_STACK_DIR/postgresql.auto" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$_LAUREL_PG_DATA'
max_connections = 500
fsync = $fsync
synchronous_commit = $fsync
full_page_writes = $fsync
EOF
    # (Re)write our settings into the data dir's auto.conf, owned by the server user.
    _laurel_as_pg cp "$_LAUREL_STACK_DIR/postgresql.auto" "$_LAUREL_PG_DATA/postgresql.auto.conf"
    if _laurel_as_pg "$_LAUREL_PG_BIN/pg_ctl" -D "$_LAUREL_PG_DATA" -l "$_LAUREL_PG_DATA/server.log" \
      -w -t 60 start >/dev/null 2>&1; then
      break
    fi
    if grep -qi 'address already in use' "$_LAUREL_PG_DATA/server.log" 2>/dev/null && [[ $attempt -lt 5 ]]; then
      _laurel_log "port $port was taken, retrying"
      continue
    fi
    _laurel_log "Postgres did not start; server.log:"
    tail -n 30 "$_LAUREL_PG_DATA/server.log" >&2 || true
    return 1
  done

  local psql=$_LAUREL_PG_BIN/psql
  [[ -x $psql ]] || psql=psql
  if ! "$psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c 'CREATE DATABASE laurel' >/dev/null; then
    _laurel_log "could not create database laurel"
    return 1
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/laurel"
  _laurel_log "throwaway Postgres: $(laurel_redact_url "$DATABASE_URL") (data dir $_LAUREL_PG_DATA, run as $_LAUREL_PG_USER, fsync $fsync)"
}

_laurel_redis_ping() {
  local port=$1 reply=""
  if command -v redis-cli >/dev/null 2>&1; then
    [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]
    return
  fi
  exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  read -r -t 2 reply <&3 || true
  exec 3>&-
  [[ $reply == +PONG* ]]
}

_laurel_start_redis() {
  local dir port attempt i
  _laurel_stack_dir
  dir=$_LAUREL_STACK_DIR/redis
  mkdir -p "$dir"
  for attempt in 1 2 3 4 5; do
    port=$(laurel_free_port) || return 1
    rm -f "$dir/redis.pid"
    if ! "$REDIS_SERVER_BIN" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize yes --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      >/dev/null 2>&1; then
      _laurel_log "redis-server failed to start"
      return 1
    fi
    for ((i = 0; i < 100; i++)); do
      if _laurel_redis_ping "$port"; then
        _LAUREL_REDIS_PID=$(cat "$dir/redis.pid" 2>/dev/null || true)
        _LAUREL_REDIS_PORT=$port
        export REDIS_URL="redis://127.0.0.1:$port/"
        _laurel_log "throwaway Redis: $(laurel_redact_url "$REDIS_URL") (dir $dir, pid ${_LAUREL_REDIS_PID:-?})"
        return 0
      fi
      if grep -qi 'address already in use' "$dir/redis.log" 2>/dev/null; then
        break
      fi
      sleep 0.1
    done
    _laurel_log "Redis on port $port did not come up (attempt $attempt); redis.log:"
    tail -n 10 "$dir/redis.log" >&2 || true
    if [[ -s $dir/redis.pid ]]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
  done
  return 1
}

# Ensure Postgres and Redis; export DATABASE_URL, REDIS_URL, REDIS_SERVER_BIN;
# install traps that tear the throwaway servers down on exit and on signals.
laurel_stack_up() {
  trap '_laurel_on_exit' EXIT
  trap '_laurel_on_signal INT 130' INT
  trap '_laurel_on_signal TERM 143' TERM
  trap '_laurel_on_signal HUP 129' HUP

  local redis_bin
  redis_bin=${REDIS_SERVER_BIN:-$(command -v redis-server || true)}
  if [[ -z $redis_bin && -x /usr/bin/redis-server ]]; then redis_bin=/usr/bin/redis-server; fi
  if [[ -n $redis_bin ]]; then export REDIS_SERVER_BIN=$redis_bin; fi

  if [[ -n ${DATABASE_URL:-} ]]; then
    _laurel_log "using DATABASE_URL from the environment: $(laurel_redact_url "$DATABASE_URL")"
  else
    _laurel_start_postgres || return 1
  fi

  if [[ -n ${REDIS_URL:-} ]]; then
    _laurel_log "using REDIS_URL from the environment: $(laurel_redact_url "$REDIS_URL")"
  else
    if [[ -z ${REDIS_SERVER_BIN:-} ]]; then
      _laurel_log "redis-server not found: install it (apt-get install -y redis-server) or set REDIS_URL"
      return 1
    fi
    _laurel_start_redis || return 1
  fi
  if [[ -n $_LAUREL_STACK_DIR ]]; then
    _laurel_log "throwaway state in $_LAUREL_STACK_DIR (removed on exit)"
  fi
}

# Stop the throwaway servers and remove their state. Idempotent.
laurel_stack_down() {
  [[ -z $_LAUREL_DOWN_DONE ]] || return 0
  _LAUREL_DOWN_DONE=1
  local i
  for ((i = ${#_LAUREL_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
    eval "${_LAUREL_EXIT_HOOKS[i]}" || true
  done
  if [[ -n $_LAUREL_REDIS_PID ]]; then
    kill "$_LAUREL_REDIS_PID" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$_LAUREL_REDIS_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$_LAUREL_REDIS_PID" 2>/dev/null || true
    _LAUREL_REDIS_PID=""
  fi
  if [[ -n $_LAUREL_PG_DATA && -f $_LAUREL_PG_DATA/postmaster.pid ]]; then
    _laurel_as_pg "$_LAUREL_PG_BIN/pg_ctl" -D "$_LAUREL_PG_DATA" -m immediate -w -t 30 stop \
      >/dev/null 2>&1 || {
      local pid
      pid=$(head -n 1 "$_LAUREL_PG_DATA/postmaster.pid" 2>/dev/null || true)
      if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi
    }
  fi
  if [[ -n $_LAUREL_STACK_DIR ]]; then
    if [[ -n ${LAUREL_STACK_KEEP:-} ]]; then
      _laurel_log "kept $_LAUREL_STACK_DIR"
    else
      rm -rf "$_LAUREL_STACK_DIR"
      _laurel_log "stopped throwaway servers, removed $_LAUREL_STACK_DIR"
    fi
  fi
}

_laurel_on_exit() {
  local rc=$?
  trap - INT TERM HUP
  laurel_stack_down
  exit "$rc"
}

_laurel_on_signal() {
  local sig=$1 rc=$2
  trap - INT TERM HUP
  _laurel_log "caught SIG$sig, shutting down"
  if [[ -n $_LAUREL_CHILD_PID ]]; then
    kill -"$sig" "$_LAUREL_CHILD_PID" 2>/dev/null || true
    wait "$_LAUREL_CHILD_PID" 2>/dev/null || true
  fi
  exit "$rc"
}

# Run a command in the background (so signals reach our traps at once) with
# default SIGINT handling and the caller's stdin; wait and return its status.
laurel_run_child() {
  (
    trap - INT QUIT TERM HUP EXIT
    exec "$@"
  ) <&0 &
  _LAUREL_CHILD_PID=$!
  local rc=0
  wait "$_LAUREL_CHILD_PID" || rc=$?
  _LAUREL_CHILD_PID=""
  return "$rc"
}

_laurel_stack_main() {
  set -uo pipefail
  laurel_stack_up || exit 1
  if [[ $# -eq 0 ]]; then
    # A password is shown as ***: it came from the caller's environment,
    # which already holds it.
    printf 'export DATABASE_URL=%q\nexport REDIS_URL=%q\n' \
      "$(laurel_redact_url "$DATABASE_URL")" "$(laurel_redact_url "$REDIS_URL")"
    [[ -n ${REDIS_SERVER_BIN:-} ]] && printf 'export REDIS_SERVER_BIN=%q\n' "$REDIS_SERVER_BIN"
    _laurel_log "running; press Ctrl-C to stop"
    laurel_run_child sleep infinity
    exit $?
  fi
  local rc=0
  laurel_run_child "$@" || rc=$?
  exit "$rc"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  _laurel_stack_main "$@"
fi
