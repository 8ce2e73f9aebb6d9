#!/usr/bin/env bash
# Build the earlier releases named in versions.env (RAGPG_RELEASES, version:commit) from
# this checkout's git history, exactly as they shipped:
#   build/releases/extension/rag--<v>.sql   that release's install script
#   build/releases/extension/rag--<v>.control  its requires
#   build/releases/lib/<v>/ragpg            its Python package; deps, models and the
#                                           tiktoken cache are links to the current release's
# install.sh puts them next to the current release, so that an old version can be created
# and then upgraded (the upgrade test does that). A checkout without the history (a source
# tarball) skips them: upgrading a real database needs only the current release.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/versions.env
OUT=build/releases
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp/extension" "$OUT.tmp/lib"
for rel in $RAGPG_RELEASES; do
  v=${rel%%:*}; commit=${rel#*:}
  if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "old_releases: $v ($commit) is not in this checkout's history: skipped" >&2
    continue
  fi
  src=$(mktemp -d)
  git archive "$commit" sql plpy/ragpg scripts/build_sql.py | tar -x -C "$src"
  if grep -q OUTDIR "$src/scripts/build_sql.py"; then   # 0.2.0 on: it writes a directory
    mkdir -p "$src/out"
    python3 "$src/scripts/build_sql.py" "$v" "/usr/local/lib/ragpg/$v" "$src/out" >/dev/null
    cp "$src/out/rag--$v.sql" "$OUT.tmp/extension/"
  else                                                  # 0.1.0: one file
    python3 "$src/scripts/build_sql.py" "$v" "/usr/local/lib/ragpg/$v" "$PWD/$OUT.tmp/extension/rag--$v.sql" >/dev/null
  fi
  # its requires (a secondary control file): CREATE EXTENSION rag VERSION '<v>' CASCADE
  # installs what that release did (up to 0.4.0 also pg_trgm, which 0.5.0 no longer needs)
  git show "$commit:extension/rag.control" | grep '^requires' > "$OUT.tmp/extension/rag--$v.control"
  mkdir -p "$OUT.tmp/lib/$v"
  cp -r "$src/plpy/ragpg" "$OUT.tmp/lib/$v/ragpg"
  for d in deps models tiktoken-cache; do ln -s "../$RAGPG_VERSION/$d" "$OUT.tmp/lib/$v/$d"; done
  rm -rf "$src"
  echo "old release $v built from $commit"
done
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
