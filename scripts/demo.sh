#!/usr/bin/env bash
# Local demo: a throw-away PostgreSQL, geogate in front of it, psql through geogate.
#
#   scripts/demo.sh                          # interactive psql through geogate
#   GEOGATE_DEMO_SQL="SELECT 1" scripts/demo.sh   # run one statement and exit
#
# Ports: GEOGATE_DEMO_PGPORT (PostgreSQL, default 55432), GEOGATE_DEMO_PORT
# (geogate, default 56432). Everything lives in a temporary directory that is
# removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server not found: apt-get install postgresql" >&2; exit 1; }
PGPORT=${GEOGATE_DEMO_PGPORT:-55432}
GGPORT=${GEOGATE_DEMO_PORT:-56432}
WORK=$(mktemp -d /tmp/geogate-demo.XXXXXX)
chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK"

GG_PID=""
cleanup() {
  [ -n "$GG_PID" ] && kill "$GG_PID" 2>/dev/null && wait "$GG_PID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" stop -m fast -D "$WORK/pg" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building geogate"
cargo build --quiet --bin geogate
GEOGATE=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/geogate

echo "== starting PostgreSQL on 127.0.0.1:$PGPORT"
as_pg "$PGBIN/initdb" -A trust -U postgres -E UTF8 --locale=C --no-sync -D "$WORK/pg" >/dev/null
as_pg "$PGBIN/pg_ctl" start -w -D "$WORK/pg" -l "$WORK/pg/server.log" \
  -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $WORK" >/dev/null
psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres <<SQL
CREATE ROLE geogate LOGIN SUPERUSER PASSWORD 'secret';
CREATE DATABASE app OWNER geogate;
SQL

cat > "$WORK/geogate.toml" <<TOML
[proxy]
listen = "127.0.0.1:$GGPORT"
local_region = "eu"

[regions.eu]
gateway = "postgres://geogate:secret@127.0.0.1:$PGPORT/app"

[[users]]
name = "app"
password = "app-secret"
TOML

echo "== starting geogate on 127.0.0.1:$GGPORT"
"$GEOGATE" serve --config "$WORK/geogate.toml" >"$WORK/geogate.log" 2>&1 &
GG_PID=$!
for _ in $(seq 1 100); do
  (echo > "/dev/tcp/127.0.0.1/$GGPORT") 2>/dev/null && break
  sleep 0.1
done

URL="postgres://app:app-secret@127.0.0.1:$GGPORT/app"
echo "== psql $URL"
if [ -n "${GEOGATE_DEMO_SQL:-}" ]; then
  psql -X "$URL" -c "$GEOGATE_DEMO_SQL"
else
  psql -X "$URL"
fi
