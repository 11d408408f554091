#!/usr/bin/env bash
# Builds testfleet-base:bookworm from Debian's packages with debootstrap:
# this workplace has no image registry, so nothing can be pulled. Uses the
# Debian mirror this host's apt sources name, and no other: with none, it
# stops and says so.
#   deploy/base-image.sh                      testfleet-base:bookworm (python3, venv)
#   deploy/base-image.sh IMAGE PACKAGES [docker import --change ...]
set -euo pipefail

image=${1:-testfleet-base:bookworm}
packages=${2:-python3,python3-venv,ca-certificates,procps}
shift $(( $# > 2 ? 2 : $# ))
changes=()
for c in "$@"; do changes+=(--change "$c"); done
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
# The first Debian mirror in the host's apt sources (deb822 `.sources`
# files, then one-line `.list` files).
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[[ -n "$mirror" ]] || mirror=$(awk '/^deb / {i = 2; if ($i ~ /^\[/) {while (i <= NF && $i !~ /\]$/) i++; i++} print $i; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
if [[ -z "$mirror" ]]; then
  echo "base-image.sh: no Debian mirror found in this host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/): add one there, so debootstrap knows where to fetch Debian's packages from" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "building $image from $mirror" >&2
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import "${changes[@]}" - "$image" >/dev/null
echo "built $image" >&2
