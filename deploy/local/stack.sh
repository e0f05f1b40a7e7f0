#!/usr/bin/env bash
# The local stack without Docker: Kafka (KRaft), SecantusDB (MongoDB wire on WiredTiger), PostgreSQL (Debian's), SeaweedFS
# S3, an SMTP catcher, Milvus Lite's gRPC server (so every process shares one vector store), and moto's KMS-compatible
# server for tests.
# Usage: stack.sh up | down | status
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SERVERS=(kafka mongo postgres seaweedfs smtp milvus kms)
declare -A PORT=([kafka]=9092 [mongo]=27017 [postgres]=5432 [seaweedfs]=8333 [smtp]=1025 [milvus]=19530 [kms]=4566)
KAFKA_CP="$CACHE/kafka/libs/*"
KAFKA_LOG4J="-Dlog4j2.configurationFile=$LOCAL/kafka/log4j2.properties"

start_kafka() {
  local data="$VAR/kafka/data" props="$VAR/kafka/server.properties"
  if [[ -f "$data/meta.properties" && ! -f "$VAR/kafka/.sasl" ]]; then
    say "Kafka's storage predates SASL: formatting it again (local topics and offsets are dropped)"
    rm -rf "$data"
  fi
  mkdir -p "$data"
  sed -e "s#@DATA_DIR@#$data#" -e "s#@PORT@#9092#" -e "s#@CONTROLLER_PORT@#9093#" \
    -e "s#@ADMIN_PASSWORD@#$LETHE_KAFKA_PASSWORD_ADMIN#g" "$LOCAL/kafka/server.properties.in" >"$props"
  chmod 600 "$props"
  if [[ ! -f "$data/meta.properties" ]]; then
    say "formatting Kafka's storage (once), with the admin's SCRAM credential"
    local cluster_id
    cluster_id="$(java -cp "$KAFKA_CP" "$KAFKA_LOG4J" kafka.tools.StorageTool random-uuid)"
    java -cp "$KAFKA_CP" "$KAFKA_LOG4J" kafka.tools.StorageTool format --standalone \
      -t "$cluster_id" -c "$props" --ignore-formatted \
      --add-scram "SCRAM-SHA-512=[name=admin,password=$LETHE_KAFKA_PASSWORD_ADMIN]" >>"$VAR/log/kafka.log"
    touch "$VAR/kafka/.sasl"
  fi
  start_bg kafka java -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    "$KAFKA_LOG4J" -cp "$KAFKA_CP" kafka.Kafka "$props"
}

start_mongo() {
  # SecantusDB: a MongoDB-wire server (GPL-2.0, run as a separate process like any database server), chosen over
  # FerretDB by measurement (docs/benchmarks.md): it uses secondary indexes and applies concurrent updates atomically.
  mkdir -p "$VAR/mongo"
  start_bg mongo "$VENV/bin/secantusd-py" --host 127.0.0.1 --port 27017 --storage-path "$VAR/mongo" \
    --log-level WARNING
}

start_postgres() {
  # Debian's PostgreSQL server (setup.sh installs it) on a cluster of its own in var/postgres/data, on 127.0.0.1:5432
  # only, with its unix socket in var/postgres. Its superuser, that user's password and the database are the ones
  # LETHE_POSTGRES_URL names (postgresql://USER:PASSWORD@HOST:PORT/DATABASE), set when the cluster is initialised.
  local bin dir="$VAR/postgres" data="$VAR/postgres/data" as=()
  bin="$(pg_bindir)" || die "PostgreSQL is missing: run deploy/local/setup.sh (make setup) first"
  mkdir -p "$dir" "$VAR/log"
  if [[ "$(id -u)" == 0 ]]; then
    # PostgreSQL refuses to run as root: as root, initdb and the server run as the postgres system user. setpriv
    # execs the server (runuser stays as its parent and, on a signal, SIGKILLs it 2 s after passing on SIGTERM).
    id -u postgres >/dev/null 2>&1 ||
      useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin postgres
    chown postgres:postgres "$dir"
    as=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    "${as[@]}" test -w "$dir" ||
      die "the postgres user cannot reach $dir: every folder above it must be searchable by others (chmod o+x)"
  fi
  chmod 700 "$dir"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    local rest="${LETHE_POSTGRES_URL#*://}" userinfo host role password database
    userinfo="${rest%@*}" host="${rest##*@}"
    role="${userinfo%%:*}" password="${userinfo#*:}" database="${host#*/}"
    database="${database%%\?*}"
    [[ "$rest" == *@*/* && "$userinfo" == *:* && -n "$role" && -n "$password" && -n "$database" ]] ||
      die "LETHE_POSTGRES_URL must name a user, a password and a database (postgresql://USER:PASSWORD@HOST:PORT/DB)"
    say "initialising PostgreSQL's cluster (once), with the user and database of LETHE_POSTGRES_URL"
    # Built in a staging folder and moved into place once complete, so a failed first start is simply redone.
    local staging="$dir/data.new" pwfile="$dir/password"
    rm -rf "$staging"
    (umask 077 && printf '%s\n' "$password" >"$pwfile")
    (( ${#as[@]} == 0 )) || chown postgres:postgres "$pwfile"
    if ! (cd "$dir" && "${as[@]}" "$bin/initdb" -D "$staging" -U "$role" --pwfile="$pwfile" --auth=scram-sha-256 \
      --encoding=UTF8 --locale=C) >>"$VAR/log/postgres.log" 2>&1; then
      rm -f "$pwfile"
      die "initdb failed (see var/log/postgres.log)"
    fi
    rm -f "$pwfile"
    # The database, in single-user mode (no server, no port yet); exit_on_error makes an error the exit status.
    printf 'CREATE DATABASE "%s";\n' "$database" |
      (cd "$dir" && "${as[@]}" "$bin/postgres" --single -D "$staging" -c exit_on_error=on postgres) \
        >>"$VAR/log/postgres.log" 2>&1 || die "creating the database $database failed (see var/log/postgres.log)"
    mv "$staging" "$data"
  fi
  # A unix socket's path has at most 107 bytes: in a deep clone, none (lethe connects over TCP).
  local sockets="$dir"
  (( ${#dir} <= 90 )) || sockets=""
  # In the foreground, not through pg_ctl, so that var/run/postgres.pid is the server's and stop_bg stops its group.
  (cd "$dir" && start_bg postgres "${as[@]}" "$bin/postgres" -D "$data" -c listen_addresses=127.0.0.1 -c port=5432 \
    -c unix_socket_directories="$sockets" -c shared_buffers=128MB -c max_connections=200)
}

start_seaweedfs() {
  mkdir -p "$VAR/seaweedfs"
  start_bg seaweedfs "$CACHE/bin/weed" mini -dir="$VAR/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port=8333 -s3.config="$LOCAL/seaweedfs/s3.json" -webdav=false -admin.ui=false -master.telemetry=false \
    -s3.port.iceberg=0 -s3.port.lance=0 -admin.port.legacy=0
}

start_smtp() {
  start_bg smtp "$PY" "$LOCAL/smtp_catcher.py" --host 127.0.0.1 --port 1025 --dir "$LETHE_SMTP_CATCHER_DIR"
}

start_milvus() {
  # Embedded Milvus Lite holds its file for the life of one process; its server lets the purger, `lethe seed` and
  # `lethe verify-erasure` share one store.
  mkdir -p "$VAR/milvus/data"
  start_bg milvus "$PY" -m milvus_lite server --data-dir "$VAR/milvus/data" --host 127.0.0.1 --port 19530
}

start_kms() {
  # A KMS-compatible endpoint (moto, state in memory) for the tests of keyvault's KMS provider.
  start_bg kms "$VENV/bin/moto_server" -H 127.0.0.1 -p 4566
}

up() {
  mkdir -p "$VAR"/{log,run,milvus}
  local name started=$SECONDS
  for name in "${SERVERS[@]}"; do
    if pid_alive "$VAR/run/$name.pid"; then
      continue
    fi
    if port_open "${PORT[$name]}"; then
      die "port ${PORT[$name]} is taken by another process, so $name cannot start (is another stack running?)"
    fi
    say "starting $name on 127.0.0.1:${PORT[$name]} (log: var/log/$name.log)"
    "start_$name"
  done
  # Readiness is polled with a real request to each server, never slept for.
  if ! "$PY" -m ops.cli wait-for kafka mongo postgres s3 smtp milvus --timeout 180; then
    for name in "${SERVERS[@]}"; do
      pid_alive "$VAR/run/$name.pid" || { echo "--- $name is not running; end of var/log/$name.log:"; tail -20 "$VAR/log/$name.log"; }
    done
    die "the local stack did not become ready"
  fi
  wait_for "kms (moto)" 60 port_open 4566 || die "the KMS test endpoint did not start (see var/log/kms.log)"
  "$PY" -m ops.cli kafka setup
  say "local stack ready in $((SECONDS - started)) s"
}

down() {
  # The SMTP catcher first, Kafka last: each has its own data, so they can stop together (PostgreSQL with SIGINT, its
  # fast shutdown: STOP_SIGNAL in lib.sh).
  stop_bg kms milvus smtp seaweedfs postgres mongo kafka
}

status() {
  local name pid
  printf '%-10s %-8s %-7s %s\n' SERVER PID PORT "RSS (MiB, whole process group)"
  for name in "${SERVERS[@]}"; do
    if pid_alive "$VAR/run/$name.pid"; then
      pid="$(cat "$VAR/run/$name.pid")"
      printf '%-10s %-8s %-7s %s\n' "$name" "$pid" "${PORT[$name]}" \
        "$(ps -o rss= -g "$pid" | awk '{s+=$1} END {printf "%.0f", s/1024}')"
    else
      printf '%-10s %-8s %-7s %s\n' "$name" - "${PORT[$name]}" stopped
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
