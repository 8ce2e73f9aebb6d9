"""How an attached table's rows are found from their keys, and what a writer or worker that
cannot see a row does to its document. Hostile review 40 (0.8.0): each test replays one of
its findings and failed before the fix (docs/security.md)."""
from __future__ import annotations

import psycopg
import pytest
from pgtest import worker_passes


def _conn(c):
    c.execute("SET statement_timeout = '60s'")
    return c


def _shared_tenant(db, connect):
    """alice and bob both act for tenant 'team', each in its own login session."""
    db.execute("SELECT rag.grant_tenant('alice', 'team'), rag.grant_tenant('bob', 'team')")
    db.execute("GRANT CREATE ON SCHEMA public TO alice, bob")
    alice, bob = _conn(connect("alice")), _conn(connect("bob"))
    for c in (alice, bob):
        c.execute("SET rag.tenant = 'team'")
    return alice, bob


def _docs(c, table):
    return c.execute("SELECT source_key, content FROM rag.documents WHERE source_table = %s ORDER BY 1::text",
                     (table,)).fetchall()


def test_a_writer_needs_no_usage_on_the_schema_of_the_key_columns_type(db, connect):
    """Review 40, finding 1 (medium, new in 0.8.0). rag._apply_rows named the key column's type in a column definition list
    (format_type: 'kinds.kind'); resolving that name needs USAGE on the type's schema, which
    writing to the table never needed (the value is coerced by OID). A writer the owner gave
    INSERT on an attached table, without USAGE on the schema of its key's enum, could write
    it under 0.7.0 (jsonb_populate_record(NULL::<table>)) and now fails every statement:
    42501 'permission denied for schema kinds'."""
    alice, bob = _shared_tenant(db, connect)
    db.execute("CREATE SCHEMA kinds AUTHORIZATION alice")
    alice.execute("CREATE TYPE kinds.kind AS ENUM ('ferry', 'bakery')")
    alice.execute("CREATE TABLE shared (id kinds.kind PRIMARY KEY, body text)")
    alice.execute("SELECT rag.attach('shared', 'body')")
    alice.execute("GRANT SELECT, INSERT, UPDATE ON shared TO bob")
    bob.execute("INSERT INTO shared VALUES ('ferry', 'The ferry to the island leaves at seven.')")
    assert _docs(alice, "public.shared") == [({"id": "ferry"}, "The ferry to the island leaves at seven.")]


def test_a_writers_update_does_not_delete_documents_of_rows_a_policy_hides_from_it(db, connect):
    """Review 40, finding 3. 0.8.0 made rag.resync refuse when row-level security applies to the caller ('a row the
    caller cannot see is not a row that is gone'), but the same read in rag._apply_rows, run
    by the statement trigger as the writer, still takes a row hidden by a SELECT policy for
    a row that is gone. Here bob may UPDATE every row of alice's table (UPDATE policy
    USING (true)) but SELECT only his own; `UPDATE kb SET body = ...` (no column read, so
    only the UPDATE policy applies) rewrites alice's three rows, and their documents are
    deleted instead of updated: the rows exist with text and have no document."""
    alice, bob = _shared_tenant(db, connect)
    alice.execute("CREATE TABLE kb (id int PRIMARY KEY, author name NOT NULL DEFAULT current_user, body text)")
    alice.execute("INSERT INTO kb (id, author, body) SELECT i, 'alice', 'note ' || i || ' about the harbour' "
                  "FROM generate_series(1, 3) AS i")
    alice.execute("SELECT rag.attach('kb', 'body')")
    alice.execute("ALTER TABLE kb ENABLE ROW LEVEL SECURITY")
    alice.execute("CREATE POLICY see_own ON kb FOR SELECT USING (author = current_user)")
    alice.execute("CREATE POLICY edit_all ON kb FOR UPDATE USING (true) WITH CHECK (true)")
    alice.execute("GRANT SELECT, UPDATE ON kb TO bob")
    assert len(_docs(alice, "public.kb")) == 3
    bob.execute("UPDATE kb SET body = 'The harbour master retires in May.'")
    assert alice.execute("SELECT count(*) FROM kb WHERE body LIKE 'The harbour master%'").fetchone()[0] == 3
    assert len(_docs(alice, "public.kb")) == 3, "documents of rows the writer cannot see were deleted"
    # and rows the writer deletes (a DELETE policy of its own) lose their documents
    alice.execute("CREATE POLICY drop_all ON kb FOR DELETE USING (true)")
    alice.execute("GRANT DELETE ON kb TO bob")
    bob.execute("DELETE FROM kb")
    assert _docs(alice, "public.kb") == []


def test_a_key_changed_to_another_spelling_of_the_same_value_leaves_one_document(db, connect):
    """Review 40, finding 5 (since 0.1.0). Keys are JSON text, rows are found by the key type's equality. An interval key updated
    from '1 day' to '24 hours' (equal intervals, different text) is applied under both
    spellings; the old spelling decodes to an interval equal to the row's, finds the row,
    and keeps its document: one row, two documents (search returns it twice) until a
    resync (the same for numrange '[1.0,2)' -> '[1.00,2)', and text under a nondeterministic
    collation 'Ferry' -> 'ferry')."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = _conn(connect("alice"))
    alice.execute("CREATE TABLE iv (k interval PRIMARY KEY, body text)")
    alice.execute("SELECT rag.attach('iv', 'body')")
    alice.execute("INSERT INTO iv VALUES ('1 day', 'The ferry to the island leaves at seven.')")
    alice.execute("UPDATE iv SET k = '24 hours'")
    assert _docs(alice, "public.iv") == [({"k": "24:00:00"}, "The ferry to the island leaves at seven.")]


def test_the_owners_worker_does_not_delete_documents_of_rows_its_forced_policy_hides(db, connect):
    """Review 40, finding 4 (since 0.1.0). rag.resync and rag.check refuse a table whose row-level security applies to the
    session (FORCE'd on its owner here), since 'a row the caller cannot see is not a row
    that is gone'. rag.work, in the owner's own session, reads the same table through the
    same rag._apply_rows with no such guard: a queued key whose row the forced policy hides
    from the worker's session has its document deleted while the row is there."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice, worker = _conn(connect("alice")), _conn(connect("alice"))
    alice.execute("CREATE TABLE kb (id int PRIMARY KEY, archived boolean NOT NULL DEFAULT false, body text)")
    alice.execute("INSERT INTO kb (id, body) VALUES (1, 'The ferry to the island leaves at seven.')")
    alice.execute("SELECT rag.attach('kb', 'body', mode => 'async')")
    worker.execute("CALL rag.work()")
    assert len(_docs(alice, "public.kb")) == 1
    alice.execute("ALTER TABLE kb ENABLE ROW LEVEL SECURITY")
    alice.execute("ALTER TABLE kb FORCE ROW LEVEL SECURITY")
    alice.execute("CREATE POLICY p ON kb USING (NOT archived OR current_setting('app.archive', true) = 'on')")
    alice.execute("SET app.archive = 'on'")
    alice.execute("UPDATE kb SET archived = true, body = 'The ferry to the island leaves at eight.'")  # queued
    worker.execute("CALL rag.work()")
    assert alice.execute("SELECT count(*) FROM kb").fetchone()[0] == 1
    assert len(_docs(alice, "public.kb")) == 1, "the worker deleted the document of a row it could not see"


def test_the_worker_cli_sleeps_while_the_due_rows_are_another_workers(dsn, db, connect):
    """Review 40, finding 6. `ragpg worker` counted due rows without rag.work's SKIP LOCKED: rows another worker is
    indexing (locked FOR UPDATE for its whole batch, an embedding call's time) are counted
    as waiting, so this worker calls rag.work back to back while the other one works."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = _conn(connect("alice"))
    alice.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    alice.execute("INSERT INTO notes VALUES (1, 'The ferry to the island leaves at seven.')")
    alice.execute("SELECT rag.attach('notes', 'body', mode => 'async')")
    other = _conn(connect("alice"))                     # the other worker, mid-batch
    other.execute("BEGIN")
    other.execute("SELECT id FROM rag.queue FOR UPDATE")
    try:
        passes = worker_passes(dsn, "alice")
    finally:
        other.execute("ROLLBACK")
    assert 1 <= len(passes) <= 5, f"{len(passes)} passes in 5 s: {passes[:3]}"


def test_a_table_keyed_by_an_extension_type_is_refused_at_attach_not_at_every_write(db, connect):
    """Review 40, finding 2 (since 0.1.0). rag._apply_rows finds a row with pg_catalog's
    equality (search_path = pg_catalog, pg_temp); a key type whose equality lives in another
    schema (an extension's: isn's isbn13 here; ltree, cube) has none there. rag.attach of
    the (empty) table succeeded, then every INSERT, UPDATE and DELETE failed with 42883.
    The first fix named the primary key's own operator by its schema, which review 40b
    showed a writer can shadow (an '=' of a domain key in a schema it may create in);
    rag.attach now refuses such a table, naming the problem (0A000)."""
    db.execute("CREATE EXTENSION isn")
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = _conn(connect("alice"))
    alice.execute("CREATE TABLE books (isbn isbn13 PRIMARY KEY, body text)")
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        alice.execute("SELECT rag.attach('books', 'body')")
    assert "primary key of table public.books" in str(e.value) and "built-in type" in e.value.diag.message_hint
    assert alice.execute("SELECT count(*) FROM rag.attachments").fetchone()[0] == 0
    alice.execute("INSERT INTO books VALUES ('978-0-306-40615-7', 'A book about ferries and islands.')")


def test_a_writers_operator_is_not_run_by_the_owners_worker(db, connect):
    """Review 40b, finding 1 (high, in the first fix of review 40). The key's equality was OPERATOR(<schema of the opclass's operator>.=) resolved by name with the
    column's types: for a domain over an extension type (citext in public), an '=' (dom, dom) that a
    writer creates in that schema is an exact match and is chosen; the owner's rag.work runs it."""
    db.execute("CREATE EXTENSION IF NOT EXISTS citext SCHEMA public")
    alice, bob = _shared_tenant(db, connect)
    alice.execute("CREATE DOMAIN public.ckey AS citext")
    alice.execute("CREATE TABLE kb (id ckey PRIMARY KEY, body text)")
    alice.execute("SELECT rag.attach('kb', 'body', mode => 'async')")
    alice.execute("GRANT SELECT, INSERT ON kb TO bob")
    bob.execute("CREATE TABLE public.pwned (who name)")
    bob.execute("GRANT INSERT ON public.pwned TO PUBLIC")
    bob.execute("""CREATE FUNCTION public.evil_eq(public.ckey, public.ckey) RETURNS boolean LANGUAGE plpgsql AS $$
                   BEGIN INSERT INTO public.pwned VALUES (current_user); RETURN lower($1::text) = lower($2::text); END $$""")
    bob.execute("CREATE OPERATOR public.= (LEFTARG = public.ckey, RIGHTARG = public.ckey, FUNCTION = public.evil_eq)")
    bob.execute("INSERT INTO kb VALUES ('Ferry', 'The ferry to the island leaves at seven.')")
    worker = _conn(connect("alice"))
    worker.execute("SET rag.tenant = 'team'")
    worker.execute("CALL rag.work()")
    assert len(_docs(alice, "public.kb")) == 1
    ran_as = [r[0] for r in db.execute("SELECT DISTINCT who FROM public.pwned").fetchall()]
    assert "alice" not in ran_as, f"bob's operator function ran as the table owner: {ran_as}"


def test_a_row_deleted_and_inserted_again_in_one_statement_keeps_its_document(db, connect):
    """Review 40b, finding 4 (in the first fix of review 40). The trigger deleted the documents of a DELETE's old rows directly (no look at the table).
    A writable CTE whose DELETE finishes after the INSERT that re-inserts a key (LIMIT stops the
    INSERT early; the rest of the DELETE runs afterwards) fires the DELETE's statement trigger last:
    the re-inserted, live row loses its document (0.7.0 re-read the table and kept it)."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = _conn(connect("alice"))
    alice.execute("CREATE TABLE kb (id int PRIMARY KEY, body text)")
    alice.execute("INSERT INTO kb VALUES (1, 'The ferry leaves at seven.'), (2, 'The bakery opens at six.')")
    alice.execute("SELECT rag.attach('kb', 'body')")
    alice.execute("WITH d AS (DELETE FROM kb RETURNING *) INSERT INTO kb SELECT * FROM d LIMIT 1")
    rows = alice.execute("SELECT id, body FROM kb").fetchall()
    assert len(rows) == 1
    assert [(k["id"], c) for k, c in _docs(alice, "public.kb")] == rows, "a live row has no document"


def test_a_row_an_owners_trigger_inserts_again_keeps_its_document(db, connect):
    """Review 40b, finding 4, the owner's way. The same as above through an AFTER DELETE row trigger of the owner that writes the row back:
    its nested INSERT is indexed first, then the DELETE's statement trigger deletes the document."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = _conn(connect("alice"))
    alice.execute("CREATE TABLE kb (id int PRIMARY KEY, body text)")
    alice.execute("INSERT INTO kb VALUES (1, 'one')")
    alice.execute("""CREATE FUNCTION public.keep() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN IF OLD.body = 'one' THEN INSERT INTO public.kb VALUES (OLD.id, 'kept'); END IF; RETURN NULL; END $$""")
    alice.execute("CREATE TRIGGER keep AFTER DELETE ON kb FOR EACH ROW EXECUTE FUNCTION public.keep()")
    alice.execute("SELECT rag.attach('kb', 'body')")
    alice.execute("DELETE FROM kb")
    rows = alice.execute("SELECT id, body FROM kb ORDER BY id").fetchall()
    assert rows == [(1, 'kept')]
    assert [(k["id"], c) for k, c in _docs(alice, "public.kb")] == rows


def test_a_writers_update_of_rows_it_cannot_see_does_not_leave_their_old_text_indexed(db, connect):
    """Review 40b, finding 5 (in the first fix of review 40). A key whose row the writer's
    SELECT policy hides was 'left alone' by rag._apply_rows: bob's UPDATE
    (UPDATE policy USING (true), SELECT only his own rows) rewrites alice's row, and its document keeps
    the old text for good (search answers with text the table no longer holds); a body set to NULL
    left the document of a row that has no content. Such keys are now queued for the owner's worker."""
    alice, bob = _shared_tenant(db, connect)
    alice.execute("CREATE TABLE kb (id int PRIMARY KEY, author name NOT NULL DEFAULT current_user, body text)")
    alice.execute("INSERT INTO kb (id, author, body) VALUES (1, 'alice', 'The vault code is 1234.')")
    alice.execute("SELECT rag.attach('kb', 'body')")
    alice.execute("ALTER TABLE kb ENABLE ROW LEVEL SECURITY")
    alice.execute("CREATE POLICY see_own ON kb FOR SELECT USING (author = current_user)")
    alice.execute("CREATE POLICY edit_all ON kb FOR UPDATE USING (true) WITH CHECK (true)")
    alice.execute("GRANT SELECT, UPDATE ON kb TO bob")
    bob.execute("UPDATE kb SET body = NULL")
    assert alice.execute("SELECT body FROM kb").fetchall() == [(None,)]
    # the key is queued for the owner's worker, which sees the table whole
    assert bob.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 1
    alice.execute("CALL rag.work()")
    assert _docs(alice, "public.kb") == [], "the document of a row with no content (old text) lingers"
    # and a new text of a hidden row is indexed the same way
    alice.execute("UPDATE kb SET body = 'The vault opens at nine.'")
    bob.execute("UPDATE kb SET body = 'The vault opens at ten.'")
    alice.execute("CALL rag.work()")
    assert [c for _, c in _docs(alice, "public.kb")] == ["The vault opens at ten."]


def test_a_writer_needs_no_usage_on_the_schema_of_the_key_types_operator(db, connect):
    """Review 40b, finding 2 (in the first fix of review 40). Review 40's finding 1 fixed for the type name (jsonb_populate_record without USAGE on its
    schema), but the join now names the key's equality as OPERATOR(ext.=): a writer without USAGE on
    the schema the extension type (citext in schema ext) lives in fails every write with 42501."""
    db.execute("CREATE SCHEMA ext")
    db.execute("CREATE EXTENSION IF NOT EXISTS citext SCHEMA ext")
    db.execute("GRANT USAGE ON SCHEMA ext TO alice")
    alice, bob = _shared_tenant(db, connect)
    alice.execute("CREATE TABLE shared (id ext.citext PRIMARY KEY, body text)")
    alice.execute("SELECT rag.attach('shared', 'body')")
    alice.execute("GRANT SELECT, INSERT ON shared TO bob")
    bob.execute("INSERT INTO shared VALUES ('Ferry', 'The ferry to the island leaves at seven.')")
    assert _docs(alice, "public.shared") == [({"id": "Ferry"}, "The ferry to the island leaves at seven.")]


def test_truncate_removes_the_documents_of_an_attached_table(db, connect):
    """Review 40b, finding 6 (since 0.1.0). rag.attach created INSERT, UPDATE and DELETE
    triggers only: after TRUNCATE every document stayed searchable (content its owner had
    removed). A fourth trigger deletes them, and the keys queued for the table; rag.check
    reports a table whose TRUNCATE trigger is missing; detach removes all four."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = _conn(connect("alice"))
    alice.execute("CREATE TABLE kb (id int PRIMARY KEY, body text)")
    alice.execute("INSERT INTO kb VALUES (1, 'The ferry leaves at seven.')")
    alice.execute("SELECT rag.attach('kb', 'body')")
    alice.execute("CREATE TABLE kq (id int PRIMARY KEY, body text)")
    alice.execute("SELECT rag.attach('kq', 'body', mode => 'async')")
    alice.execute("INSERT INTO kq VALUES (1, 'The bakery opens at six.')")           # queued
    alice.execute("TRUNCATE kb, kq")
    assert _docs(alice, "public.kb") == [], "documents of truncated rows linger"
    assert alice.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0
    alice.execute("INSERT INTO kb VALUES (2, 'The pool opens at ten.')")
    assert [k["id"] for k, _ in _docs(alice, "public.kb")] == [2]
    trunc = alice.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'kb'::regclass "
                          "AND tgtype::int & 32 <> 0").fetchone()[0]
    alice.execute(f"DROP TRIGGER {trunc} ON kb")
    problems = {r[1] for r in alice.execute("SELECT * FROM rag.check()").fetchall()}
    assert "attached table not watched: TRUNCATE not indexed" in problems, problems
    alice.execute("SELECT rag.detach('kq')")
    assert alice.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'kq'::regclass").fetchone()[0] == 0
