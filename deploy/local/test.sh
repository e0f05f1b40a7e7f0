#!/usr/bin/env bash
# `make test`: install what is missing, start the stack, run every test layer against it, stop what it started.
# Exits with pytest's status. Extra arguments go to pytest (e.g. deploy/local/test.sh tests/unit -k events).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

"$LOCAL/setup.sh"
started_here=0
if ! pid_alive "$VAR/run/kafka.pid"; then
  started_here=1
  # A stack started for the tests gets a fresh Kafka log, so no test waits behind events left by earlier runs,
  # and fresh S3 storage: SeaweedFS gives every bucket its own volumes, and the tests' buckets would use them up.
  rm -rf "$VAR/kafka" "$VAR/seaweedfs"
fi
cleanup() { if (( started_here )); then "$LOCAL/stack.sh" down; fi; }
trap cleanup EXIT
"$LOCAL/stack.sh" up

cd "$ROOT"
set +e
"$PY" -m pytest "${@:-tests}"
status=$?
set -e
exit "$status"
