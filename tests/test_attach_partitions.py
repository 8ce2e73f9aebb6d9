"""Attached partitioned tables (0.8.0): a statement fires the triggers of the table it names,
so rag's triggers sit on every partition, and partitions created, attached, detached or
dropped later are followed by rag's event triggers. Before 0.8.0 a write naming a
partition, ATTACH PARTITION of a loaded table, DETACH and DROP of a partition changed the
table's rows and no document."""
from __future__ import annotations

import uuid

import psycopg
import pytest


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
