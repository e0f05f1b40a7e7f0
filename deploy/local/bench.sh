#!/usr/bin/env bash
# `make bench`: start the stack if needed, run every benchmark in bench/ (or only bench/bench_$1.py), print figures
# and a summary table of what they wrote to var/bench/*.json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
"$LOCAL/setup.sh"
"$LOCAL/stack.sh" up
cd "$ROOT"
pattern="bench/bench_${1:-*}.py"
for script in $pattern; do
  say "$script"
  "$PY" "$script"
done
"$PY" bench/report.py
