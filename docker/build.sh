#!/usr/bin/env bash
# Build the image the tests and users run: docker/build.sh [NAME:TAG]
# 1. ragpg-base:bookworm, made with debootstrap + docker import if missing (no registry)
# 2. the image from docker/Dockerfile (needs scripts/install.sh to have filled build/)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/versions.env
IMAGE=${1:-ragpg:$RAGPG_VERSION}
BASE=ragpg-base:bookworm
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "== making $BASE with debootstrap"
  mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 | awk '{print $2}')
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /tmp/ragpg-rootfs-XXXX)
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/tmp/ragpg-debootstrap.log 2>&1 \
    || { tail -20 /tmp/ragpg-debootstrap.log; exit 1; }
  # the same suites as this machine (updates + security), so the image gets the same Postgres
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    rm -f "$rootfs/etc/apt/sources.list"
    grep -v '^#' /etc/apt/sources.list.d/debian.sources > "$rootfs/etc/apt/sources.list.d/debian.sources"
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" - "$BASE" >/dev/null
  rm -rf "$rootfs"
fi
echo "== building $IMAGE"
DOCKER_BUILDKIT=0 docker build -q --build-arg RAGPG_VERSION="$RAGPG_VERSION" -t "$IMAGE" -f docker/Dockerfile .
docker image ls "$IMAGE"
