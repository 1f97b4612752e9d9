#!/usr/bin/env bash
# Routing benchmark (BENCHMARKS.md, "Routing"): what geogate's decision costs
# per statement. One interleaved run of pgbench custom scripts (-f), for
# -M simple, extended and prepared, against:
#
#   direct   the statements with an explicit `region = '<r>'`, straight to
#            PostgreSQL (no geogate)
#   pgbouncer  the same statements through PgBouncer (session mode, trust
#            auth): a proxy that decides nothing, the bar to meet
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
# Beside TPS it records each proxy's CPU time per transaction: utime + stime
# of the geogate or PgBouncer process (/proc/PID/stat, all threads) over the
# pgbench run, divided by the transactions pgbench completed.
#
#   scripts/bench-routing.sh                 # SECS=10 ROUNDS=1 CLIENTS=8 THREADS=2
#   EXTRA_BINS="before=/tmp/b/geogate" ...   # also pass/route/rewrite through
#                                            # other geogate binaries (targets
#                                            # pass-before, route-before, ...)
#   TARGETS="pgbouncer route" MODES=simple   # a subset
#   WORKER_THREADS=2 CLIENTS=64 ...          # proxy.worker_threads, pgbench -c
#   WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out" \
#     TXNS=500 TARGETS=route MODES=simple ...  # profile the routing sidecar
#   SECS=10 ROUNDS=2 scripts/bench-routing.sh
#   SCRIPT_REGIONS=eu scripts/bench-routing.sh  # only eu tenants: no region switches
#   GEOGATE_BIN=target/release/geogate ...   # skip the cargo build
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-10}
ROUNDS=${ROUNDS:-1}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
MODES=${MODES:-simple extended prepared}
WORKER_THREADS=${WORKER_THREADS:-1}
# name=path pairs: more geogate binaries to compare in the same pass.
EXTRA_BINS=${EXTRA_BINS:-}
# TXNS=n: each client runs n transactions (pgbench -t) instead of SECS.
LENGTH="-T $SECS"; [ -n "${TXNS:-}" ] && LENGTH="-t $TXNS"
# WRAP: a command prefix for the first binary's routing sidecar (profilers);
# WRAP_PASS the same for its pass sidecar.
# Regions whose tenants the clients draw (one pgbench script each, equal
# weights). With one region no client ever changes upstream connection.
SCRIPT_REGIONS=${SCRIPT_REGIONS:-eu us apac}
TENANTS_PER_REGION=${TENANTS_PER_REGION:-100}
USERS_PER_TENANT=${USERS_PER_TENANT:-100}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=${PGPORT:-57442}; BOUNCERPORT=${BOUNCERPORT:-57441}
# Each geogate binary gets a routing sidecar (port P) and a pass sidecar (P+1);
# metrics of the first routing sidecar on METRICSPORT.
BASEPORT=${BASEPORT:-57450}; METRICSPORT=${METRICSPORT:-57444}
ulimit -n 20000 2>/dev/null || true
WORK=$(mktemp -d /tmp/geogate-bench-routing.XXXXXX)
chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK"

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

if [ -z "${GEOGATE_BIN:-}" ]; then
  cargo build --release --quiet --bin geogate
  GEOGATE_BIN=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/geogate
fi

as_pg "$PGBIN/initdb" -A trust -U postgres -E UTF8 --locale=C --no-sync -D "$WORK/pg" >/dev/null
cat >> "$WORK/pg/postgresql.conf" <<CONF
max_connections = $((5 * CLIENTS + 100))
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
sidecar_configs() { # name port pass_port metrics_line
  cat > "$WORK/geogate-$1.toml" <<TOML
[proxy]
listen = "127.0.0.1:$2"
local_region = "eu"
$4
mode = "enforce"
worker_threads = $WORKER_THREADS
max_client_connections = $((CLIENTS + 100))
# The benchmark saturates the machine on purpose: with 512 clients a
# startup + SELECT 1 on the shared PostgreSQL can take longer than the
# default 2 s, and a sidecar idle while another target runs would mark its
# gateways down on the prober's word (every statement then GG004).
probe_timeout = "30s"

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
  # The baseline: the same binary with no [tables] and no [tenants], so
  # every statement is `global` and passes through to the local gateway.
  cat > "$WORK/geogate-$1-pass.toml" <<TOML
[proxy]
listen = "127.0.0.1:$3"
local_region = "eu"
worker_threads = $WORKER_THREADS
max_client_connections = $((CLIENTS + 100))
probe_timeout = "30s"
[regions.eu]
gateway = "$GW"
[[users]]
name = "postgres"
password = "bench"
TOML
}

# PgBouncer, session pooling, trust auth.
. scripts/bench-common.sh
start_pgbouncer "$CLIENTS"

declare -A PORT PID
PORT[direct]=$PGPORT
PORT[pgbouncer]=$BOUNCERPORT
TARGETS_ALL="direct pgbouncer"
port=$BASEPORT
first=1
for spec in "geogate=$GEOGATE_BIN" $EXTRA_BINS; do
  name=${spec%%=*}; bin=${spec#*=}
  suffix=""; [ "$name" = geogate ] || suffix="-$name"
  metrics=""; [ $first = 1 ] && metrics="metrics_listen = \"127.0.0.1:$METRICSPORT\""
  sidecar_configs "$name" "$port" $((port + 1)) "$metrics"
  wrap=""; [ $first = 1 ] && wrap=${WRAP:-}
  # shellcheck disable=SC2086 # WRAP is a command prefix, split on purpose
  RUST_LOG=warn $wrap "$bin" serve --config "$WORK/geogate-$name.toml" >"$WORK/geogate-$name.log" 2>&1 &
  PIDS+=($!); PID[route$suffix]=$!; PID[rewrite$suffix]=$!
  wrap_pass=""; [ $first = 1 ] && wrap_pass=${WRAP_PASS:-}
  # shellcheck disable=SC2086
  RUST_LOG=warn $wrap_pass "$bin" serve --config "$WORK/geogate-$name-pass.toml" >"$WORK/geogate-$name-pass.log" 2>&1 &
  PIDS+=($!); PID[pass$suffix]=$!
  PORT[route$suffix]=$port; PORT[rewrite$suffix]=$port; PORT[pass$suffix]=$((port + 1))
  TARGETS_ALL="$TARGETS_ALL pass$suffix route$suffix rewrite$suffix"
  port=$((port + 2)); first=0
done
TARGETS=${TARGETS:-$TARGETS_ALL}
for t in $TARGETS; do
  for _ in $(seq 1 600); do (echo > "/dev/tcp/127.0.0.1/${PORT[$t]}") 2>/dev/null && break; sleep 0.1; done
done
for _ in $(seq 1 100); do [ -s "$WORK/pgbouncer.pid" ] && break; sleep 0.1; done
PID[pgbouncer]=$(cat "$WORK/pgbouncer.pid" 2>/dev/null || true)
[ -n "${PID[pgbouncer]}" ] || { echo "PgBouncer did not start:" >&2; cat "$WORK/pgbouncer.log" >&2 || true; exit 1; }
kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
RSS0_GG=$(kib "${PID[route]}" VmRSS); RSS0_PB=$(kib "${PID[pgbouncer]}" VmRSS)

# utime + stime of a process, all threads, in clock ticks; utime alone.
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
user_ticks() { awk '{sub(/.*\) /, ""); print $12}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

run() { # target mode -> "tps transactions failed cpu_ticks user_ticks"
  local port=${PORT[$1]} files=with pid=${PID[$1]:-}
  case $1 in rewrite*) files=without ;; esac
  local out f fs=() c0=0 c1=0 u0=0 u1=0
  for f in $SCRIPT_REGIONS; do fs+=(-f "$WORK/$files-$f.sql@1"); done
  [ -n "$pid" ] && c0=$(cpu_ticks "$pid") && u0=$(user_ticks "$pid")
  out=$(PGPASSWORD=bench pgbench -n -c "$CLIENTS" -j "$THREADS" $LENGTH -M "$2" "${fs[@]}" \
    -h 127.0.0.1 -p "$port" -U postgres bench 2>&1) || {
    echo "pgbench failed ($1 $2):" >&2; echo "$out" | tail -20 >&2
    for f in "$WORK"/geogate-*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done
    exit 1
  }
  [ -n "$pid" ] && c1=$(cpu_ticks "$pid") && u1=$(user_ticks "$pid")
  local tps n failed
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  n=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
  failed=$(echo "$out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
  echo "$tps $n ${failed:-0} $((c1 - c0)) $((u1 - u0))"
}

declare -A SUM TX CPU USR
echo "pgbench -n -c $CLIENTS -j $THREADS -T $SECS, scripts for regions: $SCRIPT_REGIONS (3 statements each), $((3 * N)) tenants," \
  "$((3 * N * USERS_PER_TENANT)) users, $ROUNDS interleaved round(s), $(nproc) cores, worker_threads = $WORKER_THREADS"
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    # Odd rounds in the listed order, even rounds reversed: no target
    # always runs right after the same neighbour.
    order=$TARGETS
    [ $((round % 2)) = 0 ] && order=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' ')
    for target in $order; do
      read -r t n f c u < <(run "$target" "$mode")
      us=$(echo "$c * 1000000 / $TICK / $n" | bc -l)
      uu=$(echo "$u * 1000000 / $TICK / $n" | bc -l)
      printf 'round %s  %-8s  %-16s tps=%-9s failed=%s  proxy cpu/txn=%.1f us (user %.1f)\n' "$round" "$mode" "$target" "$t" "$f" "$us" "$uu"
      [ "$f" = 0 ] || { echo "failed transactions: see above" >&2; exit 1; }
      SUM[$mode.$target]=$(echo "${SUM[$mode.$target]:-0} + $t" | bc -l)
      TX[$mode.$target]=$(( ${TX[$mode.$target]:-0} + n ))
      CPU[$mode.$target]=$(( ${CPU[$mode.$target]:-0} + c ))
      USR[$mode.$target]=$(( ${USR[$mode.$target]:-0} + u ))
    done
  done
done

# TPS: average over the rounds; CPU per transaction: all rounds' proxy CPU
# over all rounds' transactions.
echo
printf '| mode | target | TPS | /direct | /PgBouncer | proxy CPU µs/txn | of which user | CPU / PgBouncer'"'"'s |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|\n'
for mode in $MODES; do
  d=$(echo "${SUM[$mode.direct]:-0} / $ROUNDS" | bc -l)
  b=$(echo "${SUM[$mode.pgbouncer]:-0} / $ROUNDS" | bc -l)
  bc_us=0
  [ -n "${TX[$mode.pgbouncer]:-}" ] && bc_us=$(echo "${CPU[$mode.pgbouncer]} * 1000000 / $TICK / ${TX[$mode.pgbouncer]}" | bc -l)
  for target in $TARGETS; do
    t=$(echo "${SUM[$mode.$target]} / $ROUNDS" | bc -l)
    rd=-; rb=-; cus=-; cr=-; uus=-
    [ "$d" != 0 ] && rd=$(printf '%.2f' "$(echo "$t / $d" | bc -l)")
    [ "$b" != 0 ] && rb=$(printf '%.2f' "$(echo "$t / $b" | bc -l)")
    if [ -n "${PID[$target]:-}" ]; then
      cu=$(echo "${CPU[$mode.$target]} * 1000000 / $TICK / ${TX[$mode.$target]}" | bc -l)
      cus=$(printf '%.1f' "$cu")
      uus=$(printf '%.1f' "$(echo "${USR[$mode.$target]} * 1000000 / $TICK / ${TX[$mode.$target]}" | bc -l)")
      [ "$bc_us" != 0 ] && cr=$(printf '%.2f' "$(echo "$cu / $bc_us" | bc -l)")
    fi
    printf '| %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$mode" "$target" "$t" "$rd" "$rb" "$cus" "$uus" "$cr"
  done
done
echo
# Memory per active client: the peak (VmHWM) over the resident size before
# the first run, per pgbench client.
hwm_gg=$(kib "${PID[route]}" VmHWM); hwm_pb=$(kib "${PID[pgbouncer]}" VmHWM)
echo "proxy memory: PgBouncer ${RSS0_PB} KiB before, peak ${hwm_pb} KiB" \
  "($(( (hwm_pb - RSS0_PB) * 1024 / CLIENTS )) bytes per active client);" \
  "geogate (route/rewrite) ${RSS0_GG} KiB before, peak ${hwm_gg} KiB" \
  "($(( (hwm_gg - RSS0_GG) * 1024 / CLIENTS )) bytes per active client), $CLIENTS clients"
echo "geogate's counters after the run:"
curl -s "http://127.0.0.1:$METRICSPORT/metrics" \
  | grep -E '^geogate_(statements_total|tenant_cache_lookups_total|rejections_total)' | grep -v ' 0$' | sed 's/^/  /'
