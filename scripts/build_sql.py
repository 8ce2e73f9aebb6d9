"""Build the extension's scripts from sql/.

sql/incremental/<version>/NNN-*.sql  run once, by the release that adds them: tables,
                                     indexes, seed rows, data migrations. Never edited
                                     once released.
sql/idempotent/NNN-*.sql             re-run by every install and every upgrade: functions,
                                     views, triggers, policies, comments, grants.

  rag--<version>.sql          every incremental directory up to <version>, then idempotent/
  rag--<from>--<version>.sql  for every earlier release: the incremental directories after
                              <from>, then idempotent/

`#@ragpg-prologue` lines are replaced by sql/python-prologue.py at their indentation, and
@RAGPG_LIB@ by the versioned directory of the extension's Python packages.
usage: python scripts/build_sql.py VERSION LIBDIR OUTDIR   (prints the files written)
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SQL = ROOT / "sql"


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def releases(upto: str) -> list[str]:
    """The versions of sql/incremental/, oldest first, up to and including `upto`."""
    vs = sorted((d.name for d in (SQL / "incremental").iterdir() if d.is_dir()), key=version_key)
    if upto not in vs:
        sys.exit(f"build_sql: sql/incremental/{upto}/ is missing (every release has a directory, empty or not)")
    return vs[: vs.index(upto) + 1]


def expand(path: Path, libdir: str) -> str:
    prologue = (SQL / "python-prologue.py").read_text().rstrip("\n").splitlines()
    text = re.sub(r"^([ \t]*)#@ragpg-prologue[ \t]*$",
                  lambda m: "\n".join(m.group(1) + ln if ln else ln for ln in prologue),
                  path.read_text(), flags=re.M)
    return f"\n-- ---- {path.relative_to(SQL)} ----\n" + text.replace("@RAGPG_LIB@", libdir)


def script(title: str, incremental: list[str], libdir: str) -> str:
    parts = [f"-- {title}: built from sql/ by scripts/build_sql.py; do not edit.\n"
             '\\echo Use "CREATE EXTENSION rag CASCADE" or "ALTER EXTENSION rag UPDATE" to load this file. \\quit\n']
    for v in incremental:
        parts += [expand(f, libdir) for f in sorted((SQL / "incremental" / v).glob("[0-9][0-9][0-9]-*.sql"))]
    parts += [expand(f, libdir) for f in sorted((SQL / "idempotent").glob("[0-9][0-9][0-9]-*.sql"))]
    return "".join(parts)


def main() -> None:
    version, libdir, outdir = sys.argv[1:4]
    out = Path(outdir)
    vs = releases(version)
    files = {f"rag--{version}.sql": script(f"rag {version}", vs, libdir)}
    for i, old in enumerate(vs[:-1]):
        files[f"rag--{old}--{version}.sql"] = script(f"rag {old} -> {version}", vs[i + 1:], libdir)
    for stale in out.glob("rag--*.sql"):   # another version's build: not this release's
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        if not (out / name).exists() or (out / name).read_text() != text:
            (out / name).write_text(text)
        print(out / name)


if __name__ == "__main__":
    main()
