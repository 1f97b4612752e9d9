#!/usr/bin/env bash
# Routing benchmark (BENCHMARKS.md, "Routing"): what geogate's decision costs
# per statement. One interleaved run of pgbench custom scripts (-f), for
# -M simple and -M prepared, against:
#
#   direct   the statements with an explicit `region = '<r>'`, straight to
#            PostgreSQL (no geogate)
#   route    the same statements through geogate (decision: route)
#   rewrite  the same statements WITHOUT the region predicate through geogate:
#            it looks the tenant up in its tenant cache (hits: the cache is
#            loaded at start) and injects the region (decision: rewrite; with
#            -M prepared through a shadow statement prepared on the gateway)
#   pass     the `direct` statements through a second geogate with no
#            [tables]: every statement is `global`, forwarded untouched (the
#            proxy hop alone, the baseline for route and rewrite)
#
# One PostgreSQL cluster plays all three regional gateways: geogate's eu, us
# and apac gateway URLs point at the same database, which holds the seed
# schema (tenants, users with a region column and an index on
# (region, tenant_id), list-partitioned by region). So this measures
# geogate's own cost on the statement path, not a network: there is no
# latency between regions here (the geo demo shows that part).
#
#   scripts/bench-routing.sh                 # SECS=10 ROUNDS=1 CLIENTS=8 THREADS=2
#   SECS=10 ROUNDS=2 scripts/bench-routing.sh
#   SCRIPT_REGIONS=eu scripts/bench-routing.sh  # only eu tenants: no region switches
#   GEOGATE_BIN=target/release/geogate ...   # skip the cargo build
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-10}
ROUNDS=${ROUNDS:-1}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
# Regions whose tenants the clients draw (one pgbench script each, equal
# weights). With one region no client ever changes upstream connection.
SCRIPT_REGIONS=${SCRIPT_REGIONS:-eu us apac}
TENANTS_PER_REGION=${TENANTS_PER_REGION:-100}
USERS_PER_TENANT=${USERS_PER_TENANT:-100}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=${PGPORT:-57442}; GGPORT=${GGPORT:-57443}; METRICSPORT=${METRICSPORT:-57444}; PASSPORT=${PASSPORT:-57445}
WORK=$(mktemp -d /tmp/geogate-bench-routing.XXXXXX)
chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" stop -m fast -D "$WORK/pg" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${GEOGATE_BIN:-}" ]; then
  cargo build --release --quiet --bin geogate
  GEOGATE_BIN=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/geogate
fi

as_pg "$PGBIN/initdb" -A trust -U postgres -E UTF8 --locale=C --no-sync -D "$WORK/pg" >/dev/null
cat >> "$WORK/pg/postgresql.conf" <<CONF
shared_buffers = 256MB
fsync = off
CONF
as_pg "$PGBIN/pg_ctl" start -w -D "$WORK/pg" -l "$WORK/pg/server.log" \
  -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $WORK" >/dev/null
psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE bench"

# The seed schema, with integer tenant ids so that pgbench can draw them.
# Tenants 1..N live in eu, N+1..2N in us, 2N+1..3N in apac.
N=$TENANTS_PER_REGION
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres -d bench <<SQL
CREATE TABLE tenants (id bigint NOT NULL, name text NOT NULL, region text NOT NULL,
  PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE users (id bigserial, tenant_id bigint NOT NULL, email text NOT NULL,
  region text NOT NULL, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE INDEX ON users (region, tenant_id);
CREATE TABLE tenants_eu PARTITION OF tenants FOR VALUES IN ('eu');
CREATE TABLE tenants_us PARTITION OF tenants FOR VALUES IN ('us');
CREATE TABLE tenants_apac PARTITION OF tenants FOR VALUES IN ('apac');
CREATE TABLE users_eu PARTITION OF users FOR VALUES IN ('eu');
CREATE TABLE users_us PARTITION OF users FOR VALUES IN ('us');
CREATE TABLE users_apac PARTITION OF users FOR VALUES IN ('apac');
INSERT INTO tenants
  SELECT i, 'tenant ' || i, CASE WHEN i <= $N THEN 'eu' WHEN i <= 2 * $N THEN 'us' ELSE 'apac' END
  FROM generate_series(1, 3 * $N) i;
INSERT INTO users (tenant_id, email, region)
  SELECT t.id, 'user' || u || '@t' || t.id || '.example', t.region
  FROM tenants t, generate_series(1, $USERS_PER_TENANT) u;
VACUUM ANALYZE;
SQL

# pgbench scripts: one per region (tenants of that region), equal weights.
# `with` has the explicit region predicate, `without` has none.
write_scripts() { # region first_tenant last_tenant
  local r=$1 lo=$2 hi=$3
  cat > "$WORK/with-$r.sql" <<SQL
\set t random($lo, $hi)
SELECT count(*) FROM users WHERE region = '$r' AND tenant_id = :t;
SELECT email FROM users WHERE region = '$r' AND tenant_id = :t ORDER BY id LIMIT 5;
UPDATE tenants SET name = name WHERE region = '$r' AND id = :t;
SQL
  cat > "$WORK/without-$r.sql" <<SQL
\set t random($lo, $hi)
SELECT count(*) FROM users WHERE tenant_id = :t;
SELECT email FROM users WHERE tenant_id = :t ORDER BY id LIMIT 5;
UPDATE tenants SET name = name WHERE id = :t;
SQL
}
write_scripts eu 1 "$N"
write_scripts us $((N + 1)) $((2 * N))
write_scripts apac $((2 * N + 1)) $((3 * N))

GW="postgres://postgres@127.0.0.1:$PGPORT/bench?sslmode=disable"
cat > "$WORK/geogate.toml" <<TOML
[proxy]
listen = "127.0.0.1:$GGPORT"
local_region = "eu"
metrics_listen = "127.0.0.1:$METRICSPORT"
mode = "enforce"

# One PostgreSQL plays the three regional gateways (see the header).
[regions.eu]
gateway = "$GW"
[regions.us]
gateway = "$GW"
[regions.apac]
gateway = "$GW"

[tenants]
query = "SELECT id::text, region FROM tenants"
refresh = "5m"

[tables.tenants]
partition_column = "region"
tenant_column = "id"
on_missing_region = "rewrite"
[tables.users]
partition_column = "region"
tenant_column = "tenant_id"
on_missing_region = "rewrite"

[[users]]
name = "postgres"
password = "bench"
TOML
# The baseline: the same geogate binary with no [tables] and no [tenants],
# so every statement is `global` and passes through to the local gateway.
cat > "$WORK/geogate-pass.toml" <<TOML
[proxy]
listen = "127.0.0.1:$PASSPORT"
local_region = "eu"
[regions.eu]
gateway = "$GW"
[[users]]
name = "postgres"
password = "bench"
TOML
RUST_LOG=warn "$GEOGATE_BIN" serve --config "$WORK/geogate.toml" >"$WORK/geogate.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn "$GEOGATE_BIN" serve --config "$WORK/geogate-pass.toml" >"$WORK/geogate-pass.log" 2>&1 &
PIDS+=($!)
for port in $GGPORT $PASSPORT; do
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done

run() { # target mode -> "tps failed"
  local port=$PGPORT files=with
  case $1 in pass) port=$PASSPORT ;; route) port=$GGPORT ;; rewrite) port=$GGPORT files=without ;; esac
  local out
  local f fs=()
  for f in $SCRIPT_REGIONS; do fs+=(-f "$WORK/$files-$f.sql@1"); done
  out=$(PGPASSWORD=bench pgbench -n -c "$CLIENTS" -j "$THREADS" -T "$SECS" -M "$2" "${fs[@]}" \
    -h 127.0.0.1 -p "$port" -U postgres bench 2>&1) || { echo "pgbench failed ($1 $2):" >&2; echo "$out" >&2; exit 1; }
  local tps failed
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  failed=$(echo "$out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
  echo "$tps ${failed:-0}"
}

declare -A SUM
echo "pgbench -n -c $CLIENTS -j $THREADS -T $SECS, scripts for regions: $SCRIPT_REGIONS (3 statements each), $((3 * N)) tenants," \
  "$((3 * N * USERS_PER_TENANT)) users, $ROUNDS interleaved round(s), $(nproc) cores"
for round in $(seq 1 "$ROUNDS"); do
  for mode in simple prepared; do
    for target in direct pass route rewrite; do
      read -r t f < <(run "$target" "$mode")
      echo "round $round  $mode  $target  tps=$t  failed=$f"
      [ "$f" = 0 ] || { echo "failed transactions: see above" >&2; exit 1; }
      SUM[$mode.$target]=$(echo "${SUM[$mode.$target]:-0} + $t" | bc -l)
    done
  done
done

echo
printf '| mode | direct TPS | pass TPS | route TPS | rewrite TPS | pass/direct | route/direct | rewrite/direct |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|\n'
for mode in simple prepared; do
  d=$(echo "${SUM[$mode.direct]} / $ROUNDS" | bc -l)
  p=$(echo "${SUM[$mode.pass]} / $ROUNDS" | bc -l)
  r=$(echo "${SUM[$mode.route]} / $ROUNDS" | bc -l)
  w=$(echo "${SUM[$mode.rewrite]} / $ROUNDS" | bc -l)
  printf '| %s | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f |\n' "$mode" "$d" "$p" "$r" "$w" \
    "$(echo "$p / $d" | bc -l)" "$(echo "$r / $d" | bc -l)" "$(echo "$w / $d" | bc -l)"
done
echo
echo "geogate's counters after the run:"
curl -s "http://127.0.0.1:$METRICSPORT/metrics" \
  | grep -E '^geogate_(statements_total|tenant_cache_lookups_total|rejections_total)' | grep -v ' 0$' | sed 's/^/  /'
