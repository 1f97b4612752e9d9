#!/usr/bin/env bash
# Pass-through benchmark (BENCHMARKS.md): one interleaved run of
#   pgbench -S -n -c 8 -j 2 -T $SECS -M simple|extended|prepared
# against PostgreSQL directly, PgBouncer (session mode) and geogate (release
# build), then geogate's memory with $IDLE idle client connections. Beside
# TPS it records each proxy's CPU time per transaction: utime + stime of the
# process (/proc/PID/stat, all threads) over the pgbench run, divided by the
# transactions pgbench completed.
#
#   scripts/bench-passthrough.sh            # SECS=15 ROUNDS=1 IDLE=1000
#   SECS=5 ROUNDS=2 scripts/bench-passthrough.sh
#   GEOGATE_BIN=target/release/geogate ...  # skip the cargo build
#   EXTRA_BINS="before=/tmp/b/geogate" ...  # also other geogate binaries,
#                                           # as targets geogate-before, ...
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-15}
ROUNDS=${ROUNDS:-1}
IDLE=${IDLE:-1000}
CLIENTS=${CLIENTS:-8}
MODES=${MODES:-simple extended prepared}
EXTRA_BINS=${EXTRA_BINS:-}
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

if [ -n "${GEOGATE_BIN:-}" ]; then
  GEOGATE=$GEOGATE_BIN
else
  cargo build --release --quiet --bin geogate
  GEOGATE=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/geogate
fi

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

# PgBouncer, session pooling, trust auth.
. scripts/bench-common.sh
start_pgbouncer "$IDLE"

geogate_config() { # name port
  cat > "$WORK/geogate-$1.toml" <<TOML
[proxy]
listen = "127.0.0.1:$2"
local_region = "eu"
max_client_connections = $((IDLE + 100))
# A saturated machine can slow a probe past the default 2 s (see
# bench-routing.sh): the benchmark measures the hop, not the prober.
probe_timeout = "30s"
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
}
declare -A PORT PID
PORT[direct]=$PGPORT
PORT[pgbouncer]=$BOUNCERPORT
TARGETS="direct pgbouncer"
port=$GGPORT
for spec in "geogate=$GEOGATE" $EXTRA_BINS; do
  name=${spec%%=*}; bin=${spec#*=}
  target=geogate; [ "$name" = geogate ] || target="geogate-$name"
  geogate_config "$name" "$port"
  RUST_LOG=warn "$bin" serve --config "$WORK/geogate-$name.toml" >"$WORK/geogate-$name.log" 2>&1 &
  PIDS+=($!); PID[$target]=$!; PORT[$target]=$port
  TARGETS="$TARGETS $target"
  port=$((port + 10))
done
GG_PID=${PID[geogate]}
for t in $TARGETS; do
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/${PORT[$t]}") 2>/dev/null && break; sleep 0.1; done
done
PID[pgbouncer]=$(cat "$WORK/pgbouncer.pid")

# utime + stime of a process, all threads, in clock ticks.
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

run() { # target mode -> "tps transactions cpu_ticks"
  local pid=${PID[$1]:-} c0=0 c1=0 out
  [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
  out=$(PGPASSWORD=bench pgbench -S -n -c "$CLIENTS" -j 2 -T "$SECS" -M "$2" -h 127.0.0.1 -p "${PORT[$1]}" -U postgres bench 2>&1) \
    || { echo "pgbench failed ($1 $2):" >&2; echo "$out" >&2; exit 1; }
  [ -n "$pid" ] && c1=$(cpu_ticks "$pid")
  echo "$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')" \
    "$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')" "$((c1 - c0))"
}

declare -A SUM TX CPU
echo "pgbench -S -n -c $CLIENTS -j 2 -T $SECS, scale $SCALE, $ROUNDS interleaved round(s), $(nproc) cores"
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    # Odd rounds in the listed order, even rounds reversed: no target
    # always runs right after the same neighbour.
    order=$TARGETS
    [ $((round % 2)) = 0 ] && order=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' ')
    for target in $order; do
      read -r t n c < <(run "$target" "$mode")
      printf 'round %s  %-8s  %-16s tps=%-9s proxy cpu/txn=%.1f us\n' "$round" "$mode" "$target" "$t" \
        "$(echo "$c * 1000000 / $TICK / $n" | bc -l)"
      SUM[$mode.$target]=$(echo "${SUM[$mode.$target]:-0} + $t" | bc -l)
      TX[$mode.$target]=$(( ${TX[$mode.$target]:-0} + n ))
      CPU[$mode.$target]=$(( ${CPU[$mode.$target]:-0} + c ))
    done
  done
done

# TPS: average over the rounds; CPU per transaction: all rounds' proxy CPU
# over all rounds' transactions.
echo
printf '| mode | target | TPS | /direct | /PgBouncer | proxy CPU µs/txn | CPU / PgBouncer'"'"'s |\n'
printf '|---|---|---:|---:|---:|---:|---:|\n'
for mode in $MODES; do
  d=$(echo "${SUM[$mode.direct]} / $ROUNDS" | bc -l)
  b=$(echo "${SUM[$mode.pgbouncer]} / $ROUNDS" | bc -l)
  bc_us=$(echo "${CPU[$mode.pgbouncer]} * 1000000 / $TICK / ${TX[$mode.pgbouncer]}" | bc -l)
  for target in $TARGETS; do
    t=$(echo "${SUM[$mode.$target]} / $ROUNDS" | bc -l)
    cus=-; cr=-
    if [ -n "${PID[$target]:-}" ]; then
      cu=$(echo "${CPU[$mode.$target]} * 1000000 / $TICK / ${TX[$mode.$target]}" | bc -l)
      cus=$(printf '%.1f' "$cu")
      cr=$(printf '%.2f' "$(echo "$cu / $bc_us" | bc -l)")
    fi
    printf '| %s | %s | %.0f | %.2f | %.2f | %s | %s |\n' "$mode" "$target" "$t" \
      "$(echo "$t / $d" | bc -l)" "$(echo "$t / $b" | bc -l)" "$cus" "$cr"
  done
done

# Memory per idle client: RSS before and after $IDLE idle connections.
[ "$IDLE" = 0 ] && exit 0
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
before=$(rss "$GG_PID")
exec 3> >(python3 scripts/idle-clients.py "${PORT[geogate]}" "$IDLE" idle bench bench > "$WORK/idle.out")
for _ in $(seq 1 600); do grep -q ready "$WORK/idle.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$WORK/idle.out" || { echo "idle clients did not connect"; exit 1; }
sleep 1
after=$(rss "$GG_PID")
exec 3>&-
echo
echo "geogate RSS: ${before} KiB before, ${after} KiB with $IDLE idle clients (each with its upstream connection)"
echo "per idle client: $(( (after - before) * 1024 / IDLE )) bytes"
