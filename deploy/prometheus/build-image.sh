#!/usr/bin/env bash
# Builds testfleet-prometheus:bookworm, Prometheus from Debian's package
# (2.42), for the compose cluster where no registry can be reached:
#   deploy/prometheus/build-image.sh
#   PROMETHEUS_IMAGE=testfleet-prometheus:bookworm docker compose ... --profile observability up
# Users with a registry get the upstream image instead (the compose default).
set -euo pipefail
cd "$(dirname "$0")/.."
./base-image.sh testfleet-prometheus:bookworm prometheus,ca-certificates \
  'ENTRYPOINT ["/usr/bin/prometheus"]' 'EXPOSE 9090'
