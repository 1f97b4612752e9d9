#!/usr/bin/env bash
# Pass-through benchmark (BENCHMARKS.md): one interleaved run of
#   pgbench -S -n -c 8 -j 2 -T $SECS -M simple|extended|prepared
# against PostgreSQL directly, PgBouncer (session mode) and geogate (release
# build), then geogate's memory with $IDLE idle client connections.
#
#   scripts/bench-passthrough.sh            # SECS=15 ROUNDS=1 IDLE=1000
#   SECS=5 ROUNDS=2 scripts/bench-passthrough.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-15}
ROUNDS=${ROUNDS:-1}
IDLE=${IDLE:-1000}
SCALE=${SCALE:-10}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=${PGPORT:-57432}; BOUNCERPORT=${BOUNCERPORT:-57433}; GGPORT=${GGPORT:-57434}
WORK=$(mktemp -d /tmp/geogate-bench.XXXXXX)
chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK"
ulimit -n 20000 2>/dev/null || true

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # runuser does not pass the signal on: stop PgBouncer by its pidfile.
  [ -f "$WORK/pgbouncer.pid" ] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" stop -m fast -D "$WORK/pg" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet --bin geogate
GEOGATE=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/geogate

# PostgreSQL: enough connections for the idle test (each idle client holds one).
as_pg "$PGBIN/initdb" -A trust -U postgres -E UTF8 --locale=C --no-sync -D "$WORK/pg" >/dev/null
cat >> "$WORK/pg/postgresql.conf" <<CONF
max_connections = $((IDLE + 100))
shared_buffers = 256MB
fsync = off
CONF
as_pg "$PGBIN/pg_ctl" start -w -D "$WORK/pg" -l "$WORK/pg/server.log" \
  -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $WORK" >/dev/null
psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE bench"
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U postgres bench >/dev/null 2>&1

# PgBouncer, session pooling, trust auth (the cheapest setup it has).
cat > "$WORK/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCERPORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = session
max_client_conn = $((IDLE + 100))
default_pool_size = $((IDLE + 50))
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
INI
echo '"postgres" ""' > "$WORK/userlist.txt"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$WORK"
as_pg pgbouncer "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
PIDS+=($!)

cat > "$WORK/geogate.toml" <<TOML
[proxy]
listen = "127.0.0.1:$GGPORT"
local_region = "eu"
max_client_connections = $((IDLE + 100))
[regions.eu]
gateway = "postgres://postgres@127.0.0.1:$PGPORT/bench"
[[users]]
name = "postgres"
password = "bench"
[[users]]
name = "idle"
password = "bench"
auth = "password"
TOML
RUST_LOG=warn "$GEOGATE" serve --config "$WORK/geogate.toml" >"$WORK/geogate.log" 2>&1 &
GG_PID=$!
PIDS+=($GG_PID)
for port in $BOUNCERPORT $GGPORT; do
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done

tps() { # target mode
  local port=$PGPORT
  case $1 in pgbouncer) port=$BOUNCERPORT ;; geogate) port=$GGPORT ;; esac
  PGPASSWORD=bench pgbench -S -n -c 8 -j 2 -T "$SECS" -M "$2" -h 127.0.0.1 -p "$port" -U postgres bench 2>/dev/null \
    | sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}

declare -A SUM
echo "pgbench -S -n -c 8 -j 2 -T $SECS, scale $SCALE, $ROUNDS interleaved round(s), $(nproc) cores"
for round in $(seq 1 "$ROUNDS"); do
  for mode in simple extended prepared; do
    for target in direct pgbouncer geogate; do
      t=$(tps "$target" "$mode")
      echo "round $round  $mode  $target  tps=$t"
      SUM[$mode.$target]=$(echo "${SUM[$mode.$target]:-0} + $t" | bc -l)
    done
  done
done

echo
printf '| mode | direct TPS | PgBouncer TPS | geogate TPS | PgBouncer/direct | geogate/direct | geogate/PgBouncer |\n'
printf '|---|---:|---:|---:|---:|---:|---:|\n'
for mode in simple extended prepared; do
  d=$(echo "${SUM[$mode.direct]} / $ROUNDS" | bc -l)
  b=$(echo "${SUM[$mode.pgbouncer]} / $ROUNDS" | bc -l)
  g=$(echo "${SUM[$mode.geogate]} / $ROUNDS" | bc -l)
  printf '| %s | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f |\n' "$mode" "$d" "$b" "$g" \
    "$(echo "$b / $d" | bc -l)" "$(echo "$g / $d" | bc -l)" "$(echo "$g / $b" | bc -l)"
done

# Memory per idle client: RSS before and after $IDLE idle connections.
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
before=$(rss "$GG_PID")
exec 3> >(python3 scripts/idle-clients.py "$GGPORT" "$IDLE" idle bench bench > "$WORK/idle.out")
for _ in $(seq 1 600); do grep -q ready "$WORK/idle.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$WORK/idle.out" || { echo "idle clients did not connect"; exit 1; }
sleep 1
after=$(rss "$GG_PID")
exec 3>&-
echo
echo "geogate RSS: ${before} KiB before, ${after} KiB with $IDLE idle clients (each with its upstream connection)"
echo "per idle client: $(( (after - before) * 1024 / IDLE )) bytes"
