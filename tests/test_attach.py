"""rag.attach: users' tables kept in step with search, sync and async (rag.work)."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest
from pgtest import stats

WORDS = ["penguin", "volcano", "glacier", "harbour", "orchard", "lantern", "meadow", "canyon"]


def make_table(db, name="articles", n=2000):
    db.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text, title text, tag text, views int DEFAULT 0)")
    db.execute(f"""INSERT INTO {name} (id, body, title, tag)
                   SELECT i, 'Article ' || i || ' is about the ' || (%s::text[])[1 + i %% 8] || ' number ' || i || '.',
                          'Title ' || i, 'tag' || (i %% 4)
                   FROM generate_series(1, %s) AS i""", (WORDS, n))


def hits(db, query, k=5):
    return db.execute("SELECT source_table, source_key, content FROM rag.search(%s, k => %s)", (query, k)).fetchall()


def test_sync_attach_backfills_and_follows_every_change(db):
    make_table(db)
    db.execute("SELECT rag.attach('articles', 'body', title_column => 'title', metadata_columns => '{tag}')")
    assert db.execute("SELECT count(*), count(DISTINCT source_key) FROM rag.documents").fetchone() == (2000, 2000)
    # search results carry the table and key: JOIN back to the business row
    row = db.execute("""SELECT a.title FROM rag.search('article 1234 about the glacier', k => 1) AS s
                        JOIN articles AS a ON a.id = (s.source_key->>'id')::int""").fetchone()
    assert row == ("Title 1234",)
    # an update of a column that is not indexed does nothing
    before = stats(db)
    db.execute("UPDATE articles SET views = views + 1")
    assert stats(db)["model_calls"] == before["model_calls"]
    assert stats(db)["documents_indexed"] == before["documents_indexed"]
    # new text is found, old text is not
    db.execute("UPDATE articles SET body = 'Quarterly zeppelin maintenance schedule.' WHERE id = 42")
    assert hits(db, "zeppelin maintenance", 1)[0][1] == {"id": 42}
    assert db.execute("SELECT count(*) FROM rag.chunks WHERE content LIKE 'Article 42 is%'").fetchone()[0] == 0
    # delete: gone
    db.execute("DELETE FROM articles WHERE id = 42")
    assert all(h[1] != {"id": 42} for h in hits(db, "zeppelin maintenance", 5))
    assert db.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 1999
    # rows without content have no document, and do not fail the write
    db.execute("UPDATE articles SET body = NULL WHERE id = 43")
    assert db.execute("SELECT count(*) FROM rag.documents WHERE source_key = '{\"id\": 43}'").fetchone()[0] == 0


def test_a_multi_row_insert_is_indexed_in_one_call(db):
    make_table(db, n=10)
    db.execute("SELECT rag.attach('articles', 'body')")
    before = stats(db)
    db.execute("INSERT INTO articles (id, body) SELECT i, 'Row ' || i || ' text.' FROM generate_series(100, 299) i")
    after = stats(db)
    assert after["documents_indexed"] - before["documents_indexed"] == 200
    assert after["index_calls"] - before["index_calls"] == 1  # one statement, one call into the engine
    assert after["index_rounds"] - before["index_rounds"] == 4  # in rounds of rag.index_batch_size (64)


def test_weird_identifiers_are_quoted(db):
    db.execute('CREATE TABLE "Weird; DROP TABLE x; --" ("key col" int PRIMARY KEY, "te""xt" text)')
    db.execute('INSERT INTO "Weird; DROP TABLE x; --" VALUES (1, \'Odd names still index fine.\')')
    db.execute("""SELECT rag.attach('"Weird; DROP TABLE x; --"', 'te"xt')""")
    assert hits(db, "odd names", 1)[0][1] == {"key col": 1}
    assert db.execute("SELECT rag.detach('\"Weird; DROP TABLE x; --\"')").fetchone()[0] is True
    assert db.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 0


def test_attach_errors(db):
    db.execute("CREATE TABLE nokey (body text)")
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.attach('nokey', 'body')")
    assert exc.value.sqlstate == "22023" and "has no primary key" in str(exc.value)
    make_table(db, n=1)
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.attach('articles', 'nope')")
    assert exc.value.sqlstate == "42703" and "has no column nope" in str(exc.value)
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.attach('articles', 'body', mode => 'later')")
    assert exc.value.sqlstate == "22023"
    db.execute("SELECT rag.attach('articles', 'body')")
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.attach('articles', 'body')")
    assert exc.value.sqlstate == "42710" and "already attached" in str(exc.value)


def test_async_two_workers_take_each_row_once(dsn, db):
    make_table(db, n=400)
    db.execute("SELECT rag.attach('articles', 'body', mode => 'async')")
    assert db.execute("SELECT pending FROM rag.queue_status").fetchone()[0] == 400
    assert db.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 0  # the trigger never embeds
    done = []

    def worker():
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET rag.index_batch_size = 16")
            conn.execute("CALL rag.work()")
            done.append(stats(conn)["documents_indexed"])
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sum(done) == 400  # every row indexed exactly once across both workers
    assert all(n > 0 for n in done)  # both took work
    assert db.execute("SELECT count(*), count(DISTINCT source_key) FROM rag.documents").fetchone() == (400, 400)
    assert db.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0


def test_failing_model_is_retried_then_parked_and_recovered(db):
    make_table(db, n=30)
    db.execute("SELECT rag.attach('articles', 'body', mode => 'async')")
    db.execute("SET rag.embedding_model = 'no-such-model'")  # a real failing call
    db.execute("SET rag.retry_base_seconds = 0")
    db.execute("SET rag.max_attempts = 3")
    for attempt in (1, 2):
        db.execute("CALL rag.work(max_batches => 1)")
        assert db.execute("SELECT min(attempts), max(attempts), count(*) FROM rag.queue").fetchone() == (attempt, attempt, 30)
    db.execute("CALL rag.work(max_batches => 1)")
    rows = db.execute("SELECT attempts, last_error FROM rag.errors").fetchall()
    assert len(rows) == 30 and all(a == 3 and "no-such-model" in e for a, e in rows)
    assert db.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0
    assert db.execute("SELECT failed FROM rag.queue_status").fetchone()[0] == 30
    db.execute("RESET rag.embedding_model")
    assert db.execute("SELECT rag.retry_errors()").fetchone()[0] == 30
    db.execute("CALL rag.work()")
    assert db.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 30  # nothing lost
    assert db.execute("SELECT count(*) FROM rag.errors").fetchone()[0] == 0


def test_backoff_delays_the_retry(db):
    make_table(db, n=3)
    db.execute("SELECT rag.attach('articles', 'body', mode => 'async')")
    db.execute("SET rag.embedding_model = 'no-such-model'")
    db.execute("CALL rag.work()")
    wait = db.execute("SELECT min(next_attempt_at - now()) FROM rag.queue").fetchone()[0]
    assert 0 < wait.total_seconds() <= 2  # rag.retry_base_seconds (2) * 2^0, from the worker's start
    db.execute("CALL rag.work()")  # not due yet: nothing is retried
    assert db.execute("SELECT max(attempts) FROM rag.queue").fetchone()[0] == 1


def test_a_worker_killed_mid_batch_loses_nothing(dsn, db):
    make_table(db, n=600)
    db.execute("SELECT rag.attach('articles', 'body', mode => 'async')")
    victim = psycopg.connect(dsn, autocommit=True)
    pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
    victim.execute("SET rag.index_batch_size = 200")
    err = []

    def work():
        try:
            victim.execute("CALL rag.work()")
        except psycopg.Error as e:
            err.append(e)
    t = threading.Thread(target=work)
    t.start()
    # kill it while its first batch holds its rows (not after a fixed time: a fast
    # machine finishes all three batches in under two seconds)
    deadline = time.monotonic() + 30
    while db.execute("SELECT in_progress FROM rag.queue_status").fetchone()[0] == 0:
        assert time.monotonic() < deadline, "the worker never took a batch"
        time.sleep(0.01)
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    t.join(timeout=60)
    assert err, "the worker finished before it could be killed; make the batch larger"
    indexed = db.execute("SELECT count(*) FROM rag.documents").fetchone()[0]
    queued = db.execute("SELECT count(*) FROM rag.queue").fetchone()[0]
    assert indexed + queued == 600 and queued > 0  # the killed batch is still queued
    db.execute("CALL rag.work()")
    assert db.execute("SELECT count(*), count(DISTINCT source_key) FROM rag.documents").fetchone() == (600, 600)


def test_identical_chunks_are_embedded_once(db):
    before = stats(db)
    db.execute("""INSERT INTO rag.documents (source, content) VALUES
                  ('a', 'The same paragraph in two documents.'), ('b', 'The same paragraph in two documents.')""")
    assert stats(db)["texts_embedded"] - before["texts_embedded"] == 1
    db.execute("INSERT INTO rag.documents (source, content) VALUES ('c', 'The same paragraph in two documents.')")
    assert stats(db)["texts_embedded"] - before["texts_embedded"] == 1  # a later document: from the cache


def test_document_status_view(db):
    db.execute("SELECT rag.ingest('Some text to index here.', 'x.md')")
    row = db.execute("SELECT source, chunks, embedded, model FROM rag.document_status").fetchone()
    assert row == ("x.md", 1, 1, "all-MiniLM-L6-v2")


def test_queue_status_shows_rows_a_worker_is_on(dsn, db, fake_openai):
    from openai_fake import Scenario

    url = fake_openai.add("slow", Scenario(hang=3, dims=3))  # a slow provider: the batch takes 3 s
    db.execute("SELECT rag.add_model('slow', 'embed', base_url => %s, dimensions => 3)", (url,))
    make_table(db, n=12)
    db.execute("SELECT rag.attach('articles', 'body', mode => 'async')")
    worker = psycopg.connect(dsn, autocommit=True)
    worker.execute("SET rag.embedding_model = 'slow'")
    worker.execute("SET rag.index_batch_size = 5")
    t = threading.Thread(target=lambda: worker.execute("CALL rag.work(1)"))
    t.start()
    try:
        seen = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = db.execute("SELECT pending, in_progress, retrying FROM rag.queue_status").fetchone()
            if seen[1]:
                break
            time.sleep(0.1)
        assert seen == (7, 5, 0)
    finally:
        t.join()
        worker.close()
    assert db.execute("SELECT pending, in_progress FROM rag.queue_status").fetchone() == (7, 0)


def test_a_dropped_attached_table_is_named_and_detached_by_its_oid(db):
    """Hostile review 21: dropping an attached table left its queued rows failing with
    'syntax error at or near "27575"', and no way to name it to rag.detach."""
    db.execute("CREATE TABLE gone_soon (id int PRIMARY KEY, body text)")
    db.execute("INSERT INTO gone_soon VALUES (1, 'Ferries leave at six.')")
    db.execute("SELECT rag.attach('gone_soon', 'body')")
    oid = db.execute("SELECT 'gone_soon'::regclass::oid").fetchone()[0]
    db.execute("INSERT INTO rag.queue (tenant, attachment_id, source_key) "
               "SELECT tenant, id, '{\"id\": 1}' FROM rag.attachments WHERE source_table = 'gone_soon'::regclass")
    db.execute("DROP TABLE gone_soon")
    db.execute("CALL rag.work()")
    err = db.execute("SELECT last_error FROM rag.queue").fetchone()[0]
    assert err == f"rag: attached table with OID {oid} no longer exists", err
    assert db.execute("SELECT rag.detach(%s::oid)", (oid,)).fetchone()[0] is True
    assert db.execute("SELECT count(*) FROM rag.attachments").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0


def test_a_null_metadata_column_is_named(db):
    db.execute("CREATE TABLE notes_m (id int PRIMARY KEY, body text)")
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.attach('notes_m', 'body', metadata_columns => ARRAY['body', NULL]::name[])")
    assert e.value.sqlstate == "22004" and "metadata_columns holds a NULL (element 2)" in str(e.value)
    assert db.execute("SELECT count(*) FROM rag.attachments").fetchone()[0] == 0
