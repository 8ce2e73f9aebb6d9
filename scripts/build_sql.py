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

# A release drops a function of an earlier one whose signature it changed. Any role with
# USAGE on schema rag (every rag_reader) may make an object that depends on it, a view or
# even a TEMP view, and a plain DROP FUNCTION would then fail the whole ALTER EXTENSION
# UPDATE (hostile review 42). Each such line, released or not, runs as this block: the
# function is dropped when nothing depends on it; otherwise it is kept under another name
# (the dependent objects keep working only as far as the renamed function lets them), no
# role may run it, and a WARNING names the objects to drop.
DROP_FUNCTION = re.compile(r"^DROP FUNCTION IF EXISTS (rag\.(\w+)\([^)\n]*\));[^\n]*$", re.M)
KEPT_DROP = """DO $rag_drop$
DECLARE
    f pg_catalog.regprocedure := pg_catalog.to_regprocedure('{sig}');
    users text;
    grantee pg_catalog.oid;
BEGIN
    IF f IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        DROP FUNCTION {sig};
    EXCEPTION WHEN dependent_objects_still_exist THEN
        SELECT pg_catalog.string_agg(pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), ', ')
        INTO users FROM pg_catalog.pg_depend AS d
        WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid = f AND d.deptype = 'n';
        EXECUTE pg_catalog.format('ALTER FUNCTION %s RENAME TO %I', f, '{aside}');
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        FOR grantee IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_proc AS p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
                       WHERE p.oid = f AND a.grantee <> 0 AND a.grantee <> p.proowner LOOP
            EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %I', f, pg_catalog.pg_get_userbyid(grantee));
        END LOOP;
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s IS %L', f,
            'Internal: {sig} of an earlier release, replaced in rag {version} and kept only because objects depend on it ('
            || users || '); no role may run it. Drop them, then this function.');
        RAISE WARNING 'rag {version}: function {sig} is replaced, but % depend on it: it is kept as %, which no role may run', users, f
            USING HINT = pg_catalog.format('drop or change those objects, then DROP FUNCTION %s;', f);
    END;
END
$rag_drop$;"""


def kept_drops(text: str, version: str) -> str:
    """Each `DROP FUNCTION IF EXISTS rag.f(...);` line of a file as KEPT_DROP."""
    return DROP_FUNCTION.sub(lambda m: KEPT_DROP.format(sig=m.group(1), aside=f"{m.group(2)}_before_{version.replace('.', '_')}",
                                                        version=version), text)


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


def expand(path: Path, libdir: str, version: str) -> str:
    name = str(path.relative_to(SQL))
    prologue = (SQL / "python-prologue.py").read_text().rstrip("\n").splitlines()
    text = re.sub(r"^([ \t]*)#@ragpg-prologue[ \t]*$",
                  lambda m: "\n".join(m.group(1) + ln if ln else ln for ln in prologue),
                  path.read_text(), flags=re.M)
    for old, new in RELEASED_VECTOR_DDL.get(name, []):
        if text.count(old) != 1:
            sys.exit(f"build_sql: {name} should hold {old!r} once")
        text = text.replace(old, new)
    text = kept_drops(text, path.parent.name if path.parent.parent.name == "incremental" else version)
    return f"\n-- ---- {name} ----\n" + with_extschemas(name, text.replace("@RAGPG_LIB@", libdir))


def script(title: str, incremental: list[str], libdir: str, version: str) -> str:
    parts = [f"-- {title}: built from sql/ by scripts/build_sql.py; do not edit.\n"
             '\\echo Use "CREATE EXTENSION rag CASCADE" or "ALTER EXTENSION rag UPDATE" to load this file. \\quit\n',
             PRELUDE]
    for v in incremental:
        parts += [expand(f, libdir, version) for f in sorted((SQL / "incremental" / v).glob("[0-9][0-9][0-9]-*.sql"))]
    parts += [expand(f, libdir, version) for f in sorted((SQL / "idempotent").glob("[0-9][0-9][0-9]-*.sql"))]
    return "".join(parts)


def main() -> None:
    version, libdir, outdir = sys.argv[1:4]
    out = Path(outdir)
    vs = releases(version)
    files = {f"rag--{version}.sql": script(f"rag {version}", vs, libdir, version)}
    for i, old in enumerate(vs[:-1]):
        files[f"rag--{old}--{version}.sql"] = script(f"rag {old} -> {version}", vs[i + 1:], libdir, version)
    for stale in out.glob("rag--*.sql"):   # another version's build: not this release's
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        if not (out / name).exists() or (out / name).read_text() != text:
            (out / name).write_text(text)
        print(out / name)


if __name__ == "__main__":
    main()
