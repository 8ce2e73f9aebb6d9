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

Every script runs with search_path = pg_catalog, pg_temp (its first statement; Postgres
restores the caller's path after the script). Postgres would run it with rag's schema and
the required extensions' schemas (public, often) on the path, where a role that can create
objects could plant an operator or function with closer argument types than
pg_catalog's: the script would run it as the installing superuser, and views and CHECK
constraints would keep it bound. So the scripts name pgvector with its schema: a file
holding @extschema:NAME@ (Postgres 16's notation, which 15 lacks) runs as one EXECUTE with
each replaced by the quoted schema of extension NAME. Released files are never edited: the
few lines of theirs that name pgvector's type are rewritten here (RELEASED_VECTOR_DDL).
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


PRELUDE = "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);\n"

# released files' lines that name pgvector's type unqualified -> the same, qualified
V = "@extschema:vector@."
RELEASED_VECTOR_DDL = {
    "incremental/0.1.0/020-documents.sql": [
        ("    embedding    vector NOT NULL,", f"    embedding    {V}vector NOT NULL,"),
        ("USING hnsw ((embedding::vector(384)) vector_cosine_ops)",
         f"USING hnsw ((embedding::{V}vector(384)) {V}vector_cosine_ops)")],
    "incremental/0.1.0/620-model-switch.sql": [
        ("    embedding    vector NOT NULL,", f"    embedding    {V}vector NOT NULL,")],
}
EXTSCHEMA = re.compile(r"@extschema:([a-z0-9_]+)@")


def with_extschemas(name: str, text: str) -> str:
    """A file that names other extensions' schemas (@extschema:NAME@), as one EXECUTE of
    its text with each one replaced (looked up in pg_extension when the script runs)."""
    names = sorted(set(EXTSCHEMA.findall(text)))
    if not names:
        return text
    if "$rag_file$" in text:
        sys.exit(f"build_sql: {name} holds $rag_file$, the quote its text is wrapped in")
    body = "$rag_file$" + text + "$rag_file$"
    for n in names:
        body = ("pg_catalog.replace(" + body + ", '@extschema:" + n + "@', (SELECT pg_catalog.quote_ident(s.nspname)"
                " FROM pg_catalog.pg_extension AS e JOIN pg_catalog.pg_namespace AS s ON s.oid OPERATOR(pg_catalog.=)"
                " e.extnamespace WHERE e.extname OPERATOR(pg_catalog.=) '" + n + "'))")
    return "DO $rag_do$\nBEGIN\n    EXECUTE " + body + ";\nEND\n$rag_do$;\n"


def expand(path: Path, libdir: str) -> str:
    name = str(path.relative_to(SQL))
    prologue = (SQL / "python-prologue.py").read_text().rstrip("\n").splitlines()
    text = re.sub(r"^([ \t]*)#@ragpg-prologue[ \t]*$",
                  lambda m: "\n".join(m.group(1) + ln if ln else ln for ln in prologue),
                  path.read_text(), flags=re.M)
    for old, new in RELEASED_VECTOR_DDL.get(name, []):
        if text.count(old) != 1:
            sys.exit(f"build_sql: {name} should hold {old!r} once")
        text = text.replace(old, new)
    return f"\n-- ---- {name} ----\n" + with_extschemas(name, text.replace("@RAGPG_LIB@", libdir))


def script(title: str, incremental: list[str], libdir: str) -> str:
    parts = [f"-- {title}: built from sql/ by scripts/build_sql.py; do not edit.\n"
             '\\echo Use "CREATE EXTENSION rag CASCADE" or "ALTER EXTENSION rag UPDATE" to load this file. \\quit\n',
             PRELUDE]
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
