#!/usr/bin/env bash
# Installs what is missing for the local stack: the venv and its packages (SecantusDB, the MongoDB-wire server, among
# them), the Kafka jars, Debian's PostgreSQL and Chromium, and the SeaweedFS build.
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
  "$PY" -m pip install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" -e "$ROOT[dev,stack]"
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

# The stack's PostgreSQL runs Debian's server binaries on a cluster of its own in var/postgres (stack.sh).
setup_postgres() {
  pg_bindir >/dev/null && return
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then
    sudo -n true 2>/dev/null || die "PostgreSQL is missing: run 'sudo apt-get install postgresql' once"
    sudo="sudo -n"
  fi
  say "installing PostgreSQL (apt, once)"
  # No "main" cluster of Debian's: where a service manager runs, it would start it on port 5432, the stack's.
  $sudo mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/lethe.conf >/dev/null
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

setup_venv
setup_kafka
setup_chromium
setup_postgres
build_go seaweedfs weed github.com/seaweedfs/seaweedfs/weed
mkdir -p "$VAR"/{log,run,mail,milvus,mongo,postgres,seaweedfs,kafka}
say "setup done"
