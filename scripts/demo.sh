#!/usr/bin/env bash
# The geo demo (kept for old links): three PostgreSQL regions with
# postgres_fdw partitions over latency relays and a geogate sidecar in front.
# See demo/geo-demo.sh for its options (DEMO_NONINTERACTIVE, GEOGATE_BIN,
# DEMO_PORT_BASE, DEMO_KEEP).
exec "$(dirname "$0")/../demo/geo-demo.sh" "$@"
