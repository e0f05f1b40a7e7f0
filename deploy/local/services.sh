#!/usr/bin/env bash
# Starts or stops lethe's five services as local processes (logs in var/log/, pids in var/run/).
# Usage: services.sh start | stop | status
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SERVICES=(intake purger keyvault notifier audit)
declare -A PORT=([intake]=8001 [purger]=8002 [keyvault]=8003 [notifier]=8004 [audit]=8005)
export LETHE_LOG_FORMAT="${LETHE_LOG_FORMAT:-console}"
# The local profile: webhooks may go to loopback receivers (off by default everywhere else).
export NOTIFIER_ALLOW_LOOPBACK_WEBHOOKS="${NOTIFIER_ALLOW_LOOPBACK_WEBHOOKS:-true}"
# The upstream services allowed to ask for deletions on deletion.intents (none by default anywhere else).
export INTAKE_INTENT_PRODUCERS="${INTAKE_INTENT_PRODUCERS:-[\"billing\", \"accounts\"]}"

ready() { curl -fsS -o /dev/null "http://127.0.0.1:$1/readyz"; }

start() {
  local name
  cd "$ROOT"
  # notifier opens contact addresses and shreds their keys through keyvault, with a service token.
  if [[ -z "${NOTIFIER_KEYVAULT_TOKEN:-}" ]]; then
    NOTIFIER_KEYVAULT_TOKEN="$("$PY" -m ops.cli token --sub notifier --scope "keys:use keys:destroy:contact" --ttl 31536000)"
    export NOTIFIER_KEYVAULT_TOKEN
  fi
  if [[ -z "${INTAKE_KEYVAULT_TOKEN:-}" ]]; then
    INTAKE_KEYVAULT_TOKEN="$("$PY" -m ops.cli token --sub intake --scope "keys:use" --ttl 31536000)"
    export INTAKE_KEYVAULT_TOKEN
  fi
  # intake owns the rules, holds and contacts: the purger and keyvault read the rules and holds in force from it,
  # notifier a request's sealed address.
  local reader scope
  for reader in PURGER KEYVAULT NOTIFIER; do
    local var="${reader}_INTAKE_TOKEN"
    if [[ -z "${!var:-}" ]]; then
      scope="retention:read"
      [[ $reader == NOTIFIER ]] && scope="contacts:read"
      export "$var=$("$PY" -m ops.cli token --sub "${reader,,}" --scope "$scope" --ttl 31536000)"
    fi
  done
  for name in "${SERVICES[@]}"; do
    pid_alive "$VAR/run/svc-$name.pid" && continue
    port_open "${PORT[$name]}" && die "port ${PORT[$name]} is taken, so $name cannot start"
    say "starting $name on http://127.0.0.1:${PORT[$name]} (log: var/log/svc-$name.log)"
    # Each service talks to Kafka as its own principal, which the ACLs narrow to its own topics.
    local password="LETHE_KAFKA_PASSWORD_${name^^}"
    start_bg "svc-$name" env LETHE_KAFKA_SASL_USERNAME="$name" LETHE_KAFKA_SASL_PASSWORD="${!password}" \
      "$PY" -m "services.$name"
  done
  for name in "${SERVICES[@]}"; do
    if ! wait_for "$name /readyz" 120 ready "${PORT[$name]}"; then
      tail -30 "$VAR/log/svc-$name.log" >&2
      die "$name did not become ready (see var/log/svc-$name.log)"
    fi
  done
}

stop() {
  stop_bg "${SERVICES[@]/#/svc-}"
}

status() {
  local name
  for name in "${SERVICES[@]}"; do
    printf '%-9s http://127.0.0.1:%s  %s\n' "$name" "${PORT[$name]}" \
      "$(curl -s "http://127.0.0.1:${PORT[$name]}/readyz" || echo down)"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
