#!/usr/bin/env bash
# Installs what is missing for the local stack: the venv and its packages, the Kafka jars, FerretDB and SeaweedFS.
# Everything is cached under ~/.cache/lethe (or $LETHE_CACHE_DIR) and rebuilt only when its inputs change.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need() { command -v "$1" >/dev/null || die "$1 is needed: $2"; }

setup_venv() {
  local stamp="$VENV/.lethe-stamp" want
  want="$(fingerprint "$ROOT/pyproject.toml")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  need "$PYTHON_BIN" "Python 3.11 (set LETHE_PYTHON to another interpreter)"
  say "installing the Python packages into .venv (pinned in pyproject.toml)"
  [[ -x "$PY" ]] || "$PYTHON_BIN" -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" -e "$ROOT[dev]"
  echo "$want" >"$stamp"
}

setup_kafka() {
  local libs="$CACHE/kafka/libs" want
  want="$(fingerprint "$LOCAL/kafka/pom.xml")"
  if [[ -f "$libs/.stamp" && "$(cat "$libs/.stamp")" == "$want" ]]; then return; fi
  need mvn "Maven, to fetch the Kafka jars from Maven Central"
  need java "Java 17 or newer, to run Kafka"
  say "fetching the Apache Kafka jars from Maven Central"
  rm -rf "$libs"
  mvn -q -B --no-transfer-progress -Dstyle.color=never -f "$LOCAL/kafka/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
    dependency:copy-dependencies -DoutputDirectory="$libs" -DincludeScope=runtime
  echo "$want" >"$libs/.stamp"
}

# build_go MODULE BINARY PACKAGE : build PACKAGE from the wrapper module deploy/local/go/MODULE into $CACHE/bin/BINARY.
build_go() {
  local name="$1" out="$CACHE/bin/$2" pkg="$3" dir="$LOCAL/go/$1" want
  want="$(fingerprint "$dir"/go.mod "$dir"/go.sum "$dir"/*.go)"
  if [[ -x "$out" && -f "$out.stamp" && "$(cat "$out.stamp")" == "$want" ]]; then return; fi
  need go "Go 1.26, to build $name from the Go module proxy"
  say "building $name from the Go module proxy (the first build takes minutes; it is cached)"
  mkdir -p "$CACHE/bin"
  (cd "$dir" && go build -ldflags="-s -w" -o "$out" "$pkg")
  echo "$want" >"$out.stamp"
}

# FerretDB 1.24's SQLite backend creates its _id index on `_ferretdb_sjson->"_id"` but filters, updates and
# deletes by `_ferretdb_sjson->'$._id'`: the same value, but SQLite matches index expressions by their text, so every
# lookup, update and delete by _id scanned the whole table (FerretDB issue #3888). We build it with two one-line
# fixes, from a patched copy of the module; the build fails if either line ever changes.
build_ferretdb() {
  local dir="$LOCAL/go/ferretdb" out="$CACHE/bin/ferretdb" work="$CACHE/build/ferretdb" src want
  want="$(fingerprint "$dir"/go.mod "$dir"/go.sum "$dir"/*.go "$LOCAL/setup.sh")"
  if [[ -x "$out" && -f "$out.stamp" && "$(cat "$out.stamp")" == "$want" ]]; then return; fi
  need go "Go 1.26, to build ferretdb from the Go module proxy"
  say "building ferretdb from the Go module proxy, with its _id index fix (cached after the first build)"
  src="$(cd "$dir" && go mod download -json github.com/FerretDB/FerretDB | "$PYTHON_BIN" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  rm -rf "$work" && mkdir -p "$work" && cp -r "$src" "$work/FerretDB" && chmod -R u+w "$work/FerretDB"
  local meta="$work/FerretDB/internal/backends/sqlite/metadata/metadata.go"
  grep -q "IDColumn = DefaultColumn + \"->'\$._id'\"" "$meta" || die "FerretDB's IDColumn line changed: review the fix"
  sed -i "s|IDColumn = DefaultColumn + \"->'\$._id'\"|IDColumn = DefaultColumn + \"->'_id'\"|" "$meta"
  # It also uses that index only when the filter is `_id` alone; `{_id, version}` (a conditional update) scanned.
  # The handlers filter every row again anyway, so narrowing by a top-level `_id` first is always safe.
  local coll="$work/FerretDB/internal/backends/sqlite/collection.go"
  [[ "$(grep -c 'if params.Filter.Len() == 1 {' "$coll")" == 2 ]] || die "FerretDB's _id pushdown changed: review the fix"
  sed -i 's/if params.Filter.Len() == 1 {/if params.Filter.Len() >= 1 {/' "$coll"
  cp "$dir"/go.mod "$dir"/go.sum "$dir"/*.go "$work/"
  mkdir -p "$CACHE/bin"
  (cd "$work" && go mod edit -replace github.com/FerretDB/FerretDB=./FerretDB && go build -ldflags="-s -w" -o "$out" .)
  echo "$want" >"$out.stamp"
}

# The console's browser tests drive Debian's Chromium through its matching chromedriver (both from apt).
setup_chromium() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && return
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then
    sudo -n true 2>/dev/null || die "Chromium is missing: run 'sudo apt-get install chromium chromium-driver' once"
    sudo="sudo -n"
  fi
  say "installing Chromium and chromedriver (apt, once)"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
}

setup_venv
setup_kafka
setup_chromium
build_ferretdb
build_go seaweedfs weed github.com/seaweedfs/seaweedfs/weed
mkdir -p "$VAR"/{log,run,mail,milvus,ferretdb,seaweedfs,kafka}
say "setup done"
