#!/usr/bin/env bash
# scripts/install.sh on Debian 13 (trixie) with its Postgres 17, inside a container of the
# trixie base image (docker/build.sh makes it): a copy of this checkout, install.sh, then a
# cluster with CREATE EXTENSION rag, a document ingested and found.
# The copy carries build/pylib/models (the model exported on this machine), so step 4 does
# not export it again; pip reaches the package index with this machine's settings
# (PIP_* variables, /etc/pip.conf and the CA bundle they name).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/versions.env
docker image inspect ragpg-base:trixie >/dev/null 2>&1 || { echo "make image PG=17 first" >&2; exit 1; }
work=$(mktemp -d /tmp/ragpg-trixie-XXXX)
trap 'rm -rf "$work"' EXIT
git archive HEAD | tar -x -C "$work"
mkdir -p "$work/build/pylib" && cp -a build/pylib/models "$work/build/pylib/"
mounts=(-v "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}:/etc/ragpg-host-ca.crt:ro")
for f in /etc/pip.conf /etc/xdg/pip /opt/pypi /opt/pypi-more /opt/wheels; do
  [ -e "$f" ] && mounts+=(-v "$f:$f:ro")
done
envs=()
for v in $(env | grep -o '^PIP_[A-Z_]*' | grep -v '^PIP_CERT$' || true); do envs+=(-e "$v"); done
envs+=(-e PIP_CERT=/etc/ragpg-host-ca.crt)   # the container's own bundle is written by its ca-certificates
start=$(date +%s)
cat > "$work/in-container.sh" <<'EOS'
set -euo pipefail
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    ca-certificates python3 make >/dev/null
cd /src && make -s sql >/dev/null
bash scripts/install.sh > /tmp/install.log 2>&1 || { tail -30 /tmp/install.log; exit 1; }
grep -E '^== |installed|^deps ok' /tmp/install.log
d=$(mktemp -d) && chown postgres "$d"
runuser -u postgres -- /usr/lib/postgresql/17/bin/initdb -D "$d" -A trust >/dev/null
runuser -u postgres -- /usr/lib/postgresql/17/bin/pg_ctl -D "$d" -o "-k /tmp -c listen_addresses= -p 5499" -w start >/dev/null
psql() { runuser -u postgres -- /usr/lib/postgresql/17/bin/psql -h /tmp -p 5499 -X -qAt -v ON_ERROR_STOP=1 "$@"; }
psql -c "SET client_min_messages = warning; CREATE EXTENSION rag CASCADE"
psql -c "SELECT string_agg(extname || ' ' || extversion, ', ' ORDER BY extname) FROM pg_extension WHERE extname IN ('rag', 'vector')"
psql -c "SELECT version()" | cut -c1-40
psql -c "SELECT rag.ingest(E'# Ferries\n\nThe harbour ferry leaves at six.', source => 'f.md')" >/dev/null
psql -c "SELECT left(content, 60) FROM rag.search('when does the ferry leave', 1)"
test "$(psql -c "SELECT count(*) FROM rag.search('ferry', 1, mode => 'vector')")" = 1
test "$(psql -c "SELECT extversion FROM pg_extension WHERE extname = 'vector'")" = "$1"
echo "install.sh on trixie: ok"
EOS
docker run --rm --network host -v "$work:/src" "${mounts[@]}" "${envs[@]}" ragpg-base:trixie \
  bash /src/in-container.sh "$PGVECTOR_VERSION"
echo "install.sh on Debian 13 (Postgres 17): $(( $(date +%s) - start )) s"
