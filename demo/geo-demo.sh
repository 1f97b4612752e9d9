#!/usr/bin/env bash
# geogate's local geo demo: three PostgreSQL "regions" (eu, us, apac), each
# owning its partitions and reaching the others' through postgres_fdw over
# latency relays (eu–us 70 ms, eu–apac 170 ms, us–apac 220 ms round trip),
# and a geogate sidecar for the eu region in front of them.
#
#   demo/geo-demo.sh            walk through, then open psql through geogate
#   DEMO_NONINTERACTIVE=1 ...   walk through and exit (CI)
#   GEOGATE_BIN=path ...        use this geogate binary instead of building one
#                               (the relay is taken from the same directory,
#                               or from RELAY_BIN)
#   DEMO_PORT_BASE=15430        ports used: base+1..3 (gateways), base+10..18
#                               (relays), base+100/101 (sidecars), base+200/201
#                               (their metrics)
#   DEMO_KEEP=1                 keep the working directory (logs, configs)
#   DEMO_TRACE=1                print elapsed seconds at each step
#
# Everything it starts is stopped on exit or Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
base=${DEMO_PORT_BASE:-15430}
work=${DEMO_DIR:-$(mktemp -d /tmp/geogate-demo.XXXXXX)}
declare -A PORT=([eu]=$((base + 1)) [us]=$((base + 2)) [apac]=$((base + 3)))
declare -A RTT=([eu-us]=70 [us-eu]=70 [eu-apac]=170 [apac-eu]=170 [us-apac]=220 [apac-us]=220)
regions=(eu us apac)
relay_port() { # from to -> port of the relay that "from" uses to reach "to"
  local i j
  for i in 0 1 2; do [ "${regions[$i]}" = "$1" ] && break; done
  for j in 0 1 2; do [ "${regions[$j]}" = "$2" ] && break; done
  echo $((base + 10 + i * 3 + j))
}
PROXY_PORT=$((base + 100)); OBSERVE_PORT=$((base + 101))
METRICS_PORT=$((base + 200)); OBSERVE_METRICS_PORT=$((base + 201))

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; [ -n "${DEMO_TRACE:-}" ] && echo "   [t=${SECONDS}s]"; return 0; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for r in "${regions[@]}"; do
    [ -d "$work/$r" ] && as_pg "$BIN/pg_ctl" stop -m fast -D "$work/$r" >/dev/null 2>&1
  done
  [ -z "${DEMO_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites ------------------------------------------------------------
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v curl >/dev/null; then
  say "Installing PostgreSQL and curl (apt-get)"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib curl >/dev/null
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
if [ -z "${GEOGATE_BIN:-}" ]; then
  command -v cargo >/dev/null || { echo "demo: building geogate needs a Rust toolchain (https://rustup.rs), or set GEOGATE_BIN" >&2; exit 1; }
  say "Building geogate (release; a few minutes the first time)"
  (cd "$root" && cargo build --release --quiet --bins)
  GEOGATE_BIN=$root/target/release/geogate
fi
RELAY_BIN=${RELAY_BIN:-$(dirname "$GEOGATE_BIN")/geogate-relay}
mkdir -p "$work"; chmod 755 "$work"
[ "$(id -u)" = 0 ] && chown postgres "$work"

# --- three regional gateways ------------------------------------------------------
say "Starting three regional PostgreSQL gateways and the links between them"
for r in "${regions[@]}"; do
  as_pg "$BIN/initdb" -A trust -U postgres --no-sync -D "$work/$r" >/dev/null
  cat >>"$work/$r/postgresql.conf" <<CONF
port = ${PORT[$r]}
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work/$r'
fsync = off
CONF
  printf 'local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$work/$r/pg_hba.conf"
  as_pg "$BIN/pg_ctl" start -w -D "$work/$r" -l "$work/$r.log" >/dev/null
done
for from in "${regions[@]}"; do
  for to in "${regions[@]}"; do
    [ "$from" = "$to" ] && continue
    "$RELAY_BIN" "127.0.0.1:$(relay_port "$from" "$to")" "127.0.0.1:${PORT[$to]}" "${RTT[$from-$to]}" &
    pids+=($!)
  done
done
psql_r() { local r=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${PORT[$r]}" -U postgres "$@"; }
for r in "${regions[@]}"; do
  psql_r "$r" -d postgres -c "CREATE ROLE geogate LOGIN PASSWORD 'secret'" -c "CREATE DATABASE app OWNER geogate"
  peers=()
  for p in "${regions[@]}"; do [ "$p" != "$r" ] && peers+=("$p:$(relay_port "$r" "$p")"); done
  "$here/schema.sh" "$r" "${peers[@]}" | psql_r "$r" -d app >/dev/null
  psql_r "$r" -d app -c "GRANT ALL ON ALL TABLES IN SCHEMA public TO geogate" >/dev/null
done

say "Loading sample tenants, users and documents (each region loads its own rows)"
for r in "${regions[@]}"; do
  psql_r "$r" -d app >/dev/null <<SQL
INSERT INTO tenants_$r SELECT md5('tenant-$r-' || i)::uuid, 'Tenant $r ' || i, '$r', 1 + i % 3 FROM generate_series(1, 5) i;
INSERT INTO users_$r (tenant_id, email, region)
  SELECT md5('tenant-$r-' || (1 + i % 5))::uuid, 'user' || i || '@$r.example', '$r' FROM generate_series(1, 2000) i;
INSERT INTO documents_$r (author_id, tenant_id, region, title)
  SELECT id, tenant_id, region, 'doc of ' || email FROM users_$r;
-- Only this region's tables: ANALYZE of the foreign ones would sample across the ocean.
ANALYZE tenants_$r, users_$r, documents_$r;
SQL
done
tenant() { psql_r eu -d app -tA -c "SELECT md5('tenant-$1-$2')::uuid"; }
EU_T=$(tenant eu 1); US_T=$(tenant us 2); MOVE_T=$(tenant eu 3); LIVE_T=$(tenant eu 4)

# --- geogate ----------------------------------------------------------------------
write_config() { # mode port metrics_port
  cat <<TOML
[proxy]
listen = "127.0.0.1:$2"
local_region = "eu"
metrics_listen = "127.0.0.1:$3"
mode = "$1"

[regions.eu]
gateway = "postgres://geogate:secret@127.0.0.1:${PORT[eu]}/app?sslmode=disable"
fallback = ["us"]
[regions.us]
gateway = "postgres://geogate:secret@127.0.0.1:$(relay_port eu us)/app?sslmode=disable"
[regions.apac]
gateway = "postgres://geogate:secret@127.0.0.1:$(relay_port eu apac)/app?sslmode=disable"

[tenants]
query = "SELECT id::text, region::text FROM tenants"
lookup_query = "SELECT region::text FROM tenants WHERE id::text = \$1"
refresh = "30s"
# Tenant moves (docs/tenant-moves.md): writes are checked against this
# table (every gateway reads it); moves are announced on geogate_tenants.
table = "tenants"

[tables.tenants]
partition_column = "region"
tenant_column = "id"
on_missing_region = "rewrite"
[tables.users]
partition_column = "region"
tenant_column = "tenant_id"
on_missing_region = "rewrite"
[tables.documents]
partition_column = "region"
tenant_column = "tenant_id"
on_missing_region = "rewrite"
[tables.plans]
locality = "global"

[[users]]
name = "app"
password = "app-secret"
TOML
}
write_config enforce "$PROXY_PORT" "$METRICS_PORT" >"$work/geogate.toml"
write_config observe "$OBSERVE_PORT" "$OBSERVE_METRICS_PORT" >"$work/geogate-observe.toml"
say "Starting the eu geogate sidecar (enforce on :$PROXY_PORT, observe on :$OBSERVE_PORT)"
"$GEOGATE_BIN" serve --config "$work/geogate.toml" >"$work/geogate.log" 2>&1 & pids+=($!)
"$GEOGATE_BIN" serve --config "$work/geogate-observe.toml" >"$work/geogate-observe.log" 2>&1 & pids+=($!)
for port in "$PROXY_PORT" "$OBSERVE_PORT"; do
  for _ in $(seq 100); do
    PGPASSWORD=app-secret psql -X -q -h 127.0.0.1 -p "$port" -U app -d app -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.2
  done
done

# --- the walk-through ------------------------------------------------------------
run_timed() { # port sql [user password] -> "median_ms<TAB>first row"
  local port=$1 sql=$2 user=${3:-app} pw=${4:-app-secret} out
  out=$(PGPASSWORD=$pw psql -X -q -h 127.0.0.1 -p "$port" -U "$user" -d app -tA -v ON_ERROR_STOP=1 <<SQL
\timing on
$sql;
$sql;
$sql;
SQL
) || return 1
  local rows times
  rows=$(echo "$out" | grep -v '^Time:' | head -1)
  times=$(echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | sort -n)
  printf '%s\t%s\n' "$(echo "$times" | sed -n 2p)" "$rows"
}
declare -A LAT
step() { # key title port sql [user password]
  local res
  res=$(run_timed "$3" "$4" "${5:-}" "${6:-}") || { echo "demo: step '$2' failed" >&2; exit 1; }
  LAT[$1]=${res%%$'\t'*}
  printf '%-58s %8s ms   (result: %s)\n' "$2" "${LAT[$1]}" "${res#*$'\t'}"
}

say "0. Today, without geogate: the app's query names no region, straight to the eu gateway"
echo "   SELECT count(*) FROM users WHERE tenant_id = '<eu tenant>'"
step direct "   direct to the eu gateway (scans every region)" "${PORT[eu]}" "SELECT count(*) FROM users WHERE tenant_id = '$EU_T'" geogate secret
[ -n "${DEMO_INFRA_ONLY:-}" ] && exit 0

say "1. A partition-aware query: names its region, served inside eu"
echo "   SELECT count(*) FROM users WHERE region = 'eu' AND tenant_id = '<eu tenant>'"
step aware "   through geogate (route → eu)" "$PROXY_PORT" "SELECT count(*) FROM users WHERE region = 'eu' AND tenant_id = '$EU_T'"

say "2. The same query without the region: geogate rewrites it from the tenant"
echo "   SELECT count(*) FROM users WHERE tenant_id = '<eu tenant>'"
psql_r eu -d app -tA -F, -c "SELECT id, region FROM tenants WHERE id = '$EU_T'" | sed '1i tenant_id,region' >"$work/tenants.csv"
echo "   geogate explain shows what the sidecar sends instead:"
"$GEOGATE_BIN" explain --config "$work/geogate.toml" --tenants "$work/tenants.csv" \
  "SELECT count(*) FROM users WHERE tenant_id = '$EU_T'" | grep -E '^(decision|rewritten):' | sed 's/^/     /'
step rewrite "   through geogate (rewrite → eu)" "$PROXY_PORT" "SELECT count(*) FROM users WHERE tenant_id = '$EU_T'"
step rewrite_us "   a us tenant through the eu sidecar (rewrite → us)" "$PROXY_PORT" "SELECT count(*) FROM users WHERE tenant_id = '$US_T'"

say "3. The same query through a sidecar in observe mode: forwarded unchanged, it scatters over every region"
step scatter "   through geogate in observe mode (scatters)" "$OBSERVE_PORT" "SELECT count(*) FROM users WHERE tenant_id = '$EU_T'"
echo "   the observe sidecar changed nothing; it counted what enforce mode would have done:"
curl -s "http://127.0.0.1:$OBSERVE_METRICS_PORT/metrics" 2>/dev/null | grep -E '^geogate_statements_total.*table="users"' | sed 's/^/     /' || true

say "4. A query that names neither region nor tenant, in enforce mode"
echo "   SELECT email FROM users WHERE email LIKE 'user1%'"
PGPASSWORD=app-secret psql -X -v VERBOSITY=verbose -h 127.0.0.1 -p "$PROXY_PORT" -U app -d app -c "SELECT email FROM users WHERE email LIKE 'user1%'" 2>&1 | sed 's/^/   /' || true

say "5. Moving a tenant from eu to us (DELETE + INSERT in one transaction, on the gateways)"
psql_r eu -d app >/dev/null <<SQL
BEGIN;
WITH m AS (DELETE FROM documents WHERE region = 'eu' AND tenant_id = '$MOVE_T' RETURNING *)
  INSERT INTO documents SELECT id, author_id, tenant_id, 'us', title, content, created_at FROM m;
WITH m AS (DELETE FROM users WHERE region = 'eu' AND tenant_id = '$MOVE_T' RETURNING *)
  INSERT INTO users SELECT id, tenant_id, email, 'us', created_at FROM m;
WITH m AS (DELETE FROM tenants WHERE region = 'eu' AND id = '$MOVE_T' RETURNING *)
  INSERT INTO tenants SELECT id, name, 'us', plan_id, created_at FROM m;
COMMIT;
SQL
echo "   geogate's cache still says eu: the rewritten read finds nothing there, so geogate"
echo "   looks the tenant up afresh and runs it again in us (verify on empty)"
echo "   SELECT region, email FROM users WHERE tenant_id = '<moved tenant>' ORDER BY email LIMIT 1"
step moved "   the moved tenant's users through geogate (found in us)" "$PROXY_PORT" "SELECT region, email FROM users WHERE tenant_id = '$MOVE_T' ORDER BY email LIMIT 1"

say "Latencies side by side (median of 3 runs each)"
printf '   %-40s %8s ms\n' "no region, direct (no geogate)" "${LAT[direct]}" "partition-aware (route, eu)" "${LAT[aware]}" \
  "no region, rewritten by geogate (eu)" "${LAT[rewrite]}" \
  "no region, rewritten (us tenant)" "${LAT[rewrite_us]}" \
  "no region, scatter (observe mode)" "${LAT[scatter]}" \
  "moved tenant (now in us)" "${LAT[moved]}"
speedup=$(awk -v a="${LAT[scatter]}" -v b="${LAT[rewrite]}" 'BEGIN { if (b > 0) printf "%.0f", a / b; else print "inf" }')
echo "   rewrite vs scatter: ${speedup}x faster"

say "Metrics"
echo "   curl -s http://127.0.0.1:$METRICS_PORT/metrics | grep ^geogate_"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null | grep -E '^geogate_(statements|rejections|rewrites|scatter)_total|^geogate_tenant_cache_lookups_total' | sed 's/^/   /' || true
echo "   observe sidecar: http://127.0.0.1:$OBSERVE_METRICS_PORT/metrics, statements: /statements"

say "6. Moving a tenant under live writes: geogate move-tenant while the app inserts every 20 ms"
echo "   writer: INSERT INTO users (tenant_id, email) VALUES ('<tenant in eu>', …) through geogate"
rm -f "$work/writer.stop" "$work/writer.err"; : >"$work/writer.err"
(
  i=0
  while [ ! -f "$work/writer.stop" ]; do
    i=$((i + 1))
    PGPASSWORD=app-secret psql -X -q -h 127.0.0.1 -p "$PROXY_PORT" -U app -d app -v ON_ERROR_STOP=1 \
      -c "INSERT INTO users (tenant_id, email) VALUES ('$LIVE_T', 'live$i@eu.example')" >/dev/null 2>>"$work/writer.err" \
      || echo "write $i failed" >>"$work/writer.err"
    sleep 0.02
  done
) & writer=$!
sleep 1
"$GEOGATE_BIN" move-tenant --config "$work/geogate.toml" "$LIVE_T" --to us | sed 's/^/   /'
sleep 2
touch "$work/writer.stop"; wait "$writer"
live_eu=$(psql_r eu -d app -tA -c "SELECT count(*) FROM users WHERE tenant_id = '$LIVE_T' AND region = 'eu'")
live_us=$(psql_r eu -d app -tA -c "SELECT count(*) FROM users WHERE tenant_id = '$LIVE_T' AND region = 'us'")
live_written=$(psql_r eu -d app -tA -c "SELECT count(*) FROM users WHERE tenant_id = '$LIVE_T' AND email LIKE 'live%'")
live_errors=$(grep -c . "$work/writer.err" || true)
echo "   after the move: ${live_eu} rows of the tenant in eu (old region), ${live_us} in us"
echo "   live writes: ${live_written} rows written, ${live_errors} write errors"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null | grep -E '^geogate_(tenant_invalidations|guarded_retries)_total' | sed 's/^/   /' || true

if [ -z "${DEMO_NONINTERACTIVE:-}" ]; then
  say "psql through geogate (eu sidecar). Try: SELECT * FROM users WHERE tenant_id = '$US_T' LIMIT 3;"
  PGPASSWORD=app-secret psql -X -v VERBOSITY=verbose -h 127.0.0.1 -p "$PROXY_PORT" -U app -d app || true
fi
say "Demo done; stopping everything it started"
