#!/usr/bin/env bash
# Installs what the driver matrix (tests/drivers.rs) needs, on a fresh Debian
# machine as root, and does nothing that is already done:
#   - Debian: python3-venv, a JDK (javac), pgJDBC (libpostgresql-jdbc-java), nodejs + npm;
#   - a Python venv with psycopg 3 and asyncpg (requirements.txt, from PyPI);
#   - node-postgres and postgres.js (package-lock.json, from npm).
# The venv and node_modules live in a cache directory outside the work tree,
# $GEOGATE_DRIVERS_CACHE (default ~/.cache/geogate/drivers); the tests look
# in the same place.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${GEOGATE_DRIVERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/geogate/drivers}

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# Debian packages, only those missing (apt-get update is slow: run it only then).
missing=()
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

mkdir -p "$cache"

# Python: Debian's interpreter, so the venv does not depend on a user's pyenv.
# A stamp (a copy of requirements.txt) tells whether the venv is up to date.
venv=$cache/venv
if ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt" 2>/dev/null; then
  echo "setup.sh: Python venv in $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/.requirements.txt"
fi

# Node: npm ci in the cache with the lock file; the same stamp idea.
node=$cache/node
if ! cmp -s "$here/package-lock.json" "$node/package-lock.json" 2>/dev/null \
  || [ ! -d "$node/node_modules/pg" ] || [ ! -d "$node/node_modules/postgres" ]; then
  echo "setup.sh: npm ci in $node"
  mkdir -p "$node"
  cp "$here/package.json" "$here/package-lock.json" "$node/"
  (cd "$node" && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "setup.sh: driver matrix ready in $cache"
