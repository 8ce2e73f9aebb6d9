"""rag.check finds what rag's triggers did not see, and rag.reindex / rag.resync repair it
(sql/idempotent/670-check.sql). The damage is done the ways it happens: a session with
session_replication_role = replica (what a logical replication apply worker and a
data-only restore with --disable-triggers run as), a table owner's ALTER TABLE ... DISABLE
TRIGGER, rows written by hand into rag's own tables."""
from __future__ import annotations

import uuid

import psycopg
import pytest
from pgtest import worker_passes

FERRY = "# Ferry\n\nThe ferry to the island leaves at seven. Tickets are sold on board."
BAKERY = "# Bakery\n\nThe bakery on the harbour opens at six and sells rye bread."
OUT_OF_STEP = "attached rows out of step (no document, a document of other values, or a document whose row is gone)"


def _problems(c) -> dict[str, tuple]:
    return {r[1]: (r[0], r[2], r[3], r[4]) for r in c.execute("SELECT * FROM rag.check()").fetchall()}


@pytest.fixture
def alices(db, connect):
    """alice holds two documents and an attached table of hers (two rows); bob one document."""
    db.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    db.execute("ALTER TABLE notes OWNER TO alice")
    alice, bob = connect("alice"), connect("bob")
    for c in (alice, bob):
        c.execute("SELECT rag.ingest(%s, source => 'ferry.md')", (FERRY,))
    alice.execute("SELECT rag.ingest(%s, source => 'bakery.md')", (BAKERY,))
    alice.execute("SELECT rag.attach('notes', 'body')")
    alice.execute("INSERT INTO notes VALUES (1, 'The library closes at nine.'), (2, 'The pool opens at ten.')")
    return alice, bob


def _trigger(c, event: str) -> str:
    """rag's trigger on notes for that event (named after the attachment)."""
    return f"rag_attachment_{c.execute('SELECT id FROM rag.attachments').fetchone()[0]}_{event}"


def test_a_database_kept_by_rags_triggers_has_nothing_to_report(alices, connect):
    alice, bob = alices
    for c in (alice, bob, connect("carol")):
        assert _problems(c) == {}


def test_what_the_triggers_did_not_see_is_found_and_repaired(db, alices):
    alice, bob = alices
    db.execute("SET session_replication_role = replica")
    db.execute("UPDATE rag.documents SET content = 'The ferry to the island leaves at eight.' "
               "WHERE source = 'ferry.md' AND tenant = 'alice'")
    db.execute("INSERT INTO notes VALUES (3, 'The museum is free on Sundays.')")
    db.execute("DELETE FROM notes WHERE id = 2")
    db.execute("UPDATE notes SET body = 'The library closes at ten.' WHERE id = 1")
    db.execute("RESET session_replication_role")
    alice.execute(f"ALTER TABLE notes DISABLE TRIGGER {_trigger(alice, 'upd')}")
    db.execute("SET session_replication_role = replica")   # (a chunk's model is checked when written)
    db.execute("UPDATE rag.chunks SET model = 'another-model' WHERE document_id = "
               "(SELECT id FROM rag.documents WHERE source = 'bakery.md')")
    db.execute("RESET session_replication_role")
    db.execute("INSERT INTO rag.corpus_stats (tenant, chunks, total_len) VALUES ('alice', 5, 50)")

    found = _problems(alice)
    assert set(found) == {
        "document not indexed: text changed without being chunked again",
        "document not indexed: chunks of another embedding model than the tenant's",
        "lexical index: statistics do not count the chunks",
        "attached table not watched: UPDATE not indexed",
        OUT_OF_STEP,
    }, found
    assert all(t == "alice" for t, *_ in found.values())
    assert found[OUT_OF_STEP][1] == 3
    assert found["document not indexed: text changed without being chunked again"][2] == "'ferry.md'"
    assert f"ENABLE TRIGGER {_trigger(alice, 'upd')}" in found["attached table not watched: UPDATE not indexed"][3]
    assert _problems(bob) == {}                          # bob's tenant: nothing of alice's

    # the repairs each row names, run as alice
    assert alice.execute("SELECT rag.reindex()").fetchone()[0] == 2
    alice.execute("SELECT rag.rebuild_lexical_index()")
    alice.execute(f"ALTER TABLE notes ENABLE TRIGGER {_trigger(alice, 'upd')}")
    assert alice.execute("SELECT rag.resync('notes')").fetchone()[0] == 3   # keys 1, 2 (gone), 3
    assert _problems(alice) == {}
    got = alice.execute("SELECT d.source, c.content FROM rag.chunks AS c JOIN rag.documents AS d "
                        "ON d.id = c.document_id ORDER BY 1").fetchall()
    assert [s for s, _ in got] == ["bakery.md", "ferry.md", 'public.notes#{"id": 1}', 'public.notes#{"id": 3}']
    assert "eight" in got[1][1] and "ten" in got[2][1]
    hits = alice.execute("SELECT content FROM rag.search('when does the ferry leave', k => 1)").fetchall()
    assert len(hits) == 1 and "eight" in hits[0][0]


def test_a_dropped_trigger_and_a_missing_document_are_found(db, alices):
    alice, _ = alices
    alice.execute(f"DROP TRIGGER {_trigger(alice, 'ins')} ON notes")
    alice.execute("INSERT INTO notes VALUES (4, 'The zoo feeds the seals at noon.')")
    db.execute("DELETE FROM rag.chunks WHERE document_id = (SELECT id FROM rag.documents WHERE source = 'bakery.md')")
    found = _problems(alice)
    assert found["attached table not watched: INSERT not indexed"][3].startswith("SELECT rag.detach('public.notes')")
    assert found["document not indexed: no chunks"][1] == 1
    rows = found[OUT_OF_STEP]
    assert rows[1] == 1 and rows[2] == "public.notes key '{\"id\": 4}'"


def test_reindex_and_resync_keep_to_the_callers_tenant_and_table(db, alices, connect):
    alice, bob = alices
    bobs = bob.execute("SELECT id FROM rag.documents").fetchone()[0]
    with pytest.raises(psycopg.errors.UndefinedObject, match=f"rag.reindex: no document {bobs} in your tenants"):
        alice.execute("SELECT rag.reindex(ARRAY[%s]::bigint[])", (bobs,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        connect("carol").execute("SELECT rag.reindex()")
    with pytest.raises(psycopg.errors.UndefinedObject, match="rag.resync: table public.notes is not attached in tenant 'bob'"):
        bob.execute("SELECT rag.resync('notes')")
    # a superuser acting for alice would read alice's table with its own rights: refused
    db.execute("SET rag.tenant = 'alice'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match="rag.resync: table public.notes belongs to role alice, and this session is not that role's own"):
        db.execute("SELECT rag.resync('notes')")
    assert db.execute("SELECT rag.resync('notes', force => true)").fetchone()[0] == 2
    # and its check names alice's table without reading it
    found = _problems(db)
    assert found == {"attached table not read: its rows are checked by its owner":
                     ("alice", 0, "public.notes",
                      "log in as role alice (not SET ROLE or SET SESSION AUTHORIZATION) and run SELECT * FROM rag.check();")}


def test_resync_of_an_async_table_queues_its_rows_for_the_worker(db, connect):
    db.execute("CREATE TABLE tickets (id int PRIMARY KEY, body text)")
    db.execute("ALTER TABLE tickets OWNER TO alice")
    alice = connect("alice")
    alice.execute("SELECT rag.attach('tickets', 'body', mode => 'async')")
    db.execute("SET session_replication_role = replica")
    db.execute("INSERT INTO tickets VALUES (1, 'The printer on floor two is jammed.')")
    db.execute("RESET session_replication_role")
    assert alice.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0
    assert _problems(alice)[OUT_OF_STEP][1] == 1
    assert alice.execute("SELECT rag.resync('tickets')").fetchone()[0] == 1
    assert _problems(alice) == {}                       # queued: the worker's, not missing
    alice.execute("CALL rag.work()")
    assert alice.execute("SELECT count(*) FROM rag.documents WHERE source_table = 'public.tickets'").fetchone()[0] == 1
    assert _problems(alice) == {}


# -- Hostile review 39b: rag.check, rag.reindex and rag.resync attacked -------------------

def test_a_superuser_acting_as_the_owner_does_not_read_its_table(db, connect):
    """39b's high finding: the first version told a superuser 'SET ROLE alice; SELECT * FROM
    rag.check();'. After SET ROLE, code of alice's that reading her table runs (here a
    policy; a cast of a column's type too) may reset the role to the session's: alice
    made herself a superuser. rag.check reads a table only when the session is its owner's
    own (session_user = current_user = owner); rag.resync refuses otherwise."""
    db.execute("CREATE SCHEMA alice AUTHORIZATION alice")
    try:
        alice = connect("alice")
        alice.execute("CREATE TABLE alice.notes (id int PRIMARY KEY, body text)")
        alice.execute("SELECT rag.attach('alice.notes', 'body')")
        alice.execute("INSERT INTO alice.notes VALUES (1, 'The library closes at nine.')")
        alice.execute("""
            CREATE FUNCTION alice.pol() RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN
              IF (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
                PERFORM set_config('role', 'none', false);
                EXECUTE 'ALTER ROLE alice SUPERUSER';
                PERFORM set_config('role', 'alice', false);
              END IF;
              RETURN true;
            END $$""")
        alice.execute("ALTER TABLE alice.notes ENABLE ROW LEVEL SECURITY")
        alice.execute("ALTER TABLE alice.notes FORCE ROW LEVEL SECURITY")
        alice.execute("CREATE POLICY p ON alice.notes USING (alice.pol())")
        # (a policy forced on the owner may hide rows from it: not read in any session, 39c)
        assert set(_problems(alice)) == {"attached table not read: row-level security applies to its owner here, "
                                         "so it may not see every row"}
        db.execute("SET ROLE alice")
        found = _problems(db)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="this session is not that role's own"):
            db.execute("SELECT rag.resync('alice.notes')")
        db.execute("RESET ROLE")
        assert found["attached table not read: its rows are checked by its owner"][3].startswith("log in as role alice")
        assert db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'").fetchone()[0] is False
    finally:
        db.execute("RESET ROLE")
        db.execute("ALTER ROLE alice NOSUPERUSER")   # (roles are the cluster's: never leave it)


def test_planted_blocks_and_broken_attachments_are_reported_and_the_check_goes_on(db, connect):
    """39b: a writer's block of n = 300,000,000 overflowed int4 in the check (22003 for the
    superuser); a hand-written attachment naming a column that does not exist, or an owner
    renaming the attached column, made the whole check fail (42703), hiding every tenant's
    problems."""
    db.execute("CREATE TABLE public.shared (id int PRIMARY KEY, body text)")
    db.execute("GRANT ALL ON public.shared TO alice")
    db.execute("CREATE TABLE public.notes (id int PRIMARY KEY, body text)")
    db.execute("ALTER TABLE public.notes OWNER TO tester")
    alice, bob = connect("alice"), connect("bob")
    alice.execute("SELECT rag.ingest('The ferry leaves at seven.', source => 'f.md')")
    # (a writer's own block so is refused since 0.9.0; one from before, its trigger off)
    db.execute("SET session_replication_role = replica")
    db.execute("INSERT INTO rag.posting_blocks (tenant, lexeme, first_id, merged, n, max_tf, min_len, ids, tfs, lens) "
               "VALUES ('alice', 'zzz', 1, true, 300000000, 1, 1, '\\x00', '\\x00', '\\x00')")
    db.execute("RESET session_replication_role")
    alice.execute("INSERT INTO rag.attachments (source_table, key_columns, content_column, mode, metadata_columns, "
                  "content_is_file) VALUES ('public.shared', '{nope}', 'body', 'sync', '{}', false)")
    db.execute("SET rag.tenant = 'bob'")
    db.execute("SELECT rag.attach('notes', 'body')")
    db.execute("RESET rag.tenant")
    db.execute("ALTER TABLE notes RENAME COLUMN body TO text_body")
    bob.execute("SELECT rag.ingest('The bakery opens at six.', source => 'b.md')")
    db.execute("SET session_replication_role = replica")
    db.execute("UPDATE rag.documents SET content = 'The bakery opens at five.' WHERE tenant = 'bob'")
    db.execute("RESET session_replication_role")
    got = {(r[0], r[1]) for r in db.execute("SELECT tenant, problem FROM rag.check()").fetchall()}
    assert got == {("alice", "lexical index: posting blocks corrupt"),
                   ("alice", "attached table not watched: INSERT, DELETE, UPDATE, TRUNCATE not indexed"),   # (no triggers)
                   ("alice", 'attached table not readable as attached: \'column t.nope does not exist\''),
                   ("bob", 'attached table not readable as attached: \'column t.body does not exist\''),
                   ("bob", "document not indexed: text changed without being chunked again")}, got


def test_file_tables_title_and_metadata_are_compared_as_the_trigger_stores_them(db, connect):
    """39b: an empty or blank file has no document by design, and the first version said such
    a table was out of step (its fix could not clear it); a file replaced, or a title and a
    metadata column changed, with rag's triggers off was not found (only a text's content
    was compared)."""
    alice = connect("alice")
    for sql in ["CREATE TABLE public.files (id int PRIMARY KEY, name text, data bytea)",
                "CREATE TABLE public.meta (id int PRIMARY KEY, body text, title text, tag text)"]:
        db.execute(sql)
    db.execute("ALTER TABLE public.files OWNER TO alice")
    db.execute("ALTER TABLE public.meta OWNER TO alice")
    alice.execute("SELECT rag.attach('files', 'data', filename_column => 'name')")
    alice.execute("SELECT rag.attach('meta', 'body', title_column => 'title', metadata_columns => '{tag}')")
    alice.execute("INSERT INTO files VALUES (1, 'a.txt', 'The ferry leaves at seven.'), (2, 'b.txt', ''), "
                  "(3, 'c.txt', '   ')")
    alice.execute("INSERT INTO meta VALUES (1, 'The ferry leaves at nine.', 'Ferry', 'public')")
    assert alice.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 2
    assert _problems(alice) == {}
    db.execute("SET session_replication_role = replica")
    db.execute("UPDATE public.files SET data = 'The museum is closed on Mondays.' WHERE id = 1")
    db.execute("UPDATE public.meta SET title = 'Secret', tag = 'internal' WHERE id = 1")
    db.execute("RESET session_replication_role")
    got = {r[3] for r in alice.execute("SELECT * FROM rag.check()").fetchall()}
    assert got == {"public.files key '{\"id\": 1}'", "public.meta key '{\"id\": 1}'"}, got
    for t in ("files", "meta"):
        alice.execute("SELECT rag.resync(%s)", (t,))
    assert _problems(alice) == {}
    assert alice.execute("SELECT title, metadata FROM rag.documents WHERE source_table = 'public.meta'"
                         ).fetchone() == ("Secret", {"tag": "internal"})
    assert "museum" in alice.execute("SELECT content FROM rag.documents WHERE source_table = 'public.files'").fetchone()[0]


def test_a_timestamptz_key_is_the_same_key_in_any_time_zone(db, connect):
    """39b: keys are JSON of the key's values, and a timestamptz's text is the session's
    time zone: from another zone the check saw a healthy row out of step twice, and
    rag.resync made a second document of the same row. Keys are made in UTC."""
    alice = connect("alice")
    db.execute("CREATE TABLE public.ev (at timestamptz PRIMARY KEY, body text)")
    db.execute("ALTER TABLE public.ev OWNER TO alice")
    alice.execute("SET TimeZone = 'America/New_York'")
    alice.execute("SELECT rag.attach('ev', 'body')")
    alice.execute("INSERT INTO ev VALUES ('2024-01-01 10:00+00', 'The concert starts at ten.')")
    assert _problems(alice) == {}
    alice.execute("SET TimeZone = 'Europe/Paris'")
    assert _problems(alice) == {}
    alice.execute("SELECT rag.resync('ev')")
    alice.execute("UPDATE ev SET body = 'The concert starts at eleven.'")
    assert alice.execute("SELECT source_key, content FROM rag.documents").fetchall() == \
        [({"at": "2024-01-01T10:00:00+00:00"}, "The concert starts at eleven.")]


def test_resync_names_a_null_table_and_queues_a_key_once(db, connect):
    """39b: rag.resync(NULL) said 42704 naming '<NULL>'; an async table's resync queued every
    key again, whether waiting or not (two resyncs of 3 rows: 9 queue rows)."""
    alice = connect("alice")
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="rag.resync: source_table is required"):
        alice.execute("SELECT rag.resync(NULL)")
    db.execute("CREATE TABLE public.tk (id int PRIMARY KEY, body text)")
    db.execute("ALTER TABLE public.tk OWNER TO alice")
    alice.execute("SELECT rag.attach('tk', 'body', mode => 'async')")
    alice.execute("INSERT INTO tk SELECT g, 'ticket ' || g FROM generate_series(1, 3) AS g")
    assert alice.execute("SELECT rag.resync('tk')").fetchone()[0] == 0
    assert alice.execute("SELECT rag.resync('tk')").fetchone()[0] == 0
    assert alice.execute("SELECT count(*), count(DISTINCT source_key) FROM rag.queue").fetchone() == (3, 3)

# -- Hostile review 39c: the fixes of 39 and 39b attacked (each test failed before its fix) --

# The 39b attack, with SET SESSION AUTHORIZATION in place of SET ROLE: the owner's policy
# function tries every superuser's name as the session's authorization (allowed when the
# *authenticated* user is a superuser, whatever session_user says), makes its owner a
# superuser, and puts the session back.
ESCALATE = """
    CREATE FUNCTION alice.pol() RETURNS boolean LANGUAGE plpgsql AS $$
    DECLARE su name;
    BEGIN
      IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = 'alice') THEN
        FOR su IN SELECT rolname FROM pg_roles WHERE rolsuper LOOP
          BEGIN
            PERFORM set_config('session_authorization', su, false);
            EXECUTE 'ALTER ROLE alice SUPERUSER';
            PERFORM set_config('session_authorization', 'alice', false);
            EXIT;
          EXCEPTION WHEN OTHERS THEN NULL;
          END;
        END LOOP;
      END IF;
      RETURN true;
    END $$"""

# The same, for a session that SET ROLE into alice (39b's policy)
RESET_ROLE = """
    CREATE FUNCTION alice.pol() RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
      IF (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
         AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = 'alice') THEN
        PERFORM set_config('role', 'none', false);
        EXECUTE 'ALTER ROLE alice SUPERUSER';
        PERFORM set_config('role', 'alice', false);
      END IF;
      RETURN true;
    END $$"""


def _conn(c):
    c.execute("SET statement_timeout = '60s'")
    return c


def _alice_superuser(db) -> bool:
    return db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'").fetchone()[0]


def _alices_trapped_table(db, connect, policy: str, mode: str = "sync") -> psycopg.Connection:
    db.execute("CREATE SCHEMA alice AUTHORIZATION alice")
    alice = _conn(connect("alice"))
    alice.execute("CREATE TABLE alice.notes (id int PRIMARY KEY, body text)")
    alice.execute("SELECT rag.attach('alice.notes', 'body', mode => %s)", (mode,))
    alice.execute("INSERT INTO alice.notes VALUES (1, 'The library closes at nine.')")
    alice.execute(policy)
    alice.execute("ALTER TABLE alice.notes ENABLE ROW LEVEL SECURITY")
    alice.execute("ALTER TABLE alice.notes FORCE ROW LEVEL SECURITY")
    alice.execute("CREATE POLICY p ON alice.notes USING (alice.pol())")
    return alice


@pytest.mark.parametrize("call", ["SELECT count(*) FROM rag.check()", "SELECT rag.resync('alice.notes')"])
def test_set_session_authorization_is_not_the_owners_own_session(db, connect, call):
    """Review 39c, finding 1 (high: a writer became superuser). The 39b fix decides that a session is
    the owner's own by `session_user = current_user = owner`. A superuser who follows
    rag.check's fix ('connect as role alice (not SET ROLE)') without alice's password does
    what Postgres offers a superuser for that: `SET SESSION AUTHORIZATION alice`. Then
    session_user = current_user = alice, and rag.check (and rag.resync, without force)
    read alice's table; her FORCE'd policy runs in a session whose *authenticated* user is
    a superuser, so it may `set_config('session_authorization', <any superuser>)`, run
    `ALTER ROLE alice SUPERUSER`, and set the session back: the 39b escalation again,
    through the very path the fix recommends. Fix: compare with the authenticated user,
    which SET SESSION AUTHORIZATION does not change -- e.g. `(SELECT usename FROM
    pg_stat_activity WHERE pid = pg_backend_pid())` (it stays the login's) -- or refuse
    when that user is a superuser other than the owner; say so in the fix text too."""
    _conn(db)
    _alices_trapped_table(db, connect, ESCALATE)
    try:
        db.execute("SET SESSION AUTHORIZATION alice")
        try:
            db.execute(call)
        except psycopg.Error:
            pass                                        # refusing is the secure outcome
        db.execute("RESET SESSION AUTHORIZATION")
        assert _alice_superuser(db) is False, "alice's policy made her a superuser through rag's read"
    finally:
        db.execute("RESET SESSION AUTHORIZATION")
        db.execute("ALTER ROLE alice NOSUPERUSER")   # roles are cluster-wide: never leave it


def test_rag_work_after_set_role_does_not_run_the_owners_code_as_the_session(db, connect):
    """Review 39c, finding 2 (the 39b class, left open in rag.work). rag.work reads the queued
    rows of tables owned by current_user, and says for another role's rows 'run CALL
    rag.work() as alice'. A superuser who does so with `SET ROLE alice; CALL rag.work()`
    (as 39b's superuser did for rag.check) runs alice's FORCE'd policy while reading her
    table in rag._apply_rows; the policy resets the role to the session's and makes alice a
    superuser. rag.check and rag.resync now refuse such a session; rag.work does not.
    Fix: rag.work takes only tables whose owner is the session's own login (as rag.check:
    session_user = current_user, better the authenticated user, see finding 1), leaving
    the others queued with its warning saying to connect as the owner."""
    _conn(db)
    alice = _alices_trapped_table(db, connect, RESET_ROLE, mode="async")
    alice.execute("UPDATE alice.notes SET body = 'The library closes at ten.'")   # queued
    try:
        db.execute("SET ROLE alice")
        try:
            db.execute("CALL rag.work(5)")
        except psycopg.Error:
            pass
        db.execute("RESET ROLE")
        assert _alice_superuser(db) is False, "alice's policy made her a superuser through rag.work"
    finally:
        db.execute("RESET ROLE")
        db.execute("ALTER ROLE alice NOSUPERUSER")


@pytest.mark.parametrize("keytype,value,setting", [
    ("interval", "'1 hour'::interval", "SET IntervalStyle = 'iso_8601'"),
    ("bytea", "'\\x0102ff'::bytea", "SET bytea_output = 'escape'"),
    ("float8", "0.1::float8 + 0.2::float8", "SET extra_float_digits = 0"),
])
def test_a_key_is_the_same_key_whatever_the_sessions_output_settings(db, connect, keytype, value, setting):
    """Review 39c, finding 3 (duplicate or lost documents). The UTC pin fixed one setting of a
    key's JSON; a key is the text output of its values, and other session settings change
    it too: IntervalStyle (interval: "01:00:00" vs "PT1H"), bytea_output (bytea, e.g. a
    table keyed by a content hash: "\\\\x0102ff" vs "\\\\001\\\\002\\\\377") and
    extra_float_digits <= 0 (float8/real: 0.30000000000000004 becomes 0.3, another value).
    An UPDATE from a session with the other setting makes a second document of the same
    row (interval, bytea); rag.check from a default session then reports the table out of
    step, and rag.resync from such a session deletes every document and makes them again
    (re-embedding, forgetting the answers that cited them) or, for float8 with
    extra_float_digits = 0, deletes the document of a live row and makes none (its key
    no longer finds the row). Fix: pin every setting the JSON of a key or metadata depends
    on where TimeZone is pinned (IntervalStyle = postgres, bytea_output = hex,
    extra_float_digits = 1, DateStyle = ISO for the ::text of titles/urls), or key by a
    canonical form."""
    _conn(db)
    db.execute("CREATE SCHEMA alice AUTHORIZATION alice")
    alice = _conn(connect("alice"))
    alice.execute(f"CREATE TABLE alice.k (k {keytype} PRIMARY KEY, body text)")
    alice.execute("SELECT rag.attach('alice.k', 'body')")
    alice.execute(f"INSERT INTO alice.k VALUES ({value}, 'The ferry takes an hour.')")
    other = _conn(connect("alice"))
    other.execute(setting)
    other.execute("UPDATE alice.k SET body = 'The ferry takes an hour, mostly.'")
    other.execute("SELECT rag.resync('alice.k')")
    docs = alice.execute("SELECT count(*) FROM rag.documents WHERE source_table = 'alice.k'").fetchone()[0]
    assert (docs, _problems(alice)) == (1, {})


PINNED_OUTPUT = {"TimeZone=UTC", "IntervalStyle=postgres", "DateStyle=ISO, MDY",
                 "bytea_output=hex", "lc_monetary=C", "extra_float_digits=1"}


def test_every_function_that_makes_or_compares_keys_pins_every_output_setting(db):
    """Review 39d's note: a `money` key's text follows lc_monetary, which was not pinned
    beside the other output settings (the image has C locales only, so a second currency
    format cannot be shown here). Every function that turns an attached table's rows into
    keys or metadata, or compares them, pins the same settings, and the same set on each."""
    rows = db.execute(
        "SELECT 'rag.' || p.proname, p.proconfig FROM pg_proc p "
        "WHERE p.pronamespace = 'rag'::regnamespace "
        "AND p.proconfig::text LIKE '%TimeZone=UTC%' ORDER BY 1").fetchall()
    names = {r[0] for r in rows}
    assert {"rag._apply_rows", "rag._index_rows", "rag._apply_gone", "rag._attached_changed", "rag.attach",
            "rag.check", "rag.resync"} <= names
    for fn, config in rows:
        assert PINNED_OUTPUT <= set(config), (fn, PINNED_OUTPUT - set(config))


def test_resync_does_not_delete_documents_of_rows_a_policy_hides_from_the_caller(db, connect):
    """Review 39c, finding 4 (documents of live rows deleted). A table under FORCE'd row-level
    security keyed to the application's session setting (the usual multi-user pattern:
    USING (owner = current_setting('app.uid', true))). The application's sessions write
    rows and rag's trigger makes their documents (it reads the rows the writer sees). The
    owner then runs rag.check (every document is reported 'whose row is gone') and the
    fix it names, rag.resync: it reads the rows the caller sees -- none -- and deletes
    every document of the table (and, with forget_answers, every answer that cited them).
    Nothing says the read was partial. Fix: read with row_security = off in rag.check and
    rag.resync (SET row_security = off on both: Postgres then raises 42501 instead of
    silently filtering when a policy applies to the caller), and report / refuse such a
    table; at least never delete on a filtered read."""
    _conn(db)
    db.execute("CREATE SCHEMA alice AUTHORIZATION alice")
    app = _conn(connect("alice"))
    app.execute("CREATE TABLE alice.notes (id int PRIMARY KEY, owner text NOT NULL, body text)")
    app.execute("SELECT rag.attach('alice.notes', 'body')")
    app.execute("ALTER TABLE alice.notes ENABLE ROW LEVEL SECURITY")
    app.execute("ALTER TABLE alice.notes FORCE ROW LEVEL SECURITY")
    app.execute("CREATE POLICY by_user ON alice.notes USING (owner = current_setting('app.uid', true))")
    app.execute("SET app.uid = 'u1'")
    app.execute("INSERT INTO alice.notes VALUES (1, 'u1', 'The library closes at nine.'), "
                "(2, 'u1', 'The pool opens at ten.')")
    assert app.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 2
    admin = _conn(connect("alice"))            # the owner's maintenance session: no app.uid
    try:
        admin.execute("SELECT rag.resync('alice.notes')")
    except psycopg.Error:
        pass                                    # refusing a filtered read is fine
    assert admin.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 2


def test_a_lock_timeout_is_not_reported_as_a_broken_attachment_to_detach(db, connect):
    """Review 39c, finding 5 (a destructive fix for a transient error). The EXCEPTION WHEN OTHERS
    around an attachment's query (39b) catches every error but a cancel: a lock_timeout
    (55P03) while the owner's migration holds the table, a deadlock or serialization
    failure, out of memory, temp_file_limit. Each becomes 'attached table not readable as
    attached: canceling statement due to lock timeout' with the fix 'SELECT
    rag.detach(...), then rag.attach it again' -- which deletes every document of the
    table and embeds it all again (and forgets the answers citing it). Fix: catch only the
    errors that mean the attachment no longer matches the table (undefined_column,
    undefined_table, datatype_mismatch, undefined_function, ...), and re-raise the others
    (lock_not_available, 40001, 40P01, 53xxx), or at least say 'retry' for them."""
    _conn(db)
    db.execute("CREATE SCHEMA alice AUTHORIZATION alice")
    alice = _conn(connect("alice"))
    alice.execute("CREATE TABLE alice.notes (id int PRIMARY KEY, body text)")
    alice.execute("SELECT rag.attach('alice.notes', 'body')")
    alice.execute("INSERT INTO alice.notes VALUES (1, 'The library closes at nine.')")
    migration = _conn(connect("alice"))
    migration.execute("BEGIN")
    migration.execute("LOCK TABLE alice.notes IN ACCESS EXCLUSIVE MODE")
    try:
        alice.execute("SET lock_timeout = '300ms'")
        try:
            rows = alice.execute("SELECT problem, fix FROM rag.check()").fetchall()
        except psycopg.errors.LockNotAvailable:
            return                                   # the transient error, as it is
        bad = [r for r in rows if "detach" in (r[1] or "")]
        assert bad == [], f"a lock timeout was reported with a detach fix: {bad}"
    finally:
        migration.execute("ROLLBACK")


# -- Hostile review 39d (each test failed on the 0.8.0 image before its fix) ---------------

def _shared_tenant(db, connect):
    """alice and bob both act for tenant 'team' (rag.grant_tenant), each in its own session."""
    db.execute("SELECT rag.grant_tenant('alice', 'team'), rag.grant_tenant('bob', 'team')")
    db.execute("GRANT CREATE ON SCHEMA public TO alice, bob")
    alice, bob = connect("alice"), connect("bob")
    for c in (alice, bob):
        c.execute("SET rag.tenant = 'team'")
    return alice, bob


def test_resync_with_force_does_not_delete_documents_of_rows_a_policy_hides_from_the_caller(db, connect):
    """39d: the 39c guard looked at row-level security forced on the owner only; bob, not the
    owner, with force => true, read alice's table under her ordinary policy (author =
    current_user), saw his own rows only, and deleted the documents of hers."""
    alice, bob = _shared_tenant(db, connect)
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice.execute("CREATE TABLE kb (id int PRIMARY KEY, author name NOT NULL DEFAULT current_user, body text)")
    alice.execute("ALTER TABLE kb ENABLE ROW LEVEL SECURITY")
    alice.execute("CREATE POLICY mine ON kb USING (author = current_user)")
    alice.execute("GRANT SELECT ON kb TO bob")
    alice.execute("INSERT INTO kb (id, author, body) SELECT i, CASE WHEN i <= 3 THEN 'alice' ELSE 'bob' END, "
                  "'note ' || i || ' about the harbour' FROM generate_series(1, 6) AS i")
    alice.execute("SELECT rag.attach('kb', 'body')")
    assert alice.execute("SELECT count(*) FROM rag.documents WHERE source_table = 'public.kb'").fetchone()[0] == 6
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security applies to this session"):
        bob.execute("SELECT rag.resync('kb', force => true)")
    assert alice.execute("SELECT count(*) FROM rag.documents WHERE source_table = 'public.kb'").fetchone()[0] == 6
    assert alice.execute("SELECT count(*) FROM rag.check()").fetchone()[0] == 0


def test_a_table_with_a_not_null_domain_column_can_be_attached_and_written(db, connect):
    """39d: rows were found with jsonb_populate_record(NULL::<table>, key), which runs every
    column's domain checks on NULL: a table with a NOT NULL domain column could not be
    attached (23502), nor written once attached (since 0.1.0). Only the key's columns are
    decoded now."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = connect("alice")
    alice.execute("CREATE DOMAIN nn_text AS text NOT NULL")
    alice.execute("CREATE TABLE dn (id int PRIMARY KEY, body text, extra nn_text)")
    alice.execute("INSERT INTO dn VALUES (1, 'a row about lighthouses', 'x')")
    alice.execute("SELECT rag.attach('dn', 'body')")
    alice.execute("INSERT INTO dn VALUES (2, 'another row about harbours', 'y')")
    alice.execute("UPDATE dn SET body = 'a row about old lighthouses' WHERE id = 1")
    assert alice.execute("SELECT source_key, content FROM rag.documents ORDER BY 1").fetchall() == \
        [({"id": 1}, "a row about old lighthouses"), ({"id": 2}, "another row about harbours")]
    assert alice.execute("SELECT rag.resync('dn')").fetchone()[0] == 2
    assert alice.execute("SELECT count(*) FROM rag.check()").fetchone()[0] == 0


def test_the_worker_cli_sleeps_when_what_is_due_is_left_for_another_owner(dsn, db, connect):
    """39d: `ragpg worker` slept only when no row of its tenant was due; rows of a table
    another role owns stay due for good (rag.work leaves them to their owner), so alice's
    worker called rag.work back to back: 977 passes in 5 s, a WARNING each."""
    _, bob = _shared_tenant(db, connect)
    bob.execute("CREATE TABLE bob_docs (id int PRIMARY KEY, body text)")
    bob.execute("INSERT INTO bob_docs SELECT i, 'bob row ' || i FROM generate_series(1, 3) AS i")
    bob.execute("SELECT rag.attach('bob_docs', 'body', mode => 'async')")
    passes = worker_passes(dsn, "alice", tenant="team")
    assert 1 <= len(passes) <= 5, f"{len(passes)} passes in 5 s: {passes[:3]}"
    assert bob.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 3     # left for bob


def test_an_async_table_of_a_role_that_cannot_log_in_is_refused_and_reported(db, connect):
    """rag.work takes a table's queued rows only in its owner's own login session (review
    39c). Tables are often owned by a NOLOGIN role that applications are granted: attached
    async, their rows would wait for ever. rag.attach refuses that (55000, the hint names
    sync mode and ALTER ROLE ... LOGIN); sync mode is allowed; and a table handed to such a
    role after it was attached async is reported by rag.check with its queued rows."""
    role = "owner_" + uuid.uuid4().hex[:8]
    db.execute(f"CREATE ROLE {role} NOLOGIN IN ROLE rag_writer")
    db.execute(f"GRANT {role} TO alice")
    db.execute(f"CREATE SCHEMA s AUTHORIZATION {role}")
    db.execute("CREATE SCHEMA a AUTHORIZATION alice")
    try:
        alice = _conn(connect("alice"))
        alice.execute(f"SET ROLE {role}")
        alice.execute("CREATE TABLE s.kb (id int PRIMARY KEY, body text)")
        alice.execute("CREATE TABLE s.kb2 (id int PRIMARY KEY, body text)")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
            alice.execute("SELECT rag.attach('s.kb', 'body', mode => 'async')")
        assert "cannot log in" in str(e.value) and "mode => 'sync'" in e.value.diag.message_hint
        assert alice.execute("SELECT count(*) FROM rag.attachments").fetchone()[0] == 0
        alice.execute("SELECT rag.attach('s.kb', 'body', mode => 'sync')")
        alice.execute("INSERT INTO s.kb VALUES (1, 'The library closes at nine.')")
        assert alice.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 1
        alice.execute("RESET ROLE")
        # attached async by a login role, then handed to the NOLOGIN role
        alice.execute("CREATE TABLE a.kb3 (id int PRIMARY KEY, body text)")
        alice.execute("SELECT rag.attach('a.kb3', 'body', mode => 'async')")
        db.execute(f"ALTER TABLE a.kb3 OWNER TO {role}")
        alice.execute("INSERT INTO a.kb3 VALUES (1, 'The pool opens at ten.'), (2, 'The gym opens at six.')")
        found = _problems(alice)
        key = "attached table (async) owned by a role that cannot log in: its queued rows are never indexed"
        assert found[key][:3] == ("alice", 2, "a.kb3"), found
        assert f"ALTER ROLE {role} LOGIN" in found[key][3]
        assert "cannot log in" in found["attached table not read: its rows are checked by its owner"][3]
        warnings = []
        alice.add_notice_handler(lambda d: warnings.append((d.message_primary, d.message_hint)))
        alice.execute("CALL rag.work(2)")
        hint = [h for m, h in warnings if "a.kb3" in (m or "")]
        assert hint and "cannot log in" in hint[0] and "mode => 'sync'" in hint[0], warnings
        assert alice.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 2
    finally:
        db.execute(f"DROP OWNED BY {role} CASCADE")


def test_the_worker_does_not_take_rows_a_policy_forced_on_the_owner_hides_for_deleted(db, connect):
    """Seen in review 39c and left until now: an async table with row-level security forced
    on its owner, keyed to the application's session setting (USING (owner =
    current_setting('app.uid', true))). The application's sessions write; rag.work, run by
    the owner without app.uid, saw none of the queued rows and deleted their documents as
    if the rows were gone. rag.attach now refuses such a table in async mode (55000), and
    rag.work leaves the queued rows of one forced later (a WARNING names NO FORCE and sync)."""
    db.execute("CREATE SCHEMA alice AUTHORIZATION alice")
    app = _conn(connect("alice"))
    app.execute("CREATE TABLE alice.notes (id int PRIMARY KEY, owner text NOT NULL, body text)")
    app.execute("CREATE TABLE alice.forced (id int PRIMARY KEY, body text)")
    app.execute("ALTER TABLE alice.forced ENABLE ROW LEVEL SECURITY")
    app.execute("ALTER TABLE alice.forced FORCE ROW LEVEL SECURITY")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
        app.execute("SELECT rag.attach('alice.forced', 'body', mode => 'async')")
    assert "NO FORCE ROW LEVEL SECURITY" in e.value.diag.message_hint
    app.execute("SELECT rag.attach('alice.notes', 'body', mode => 'async')")
    app.execute("INSERT INTO alice.notes VALUES (1, 'u1', 'The library closes at nine.'), "
                "(2, 'u1', 'The pool opens at ten.')")
    app.execute("CALL rag.work()")
    assert app.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 2
    app.execute("ALTER TABLE alice.notes ENABLE ROW LEVEL SECURITY")
    app.execute("ALTER TABLE alice.notes FORCE ROW LEVEL SECURITY")
    app.execute("CREATE POLICY by_user ON alice.notes USING (owner = current_setting('app.uid', true))")
    app.execute("SET app.uid = 'u1'")
    app.execute("UPDATE alice.notes SET body = body || ' Closed on Sundays.'")   # queued
    worker = _conn(connect("alice"))            # the owner's worker: no app.uid
    warnings = []
    worker.add_notice_handler(lambda d: warnings.append((d.message_primary, d.message_hint)))
    worker.execute("CALL rag.work()")
    assert worker.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 2
    assert worker.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 2
    hint = [h for m, h in warnings if "table notes" in (m or "")]
    assert hint and "NO FORCE ROW LEVEL SECURITY" in hint[0], warnings


def test_posting_blocks_written_before_0_9_0_past_its_limits_are_found_and_rebuilt(db, connect):
    """rag.bm25 reads a posting block whole. 0.9.0 refuses blocks of more than 8,192
    postings and stores blocks uncompressed; blocks written before keep their size and
    compression (a writer's blocks of one repeated id compressed 450 to 1). rag.check names
    them and rag.rebuild_lexical_index rewrites them within the limits."""
    alice, bob = connect("alice"), connect("bob")
    alice.execute("SELECT rag.ingest('Kudu graze at dawn. Eland rest at noon.', source => 'kudu.md')")
    bob.execute("SELECT rag.ingest('The ferry leaves at seven.', source => 'f.md')")
    cid = alice.execute("SELECT min(id) FROM rag.chunks").fetchone()[0]
    assert _problems(alice) == {}
    # as written before 0.9.0: no trigger refused them, and the bytes were stored compressible
    db.execute("ALTER TABLE rag.posting_blocks ALTER COLUMN ids SET STORAGE EXTENDED, "
               "ALTER COLUMN tfs SET STORAGE EXTENDED, ALTER COLUMN lens SET STORAGE EXTENDED")
    db.execute("SET session_replication_role = replica")
    for lexeme, first, n in (("kudu", 10**9, 9000), ("eland", 10**9, 8192)):
        db.execute("""INSERT INTO rag.posting_blocks (tenant, lexeme, first_id, merged, n, max_tf, min_len, ids, tfs, lens)
                      VALUES ('alice', %s, %s, true, %s, 1, 5, decode(repeat(encode(int8send(%s::int8), 'hex'), %s), 'hex'),
                              decode(repeat('0001', %s), 'hex'), decode(repeat('00000005', %s), 'hex'))""",
                   (lexeme, first, n, cid, n, n, n))
    db.execute("RESET session_replication_role")
    db.execute("ALTER TABLE rag.posting_blocks ALTER COLUMN ids SET STORAGE EXTERNAL, "
               "ALTER COLUMN tfs SET STORAGE EXTERNAL, ALTER COLUMN lens SET STORAGE EXTERNAL")
    assert db.execute("SELECT pg_column_compression(ids) FROM rag.posting_blocks WHERE lexeme = 'eland' "
                      "AND first_id = %s", (10**9,)).fetchone()[0] is not None   # (compressed, as before 0.9.0)
    problem = "lexical index: posting blocks past the limits of 0.9.0 (written before it)"
    found = _problems(alice)
    assert problem in found and found[problem][:2] == ("alice", 2), found
    assert found[problem][3] == "SELECT rag.rebuild_lexical_index();   -- in tenant 'alice'"
    assert _problems(bob) == {}                          # bob's tenant: nothing of alice's
    # rag.posting_blocks is read once for the corrupt blocks and these (it was read twice)
    scans = ("SELECT sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)) FROM pg_stat_xact_user_tables "
             "WHERE relid IN (SELECT relid FROM pg_partition_tree('rag.posting_blocks'))")
    with db.transaction():
        before = db.execute(scans).fetchone()[0]
        assert problem in {r[0] for r in db.execute("SELECT problem FROM rag.check()")}
        assert db.execute(scans).fetchone()[0] - before == 1
    alice.execute("SELECT rag.rebuild_lexical_index()")
    assert _problems(alice) == {}
    assert alice.execute("SELECT max(n), count(*) FILTER (WHERE pg_column_compression(ids) IS NOT NULL) "
                         "FROM rag.posting_blocks").fetchone() == (1, 0)
