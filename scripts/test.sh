#!/usr/bin/env bash
# The README's test command. On a fresh Debian machine (as root, or a user
# with sudo) it first installs what the tests need; then it runs every test
# binary (unit tests, the end-to-end suites against real PostgreSQL
# clusters, the benches in test mode), all of them even when one fails, and
# ends with one line `N passed, N failed`. The exit status is non-zero when
# a test failed, a test binary crashed or the build failed.
#
#   scripts/test.sh                  everything
#   scripts/test.sh --test proxy     arguments go to `cargo test` (instead of --all-targets)
#   GEOGATE_TEST_NO_INSTALL=1 ...    do not check or install system packages
#
# cargo's whole output is also kept in target/test-output.log.
set -uo pipefail
cd "$(dirname "$0")/.."

# --- system packages -----------------------------------------------------------
# postgresql(-contrib): initdb/pg_ctl/psql/pgbench and postgres_fdw for the
# clusters the tests start; pgbouncer: the benchmarks' baseline; prometheus:
# prometheus and promtool for the observability tests; openssl: test
# certificates; curl: the demo and rustup; build-essential: a C compiler
# for ring; python3: deploy/validate.sh and the scripts.
packages=(postgresql postgresql-contrib pgbouncer prometheus openssl ca-certificates
  curl build-essential python3)

install_packages() {
  local missing=() p
  for p in "${packages[@]}"; do
    # dpkg-query answers in milliseconds: nothing is installed or updated
    # when every package is already there.
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "test.sh: missing packages: ${missing[*]}; run as root or install them (apt-get install ${missing[*]})" >&2
      return 1
    }
    sudo="sudo"
  fi
  echo "test.sh: installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

if [ -z "${GEOGATE_TEST_NO_INSTALL:-}" ]; then
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "test.sh: not a Debian system; install by hand: ${packages[*]} (and skip this check with GEOGATE_TEST_NO_INSTALL=1)" >&2
    exit 2
  fi
  install_packages || { echo "test.sh: installing the system packages failed" >&2; exit 2; }
fi

# --- Rust toolchain ---------------------------------------------------------------
# Debian's rustc is older than the edition geogate uses: take rustup's
# stable toolchain (installed if there is none).
if ! command -v cargo >/dev/null 2>&1; then
  # shellcheck disable=SC1091
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: installing the Rust toolchain with rustup (https://rustup.rs)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal ||
    { echo "test.sh: no cargo on PATH and rustup failed; install a Rust toolchain (1.85 or later)" >&2; exit 2; }
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# --- the driver tests' own dependencies (tests/drivers/, when present) -------------
if [ -f tests/drivers/setup.sh ]; then
  bash tests/drivers/setup.sh || echo "test.sh: tests/drivers/setup.sh failed; the driver tests will say what is missing" >&2
fi

# --- every test binary ----------------------------------------------------------------
# --no-fail-fast: a failing (or crashing) binary does not stop the others.
# Doc tests are not run: the crate's only code blocks are `ignore`d.
args=("$@")
[ "${#args[@]}" -eq 0 ] && args=(--all-targets)
mkdir -p target
log=target/test-output.log
cargo test --no-fail-fast "${args[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# One "test result:" line per binary that finished; a binary that crashed
# (a signal, an abort, a panic outside a test) has a "test failed" error
# but no FAILED result: it counts as one failure. A build error runs nothing.
read -r passed failed crashed ran < <(awk '
  /^ +Running / { current = $2; result[current] = ""; ran++ }
  /^test result: / {
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) ~ /^passed;?$/) passed += $i
      if ($(i + 1) ~ /^failed;?$/) failed += $i
    }
    result[current] = $3
  }
  /^error: test failed, to rerun pass/ { if (result[current] != "FAILED.") crashed++ }
  END { print passed + 0, failed + 0, crashed + 0, ran + 0 }
' "$log")

if [ "$crashed" -gt 0 ]; then
  echo "test.sh: $crashed test binary(ies) stopped without a result (see \"error: test failed\" above)"
  failed=$((failed + crashed))
fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # cargo failed without a failing test: the build (or cargo itself).
  echo "test.sh: cargo test exited with $status before any test failed (build error?)"
  failed=1
fi
echo
echo "$ran test binaries run; cargo's output is in $log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$status" -eq 0 ]
