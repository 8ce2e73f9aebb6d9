"""Attached partitioned tables (0.8.0): a statement fires the triggers of the table it names,
so rag's triggers sit on every partition, and partitions created, attached, detached or
dropped later are followed by rag's event triggers. Before 0.8.0 a write naming a
partition, ATTACH PARTITION of a loaded table, DETACH and DROP of a partition changed the
table's rows and no document."""
from __future__ import annotations

import uuid

import psycopg
import pytest
from pgtest import as_role


def _alice(db, connect):
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = connect("alice")
    alice.execute("SET statement_timeout = '60s'")
    alice.execute("CREATE TABLE notes (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    alice.execute("CREATE TABLE notes_a PARTITION OF notes FOR VALUES FROM (0) TO (100)")
    alice.execute("CREATE TABLE notes_b PARTITION OF notes FOR VALUES FROM (100) TO (200) PARTITION BY RANGE (id)")
    alice.execute("CREATE TABLE notes_b1 PARTITION OF notes_b FOR VALUES FROM (100) TO (150)")
    alice.execute("INSERT INTO notes VALUES (1, 'The harbour ferry leaves at seven.'), "
                  "(120, 'The bakery on the square opens at six.')")
    return alice


def _docs(c, table="public.notes"):
    return dict(c.execute("SELECT (source_key->>'id')::int, content FROM rag.documents WHERE source_table = %s",
                          (table,)).fetchall())


def _watched(c, attachment):
    return dict(c.execute("SELECT tgrelid::regclass::text, count(*) FROM pg_trigger "
                          "WHERE tgfoid = 'rag._attached_changed()'::regprocedure "
                          "AND tgargs = convert_to(%s::text, 'UTF8') || '\\x00'::bytea GROUP BY 1",
                          (attachment,)).fetchall())


def test_writes_that_name_a_partition_at_any_depth_are_indexed(db, connect):
    alice = _alice(db, connect)
    att = alice.execute("SELECT rag.attach('notes', 'body')").fetchone()[0]
    assert _watched(alice, att) == {"notes": 4, "notes_a": 4, "notes_b": 4, "notes_b1": 4}
    alice.execute("INSERT INTO notes_a VALUES (2, 'The night train to the coast runs on Fridays.')")
    alice.execute("INSERT INTO notes_b VALUES (121, 'The museum is closed on Mondays.')")   # an intermediate
    alice.execute("UPDATE notes_b1 SET body = 'The bakery on the square opens at five.' WHERE id = 120")
    alice.execute("DELETE FROM notes_a WHERE id = 1")
    assert _docs(alice) == {2: "The night train to the coast runs on Fridays.",
                            120: "The bakery on the square opens at five.",
                            121: "The museum is closed on Mondays."}
    hits = alice.execute("SELECT source_key->>'id' FROM rag.search('when does the bakery open', k => 1)").fetchall()
    assert hits == [("120",)]
    assert alice.execute("SELECT count(*) FROM rag.check()").fetchone()[0] == 0


def test_truncate_of_a_partition_deletes_only_its_rows_documents(db, connect):
    alice = _alice(db, connect)
    alice.execute("SELECT rag.attach('notes', 'body')")
    alice.execute("TRUNCATE notes_a")
    assert _docs(alice) == {120: "The bakery on the square opens at six."}
    alice.execute("INSERT INTO notes_a VALUES (3, 'Back in the first partition.')")
    alice.execute("TRUNCATE notes")
    assert _docs(alice) == {}


def test_truncate_of_many_partitions_reads_the_table_once_and_misses_nothing(db, connect):
    """A TRUNCATE of an intermediate partitioned table (or of several partitions) fires each
    truncated relation's trigger; the first deletes the documents whose row is gone and marks
    the empty leaves for the transaction, so the others do not read the table again (review
    41 #4). The mark must never hide a row that came back: written through the triggers
    (also by an UPDATE that moves a row), or restored by a rolled-back savepoint."""
    alice = _alice(db, connect)
    alice.execute("CREATE TABLE notes_b2 PARTITION OF notes_b FOR VALUES FROM (150) TO (200)")
    alice.execute("INSERT INTO notes VALUES (160, 'The ferry to the island is late in winter.'), "
                  "(2, 'The lighthouse keeper rings the bell at dusk.')")
    alice.execute("SELECT rag.attach('notes', 'body')")
    alice.execute("BEGIN")
    alice.execute("TRUNCATE notes_b")                     # notes_b, notes_b1, notes_b2 fire
    assert sorted(_docs(alice)) == [1, 2]
    marked = alice.execute("SELECT current_setting('rag.truncated_empty')").fetchone()[0]
    leaves = [o for o, in alice.execute("SELECT oid::text FROM pg_class WHERE relname IN ('notes_b1', 'notes_b2')")]
    assert all(o in marked.rsplit(":", 1)[1].split(",") for o in leaves), marked
    # a row written into a marked leaf, then that leaf truncated: its document goes
    alice.execute("INSERT INTO notes_b1 VALUES (130, 'The tide tables are posted at the harbour office.')")
    assert current_marks(alice) == ""
    alice.execute("TRUNCATE notes_b1")
    assert sorted(_docs(alice)) == [1, 2]
    # a row moved into a marked leaf by an UPDATE of its key, then the leaf truncated
    alice.execute("TRUNCATE notes_b2")
    alice.execute("UPDATE notes SET id = 170 WHERE id = 2")
    alice.execute("TRUNCATE notes_b2")
    assert sorted(_docs(alice)) == [1]
    alice.execute("ROLLBACK")
    assert sorted(_docs(alice)) == [1, 2, 120, 160]
    alice.execute("BEGIN")
    # a savepoint rolled back brings the rows back, and the mark goes with it
    alice.execute("SAVEPOINT s")
    alice.execute("TRUNCATE notes_b")
    alice.execute("ROLLBACK TO SAVEPOINT s")
    assert current_marks(alice) == ""
    alice.execute("TRUNCATE notes_b1")
    assert sorted(_docs(alice)) == [1, 2, 160]
    # several partitions named in one statement
    alice.execute("TRUNCATE notes_a, notes_b2")
    assert _docs(alice) == {}
    alice.execute("COMMIT")
    assert alice.execute("SELECT count(*) FROM rag.check()").fetchone()[0] == 0


def current_marks(c):
    return c.execute("SELECT coalesce(current_setting('rag.truncated_empty', true), '')").fetchone()[0]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_partitions_created_or_attached_later_are_watched_and_their_rows_indexed(db, connect, mode):
    alice = _alice(db, connect)
    att = alice.execute("SELECT rag.attach('notes', 'body', mode => %s)", (mode,)).fetchone()[0]
    alice.execute("CREATE TABLE notes_c PARTITION OF notes FOR VALUES FROM (200) TO (300)")
    alice.execute("INSERT INTO notes_c VALUES (201, 'A partition made after the attach: planes land at noon.')")
    # the bulk-load pattern: fill a table, then attach it as a partition (no write at all)
    alice.execute("CREATE TABLE loaded (id int PRIMARY KEY, body text)")
    alice.execute("INSERT INTO loaded VALUES (301, 'Loaded, then attached: boats.'), (302, 'Loaded, then attached: bikes.')")
    alice.execute("ALTER TABLE notes ATTACH PARTITION loaded FOR VALUES FROM (300) TO (400)")
    assert _watched(alice, att)["notes_c"] == 4 and _watched(alice, att)["loaded"] == 4
    if mode == "async":
        assert alice.execute("SELECT count(*) FROM rag.queue WHERE attachment_id = %s", (att,)).fetchone()[0] == 5
        alice.execute("CALL rag.work()")
    assert set(_docs(alice)) == {1, 120, 201, 301, 302}
    assert alice.execute("SELECT count(*) FROM rag.check()").fetchone()[0] == 0


def test_detached_or_dropped_partitions_take_their_documents(db, connect):
    alice = _alice(db, connect)
    alice.execute("INSERT INTO notes VALUES (2, 'A second row of the first partition.'), (130, 'Another bakery note.')")
    att = alice.execute("SELECT rag.attach('notes', 'body')").fetchone()[0]
    alice.execute("ALTER TABLE notes DETACH PARTITION notes_a")
    assert set(_docs(alice)) == {120, 130}
    assert "notes_a" not in _watched(alice, att)          # a table of its own again, not watched
    alice.execute("INSERT INTO notes_a VALUES (5, 'Written after the detach.')")
    assert set(_docs(alice)) == {120, 130}
    alice.execute("DROP TABLE notes_b1")
    assert _docs(alice) == {}
    assert alice.execute("SELECT count(*) FROM rag.check()").fetchone()[0] == 0


def test_check_reports_an_unwatched_partition_and_resync_watches_it(db, connect):
    alice = _alice(db, connect)
    att = alice.execute("SELECT rag.attach('notes', 'body')").fetchone()[0]
    alice.execute(f"DROP TRIGGER rag_attachment_{att}_ins ON notes_a")
    alice.execute("INSERT INTO notes_a VALUES (7, 'Unseen: the partition lost its insert trigger.')")
    problems = alice.execute("SELECT problem, affected, fix FROM rag.check()").fetchall()
    unwatched = [p for p in problems if "name a partition" in p[0]]
    assert unwatched and unwatched[0][1] == 1 and "rag.resync('public.notes')" in unwatched[0][2], problems
    alice.execute("SELECT rag.resync('notes')")
    assert _watched(alice, att)["notes_a"] == 4
    assert 7 in _docs(alice)
    assert alice.execute("SELECT count(*) FROM rag.check()").fetchone()[0] == 0


def test_another_roles_ddl_watches_the_partition_and_leaves_its_rows_to_the_owner(db, connect):
    """A superuser's ATTACH PARTITION of alice's table: rag's triggers are made (no code of
    the table runs), the rows are not read with the superuser's rights (a WARNING names the
    fix); alice's rag.check finds them, her resync indexes them."""
    alice = _alice(db, connect)
    att = alice.execute("SELECT rag.attach('notes', 'body')").fetchone()[0]
    alice.execute("CREATE TABLE loaded (id int PRIMARY KEY, body text)")
    alice.execute("INSERT INTO loaded VALUES (301, 'Loaded by alice, attached by the DBA.')")
    warnings = []
    db.add_notice_handler(lambda d: warnings.append((d.severity_nonlocalized, d.message_primary, d.message_hint)))
    db.execute("ALTER TABLE public.notes ATTACH PARTITION public.loaded FOR VALUES FROM (300) TO (400)")
    assert any(w[0] == "WARNING" and "not indexed" in w[1] and "rag.resync(" in (w[2] or "")
               for w in warnings), warnings
    assert _watched(alice, att)["loaded"] == 4 and 301 not in _docs(alice)
    assert alice.execute("SELECT count(*) FROM rag.check()").fetchone()[0] > 0   # the row without a document
    alice.execute("SELECT rag.resync('notes')")
    assert 301 in _docs(alice)


def test_the_event_triggers_leave_other_roles_ddl_alone(db, connect):
    """A role without rag's schema makes and partitions tables of its own: no error, no
    notice; and a partition of a table nobody attached gets no trigger."""
    role = f"plain_{uuid.uuid4().hex[:8]}"
    db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{role}'")
    db.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    plain = connect(role)
    notices = []
    plain.add_notice_handler(lambda d: notices.append(d.message_primary))
    plain.execute(f"CREATE TABLE {role}_t (id int PRIMARY KEY, v text) PARTITION BY LIST (id)")
    plain.execute(f"CREATE TABLE {role}_t1 PARTITION OF {role}_t FOR VALUES IN (1)")
    plain.execute(f"ALTER TABLE {role}_t DETACH PARTITION {role}_t1")
    plain.execute(f"DROP TABLE {role}_t1, {role}_t")
    assert notices == []
    alice = _alice(db, connect)
    alice.execute("CREATE TABLE other (id int PRIMARY KEY) PARTITION BY LIST (id)")
    alice.execute("CREATE TABLE other_1 PARTITION OF other FOR VALUES IN (1)")
    assert alice.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'other_1'::regclass").fetchone()[0] == 0


def test_a_trigger_planted_with_anothers_attachment_id_reads_and_drops_nothing_of_theirs(db, connect):
    """bob copies alice's attachment id into a trigger on a partitioned table of his own and
    partitions it: rag's event trigger makes bob's partitions no one else's business; alice's
    table keeps its triggers and documents."""
    alice = _alice(db, connect)
    att = alice.execute("SELECT rag.attach('notes', 'body')").fetchone()[0]
    db.execute("GRANT CREATE ON SCHEMA public TO bob")
    bob = connect("bob")
    bob.execute("CREATE TABLE bobs (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    bob.execute(f"CREATE TRIGGER planted AFTER TRUNCATE ON bobs FOR EACH STATEMENT "
                f"EXECUTE FUNCTION rag._attached_changed('{att}')")
    before = _watched(alice, att)
    bob.execute("CREATE TABLE bobs_1 PARTITION OF bobs FOR VALUES FROM (0) TO (10)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):   # not his attachment: not his to index
        bob.execute("INSERT INTO bobs_1 VALUES (1, 'bob writes')")
    after = _watched(alice, att)
    assert {k: v for k, v in after.items() if k.startswith("notes")} == \
        {k: v for k, v in before.items() if k.startswith("notes")} == {"notes": 4, "notes_a": 4, "notes_b": 4, "notes_b1": 4}
    assert set(_docs(alice)) == {1, 120}


def test_detach_drops_the_triggers_of_every_partition(db, connect):
    alice = _alice(db, connect)
    att = alice.execute("SELECT rag.attach('notes', 'body')").fetchone()[0]
    assert alice.execute("SELECT rag.detach('notes')").fetchone()[0] is True
    assert _watched(alice, att) == {}
    alice.execute("INSERT INTO notes_a VALUES (9, 'Written after the detach.')")
    assert _docs(alice) == {}


# Hostile review 41 (0.8.0, against the first version of the above): each test replays a
# finding and failed on that image (docs/security.md).

def _mallory(db, dsn):
    """A fresh rag_writer login role whose key domain's CHECK function, run in a session whose
    login is a superuser, resets the role, makes mallory a superuser and sets the role back."""
    name = f"mallory_{uuid.uuid4().hex[:8]}"
    db.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{name}' IN ROLE rag_writer")
    db.execute(f"GRANT CREATE ON SCHEMA public TO {name}")
    m = psycopg.connect(as_role(dsn, name), autocommit=True)
    m.execute(f"""CREATE FUNCTION chk(v int) RETURNS boolean LANGUAGE plpgsql AS $f$
        BEGIN
          IF session_user <> current_user AND (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
            RESET ROLE;
            EXECUTE 'ALTER ROLE {name} SUPERUSER';
            SET ROLE {name};
          END IF;
          RETURN true;
        END $f$""")
    m.execute("CREATE DOMAIN okint AS int CHECK (chk(VALUE))")
    # the partition key is a plain int: Postgres' own ATTACH and DROP run none of mallory's code
    m.execute("CREATE TABLE trap (part int, k okint, body text, PRIMARY KEY (part, k)) PARTITION BY RANGE (part)")
    m.execute("CREATE TABLE trap_a PARTITION OF trap FOR VALUES FROM (0) TO (100)")
    m.execute("SELECT rag.attach('trap', 'body')")
    return name, m


@pytest.mark.parametrize("ddl", ["attach", "drop"])
def test_a_superusers_set_role_partition_ddl_does_not_run_the_owners_code(db, dsn, ddl):
    """Review 41, finding 1 (high): the event triggers indexed rows when owner = current_user,
    so a DBA's `SET ROLE owner; ALTER TABLE ... ATTACH PARTITION` (or DROP of a partition) ran
    the owner's key domain check in a session whose login is a superuser, and that code made
    its owner a superuser. Rows are indexed in the owner's own login session only
    (rag._own_session); otherwise a WARNING, and the owner's rag.resync."""
    name, m = _mallory(db, dsn)
    try:
        if ddl == "attach":
            m.execute("CREATE TABLE trap_load (part int, k okint, body text, PRIMARY KEY (part, k))")
            m.execute("INSERT INTO trap_load VALUES (150, 1, 'The ferry to the island leaves at seven.')")
            statement = "ALTER TABLE trap ATTACH PARTITION trap_load FOR VALUES FROM (100) TO (200)"
        else:
            m.execute("CREATE TABLE trap_b PARTITION OF trap FOR VALUES FROM (100) TO (200)")
            m.execute("INSERT INTO trap VALUES (150, 1, 'The bakery on the square opens at six.')")
            statement = "DROP TABLE trap_b"
        db.execute(f"SET ROLE {name}")
        db.execute(statement)
        db.execute("RESET ROLE")
        assert db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (name,)).fetchone()[0] is False
        m.execute("SELECT rag.resync('trap')")       # the owner's own session does the rows' work
        docs = m.execute("SELECT count(*) FROM rag.documents WHERE source_table = 'public.trap'").fetchone()[0]
        assert docs == (1 if ddl == "attach" else 0)
    finally:
        db.execute("RESET ROLE")
        db.execute(f"ALTER ROLE {name} NOSUPERUSER")
        m.close()


def test_partitions_of_another_owner_are_unwatched_by_detach_or_it_says_why_not(db, connect):
    """Review 41, findings 2 and 3: ALTER TABLE ... OWNER TO does not reach partitions, and rag
    looked only at relations of the root's owner: rag.detach left its triggers on a
    partition of another role (every later write naming it failed), and a DETACH PARTITION
    of another role's partition left its rows' documents searchable. Now rag.detach by the
    root's owner refuses (42501, naming the partition), a superuser's drops them all; the
    documents of a detached partition of another role go (read from the table, not from the
    partition), and a WARNING says its triggers are its owner's to drop."""
    alice = _alice(db, connect)
    att = alice.execute("SELECT rag.attach('notes', 'body')").fetchone()[0]
    db.execute("ALTER TABLE notes_b1 OWNER TO bob")
    warnings = []
    alice.add_notice_handler(lambda d: warnings.append(d.message_primary))
    alice.execute("ALTER TABLE notes_b DETACH PARTITION notes_b1")
    assert 120 not in _docs(alice)
    assert any("notes_b1" in w and "left" in w for w in warnings), warnings
    db.execute("ALTER TABLE notes_a OWNER TO bob")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="partition public.notes_a .* belongs to role bob"):
        alice.execute("SELECT rag.detach('notes')")
    db.execute("SET rag.tenant = 'alice'")
    assert db.execute("SELECT rag.detach('notes')").fetchone()[0] is True
    assert set(_watched(alice, att)) == {"notes_b1"}     # (bob's own table now: his to drop)
    connect("bob").execute("INSERT INTO notes_a VALUES (2, 'Written by its owner after the detach.')")


def test_planted_trigger_names_and_arguments_do_not_break_ddl(db, connect):
    """Review 41, findings 5 and 7: rag cast the digits of any dropped trigger named
    rag_attachment_<digits>_trunc, and the argument of any rag._attached_changed trigger,
    to bigint: bob's view trigger named with 20 digits made alice's DROP TABLE ... CASCADE
    fail (22003), his trigger with argument 'x' a superuser's DDL on his table (22P02)."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice, bob")
    alice, bob = connect("alice"), connect("bob")
    alice.execute("CREATE TABLE shared (id int PRIMARY KEY, body text)")
    alice.execute("GRANT SELECT ON shared TO bob")
    bob.execute("CREATE VIEW bobview AS SELECT * FROM shared")
    bob.execute("CREATE FUNCTION nop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$")
    bob.execute("CREATE TRIGGER rag_attachment_99999999999999999999_trunc INSTEAD OF INSERT ON bobview "
                "FOR EACH ROW EXECUTE FUNCTION nop()")
    alice.execute("DROP TABLE shared CASCADE")
    bob.execute("CREATE TABLE bobs (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    bob.execute("CREATE TRIGGER planted AFTER TRUNCATE ON bobs FOR EACH STATEMENT "
                "EXECUTE FUNCTION rag._attached_changed('x')")
    db.execute("CREATE TABLE public.bobs_1 PARTITION OF public.bobs FOR VALUES FROM (0) TO (10)")
    db.execute("ALTER TABLE public.bobs ADD COLUMN extra text")


def test_a_partition_dropped_with_its_schema_takes_its_documents(db, connect):
    """Review 41, finding 8: the sql_drop trigger followed DROP TABLE only."""
    db.execute("CREATE SCHEMA archive AUTHORIZATION alice")
    alice = _alice(db, connect)
    alice.execute("CREATE TABLE archive.notes_old PARTITION OF notes FOR VALUES FROM (-100) TO (0)")
    alice.execute("INSERT INTO notes VALUES (-1, 'The old lighthouse keeper retired in 1990.')")
    alice.execute("SELECT rag.attach('notes', 'body')")
    alice.execute("DROP SCHEMA archive CASCADE")
    assert set(_docs(alice)) == {1, 120}


def test_a_partition_cannot_be_attached_on_its_own(db, connect):
    """A write through the partitioned table fires its triggers only: a partition attached
    alone would never see those rows (since 0.1.0). rag.attach refuses it (42809, naming the
    table to attach); one attached before is reported by rag.check."""
    alice = _alice(db, connect)
    with pytest.raises(psycopg.errors.WrongObjectType, match="notes_a is a partition of") as e:
        alice.execute("SELECT rag.attach('notes_a', 'body')")
    assert "attach the partitioned table" in e.value.diag.message_hint
    # one attached before the refusal (an older release): planted as rag.attach made it
    db.execute("SET rag.tenant = 'alice'")
    db.execute("SET session_replication_role = replica")   # (the guard: as a restore writes it)
    db.execute("INSERT INTO rag.attachments (tenant, source_table, key_columns, content_column, mode) "
               "VALUES ('alice', 'public.notes_a', '{id}', 'body', 'sync')")
    db.execute("RESET session_replication_role")
    problems = [p for p, in alice.execute("SELECT problem FROM rag.check()").fetchall()]
    assert any("attached table is a partition" in p for p in problems), problems


def test_an_attached_table_made_a_partition_is_warned_of_and_reported(db, connect):
    """ATTACH PARTITION of an attached table into a table that is not attached: writes
    through the new parent fire its triggers only. The statement succeeds (it is the
    owner's schema), with a WARNING naming the parent; rag.check reports the table."""
    alice = _alice(db, connect)
    alice.execute("CREATE TABLE memos (id int PRIMARY KEY, body text)")
    alice.execute("SELECT rag.attach('memos', 'body')")
    alice.execute("SELECT rag.attach('notes', 'body')")
    alice.execute("CREATE TABLE papers (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    warnings = []
    alice.add_notice_handler(lambda d: warnings.append((d.severity_nonlocalized, d.message_primary, d.message_hint)))
    alice.execute("ALTER TABLE papers ATTACH PARTITION memos FOR VALUES FROM (0) TO (1000)")
    mine = [w for w in warnings if w[0] == "WARNING" and "public.memos is a partition of public.papers now" in w[1]]
    assert mine and "rag.attach('public.papers'" in mine[0][2], warnings
    warnings.clear()
    alice.execute("ALTER TABLE notes ADD COLUMN extra text")    # an attached tree and its partitions: no warning
    assert not [w for w in warnings if w[0] == "WARNING"], warnings
    problems = [p for p, in alice.execute("SELECT problem FROM rag.check()").fetchall()]
    assert "attached table is a partition: writes through its partitioned table are not indexed" in problems, problems


def test_attach_partition_of_a_loaded_table_is_cancelled_within_a_second(db, connect):
    """ATTACH PARTITION into a sync attached table embeds the partition's rows in the
    statement: statement_timeout ends it within a second, and nothing is left attached or
    half-indexed."""
    import time
    alice = _alice(db, connect)
    alice.execute("SELECT rag.attach('notes', 'body')")         # (the model is loaded: that is not timed)
    alice.execute("CREATE TABLE notes_c (id int PRIMARY KEY, body text)")
    alice.execute("INSERT INTO notes_c SELECT i, 'Entry ' || i || ' of the harbour log: ' || "
                  "repeat('the tide came in over the breakwater and the boats rode at anchor ', 8) "
                  "FROM generate_series(200, 499) AS i")
    alice.execute("SET statement_timeout = '500ms'")
    t = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        alice.execute("ALTER TABLE notes ATTACH PARTITION notes_c FOR VALUES FROM (200) TO (500)")
    assert time.monotonic() - t < 1.5
    alice.execute("RESET statement_timeout")
    assert alice.execute("SELECT relispartition FROM pg_class WHERE oid = 'notes_c'::regclass").fetchone()[0] is False
    assert sorted(_docs(alice)) == [1, 120]
    assert _watched(alice, alice.execute("SELECT id FROM rag.attachments").fetchone()[0]).get("notes_c") is None


def test_an_attached_table_made_a_partition_of_an_attached_tree_is_told_apart(db, connect):
    """Review 42 #5: an attached table made a partition inside an attached tree is indexed
    by the tree's attachment too (writes through its new parent are indexed); the WARNING
    and rag.check say its rows are indexed twice and that detaching it is the fix."""
    alice = _alice(db, connect)
    alice.execute("SELECT rag.attach('notes', 'body')")
    alice.execute("CREATE TABLE memos (id int PRIMARY KEY, body text)")
    alice.execute("INSERT INTO memos VALUES (160, 'Memo about the canal boats.')")
    alice.execute("SELECT rag.attach('memos', 'body')")
    warnings = []
    alice.add_notice_handler(lambda d: warnings.append((d.severity_nonlocalized, d.message_primary, d.message_hint)))
    alice.execute("ALTER TABLE notes_b ATTACH PARTITION memos FOR VALUES FROM (150) TO (200)")
    alice.execute("INSERT INTO notes_b VALUES (161, 'Through the parent: gondolas.')")
    assert {160, 161} <= set(_docs(alice))
    mine = [w for w in warnings if w[0] == "WARNING" and "public.memos" in w[1]]
    assert len(mine) == 1 and "in attached table public.notes: its rows are indexed by both" in mine[0][1], warnings
    assert mine[0][2].startswith("SELECT rag.detach('public.memos');"), mine
    problems = dict(alice.execute("SELECT problem, fix FROM rag.check()").fetchall())
    assert problems["attached table is a partition of another attached table: its rows are indexed twice"] \
        .startswith("SELECT rag.detach('public.memos');"), problems
    alice.execute("SELECT rag.detach('memos')")
    assert {160, 161} <= set(_docs(alice))
    assert alice.execute("SELECT count(*) FROM rag.check()").fetchone()[0] == 0


def test_partition_ddl_on_a_table_nobody_attached_locks_no_other_partition(db, connect):
    """Review 42 #4: the event trigger read pg_partition_tree() of every relation of a DDL
    statement, which locks every partition: an ATTACH PARTITION into a table rag has nothing
    to do with waited behind another session's lock on any partition (and 14,000 partitions
    would fill the lock table). It reads pg_inherits, which locks nothing."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = connect("alice")
    alice.execute("CREATE TABLE ev (id int, v text) PARTITION BY LIST (id)")
    for i in range(1, 51):
        alice.execute(f"CREATE TABLE ev_{i} PARTITION OF ev FOR VALUES IN ({i})")
    alice.execute("CREATE TABLE ev_new (id int, v text)")
    other = connect("alice")
    other.execute("BEGIN")
    other.execute("LOCK TABLE ev_7 IN ACCESS EXCLUSIVE MODE")   # (a VACUUM FULL, an ALTER of that partition)
    try:
        alice.execute("BEGIN")
        alice.execute("SET LOCAL lock_timeout = '2s'")
        alice.execute("ALTER TABLE ev ATTACH PARTITION ev_new FOR VALUES IN (500)")
        n = alice.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()").fetchone()[0]
        alice.execute("ROLLBACK")
        assert n < 20, n
    finally:
        other.execute("ROLLBACK")


def test_a_table_of_an_inheritance_tree_cannot_be_attached(db, connect):
    """Review 42 #6 (since 0.1.0): an UPDATE naming an (old-style) inheritance parent
    changed the rows of an attached child and fired the parent's triggers only, and a
    parent's rows read without ONLY are its children's too. rag.attach refuses either
    (42809, naming the tree); one attached before is reported by rag.check."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = connect("alice")
    alice.execute("CREATE TABLE ipar (id int PRIMARY KEY, body text)")
    alice.execute("CREATE TABLE ichild (id int PRIMARY KEY, body text) INHERITS (ipar)")
    for t, other in (("ichild", "public.ipar"), ("ipar", "public.ichild")):
        with pytest.raises(psycopg.errors.WrongObjectType, match=f"inherits from or is inherited by {other}") as e:
            alice.execute(f"SELECT rag.attach('{t}', 'body')")
        assert "not table inheritance" in e.value.diag.message_hint
    db.execute("SET rag.tenant = 'alice'")
    db.execute("SET session_replication_role = replica")   # (planted as an older release's rag.attach made it)
    db.execute("INSERT INTO rag.attachments (tenant, source_table, key_columns, content_column, mode) "
               "VALUES ('alice', 'public.ichild', '{id}', 'body', 'sync')")
    db.execute("RESET session_replication_role")
    problems = [p for p, in alice.execute("SELECT problem FROM rag.check()").fetchall()]
    assert "attached table is in an inheritance tree: writes that name its parent or children are not indexed" in problems, problems
