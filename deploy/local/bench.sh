#!/usr/bin/env bash
# `make bench`: start the stack if needed, run every benchmark in bench/, print their figures.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
"$LOCAL/setup.sh"
"$LOCAL/stack.sh" up
cd "$ROOT"
for script in bench/bench_*.py; do
  say "$script"
  "$PY" "$script" "$@"
done
