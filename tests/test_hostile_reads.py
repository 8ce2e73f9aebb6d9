"""Hostile review 43: what a writer plants in its tenant, or a reader sends, costs a reader's
backend bounded memory and time, and an answer's markers stay its own. Each test failed on
the reviewed image (172e729).

Roles (tests/conftest.py): alice is a rag_writer, carol a rag_reader granted alice's tenant.
"""
from __future__ import annotations

import itertools
import json
import random
import re
import time

import psycopg
import pytest

DOC = "# Refunds\n\nRefunds take five business days. Store credit is immediate."
LONGEST = 131_072   # the longest chunk rag makes (16 characters a token of the widest window)


def _rss_mb(db, pid: int, field: str = "RssAnon") -> float:
    """A backend's memory (RssAnon; VmHWM: its peak so far), in MB."""
    status = db.execute("SELECT pg_read_file('/proc/' || %s || '/status')", (pid,)).fetchone()[0]
    return int(re.search(field + r":\s+(\d+)", status).group(1)) / 1024


def _reader(db, connect):
    db.execute("SELECT rag.grant_tenant('carol', 'alice')")
    carol = connect("carol")
    carol.execute("SET rag.tenant = 'alice'")
    return carol


def _plant(alice, chunks: int, content: str) -> None:
    """`chunks` chunks of `content` written by hand into a document of alice's, with the
    vector of its first chunk (a writer may insert its own chunks)."""
    did = alice.execute("SELECT rag.ingest(%s, source => 'plant.md')", (DOC,)).fetchone()[0]
    alice.execute("""INSERT INTO rag.chunks (document_id, ord, content, tokens, content_hash, model, embedding)
                     SELECT c.document_id, g, %s, 5, c.content_hash, c.model, c.embedding
                     FROM rag.chunks AS c, generate_series(1, %s) AS g WHERE c.document_id = %s AND c.ord = 0""",
                  (content, chunks, did))


def test_a_chunk_written_by_hand_is_at_most_the_longest_rag_makes(connect):
    alice = connect("alice")
    _plant(alice, 1, "x" * LONGEST)                     # the longest: taken
    with pytest.raises(psycopg.Error) as e:
        _plant(alice, 1, "kudu eland gnu. " * 1_250_000)   # 20 MB: readers would carry it
    assert e.value.sqlstate == "54000", e.value
    assert "over the limit of 131072" in str(e.value) and "rag.chunks" in str(e.value)
    # and its heading, which every reader carries too (review 44b: 30 MB headings, 1.3 GB)
    with pytest.raises(psycopg.Error) as e:
        alice.execute("""INSERT INTO rag.chunks (document_id, ord, content, heading, tokens, content_hash, model, embedding)
                         SELECT c.document_id, 99, 'short', repeat('h', 4097), 5, c.content_hash, c.model, c.embedding
                         FROM rag.chunks AS c WHERE c.ord = 0 LIMIT 1""")
    assert e.value.sqlstate == "54000" and "heading" in str(e.value) and "over the limit of 4096" in str(e.value)
    assert alice.execute("SELECT count(*) FROM rag.chunks WHERE char_length(content) > %s", (LONGEST,)).fetchone() == (0,)


def test_a_documents_title_and_url_are_bounded_and_an_attached_tables_are_cut(db, connect):
    """Every reader's hit and citation carries its document's title and url: a writer's 30 MB
    title was in each (review 44b). Written: refused past 4,096 / 8,192 characters; found in
    a document: cut to 500; an attached table's: the title cut, a url that long left out,
    the row indexed all the same (the table keeps both)."""
    alice = connect("alice")
    for col, n, limit in (("title", 4097, 4096), ("url", 8193, 8192)):
        with pytest.raises(psycopg.Error) as e:
            alice.execute(f"SELECT rag.ingest(%s, source => 'long.md', {col} => repeat('t', {n}))", (DOC,))
        assert e.value.sqlstate == "54000" and f"{col} is {n} characters, over the limit of {limit}" in str(e.value)
    assert alice.execute("SELECT count(*) FROM rag.documents WHERE source = 'long.md'").fetchone() == (0,)
    alice.execute("SELECT rag.ingest(%s, source => 'edge.md', title => repeat('t', 4096), url => repeat('u', 8192))",
                  (DOC,))
    did = alice.execute("SELECT rag.ingest(%s, source => 'found.md')",
                        ("# " + "kudu " * 100_000 + "\n\nRefunds take days.",)).fetchone()[0]
    title = alice.execute("SELECT title FROM rag.documents WHERE id = %s", (did,)).fetchone()[0]
    assert title.startswith("kudu kudu") and len(title) == 500
    db.execute("CREATE TABLE long_notes (id int PRIMARY KEY, body text, name text, link text)")
    db.execute("SELECT rag.attach('long_notes', 'body', title_column => 'name', url_column => 'link')")
    db.execute("INSERT INTO long_notes VALUES (1, 'Refunds take five days.', repeat('n', 10000), "
               "'https://example.com/' || repeat('p', 9000)), (2, 'Store credit is immediate.', 'Credit', "
               "'https://example.com/credit')")
    rows = db.execute("SELECT char_length(d.title), d.url, count(c.id) FROM rag.documents AS d "
                      "JOIN rag.chunks AS c ON c.document_id = d.id WHERE d.source_table = 'public.long_notes' "
                      "GROUP BY d.source_key, d.title, d.url ORDER BY d.source_key").fetchall()
    assert [r[:2] for r in rows] == [(4096, None), (6, "https://example.com/credit")] and all(r[2] for r in rows)
    assert db.execute("SELECT char_length(name) FROM long_notes WHERE id = 1").fetchone() == (10000,)
    # rag.check compares the table's rows as they are stored (review 45: "out of step" for ever)
    assert db.execute("SELECT problem FROM rag.check()").fetchall() == []
    # a row written before 0.9.0 keeps its long title, and still updates (review 45: no
    # re-ingest or reindex); a writer's long source is refused
    db.execute("SET session_replication_role = replica")
    db.execute("UPDATE rag.documents SET title = repeat('o', 6000) WHERE source = 'edge.md'")
    db.execute("RESET session_replication_role")
    alice.execute("SELECT rag.ingest(%s, source => 'edge.md')", (DOC + " Changed.",))
    assert alice.execute("SELECT char_length(title) FROM rag.documents WHERE source = 'edge.md'").fetchone() == (6000,)
    with pytest.raises(psycopg.Error) as e:
        alice.execute("SELECT rag.ingest(%s, source => repeat('s', 4097))", (DOC,))
    assert e.value.sqlstate == "54000" and "source is 4097 characters, over the limit of 4096" in str(e.value)


def test_an_answer_over_planted_chunks_ends_within_its_timeout(db, connect):
    """60 chunks of the longest text, one short sentence repeated, and a 4,000-character
    question of ~1,000 distinct words: the answerer compared every question word with every
    sentence (998 x 314,580) with no cancel, and statement_timeout 3 s ended it after 8.8 s.
    Now it reads at most eight longest chunks' text, and counts words once per sentence."""
    alice = connect("alice")
    sentence = "Zebra quagga okapi walk. "
    _plant(alice, 60, (sentence * (LONGEST // len(sentence) + 1))[:LONGEST])
    carol = _reader(db, connect)
    carol.execute("SELECT count(*) FROM rag.search('zebra', 1)").fetchone()   # the model loaded
    words = ["".join(p) for p in itertools.product("bcdfghjklmnpqrstvwxz", repeat=3)]
    random.Random(7).shuffle(words)
    question = ("zebra quagga okapi " + " ".join(words))[:4000]
    carol.execute("SET statement_timeout = '3s'")
    t0 = time.perf_counter()
    try:
        out = carol.execute("SELECT rag.ask(%s, 60)", (question,)).fetchone()[0]
        assert isinstance(out["answer"], str), out
    except psycopg.Error as e:
        assert e.sqlstate == "57014", e
    assert time.perf_counter() - t0 < 4.0


def test_every_marker_of_an_extractive_answer_is_one_of_its_citations(db, connect):
    """A sentence that holds "[2]" or "[7]" (an article's references, or a writer's plant)
    was copied into the answer: "[2]" named another document's citation, "[7]" none."""
    alice = connect("alice")
    alice.execute("SELECT rag.ingest(%s, source => 'guide.md')", (
        "# Dosage\n\nThe recommended aspirin dosage for adults is 500 mg every day as shown in the official "
        "guideline [2]. Aspirin dosage must never exceed 4000 mg per day for adults [7, 8].\n",))
    alice.execute("SELECT rag.ingest(%s, source => 'other.md')", (
        "# Other\n\nAspirin is a common pain reliever used by adults for headaches and fever in many countries.\n",))
    carol = _reader(db, connect)
    out = carol.execute("SELECT rag.ask('what is the aspirin dosage for adults')").fetchone()[0]
    assert "aspirin dosage for adults is 500 mg every day as shown in the official guideline." in out["answer"], out
    markers = [int(n) for g in re.findall(r"\[([\d,\s]+)\]", out["answer"]) for n in re.findall(r"\d+", g)]
    cited = [c["index"] for c in out["citations"]]
    assert set(markers) == set(cited) and len(cited) == len(set(cited)), (out["answer"], cited)
    assert markers[0] == 1 and out["citations"][0]["source"] == "guide.md"
    rows = carol.execute("SELECT piece FROM rag.ask_stream('what is the aspirin dosage for adults') "
                         "WHERE piece IS NOT NULL").fetchall()
    assert "".join(r[0] for r in rows) == out["answer"]


def test_a_readers_large_filters_are_refused_or_not_kept(db, connect):
    """Each search's plans hold its filter as text; 64 were kept a backend whatever their
    size: 8 MB filters kept 100 MB each, for the session. A filter over 1 MiB is refused,
    and a plan with a long filter is freed with its statement."""
    alice = connect("alice")
    alice.execute("SELECT rag.ingest(%s, source => 'handbook.md')", (DOC,))
    carol = _reader(db, connect)
    with pytest.raises(psycopg.Error) as e:
        carol.execute("SELECT count(*) FROM rag.search('refunds', 3, filter => %s::jsonb)",
                      (json.dumps({f"k{j}": f"v{j:07d}" for j in range(80_000)}),))   # ~1.8 MB
    assert e.value.sqlstate == "54000" and "over the limit of 1048576" in str(e.value), e.value
    pid = carol.execute("SELECT pg_backend_pid()").fetchone()[0]
    filters = [json.dumps({f"k{j}": f"v{j:07d}_{i}" for j in range(40_000)}) for i in range(12)]   # ~0.9 MB each
    carol.execute("SELECT count(*) FROM rag.search('refunds', 3, filter => %s::jsonb)", (filters[0],)).fetchone()
    before = _rss_mb(db, pid)
    for f in filters[1:]:
        assert carol.execute("SELECT count(*) FROM rag.search('refunds', 3, filter => %s::jsonb)",
                             (f,)).fetchone() == (0,)
    grown = _rss_mb(db, pid) - before
    assert grown < 30, f"11 searches with distinct 0.9 MB filters kept {grown:.0f} MB"   # ~13 MB each before
    # a filter of a few values is still planned once and kept
    assert carol.execute("SELECT count(*) FROM rag.search('refunds', 3, filter => '{\"source\": \"handbook.md\"}')"
                         ).fetchone()[0] >= 1


def test_unread_streams_keep_no_chunk_text(db, connect):
    """An unread rag.ask_stream (up to 9 a session) kept the text of every chunk it
    retrieved: 880 MB an open over 30 chunks of 30 MB. Now the chunks' ids and snippets."""
    alice = connect("alice")
    _plant(alice, 60, ("kudu eland gnu graze. " * 6000)[:LONGEST])
    carol = _reader(db, connect)
    pid = carol.execute("SELECT pg_backend_pid()").fetchone()[0]
    carol.execute("SELECT rag._ask_stream_open('kudu eland', 60, NULL, NULL, 30)").fetchone()
    before = _rss_mb(db, pid)
    for i in range(8):
        carol.execute("SELECT rag._ask_stream_open(%s, 60, NULL, NULL, 30)", ("kudu eland gnu" + "?" * i,)).fetchone()
    grown = _rss_mb(db, pid) - before
    assert grown < 30, f"8 unread streams kept {grown:.0f} MB"   # 8 x 7.9 MB of text before
    # and a stream read to its end still cites the chunk with its snippet
    rows = carol.execute("SELECT citations FROM rag.ask_stream('kudu eland gnu graze', 8) WHERE citations IS NOT NULL"
                         ).fetchall()
    assert rows[0][0][0]["source"] == "plant.md" and rows[0][0][0]["snippet"].startswith("kudu eland gnu graze."), rows


def test_bm25_takes_rag_searchs_limits(connect):
    alice = connect("alice")
    alice.execute("SELECT rag.ingest(%s, source => 'handbook.md')", (DOC,))
    for args, message in ((("refunds " * 1000, 10), "over the limit of 4000"),
                          (("refunds", 2_000_000_000), "k must be between 1 and 1000")):
        with pytest.raises(psycopg.Error) as e:
            alice.execute("SELECT * FROM rag.bm25(%s, %s)", args)
        assert e.value.sqlstate == "22023" and message in str(e.value) and "rag.bm25" in str(e.value), e.value
    assert alice.execute("SELECT count(*) FROM rag.bm25('refunds', 1000)").fetchone() == (1,)


def _eval_set(alice):
    alice.execute("SELECT rag.ingest(%s, source => 'a.md')", (DOC,))
    alice.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('s', 'alice')")
    alice.execute("INSERT INTO rag.eval_queries (set_name, query_id, query) VALUES ('s', 'q1', 'refunds')")
    alice.execute("INSERT INTO rag.eval_qrels (set_name, query_id, doc_source, grade) VALUES ('s', 'q1', 'a.md', 1)")
    alice.execute("INSERT INTO rag.eval_answers (set_name, query_id, doc_source, answer) "
                  "VALUES ('s', 'q1', 'a.md', 'five business days')")


@pytest.mark.parametrize("call, message", [
    ("rag.evaluate('s', params => '{\"vector_k\": \"x\"}')", "params->'vector_k' must be an integer"),
    ("rag.evaluate('s', params => '{\"vector_k\": 2.5}')", "params->'vector_k' must be an integer"),
    ("rag.evaluate('s', params => '{\"vector_k\": 1e20}')", "params->'vector_k' must be an integer"),
    ("rag.evaluate('s', params => '{\"vector_k\": 5.0}')", "params->'vector_k' must be an integer"),
    ("rag.evaluate('s', params => '{\"vector_weight\": 1e-400}')", "params->'vector_weight' must be a number"),
    ("rag.evaluate('s', params => '{\"vector_weight\": 1e400}')", "params->'vector_weight' must be a number"),
    ("rag.evaluate('s', params => '{\"fusion\": 3}')", "params->'fusion' must be a string"),
    ("rag.evaluate('s', params => '{\"filter\": {\"source\": \"a.md\"}}')", "params has key 'filter', which it does not read"),
    ("rag.evaluate('s', params => '{\"vectork\": 5}')", "params has key 'vectork'"),
    ("rag.evaluate('s', k => NULL)", "k is NULL"),
    ("rag.evaluate('s', mode => NULL)", "mode is NULL"),
    ("rag.evaluate_answers('s', params => '{\"rerankk\": 5}')", "params has key 'rerankk'"),
    ("rag.evaluate_answers('s', k => NULL)", "k is NULL"),
])
def test_an_evaluations_bad_or_unknown_parameter_is_named(connect, call, message):
    """A typo was stored with the run as if used; a wrong type failed inside the run (22P02,
    22003), naming nothing; a NULL k or mode was a not-null violation of rag.eval_run."""
    alice = connect("alice")
    _eval_set(alice)
    with pytest.raises(psycopg.Error) as e:
        alice.execute(f"SELECT {call}")
    assert e.value.sqlstate == "22023" and message in str(e.value), str(e.value)[:300]
    assert call.split("(")[0] in str(e.value)
    assert alice.execute("SELECT (SELECT count(*) FROM rag.eval_run) + (SELECT count(*) FROM rag.eval_answer_run)"
                         ).fetchone() == (0,)
    run = alice.execute("SELECT rag.evaluate('s', params => '{\"vector_k\": 50, \"fusion\": \"rrf\", \"rerank\": null}')"
                        ).fetchone()[0]
    assert alice.execute("SELECT params->>'vector_k', queries FROM rag.eval_runs WHERE run_id = %s", (run,)
                         ).fetchone() == ("50", 1)


# -- Hostile review 46 (0.9.0, before the release): columns a writer writes that every
# reader's search reads, and state one role's streams leave in a backend. Each test failed on
# the reviewed image (6551a5d).

def test_a_chunks_window_bounds_are_bounded_and_longer_ones_not_read(db, connect):
    """A writer may write a chunk's window_bounds / window_lengths (rag.work fills them in);
    every reader's search read them into Python lists: 40 M entries, +2.3 GB. Written: at
    most 13 and 12 entries; older rows with more are not read (their text is tokenized)."""
    alice = connect("alice")
    _plant(alice, 6, "kudu eland gnu graze kudu eland.")
    for col, n in (("window_bounds", 14), ("window_lengths", 13)):
        with pytest.raises(psycopg.Error) as e:
            alice.execute(f"UPDATE rag.chunks SET {col} = array_fill(1, ARRAY[{n}])")
        assert e.value.sqlstate == "54000" and "over the limit of 13 and 12" in str(e.value), e.value
    with pytest.raises(psycopg.Error) as e:   # (a reader's search failed on them: TypeError, review 46b)
        alice.execute("UPDATE rag.chunks SET window_bounds = '{{1,2},{3,40}}', window_lengths = '{{1},{1}}'")
    assert e.value.sqlstate == "22023" and "not lists of numbers" in str(e.value), e.value
    alice.execute("UPDATE rag.chunks SET window_bounds = array_fill(1, ARRAY[13]), window_lengths = array_fill(1, ARRAY[12])")
    carol = _reader(db, connect)
    pid = carol.execute("SELECT pg_backend_pid()").fetchone()[0]
    carol.execute("SELECT count(*) FROM rag.search('kudu eland', 10)").fetchone()
    # rows from before the limit (the trigger off, as a superuser may)
    db.execute("ALTER TABLE rag.chunks_default DISABLE TRIGGER chunks_before_write")
    db.execute("UPDATE rag.chunks SET window_bounds = array_fill(1, ARRAY[4000000]), "
               "window_lengths = array_fill(1, ARRAY[4000000])")
    db.execute("ALTER TABLE rag.chunks_default ENABLE TRIGGER chunks_before_write")
    before = _rss_mb(db, pid, "VmHWM")
    hits = carol.execute("SELECT count(*) FROM rag.search('kudu eland', 10)").fetchone()[0]
    grown = _rss_mb(db, pid, "VmHWM") - before
    assert hits >= 6 and grown < 100, f"{hits} hits, peak +{grown:.0f} MB"   # +428 MB before


def test_a_chunks_embedding_has_its_models_dimensions(db, connect):
    """A writer's chunk of a model's name with other dimensions (or of no registered model)
    sat in the shared partition, and the owner's rag.create_model_index of that model
    failed on it (22000), for every tenant (review 48, read in the code)."""
    alice = connect("alice")
    _plant(alice, 1, "Kudu graze at dawn.")   # (its model's own vector: taken)
    did = alice.execute("SELECT id FROM rag.documents WHERE source = 'plant.md'").fetchone()[0]
    for model, vector in (("future-embed", "[1,2]"), ("all-MiniLM-L6-v2", "[1,2]")):
        with pytest.raises(psycopg.Error) as e:
            alice.execute("INSERT INTO rag.chunks (document_id, ord, content, tokens, content_hash, model, embedding) "
                          "VALUES (%s, 99, 'x', 1, '\\x00', %s, %s)", (did, model, vector))
        assert e.value.sqlstate == "22023" and "embedding of 2 dimensions" in str(e.value), e.value
    with pytest.raises(psycopg.Error) as e:
        alice.execute("UPDATE rag.chunks SET embedding = '[1,2]' WHERE document_id = %s", (did,))
    assert e.value.sqlstate == "22023"
    db.execute("SELECT rag.add_model('future-embed', 'embed', base_url => 'http://127.0.0.1:9/v1', dimensions => 2)")
    alice.execute("INSERT INTO rag.chunks (document_id, ord, content, tokens, content_hash, model, embedding) "
                  "VALUES (%s, 99, 'x', 1, '\\x00', 'future-embed', '[1,2]')", (did,))   # (its dimensions: taken)
    assert db.execute("SELECT rag.create_model_index('future-embed')").fetchone()[0]


def test_window_and_reembed_batches_are_bounded(connect):
    """A writer may call rag._window_batch and rag._reembed_batch (rag.work runs as the
    caller); a batch of NULL took every chunk of its tenant into one call, its windows cut
    in Python without a cancel check (review 48, read in the code). NULL or less than 1 is
    refused; a batch is at most what rag.work and rag._finish_switch take."""
    alice = connect("alice")
    _plant(alice, 300, "Kudu graze at dawn. Eland rest at noon. The herd moves on at dusk.")
    for f in ("_window_batch", "_reembed_batch"):
        for n in (None, 0, -1):
            with pytest.raises(psycopg.Error) as e:
                alice.execute(f"SELECT rag.{f}(%s)", (n,))
            assert e.value.sqlstate == "22023" and f"a batch of {n} chunks" in str(e.value), e.value
    # (the planted chunks have no window bounds yet: rag.work's backfill would fill them)
    assert alice.execute("SELECT rag._window_batch(1000000)").fetchone() == (256,)   # 300 before
    assert alice.execute("SELECT rag._window_batch(1000000)").fetchone() == (44,)
    assert alice.execute("SELECT count(*) FROM rag.chunks WHERE window_bounds IS NULL").fetchone() == (0,)


def test_a_posting_block_holds_at_most_8192_postings(db, connect):
    """A writer may write posting blocks (the ingest triggers run as the caller); every
    reader's BM25 decoded a block whole: 12 M postings in 2 MB on disk, +1.26 GB. A block
    holds 1 to 8,192 postings with bytes to match; rag's own fresh blocks are cut so."""
    alice = connect("alice")
    for n, ids, message in ((8193, 8 * 8193, "a block of 8193 postings"), (1, 16, "in 16, 2 and 4 bytes")):
        with pytest.raises(psycopg.Error) as e:
            alice.execute("""INSERT INTO rag.posting_blocks (tenant, lexeme, first_id, merged, n, max_tf, min_len, ids, tfs, lens)
                             VALUES ('alice', 'kudu', 0, true, %s, 1, 1, decode(repeat('00', %s), 'hex'),
                                     decode(repeat('00', %s), 'hex'), decode(repeat('00', %s), 'hex'))""",
                          (n, ids, 2 * n, 4 * n))
        assert e.value.sqlstate == "54000" and message in str(e.value), e.value
    # one statement's fresh blocks (not merged in REPEATABLE READ): one of 9,000 before
    alice.execute("SET default_transaction_isolation = 'repeatable read'")
    _plant(alice, 9000, "kudu eland gnu.")
    assert alice.execute("SELECT max(n), sum(n) FROM rag.posting_blocks WHERE lexeme = 'kudu' AND NOT merged"
                         ).fetchone() == (8192, 9000)
    alice.execute("RESET default_transaction_isolation")
    assert alice.execute("SELECT count(*) FROM rag.bm25('kudu', 1000)").fetchone() == (1000,)
    # many valid blocks of one repeated id (review 46b): stored uncompressed, they cost
    # their writer what they cost a reader (they compressed 450 to 1: 5 MB on disk, +2.2 GB
    # for a reader), and merging them no longer makes blocks with the same first id
    cid = alice.execute("SELECT min(id) FROM rag.chunks").fetchone()[0]
    size = "SELECT pg_total_relation_size('rag.posting_blocks_default')"
    before = alice.execute(size).fetchone()[0]
    alice.execute("""INSERT INTO rag.posting_blocks (tenant, lexeme, first_id, merged, n, max_tf, min_len, ids, tfs, lens)
                     SELECT 'alice', 'kudu', 1000000000 + g, false, 8192, 3, 1,
                            decode(repeat(encode(int8send(%s::int8), 'hex'), 8192), 'hex'),
                            decode(repeat('0001', 8192), 'hex'), decode(repeat('00000005', 8192), 'hex')
                     FROM generate_series(1, 70) AS g""", (cid,))
    assert alice.execute(size).fetchone()[0] - before > 70 * 8192 * 14   # (compressed: 1/450 of it)
    alice.execute("SELECT rag.ingest('Kudu graze at dawn.', source => 'kudu.md')")   # merges them: 23505 before
    assert alice.execute("SELECT count(*) FROM rag.posting_blocks WHERE lexeme = 'kudu' AND NOT merged").fetchone() == (0,)


def test_a_documents_source_table_and_key_are_bounded(db, connect):
    """Every search hit carries its document's source_table and source_key, which a writer
    may write: 200 MB each, 1.62 GB for a reader's search. Written: at most 1,024 and 65,536
    characters (a key's JSON text may be 6 times the key); a hand-written source past
    4,096 is refused whatever its attachment_id (any let it through); an attached row's own
    (its table and key) is not."""
    alice = connect("alice")
    alice.execute("SELECT rag.ingest(%s, source => 'handbook.md')", (DOC,))
    for col, value, message in (("source_table", "repeat('x', 1025)", "source_table is 1025 characters, over the limit of 1024"),
                                ("source_key", "jsonb_build_object('k', repeat('y', 70000))",
                                 "source_key is 70009 characters, over the limit of 65536")):
        with pytest.raises(psycopg.Error) as e:
            alice.execute(f"UPDATE rag.documents SET {col} = {value}")
        assert e.value.sqlstate == "54000" and message in str(e.value), e.value
    db.execute("CREATE TABLE alice_notes (id text PRIMARY KEY, body text)")
    db.execute("ALTER TABLE alice_notes OWNER TO alice")
    alice.execute("SELECT rag.attach('alice_notes', 'body')")
    aid = alice.execute("SELECT id FROM rag.attachments").fetchone()[0]
    with pytest.raises(psycopg.Error) as e:
        alice.execute("INSERT INTO rag.documents (source, content, attachment_id) VALUES (repeat('s', 5000), 'x', %s)",
                      (aid,))
    assert e.value.sqlstate == "54000" and "source is 5000 characters" in str(e.value), e.value
    alice.execute("INSERT INTO alice_notes VALUES (repeat('k', 5000), 'Refunds take five days.')")
    # a key whose JSON text is 6 times its own (control characters: refused by 8,192, review 46b)
    alice.execute("INSERT INTO alice_notes VALUES (repeat(chr(1), 1400), 'Store credit is immediate.')")
    assert alice.execute("SELECT count(*) FROM rag.documents WHERE attachment_id = %s AND char_length(source) > 5000",
                         (aid,)).fetchone() == (2,)
