#!/usr/bin/env bash
# Build the image the tests and users run: docker/build.sh [NAME:TAG] [PG]
#   PG 15 (default): Debian 12 (bookworm) base; pgvector and the Python packages are built
#                    on the host by scripts/install.sh (same Debian 12, same Python 3.11)
#                    and copied in (docker/Dockerfile)
#   PG 17 / 18:      Debian 13 (trixie) / sid base with that distribution's Postgres and
#                    Python 3 (3.13 / 3.14); pgvector is compiled in the image from the same
#                    Debian orig tarball, the Python packages are that Python's wheels, staged
#                    here in build/image-pg<PG>/ (docker/Dockerfile.debian)
# The base image, ragpg-base:<suite>, is made with debootstrap + docker import if missing
# (no registry can be reached). Needs scripts/install.sh to have filled build/ first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/versions.env
PG=${2:-15}
case $PG in
  15) SUITE=bookworm ;;
  17) SUITE=trixie; PYV=3.13 ;;
  18) SUITE=sid; PYV=3.14 ;;
  *) echo "docker/build.sh: Postgres $PG is not supported (15, 17 or 18)" >&2; exit 2 ;;
esac
IMAGE=${1:-ragpg:$RAGPG_VERSION$([ "$PG" = 15 ] || echo "-pg$PG")}
BASE=ragpg-base:$SUITE
mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 | awk '{print $2}')
mirror=${mirror:-http://deb.debian.org/debian}
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "== making $BASE with debootstrap"
  rootfs=$(mktemp -d /tmp/ragpg-rootfs-XXXX)
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >/tmp/ragpg-debootstrap.log 2>&1 \
    || { tail -20 /tmp/ragpg-debootstrap.log; exit 1; }
  rm -f "$rootfs/etc/apt/sources.list"
  if [ "$SUITE" = bookworm ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    # the same suites as this machine (updates + security), so the image gets the same Postgres
    grep -v '^#' /etc/apt/sources.list.d/debian.sources > "$rootfs/etc/apt/sources.list.d/debian.sources"
  elif [ "$SUITE" = trixie ]; then
    printf 'Types: deb\nURIs: %s\nSuites: trixie trixie-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: %s-security\nSuites: trixie-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" "$mirror" > "$rootfs/etc/apt/sources.list.d/debian.sources"
  else
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" "$SUITE" > "$rootfs/etc/apt/sources.list.d/debian.sources"
  fi
  # a mirror's Release file may be past its Valid-Until (sid's was, by 25 days, 2026-12-02):
  # the signatures are still checked
  echo 'Acquire::Check-Valid-Until "false";' > "$rootfs/etc/apt/apt.conf.d/99ragpg-valid-until"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" - "$BASE" >/dev/null
  rm -rf "$rootfs"
fi

if [ "$PG" = 15 ]; then
  echo "== building $IMAGE"
  DOCKER_BUILDKIT=0 docker build -q --build-arg RAGPG_VERSION="$RAGPG_VERSION" -t "$IMAGE" -f docker/Dockerfile .
  docker image ls "$IMAGE"
  exit 0
fi

echo "== staging build/image-pg$PG (Python $PYV wheels, pgvector $PGVECTOR_VERSION source)"
bash scripts/pgvector_src.sh build >/dev/null
deps=build/deps-py$PYV
if [ ! -f "$deps/.complete-$PYDEPS_HASH" ]; then
  python3 scripts/server_requirements.py "$PYV" > "build/requirements-py$PYV.txt"
  rm -rf "$deps" && mkdir -p "$deps"
  python3 -m pip install -q --disable-pip-version-check --no-compile --no-deps \
    --only-binary=:all: --python-version "$PYV" --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --target "$deps" -r "build/requirements-py$PYV.txt"
  touch "$deps/.complete-$PYDEPS_HASH"
fi
stage=build/image-pg$PG
rm -rf "$stage" && mkdir -p "$stage/lib/$RAGPG_VERSION" "$stage/extension"
for item in build/pylib/*; do
  [ "$(basename "$item")" = deps ] || cp -a "$item" "$stage/lib/$RAGPG_VERSION/"
done
cp -a "$deps" "$stage/lib/$RAGPG_VERSION/deps"
cp -a build/releases/lib/. "$stage/lib/"           # earlier releases: their deps link to ../<current>/deps
cp extension/rag.control extension/rag--*.sql "$stage/extension/"
cp build/releases/extension/* "build/vector--$PGVECTOR_OLD_VERSION.sql" "$stage/extension/"
cp "build/pgvector_$PGVECTOR_VERSION.orig.tar.gz" "$stage/pgvector.orig.tar.gz"
find "$stage/lib" -name __pycache__ -prune -exec rm -rf {} +   # the host Python's; the image compiles its own
echo "== building $IMAGE (Postgres $PG on $SUITE)"
DOCKER_BUILDKIT=0 docker build -q --build-arg BASE="$BASE" --build-arg PG="$PG" --build-arg PYV="$PYV" \
  --build-arg RAGPG_VERSION="$RAGPG_VERSION" -t "$IMAGE" -f docker/Dockerfile.debian .
docker image ls "$IMAGE"
