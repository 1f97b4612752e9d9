#!/usr/bin/env bash
# Prints the SQL that makes one region's PostgreSQL cluster a gateway of the
# three-region database: the region's own partitions are local tables (with a
# CHECK so no other region's row can be stored there), the other regions'
# partitions are postgres_fdw foreign tables reached through latency relays.
#
# usage: schema.sh REGION PEER_REGION:PORT PEER_REGION:PORT
set -euo pipefail
me=$1; shift

cat <<SQL
CREATE EXTENSION IF NOT EXISTS postgres_fdw;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TYPE region AS ENUM ('eu', 'us', 'apac');

-- Global table: a full copy in every region (CockroachDB GLOBAL locality).
CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO plans VALUES (1, 'free'), (2, 'team'), (3, 'enterprise');

CREATE TABLE tenants (id uuid NOT NULL, name text NOT NULL, region region NOT NULL,
  plan_id int, created_at timestamptz DEFAULT now()) PARTITION BY LIST (region);
CREATE TABLE users (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
  email text NOT NULL, region region NOT NULL, created_at timestamptz DEFAULT now())
  PARTITION BY LIST (region);
CREATE TABLE documents (id uuid NOT NULL DEFAULT gen_random_uuid(), author_id uuid NOT NULL,
  tenant_id uuid NOT NULL, region region NOT NULL, title text NOT NULL, content jsonb,
  created_at timestamptz DEFAULT now()) PARTITION BY LIST (region);

-- This region's partitions: real tables, indexed on the partition key first.
CREATE TABLE tenants_${me} (LIKE tenants INCLUDING DEFAULTS, PRIMARY KEY (id), CHECK (region = '${me}'));
CREATE TABLE users_${me} (LIKE users INCLUDING DEFAULTS, PRIMARY KEY (id), UNIQUE (tenant_id, email), CHECK (region = '${me}'));
CREATE INDEX ON users_${me} (region, tenant_id);
CREATE TABLE documents_${me} (LIKE documents INCLUDING DEFAULTS, PRIMARY KEY (id), CHECK (region = '${me}'));
CREATE INDEX ON documents_${me} (region, tenant_id, created_at DESC);
ALTER TABLE tenants ATTACH PARTITION tenants_${me} FOR VALUES IN ('${me}');
ALTER TABLE users ATTACH PARTITION users_${me} FOR VALUES IN ('${me}');
ALTER TABLE documents ATTACH PARTITION documents_${me} FOR VALUES IN ('${me}');
SQL

for peer in "$@"; do
  r=${peer%%:*}; port=${peer##*:}
  cat <<SQL
-- ${r}: across the ocean, through a relay that adds the link's round trip.
CREATE SERVER ${r} FOREIGN DATA WRAPPER postgres_fdw
  OPTIONS (host '127.0.0.1', port '${port}', dbname 'app', fetch_size '1000', batch_size '1000', async_capable 'true');
CREATE USER MAPPING FOR PUBLIC SERVER ${r} OPTIONS (user 'geogate', password 'secret');
CREATE FOREIGN TABLE tenants_${r} PARTITION OF tenants FOR VALUES IN ('${r}') SERVER ${r} OPTIONS (table_name 'tenants_${r}');
CREATE FOREIGN TABLE users_${r} PARTITION OF users FOR VALUES IN ('${r}') SERVER ${r} OPTIONS (table_name 'users_${r}');
CREATE FOREIGN TABLE documents_${r} PARTITION OF documents FOR VALUES IN ('${r}') SERVER ${r} OPTIONS (table_name 'documents_${r}');
SQL
done
