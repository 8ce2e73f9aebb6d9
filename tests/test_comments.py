"""The catalog is the manual: every object of schema rag has a COMMENT (sql/idempotent/950-comments.sql).

psql's \\df+ / \\dv+ / \\dt+ and BI tools' schema browsers (JDBC REMARKS) show these comments.
Each test lists every object missing one, so a new function, table or view fails here
until it gets its comment in 950-comments.sql.
"""
from __future__ import annotations

# relations of the extension: tenant partitions made at run time by
# rag.create_tenant_partition are not members of it (no pg_depend 'e' row) and are skipped
EXTENSION_MEMBER = """
    EXISTS (SELECT 1 FROM pg_depend AS d JOIN pg_extension AS e ON e.oid = d.refobjid
            WHERE e.extname = 'rag' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.deptype = 'e')"""

# the tables users read: every column is described
USER_TABLES = ["documents", "chunks", "answers", "usage", "models", "queue", "errors", "attachments",
               "tenant_budgets"]


def missing(kind: str, names: list[str]) -> str:
    return f"{len(names)} {kind} (add them to sql/idempotent/950-comments.sql):\n  " + "\n  ".join(names)


def functions(db) -> list[tuple[str, str, str | None]]:
    """(signature, name, comment) of every function and procedure of schema rag."""
    return db.execute("""
        SELECT p.oid::regprocedure::text, p.proname::text, obj_description(p.oid, 'pg_proc')
        FROM pg_proc AS p WHERE p.pronamespace = 'rag'::regnamespace
        ORDER BY 1""").fetchall()


def test_every_function_has_a_comment(db):
    rows = functions(db)
    assert len(rows) > 50  # the query sees the extension's functions
    bare = [sig for sig, _, comment in rows if not (comment or "").strip()]
    assert not bare, missing("functions and procedures without a comment", bare)


def test_every_public_function_has_an_example(db):
    rows = [r for r in functions(db) if not r[1].startswith("_")]
    assert any(name == "search" for _, name, _ in rows)
    no_example = [sig for sig, _, comment in rows if "Example:" not in (comment or "")]
    assert not no_example, missing("public functions whose comment has no 'Example:'", no_example)


def test_internal_functions_say_so(db):
    rows = [r for r in functions(db) if r[1].startswith("_")]
    assert rows
    wrong = [sig for sig, _, comment in rows if not (comment or "").startswith("Internal:")]
    assert not wrong, missing("internal functions whose comment does not start with 'Internal:'", wrong)


def relations(db) -> list[tuple[str, str, str | None]]:
    """(name, relkind, comment) of every table, partitioned table and view of the extension."""
    return db.execute(f"""
        SELECT c.oid::regclass::text, c.relkind::text, obj_description(c.oid, 'pg_class')
        FROM pg_class AS c
        WHERE c.relnamespace = 'rag'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND {EXTENSION_MEMBER}
        ORDER BY 1""").fetchall()


def test_every_table_and_view_has_a_comment(db):
    rows = relations(db)
    # partitioned tables, their default partitions and views are all checked
    assert {"rag.documents", "rag.chunks", "rag.chunks_default", "rag.posting_blocks_default",
            "rag.usage_daily"} <= {r[0] for r in rows}
    bare = [f"{name} ({kind})" for name, kind, comment in rows if not (comment or "").strip()]
    assert not bare, missing("tables and views without a comment", bare)


def test_tenant_partitions_made_at_run_time_need_no_comment(db):
    """rag.create_tenant_partition's tables are not part of the extension: skipped."""
    part = "rag." + db.execute("SELECT rag.create_tenant_partition('acme')").fetchone()[0]
    assert part not in {r[0] for r in relations(db)}
    assert db.execute("SELECT obj_description(%s::regclass, 'pg_class')", (part,)).fetchone()[0] is None
    test_every_table_and_view_has_a_comment(db)


def test_columns_of_the_tables_users_read_have_comments(db):
    rows = db.execute("""
        SELECT c.relname::text || '.' || a.attname, col_description(c.oid, a.attnum)
        FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid
        WHERE c.relnamespace = 'rag'::regnamespace AND c.relname = ANY (%s)
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum""", (USER_TABLES,)).fetchall()
    assert {r[0].split(".")[0] for r in rows} == set(USER_TABLES)
    bare = ["rag." + col for col, comment in rows if not (comment or "").strip()]
    assert not bare, missing("columns without a comment", bare)


def test_the_schema_has_a_comment(db):
    comment = db.execute("SELECT obj_description('rag'::regnamespace, 'pg_namespace')").fetchone()[0]
    assert (comment or "").strip(), missing("schemas without a comment", ["rag"])


def test_every_setting_has_a_description(db):
    rows = db.execute("SELECT name, description FROM rag.settings() ORDER BY name").fetchall()
    assert len(rows) > 20
    bare = ["rag." + name for name, description in rows if not (description or "").strip()]
    assert not bare, missing("settings without a description in rag._setting_defaults()", bare)
