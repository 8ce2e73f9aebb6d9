"""Ingest through rag.ingest and through plain INSERTs (triggers), re-ingest, delete."""
from __future__ import annotations

from pathlib import Path

import pytest

from pgtest import counts, skip_without_subxact_stats, stats, subtransactions

HANDBOOK = """# Handbook

## Refunds

Refunds take five business days to reach your card after we approve them.

## Shipping

We ship worldwide. Orders leave the warehouse within 24 hours of payment.

### Customs

Customs duties are paid by the recipient on delivery.
"""


def test_extension_installs_with_its_version(db):
    version, schema = db.execute(
        "SELECT e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'rag'").fetchone()
    want = next(ln.split("=", 1)[1] for ln in (Path(__file__).resolve().parent.parent / "scripts/versions.env")
                .read_text().splitlines() if ln.startswith("RAGPG_VERSION="))
    assert (version, schema) == (want, "rag")
    deps = {r[0] for r in db.execute(
        "SELECT r.extname FROM pg_depend AS d JOIN pg_extension AS r ON r.oid = d.refobjid"
        " WHERE d.classid = 'pg_extension'::regclass AND d.objid = (SELECT oid FROM pg_extension WHERE extname = 'rag')"
        " AND d.refclassid = 'pg_extension'::regclass")}
    assert deps == {"vector", "plpython3u", "pgrowlocks"}      # not pg_trgm (up to 0.4.0; never used)
    assert db.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'").fetchone()[0] == 0


def test_ingest_chunks_by_heading_and_embeds(db):
    doc_id = db.execute("SELECT rag.ingest(%s, source => 'handbook.md', url => 'https://x/h')",
                        (HANDBOOK,)).fetchone()[0]
    assert isinstance(doc_id, int)
    title, url, hash_ok = db.execute(
        "SELECT title, url, content_hash = sha256(convert_to(content, 'UTF8')) FROM rag.documents WHERE id = %s",
        (doc_id,)).fetchone()
    assert (title, url, hash_ok) == ("Handbook", "https://x/h", True)
    rows = db.execute("""
        SELECT ord, heading, tokens, model, vector_dims(embedding), round(vector_norm(embedding)::numeric, 3),
               content_hash = sha256(convert_to(content, 'UTF8')), content
        FROM rag.chunks WHERE document_id = %s ORDER BY ord""", (doc_id,)).fetchall()
    # one chunk per section: the sections are far below the target size
    assert [r[1] for r in rows] == ["Handbook", "Handbook > Refunds", "Handbook > Shipping",
                                    "Handbook > Shipping > Customs"]
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    for _, _, tokens, model, dims, norm, hash_ok, content in rows:
        assert 0 < tokens <= 254
        assert model == "all-MiniLM-L6-v2" and dims == 384 and float(norm) == 1.0 and hash_ok
        assert content in HANDBOOK  # an exact slice of the document


def test_long_document_never_exceeds_the_model_window(db):
    para = " ".join(f"Sentence number {i} talks about write-ahead logging and checkpoints." for i in range(400))
    doc_id = db.execute("SELECT rag.ingest(%s, 'long.txt')", (para,)).fetchone()[0]
    n, max_tokens, total_len = db.execute(
        "SELECT count(*), max(tokens), sum(length(content)) FROM rag.chunks WHERE document_id = %s",
        (doc_id,)).fetchone()
    assert n > 10 and max_tokens <= 254
    assert total_len >= len(para)  # split, not dropped (overlap makes it a bit more)


def test_insert_into_documents_indexes_through_the_trigger_in_batches(db):
    db.execute("SET rag.embedding_batch_size = 16")
    before = stats(db)
    db.execute("""
        INSERT INTO rag.documents (source, content)
        SELECT 'note-' || i, 'Note ' || i || ': the quarterly report for region ' || i || ' is due on Friday.'
        FROM generate_series(1, 40) AS i""")
    after = stats(db)
    assert counts(db) == (40, 40)
    texts = after["texts_embedded"] - before["texts_embedded"]
    calls = after["model_calls"] - before["model_calls"]
    assert texts == 40
    # batched: 40 chunks at the default batch size of 16 are 3 model calls, not 40
    assert calls == 3
    assert after["documents_indexed"] - before["documents_indexed"] == 40
    # one statement, one call into the engine (the statement trigger), whatever the batch size
    assert after["index_calls"] - before["index_calls"] == 1


def test_reingest_unchanged_does_no_embedding_work(db):
    first = db.execute("SELECT rag.ingest(%s, 'handbook.md')", (HANDBOOK,)).fetchone()[0]
    chunk_ids = db.execute("SELECT array_agg(id ORDER BY id) FROM rag.chunks").fetchone()[0]
    before = stats(db)
    again = db.execute("SELECT rag.ingest(%s, 'handbook.md')", (HANDBOOK,)).fetchone()[0]
    after = stats(db)
    assert again == first
    assert after["model_calls"] == before["model_calls"]
    assert after["documents_indexed"] == before["documents_indexed"]
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM rag.chunks").fetchone()[0] == chunk_ids


def test_reingest_changed_content_embeds_only_new_chunks(db):
    doc = db.execute("SELECT rag.ingest(%s, 'handbook.md')", (HANDBOOK,)).fetchone()[0]
    old = dict(db.execute("SELECT content, embedding::text FROM rag.chunks").fetchall())
    before = stats(db)
    changed = HANDBOOK.replace("five business days", "ten business days")
    assert db.execute("SELECT rag.ingest(%s, 'handbook.md')", (changed,)).fetchone()[0] == doc
    after = stats(db)
    assert after["texts_embedded"] - before["texts_embedded"] == 1  # only the Refunds chunk
    assert after["chunks_reused"] - before["chunks_reused"] == 3
    new = dict(db.execute("SELECT content, embedding::text FROM rag.chunks").fetchall())
    assert len(new) == 4
    assert not any("five business days" in c for c in new)
    for content, emb in new.items():
        if content in old:
            assert emb == old[content]  # reused exactly


def test_metadata_only_change_keeps_chunks(db):
    doc = db.execute("SELECT rag.ingest(%s, 'handbook.md')", (HANDBOOK,)).fetchone()[0]
    ids = db.execute("SELECT array_agg(id ORDER BY id) FROM rag.chunks").fetchone()[0]
    before = stats(db)
    db.execute("""SELECT rag.ingest(%s, 'handbook.md', title => 'The Handbook', url => 'https://h',
                  metadata => '{"team": "support"}')""", (HANDBOOK,))
    assert stats(db)["documents_indexed"] == before["documents_indexed"]
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM rag.chunks").fetchone()[0] == ids
    assert db.execute("SELECT title, url, metadata->>'team' FROM rag.documents WHERE id = %s",
                      (doc,)).fetchone() == ("The Handbook", "https://h", "support")


def test_update_of_content_reindexes(db):
    db.execute("INSERT INTO rag.documents (source, content) VALUES ('a', 'Bananas are yellow and curved.')")
    db.execute("UPDATE rag.documents SET content = 'Cucumbers are green and long.' WHERE source = 'a'")
    contents = [r[0] for r in db.execute("SELECT content FROM rag.chunks")]
    assert contents == ["Cucumbers are green and long."]


def test_delete_cascades_to_chunks(db):
    db.execute("SELECT rag.ingest(%s, 'handbook.md')", (HANDBOOK,))
    db.execute("SELECT rag.ingest('Another document about shipping.', 'other.md')")
    assert counts(db) == (2, 5)
    db.execute("DELETE FROM rag.documents WHERE source = 'handbook.md'")
    assert counts(db) == (1, 1)


def test_html_is_converted_with_structure(db):
    html = """<!DOCTYPE html><html><head><title>Backups &amp; Restore</title>
    <script>var x = "do not index me";</script></head><body>
    <div class="navheader">Prev Up Next</div>
    <h1>Backups</h1><p>Use <code>pg_dump</code> for logical backups.</p>
    <h2>Point-in-time recovery</h2><p>Archive the WAL continuously.</p>
    <ul><li>base backup</li><li>WAL archive</li></ul></body></html>"""
    doc = db.execute("SELECT rag.ingest(%s, 'backup.html')", (html,)).fetchone()[0]
    title = db.execute("SELECT title FROM rag.documents WHERE id = %s", (doc,)).fetchone()[0]
    assert title == "Backups & Restore"
    rows = db.execute("SELECT heading, content FROM rag.chunks ORDER BY ord").fetchall()
    text = "\n".join(c for _, c in rows)
    assert "do not index me" not in text and "Prev Up Next" not in text and "<p>" not in text
    assert "Use pg_dump for logical backups." in text
    assert "- base backup" in text
    assert [h for h, _ in rows] == ["Backups", "Backups > Point-in-time recovery"]


def test_declared_format_text_keeps_markup_literal(db):
    db.execute("""SELECT rag.ingest('<b>bold</b> is written with the b tag in HTML and this is plain text.',
                  'tags.txt', metadata => '{"format": "text"}')""")
    assert db.execute("SELECT content FROM rag.chunks").fetchone()[0].startswith("<b>bold</b>")


def test_failed_statement_leaves_nothing_behind(db):
    # the second row is empty: the whole multi-row insert fails, no document or chunk stays
    try:
        db.execute("INSERT INTO rag.documents (source, content) VALUES ('ok', 'Fine text here.'), ('bad', '  ')")
    except Exception as e:  # noqa: BLE001
        assert "content is empty" in str(e)
    else:
        raise AssertionError("an empty document was accepted")
    assert counts(db) == (0, 0)


def test_an_ingest_takes_one_subtransaction_id(db, connect):
    """Each statement PL/Python runs is a subtransaction, and one that writes takes a
    subtransaction id. Past 64 in one transaction, every snapshot in the cluster reads
    pg_subtrans until that transaction ends. An ingest took four (its chunks, its rag.usage
    row, the document's title, the lock on its tenant's model row): 16 rag.ingest calls in
    one transaction overflowed, and a merge of posting blocks three per lexeme. Now an
    ingest's chunks, usage and title are one statement, the tenant's row is locked once
    per transaction, and a merge takes two per batch of lexemes: 40 calls (with their
    merges: the notes share words) stay under 64."""
    skip_without_subxact_stats(db)
    alice = connect("alice")
    with alice.transaction():
        for i in range(40):
            alice.execute("SELECT rag.ingest(%s, source => %s)",
                          (f"# Note {i}\n\nRefunds for order {i} take {i + 2} business days.", f"note-{i}.md"))
        count, overflowed = subtransactions(alice)
    assert not overflowed and count < 64, count
    # and all of it was written: each document's title, chunks and rag.usage rows
    titles, chunks = alice.execute(
        "SELECT count(*) FILTER (WHERE d.title = 'Note ' || substr(d.source, 6, length(d.source) - 8)),"
        " (SELECT count(*) FROM rag.chunks) FROM rag.documents AS d").fetchone()
    assert titles == 40 and chunks >= 40
    calls, tokens = alice.execute(
        "SELECT sum(calls), sum(input_tokens) FROM rag.usage WHERE operation = 'index'").fetchone()
    assert calls >= 40 and tokens > 0


def test_a_long_chunks_embedding_stays_in_its_row(db):
    """Chunks of ~200 words with their window embeddings are rows over TOAST's 2 kB: the
    embedding stays in the row (STORAGE MAIN), and the window embeddings go to TOAST
    first. (pg_column_toast_chunk_id is Postgres 17's.)"""
    if int(db.execute("SHOW server_version_num").fetchone()[0]) < 170000:
        pytest.skip("pg_column_toast_chunk_id() is Postgres 17's")
    words = "harbour ferry pier timetable tide cargo crane berth pilot anchor".split()
    paras = [" ".join(f"{words[(i * 7 + j) % 10]}{j % 13}" for j in range(180)) + "." for i in range(6)]
    db.execute("SELECT rag.ingest(%s, source => 'long.md')", ("# Long\n\n" + "\n\n".join(paras),))
    n, big, inline, windows_out = db.execute("""
        SELECT count(*), count(*) FILTER (WHERE pg_column_size(c.*) > 2000),
               count(*) FILTER (WHERE pg_column_toast_chunk_id(c.embedding) IS NULL),
               count(*) FILTER (WHERE pg_column_toast_chunk_id(c.window_embeddings) IS NOT NULL)
        FROM rag.chunks AS c JOIN rag.documents AS d ON d.id = c.document_id WHERE d.source = 'long.md'""").fetchone()
    assert n >= 3 and big >= 3 and windows_out >= 1
    assert inline == n
