#!/usr/bin/env bash
# Builds testfleet:dev (orchestrator, agent, and the example suites) from
# binaries already built on this host:
#   deploy/build-images.sh [BIN_DIR]     (default: target/release)
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=${1:-target/release}
for b in orchestrator agent; do
  [[ -x "$bin_dir/$b" ]] || { echo "no $bin_dir/$b: build it first (cargo build --release)" >&2; exit 1; }
done
deploy/base-image.sh

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/bin"
cp "$bin_dir/orchestrator" "$bin_dir/agent" "$context/bin/"
tar -c --exclude=__pycache__ --exclude=.pytest_cache --exclude=orchestration_logs examples | tar -x -C "$context"
docker build -q -f deploy/Dockerfile -t testfleet:dev "$context" >/dev/null
echo "built testfleet:dev" >&2
