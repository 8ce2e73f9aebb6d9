"""Build extension/rag--<version>.sql from sql/NNN-*.sql (in name order).

`#@ragpg-prologue` lines are replaced by sql/python-prologue.py at their indentation,
and @RAGPG_LIB@ by the versioned directory of the extension's Python packages.
usage: python scripts/build_sql.py VERSION LIBDIR OUTFILE
"""
import re
import sys
from pathlib import Path

version, libdir, outfile = sys.argv[1:4]
root = Path(__file__).resolve().parent.parent
prologue = (root / "sql" / "python-prologue.py").read_text().rstrip("\n").splitlines()
parts = [f'-- rag {version}: built from sql/ by scripts/build_sql.py; do not edit.\n'
         '\\echo Use "CREATE EXTENSION rag CASCADE" to load this file. \\quit\n']
for f in sorted((root / "sql").glob("[0-9][0-9][0-9]-*.sql")):
    text = f.read_text()
    text = re.sub(r"^([ \t]*)#@ragpg-prologue[ \t]*$",
                  lambda m: "\n".join(m.group(1) + ln if ln else ln for ln in prologue),
                  text, flags=re.M)
    parts.append(f"\n-- ---- {f.name} ----\n{text}")
out = "".join(parts).replace("@RAGPG_LIB@", libdir)
Path(outfile).write_text(out)
print(f"wrote {outfile} ({len(out.splitlines())} lines)")
