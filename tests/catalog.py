"""A snapshot of everything the rag extension defines, to compare two databases: a fresh
install and an upgraded one must be equal (test_upgrade.py).

Objects are keyed by name, never by OID; each value is Postgres' own rendering of the
definition (pg_get_functiondef, pg_get_indexdef, ...), with its settings, owner-free ACL,
comment and extension membership.
"""
from __future__ import annotations

QUERIES = {
    # functions and procedures: the whole definition (body, language, volatility, SET
    # clauses, security), the ACL and the comment
    "functions": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text,
               obj_description(p.oid, 'pg_proc')
        FROM pg_proc AS p WHERE p.pronamespace = 'rag'::regnamespace""",
    "relations": """
        SELECT c.oid::regclass::text, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity,
               c.relacl::text, obj_description(c.oid, 'pg_class'), c.relpersistence::text,
               pg_get_expr(c.relpartbound, c.oid), c.reloptions::text,
               CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
        FROM pg_class AS c WHERE c.relnamespace = 'rag'::regnamespace AND c.relkind <> 'i'""",
    "columns": """
        SELECT a.attrelid::regclass::text || '.' || a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, a.attidentity::text, a.attgenerated::text, pg_get_expr(d.adbin, d.adrelid),
               a.attacl::text, col_description(a.attrelid, a.attnum), a.attstorage::text
        FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'rag'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
          AND c.relkind IN ('r', 'p', 'v')""",
    "constraints": """
        SELECT conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid), condeferrable
        FROM pg_constraint WHERE connamespace = 'rag'::regnamespace""",
    "indexes": """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE c.relnamespace = 'rag'::regnamespace""",
    "views": """
        SELECT c.oid::regclass::text, pg_get_viewdef(c.oid)
        FROM pg_class AS c WHERE c.relnamespace = 'rag'::regnamespace AND c.relkind IN ('v', 'm')""",
    "triggers": """
        SELECT t.tgrelid::regclass::text || '.' || t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text
        FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
        WHERE c.relnamespace = 'rag'::regnamespace AND NOT t.tgisinternal""",
    "policies": """
        SELECT schemaname || '.' || tablename || '.' || policyname, permissive, roles::text, cmd,
               qual, with_check
        FROM pg_policies WHERE schemaname = 'rag'""",
    "sequences": """
        SELECT s.seqrelid::regclass::text, s.seqtypid::regtype::text, s.seqincrement, s.seqcycle
        FROM pg_sequence AS s JOIN pg_class AS c ON c.oid = s.seqrelid
        WHERE c.relnamespace = 'rag'::regnamespace""",
    "types": """
        SELECT t.oid::regtype::text, t.typtype::text FROM pg_type AS t
        WHERE t.typnamespace = 'rag'::regnamespace AND t.typrelid = 0 AND t.typelem = 0""",
    # what the extension owns, and which of its tables and sequences pg_dump dumps
    "members": """
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid), d.deptype::text
        FROM pg_depend AS d WHERE d.refclassid = 'pg_extension'::regclass
          AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'rag')""",
    "config_dump": """
        SELECT c.oid::regclass::text, coalesce(e.extcondition[i], '')
        FROM pg_extension AS e, generate_subscripts(e.extconfig, 1) AS i
        JOIN pg_class AS c ON true
        WHERE e.extname = 'rag' AND c.oid = e.extconfig[i]""",
    "schema": """
        SELECT n.nspname, n.nspacl::text, obj_description(n.oid, 'pg_namespace')
        FROM pg_namespace AS n WHERE n.nspname = 'rag'""",
}


def snapshot(conn) -> dict[str, dict[str, tuple]]:
    """{kind: {name: definition}} of the rag schema, for `==` between two databases."""
    out: dict[str, dict[str, tuple]] = {}
    for kind, sql in QUERIES.items():
        rows = conn.execute(sql).fetchall()
        out[kind] = {r[0]: tuple(r[1:]) for r in rows}
        assert len(out[kind]) == len(rows), f"{kind}: names are not unique"
    return out


def diff(a: dict, b: dict) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    lines = []
    for kind in QUERIES:
        for name in sorted(set(a[kind]) | set(b[kind])):
            if a[kind].get(name) != b[kind].get(name):
                lines.append(f"{kind} {name}:\n  - {a[kind].get(name)}\n  + {b[kind].get(name)}")
    return lines
