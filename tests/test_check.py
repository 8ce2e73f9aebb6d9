"""rag.check finds what rag's triggers did not see, and rag.reindex / rag.resync repair it
(sql/idempotent/670-check.sql). The damage is done the ways it happens: a session with
session_replication_role = replica (what a logical replication apply worker and a
data-only restore with --disable-triggers run as), a table owner's ALTER TABLE ... DISABLE
TRIGGER, rows written by hand into rag's own tables."""
from __future__ import annotations

import psycopg
import pytest

FERRY = "# Ferry\n\nThe ferry to the island leaves at seven. Tickets are sold on board."
BAKERY = "# Bakery\n\nThe bakery on the harbour opens at six and sells rye bread."


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
    db.execute("UPDATE rag.chunks SET model = 'another-model' WHERE document_id = "
               "(SELECT id FROM rag.documents WHERE source = 'bakery.md')")
    db.execute("INSERT INTO rag.corpus_stats (tenant, chunks, total_len) VALUES ('alice', 5, 50)")

    found = _problems(alice)
    assert set(found) == {
        "document not indexed: text changed without being chunked again",
        "document not indexed: chunks of another embedding model than the tenant's",
        "lexical index: statistics do not count the chunks",
        "attached table not watched: UPDATE not indexed",
        "attached rows out of step (no document, a document of another text, or a document whose row is gone)",
    }, found
    assert all(t == "alice" for t, *_ in found.values())
    assert found["attached rows out of step (no document, a document of another text, or a document whose row is gone)"][1] == 3
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
    rows = found["attached rows out of step (no document, a document of another text, or a document whose row is gone)"]
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
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="rag.resync: table public.notes belongs to role alice"):
        db.execute("SELECT rag.resync('notes')")
    assert db.execute("SELECT rag.resync('notes', force => true)").fetchone()[0] == 2
    # and its check names alice's table without reading it
    found = _problems(db)
    assert found == {"attached table not read: its rows are checked by its owner":
                     ("alice", 0, "public.notes", "SET ROLE alice; SELECT * FROM rag.check();")}


def test_resync_of_an_async_table_queues_its_rows_for_the_worker(db, connect):
    db.execute("CREATE TABLE tickets (id int PRIMARY KEY, body text)")
    db.execute("ALTER TABLE tickets OWNER TO alice")
    alice = connect("alice")
    alice.execute("SELECT rag.attach('tickets', 'body', mode => 'async')")
    db.execute("SET session_replication_role = replica")
    db.execute("INSERT INTO tickets VALUES (1, 'The printer on floor two is jammed.')")
    db.execute("RESET session_replication_role")
    assert alice.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0
    assert _problems(alice)["attached rows out of step (no document, a document of another text, "
                            "or a document whose row is gone)"][1] == 1
    assert alice.execute("SELECT rag.resync('tickets')").fetchone()[0] == 1
    assert _problems(alice) == {}                       # queued: the worker's, not missing
    alice.execute("CALL rag.work()")
    assert alice.execute("SELECT count(*) FROM rag.documents WHERE source_table = 'public.tickets'").fetchone()[0] == 1
    assert _problems(alice) == {}
