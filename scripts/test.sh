#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the end-to-end tests against real
# PostgreSQL clusters (started and stopped by tests/common on free ports).
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test proxy`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --all-targets "$@"
