# Shared by the local-stack scripts: where things live and how to start and stop them.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="$ROOT/.local"
RUN="$STATE/run"
LOGS="$STATE/log"

# Fixed loopback ports (documented in docs/local-stack.md).
KINESALITE_PORT=4567
MOTO_PORT=5000
POSTGRES_PORT=5439

KINESALITE_VERSION_FILE="$ROOT/deploy/local/kinesalite/package-lock.json"
REQUIREMENTS="$ROOT/deploy/local/requirements.txt"

say() { printf '[local-stack] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive NAME: the process recorded in run/NAME.pid is alive and is still ours
# (its command line still names what we started, so a reused PID is not mistaken).
pid_alive() {
  local pidfile="$RUN/$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null
}

wait_port() { # NAME PORT SECONDS PIDNAME
  local deadline=$((SECONDS + $3))
  until port_open "$2"; do
    if [ -n "${4:-}" ] && ! kill -0 "$(cat "$RUN/$4.pid" 2>/dev/null)" 2>/dev/null; then
      tail -n 30 "$LOGS/$4.log" >&2 || true
      die "$1 exited during start (log: $LOGS/$4.log)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "$1 did not answer on 127.0.0.1:$2 within $3 s"
    sleep 0.2
  done
}

# start_daemon NAME MARKER PORT CMD...: starts CMD in its own session (so a Ctrl-C
# in the terminal reaches our trap, not the daemon), records its PID, waits for PORT.
start_daemon() {
  local name="$1" marker="$2" port="$3"; shift 3
  if pid_alive "$name" "$marker"; then
    port_open "$port" || wait_port "$name" "$port" 30 "$name"
    return 0
  fi
  rm -f "$RUN/$name.pid"
  port_open "$port" && die "127.0.0.1:$port is taken by a process this stack did not start; stop it or free the port"
  mkdir -p "$RUN" "$LOGS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN/$name.pid"
  wait_port "$name" "$port" 60 "$name"
  say "$name listening on 127.0.0.1:$port (pid $(cat "$RUN/$name.pid"))"
}

# stop_daemon NAME MARKER: stops the process of run/NAME.pid, TERM then KILL.
stop_daemon() {
  local name="$1" marker="$2" pid
  if ! pid_alive "$name" "$marker"; then
    rm -f "$RUN/$name.pid"
    return 0
  fi
  pid="$(cat "$RUN/$name.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$RUN/$name.pid"
  say "$name stopped (pid $pid)"
}

# PostgreSQL: its binaries, and a data directory the postgres user can reach.
pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

pg_root() {
  # The postgres user must traverse every parent of the data directory; when the
  # checkout lives somewhere it cannot (a 0700 home), use a per-checkout /var/tmp folder.
  local preferred="$STATE/postgres"
  if [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$STATE" 2>/dev/null; then
    echo "$preferred"
  else
    echo "/var/tmp/pipeline-local-$(printf '%s' "$ROOT" | md5sum | cut -c1-12)/postgres"
  fi
}

# as_pg CMD...: runs CMD as the postgres user when we are root (initdb refuses root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
