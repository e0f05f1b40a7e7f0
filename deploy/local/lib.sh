# Shared by the local-stack scripts: paths, versions, and small helpers. Sourced, never run.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Every download and build is cached under one folder outside the clone (so a fresh clone on a machine that built
# once, as CI's is, starts in seconds); each entry is rebuilt when the files that decide it change.
CACHE="${LETHE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lethe}"
VAR="$ROOT/var"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
LOCAL="$ROOT/deploy/local"
PYTHON_BIN="${LETHE_PYTHON:-python3.11}"

export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS="-modcacherw" CGO_ENABLED=0
export GOTOOLCHAIN=local

# The addresses of the local servers, as the services' and tests' settings read them.
export LETHE_KAFKA_BOOTSTRAP_SERVERS="${LETHE_KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
# The bus is SASL/SCRAM with ACLs. Development passwords, for the local stack only: every principal has its own
# (compose and production take them from secrets). Scripts, tests and `lethe` act as the admin super user; each
# service runs as its own principal (services.sh, tests/pipeline.py).
export LETHE_KAFKA_PASSWORD_ADMIN="${LETHE_KAFKA_PASSWORD_ADMIN:-lethe-local-admin}"
for principal in intake purger keyvault notifier audit upstream; do
  var="LETHE_KAFKA_PASSWORD_${principal^^}"
  export "$var=${!var:-lethe-local-$principal}"
done
unset principal var
export LETHE_KAFKA_SASL_USERNAME="${LETHE_KAFKA_SASL_USERNAME:-admin}"
export LETHE_KAFKA_SASL_PASSWORD="${LETHE_KAFKA_SASL_PASSWORD:-$LETHE_KAFKA_PASSWORD_ADMIN}"
# retryWrites=false: every effect of lethe is idempotent, and SecantusDB scans its table of retryable writes (up to
# 10,000) on every write, which tripled the time of one insert (docs/benchmarks.md).
export LETHE_MONGO_URL="${LETHE_MONGO_URL:-mongodb://127.0.0.1:27017/?retryWrites=false}"
export LETHE_S3_ENDPOINT_URL="${LETHE_S3_ENDPOINT_URL:-http://127.0.0.1:8333}"
export LETHE_S3_ACCESS_KEY_ID="${LETHE_S3_ACCESS_KEY_ID:-lethe}"
export LETHE_S3_SECRET_ACCESS_KEY="${LETHE_S3_SECRET_ACCESS_KEY:-lethe-local-secret}"
export LETHE_SMTP_HOST="${LETHE_SMTP_HOST:-127.0.0.1}"
export LETHE_SMTP_PORT="${LETHE_SMTP_PORT:-1025}"
export LETHE_SMTP_CATCHER_DIR="${LETHE_SMTP_CATCHER_DIR:-$VAR/mail}"
export LETHE_TEST_KMS_ENDPOINT_URL="${LETHE_TEST_KMS_ENDPOINT_URL:-http://127.0.0.1:4566}"
# The HS256 secret that the local stack's services accept and `lethe token` signs with (local use only).
export LETHE_AUTH_JWT_SECRET="${LETHE_AUTH_JWT_SECRET:-lethe-local-only-secret-not-for-production}"
export LETHE_MILVUS_URI="${LETHE_MILVUS_URI:-http://127.0.0.1:19530}"
# PostgreSQL, for the purger's PostgreSQL datasets. A development password, for the local stack only: stack.sh creates
# this role (the server's superuser), its password and the database from this URL when it initialises var/postgres.
export LETHE_POSTGRES_URL="${LETHE_POSTGRES_URL:-postgresql://lethe:lethe-local-postgres@127.0.0.1:5432/lethe}"
# The Kafka jars, for tests that start a broker of their own (to stop and restart it under a running service).
export LETHE_TEST_KAFKA_CLASSPATH="${LETHE_TEST_KAFKA_CLASSPATH:-$CACHE/kafka/libs/*}"
export LETHE_TEST_KAFKA_LOG4J="${LETHE_TEST_KAFKA_LOG4J:-$LOCAL/kafka/log4j2.properties}"
# A MongoDB server of their own lets the fault tests stop MongoDB without touching the stack's.
export LETHE_TEST_MONGO_BIN="${LETHE_TEST_MONGO_BIN:-$VENV/bin/secantusd-py}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# fingerprint FILE... : a hash of the files that decide a build, to know when the cached one is stale.
fingerprint() { cat "$@" | sha256sum | cut -c1-16; }

# pg_bindir : the bin folder (initdb, postgres) of the newest PostgreSQL that Debian's packages installed; fails if none.
pg_bindir() {
  local initdb=(/usr/lib/postgresql/*/bin/initdb)
  [[ -x "${initdb[0]}" ]] || return 1
  printf '%s\n' "${initdb[@]%/initdb}" | sort -V | tail -1
}

# port_open PORT : true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME SECONDS COMMAND... : poll COMMAND every 0.3 s until it succeeds, or fail after SECONDS.
wait_for() {
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  until "$@"; do
    if (( SECONDS - start > limit )); then
      return 1
    fi
    sleep 0.3
  done
  say "$name ready after $((SECONDS - start)) s"
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start_bg NAME COMMAND... : start COMMAND in its own session (so the whole process group can be stopped),
# with its output in var/log/NAME.log and its pid in var/run/NAME.pid.
start_bg() {
  local name="$1"; shift
  mkdir -p "$VAR/log" "$VAR/run"
  setsid "$@" >>"$VAR/log/$name.log" 2>&1 < /dev/null &
  echo $! >"$VAR/run/$name.pid"
}

# The signal that stops a server cleanly without waiting for its clients, where SIGTERM would wait: PostgreSQL's SIGTERM
# is its "smart" shutdown (it waits until every client has disconnected), SIGINT its "fast" one (its image's STOPSIGNAL).
declare -gA STOP_SIGNAL=([postgres]=INT)

# stop_bg NAME... : SIGTERM (or its STOP_SIGNAL) each process group, wait up to 30 s for all of them, then SIGKILL what is
# left.
stop_bg() {
  local name pid sig pids=() names=()
  for name in "$@"; do
    [[ -f "$VAR/run/$name.pid" ]] || continue
    pid="$(cat "$VAR/run/$name.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping $name"
      sig="${STOP_SIGNAL[$name]:-TERM}"
      kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
      pids+=("$pid"); names+=("$name")
    fi
    rm -f "$VAR/run/$name.pid"
  done
  local deadline=$((SECONDS + 30)) i alive
  while :; do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    (( alive == 0 || SECONDS >= deadline )) && break
    sleep 0.2
  done
  for i in "${!pids[@]}"; do
    if kill -0 -- "-${pids[$i]}" 2>/dev/null; then
      say "${names[$i]} did not stop in 30 s; killing it"
      kill -KILL -- "-${pids[$i]}" 2>/dev/null || true
    fi
  done
}
