# Shared by the bench scripts (sourced after they set WORK, PGPORT,
# BOUNCERPORT, PIDS and as_pg).

# Starts PgBouncer in front of the bench database: session pooling, trust
# auth (the cheapest setup it has), room for $1 clients. WRAP_BOUNCER: a
# command prefix (a profiler, e.g. valgrind --tool=callgrind with an output
# file the postgres user can write).
start_pgbouncer() {
  local clients=$1
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
max_client_conn = $((clients + 100))
default_pool_size = $((clients + 50))
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
INI
  echo '"postgres" ""' > "$WORK/userlist.txt"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$WORK"
  # runuser's PAM session puts the soft open-files limit back to 1024: with
  # 512 clients (and 512 server connections) PgBouncer would run out of
  # descriptors and leave clients waiting (query_wait_timeout). Raise it to
  # the hard limit again inside.
  # shellcheck disable=SC2086 # WRAP_BOUNCER is a command prefix
  as_pg bash -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"' _ \
    ${WRAP_BOUNCER:-} pgbouncer "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
  PIDS+=($!)
}
