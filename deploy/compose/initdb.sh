#!/usr/bin/env bash
# Makes one postgres:15 container a regional gateway of the demo's
# geo-partitioned database, as demo/geo-demo.sh does on one machine: this
# region's partitions are local tables, the other regions' partitions are
# postgres_fdw foreign tables on the peer containers (pg-eu, pg-us, pg-apac).
# The SQL comes from demo/schema.sh, shared with the local demo.
#
# Run once by the image's entrypoint (/docker-entrypoint-initdb.d) when the
# data directory is created. Environment: REGION (eu | us | apac),
# GEOGATE_GATEWAY_PASSWORD, and the image's POSTGRES_USER / POSTGRES_DB.
# The body runs in a subshell so that it behaves the same whether the
# entrypoint executes this file or sources it.
(
  set -euo pipefail
  : "${REGION:?}" "${GEOGATE_GATEWAY_PASSWORD:?}"
  SCHEMA_SH=${SCHEMA_SH:-/geogate/schema.sh}
  PEER_PORT=${PEER_PORT:-5432}
  peer_host() { echo "${PEER_HOST_PREFIX:-pg-}$1"; }
  run_psql() { psql -X -q -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-app}" "$@"; }

  peers=()
  for r in eu us apac; do
    [ "$r" != "$REGION" ] && peers+=("$r:$PEER_PORT")
  done

  # The role geogate connects as; postgres_fdw uses it between regions too.
  run_psql -v pw="$GEOGATE_GATEWAY_PASSWORD" <<'SQL'
CREATE ROLE geogate LOGIN PASSWORD :'pw';
SQL

  bash "$SCHEMA_SH" "$REGION" "${peers[@]}" | run_psql

  # schema.sh targets one machine (127.0.0.1 and a fixed password): point each
  # foreign server at its container and use this deployment's password.
  for p in "${peers[@]}"; do
    r=${p%%:*}
    run_psql -v host="$(peer_host "$r")" -v pw="$GEOGATE_GATEWAY_PASSWORD" <<SQL
ALTER SERVER ${r} OPTIONS (SET host :'host');
ALTER USER MAPPING FOR PUBLIC SERVER ${r} OPTIONS (SET password :'pw');
SQL
  done

  # Sample data: each region loads its own rows (tenant ids are md5-derived
  # UUIDs, the same as demo/geo-demo.sh's: md5('tenant-eu-1')::uuid, ...).
  run_psql <<SQL
INSERT INTO tenants_${REGION}
  SELECT md5('tenant-${REGION}-' || i)::uuid, 'Tenant ${REGION} ' || i, '${REGION}', 1 + i % 3
  FROM generate_series(1, 5) i;
INSERT INTO users_${REGION} (tenant_id, email, region)
  SELECT md5('tenant-${REGION}-' || (1 + i % 5))::uuid, 'user' || i || '@${REGION}.example', '${REGION}'
  FROM generate_series(1, 500) i;
INSERT INTO documents_${REGION} (author_id, tenant_id, region, title)
  SELECT id, tenant_id, region, 'doc of ' || email FROM users_${REGION};
GRANT ALL ON ALL TABLES IN SCHEMA public TO geogate;
-- Local partitions only: the peers may not be up yet.
ANALYZE tenants_${REGION}, users_${REGION}, documents_${REGION}, plans;
SQL
)
