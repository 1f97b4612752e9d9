#!/usr/bin/env bash
# Runs a geogate binary the way the container image runs it, without Docker:
# as uid/gid 10001, with `serve --config /etc/geogate/geogate.toml` (the example
# config, config/geogate.toml, read-only), the gateways' CA at
# /etc/geogate/ca.crt, secrets from the environment only. Then checks, in
# order: the process starts and stays up, the PostgreSQL port accepts
# connections, the Dockerfile's own HEALTHCHECK command passes, /readyz is
# not ready (the example's gateways, cockroach-*.internal, do not exist here),
# SIGHUP does not stop it, and SIGTERM makes it exit 0.
#
#   deploy/image-smoke.sh [GEOGATE_BIN]   default: target/release/geogate
#
# Needs root (it writes /etc/geogate and drops to uid 10001), python3 and
# openssl, and free ports 6432 and 9187 (the config's). It refuses to touch a
# non-empty /etc/geogate, and removes what it created.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$root/target/release/geogate}")
[ "$(id -u)" = 0 ] || { echo "image-smoke: needs root" >&2; exit 2; }
[ -x "$bin" ] || { echo "image-smoke: no binary at $bin (cargo build --release --bin geogate)" >&2; exit 2; }
if [ -d /etc/geogate ] && [ -n "$(ls -A /etc/geogate)" ]; then
  echo "image-smoke: /etc/geogate is not empty; not touching it" >&2
  exit 2
fi
for port in 6432 9187; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "image-smoke: port $port is in use" >&2
    exit 2
  fi
done

tmp=$(mktemp -d)
created=""
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  rm -f /etc/geogate/geogate.toml /etc/geogate/ca.crt
  [ -n "$created" ] && rmdir /etc/geogate
  rm -rf "$tmp"
}
trap cleanup EXIT
[ -d /etc/geogate ] || { mkdir /etc/geogate; created=1; }
install -m 0444 "$root/config/geogate.toml" /etc/geogate/geogate.toml
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=image-smoke-ca -days 1 \
  -keyout "$tmp/ca.key" -out /etc/geogate/ca.crt >/dev/null 2>&1
chmod 0444 /etc/geogate/ca.crt
chmod 0755 "$tmp"

failed=0
ok() { printf 'ok    %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failed=1; }
as_image() { setpriv --reuid 10001 --regid 10001 --clear-groups "$@"; }

# The HEALTHCHECK's CMD, exactly as the Dockerfile writes it (a JSON array).
mapfile -d '' healthcheck < <(python3 - "$root/Dockerfile" <<'PY'
import json, re, sys
m = re.search(r'^HEALTHCHECK .*\\\n\s*CMD (\[.*\])\s*$', open(sys.argv[1]).read(), re.M)
sys.stdout.write("\0".join(json.loads(m.group(1))) + "\0")
PY
)
[ "${#healthcheck[@]}" -gt 0 ] || { echo "image-smoke: no HEALTHCHECK CMD in the Dockerfile" >&2; exit 2; }

# setpriv and env exec, so $! is geogate's own pid (signals go to it).
setpriv --reuid 10001 --regid 10001 --clear-groups \
  env -i PATH=/usr/bin:/bin RUST_LOG=info \
  GEOGATE_GATEWAY_PASSWORD=smoke APP_DB_PASSWORD=smoke REPORTING_DB_PASSWORD=smoke \
  "$bin" serve --config /etc/geogate/geogate.toml >"$tmp/log" 2>&1 &
pid=$!

sleep 2
if kill -0 "$pid" 2>/dev/null; then
  ok "starts as uid 10001 with /etc/geogate/geogate.toml and stays up"
else
  wait "$pid"; fail "exited at start with status $?"; pid=""
fi

if [ -n "$pid" ]; then
  if (exec 3<>/dev/tcp/127.0.0.1/6432) 2>/dev/null; then ok "accepts connections on 127.0.0.1:6432"; else fail "nothing on 127.0.0.1:6432"; fi

  healthy=""
  for _ in $(seq 20); do
    if as_image env -i PATH=/usr/bin:/bin "${healthcheck[@]}" 2>/dev/null; then healthy=1; break; fi
    sleep 0.5
  done
  if [ -n "$healthy" ]; then ok "the Dockerfile's HEALTHCHECK passes (/healthz on 9187)"; else fail "the Dockerfile's HEALTHCHECK fails"; fi

  ready=$( (exec 3<>/dev/tcp/127.0.0.1/9187 && printf 'GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3 && timeout 5 cat <&3) 2>/dev/null | tr -d '\r')
  status=$(printf '%s\n' "$ready" | head -1 | cut -d' ' -f2)
  if [ "$status" = 503 ]; then ok "/readyz: $(printf '%s\n' "$ready" | tail -1)"; else fail "/readyz answered ${status:-nothing}, expected 503 without gateways"; fi

  kill -HUP "$pid"
  sleep 1
  if kill -0 "$pid" 2>/dev/null; then ok "SIGHUP: still running"; else wait "$pid"; fail "SIGHUP stopped geogate (status $?)"; pid=""; fi
fi

if [ -n "$pid" ]; then
  kill -TERM "$pid"
  for _ in $(seq 70); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    fail "still running 35s after SIGTERM"
  else
    wait "$pid"; rc=$?; pid=""
    if [ "$rc" = 0 ]; then ok "SIGTERM: exit 0"; else fail "SIGTERM: exit $rc"; fi
  fi
fi

echo "--- geogate's log"
cat "$tmp/log"
exit "$failed"
