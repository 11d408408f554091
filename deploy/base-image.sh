#!/usr/bin/env bash
# Builds an image from Debian's packages with debootstrap: this workplace
# has no image registry, so nothing can be pulled. Uses the host's Debian
# mirror (from its apt sources), else deb.debian.org.
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
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[[ -n "$mirror" ]] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[[ -n "$mirror" ]] || mirror=http://deb.debian.org/debian

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "building $image from $mirror" >&2
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import "${changes[@]}" - "$image" >/dev/null
echo "built $image" >&2
