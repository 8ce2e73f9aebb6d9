#!/usr/bin/env bash
# Fetch pgvector's sources as Debian packages them, into DIR (default build/):
#   pgvector_<PGVECTOR_VERSION>.orig.tar.gz        built by install.sh (Postgres 15) and by
#                                                  docker/Dockerfile.debian (17, 18)
#   vector--<PGVECTOR_OLD_VERSION>.sql             that release's install script (from its
#                                                  orig tarball), for the upgrade test
# The files come from the Debian mirror's pool (the machine's own mirror URI) and are
# checked against the sha256 pinned in versions.env (those of Debian's signed .dsc files).
# No apt source entry is needed: the version we want need not be in any suite's index.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/versions.env
DIR=${1:-build}
mkdir -p "$DIR"
mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 | awk '{print $2}')
mirror=${mirror:-http://deb.debian.org/debian}
fetch() {  # version sha256
  local f="$DIR/pgvector_$1.orig.tar.gz"
  if ! echo "$2  $f" | sha256sum -c --status 2>/dev/null; then
    curl -fsS --retry 3 -o "$f.tmp" "$mirror/pool/main/p/pgvector/pgvector_$1.orig.tar.gz" \
      || { echo "pgvector_src: cannot fetch pgvector_$1.orig.tar.gz from $mirror" >&2; exit 1; }
    echo "$2  $f.tmp" | sha256sum -c --status \
      || { echo "pgvector_src: pgvector_$1.orig.tar.gz does not match its sha256 ($2)" >&2; exit 1; }
    mv "$f.tmp" "$f"
  fi
}
fetch "$PGVECTOR_VERSION" "$PGVECTOR_SHA256"
fetch "$PGVECTOR_OLD_VERSION" "$PGVECTOR_OLD_SHA256"
tar xzf "$DIR/pgvector_$PGVECTOR_OLD_VERSION.orig.tar.gz" -O --wildcards '*/sql/vector.sql' \
  > "$DIR/vector--$PGVECTOR_OLD_VERSION.sql"
echo "pgvector sources: $PGVECTOR_VERSION, and $PGVECTOR_OLD_VERSION's install script"
