#!/usr/bin/env bash
# `make run`: install what is missing, start the stack and the five services, stream their logs; Ctrl-C stops all.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

stopping=0
shutdown() {
  (( stopping )) && return
  stopping=1
  trap '' INT TERM
  echo
  say "stopping lethe"
  [[ -n "${tail_pid:-}" ]] && kill "$tail_pid" 2>/dev/null || true
  "$LOCAL/services.sh" stop
  "$LOCAL/stack.sh" down
  say "stopped; no lethe process is left running"
}
trap 'shutdown; exit 0' INT TERM
trap shutdown EXIT

"$LOCAL/setup.sh"
"$LOCAL/stack.sh" up
"$LOCAL/services.sh" start
cat <<TXT

lethe is running:
  intake    http://127.0.0.1:8001   (OpenAPI: /openapi.json)
  purger    http://127.0.0.1:8002
  keyvault  http://127.0.0.1:8003
  notifier  http://127.0.0.1:8004
  audit     http://127.0.0.1:8005
  Kafka 127.0.0.1:9092 · MongoDB wire (SecantusDB) 127.0.0.1:27017 · S3 (SeaweedFS) http://127.0.0.1:8333
  PostgreSQL 127.0.0.1:5432 · SMTP catcher 127.0.0.1:1025 -> var/mail/ · Milvus Lite $LETHE_MILVUS_URI

Streaming the services' logs (all logs are in var/log/). Press Ctrl-C to stop everything.

TXT
tail -n 0 -F "$VAR"/log/svc-*.log &
tail_pid=$!
wait "$tail_pid" || true
