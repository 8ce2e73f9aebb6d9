"""Hostile roles: every attack of issue 15, replayed as the role that made it, as a user
would type it. Each one must fail with a clear error, or be harmless to everyone else.

Roles (tests/conftest.py): alice and bob are rag_writer, carol rag_reader, dora rag_admin;
the test database's owner `tester` is a superuser.
"""
from __future__ import annotations

import socket
import threading
import time

import psycopg
import pytest
from conftest import start_server  # (at import: inside a test, "conftest" may be tests/unit's)
from openai_fake import Scenario

DOC = "# Refunds\n\nRefunds take five business days. Store credit is immediate."


def _sqlstate(e) -> str:
    return e.value.sqlstate


def _ingest(conn, source="handbook.md", content=DOC):
    return conn.execute("SELECT rag.ingest(%s, source => %s)", (content, source)).fetchone()[0]


def _pid(conn) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


# -- 1. a writer cannot hold a backend or eat the machine ------------------------------

def test_the_quadratic_heading_is_linear_now(connect):
    alice = connect("alice")
    alice.execute("SET statement_timeout = '5s'")
    t0 = time.perf_counter()
    _ingest(alice, "x", "# a" + " " * 120_000 + "b\n\ntext")     # 9 s for 30,000 spaces on main
    assert time.perf_counter() - t0 < 5


def test_heading_lines_do_not_become_100000_chunks(connect):
    alice = connect("alice")
    alice.execute("SET statement_timeout = '30s'")
    t0 = time.perf_counter()
    try:
        doc = _ingest(alice, "h", "# h\n" * 100_000)            # 46 s, 5.5 GB and 100,000 chunks on main
        n = alice.execute("SELECT count(*) FROM rag.chunks WHERE document_id = %s", (doc,)).fetchone()[0]
        assert n <= 20_000
    except psycopg.Error as e:
        assert e.sqlstate == "54000" and "max_chunks_per_document" in str(e), e
    assert time.perf_counter() - t0 < 30


def test_a_session_cannot_raise_a_limit_that_protects_the_server(connect, db):
    alice = connect("alice")
    alice.execute("SET rag.max_document_bytes = 50000000")
    assert alice.execute("SELECT value FROM rag.settings() WHERE name = 'max_document_bytes'").fetchone()[0] == "10000000"
    with pytest.raises(psycopg.Error) as e:
        _ingest(alice, "big", "word " * 2_100_000)              # 10.5 MB
    assert _sqlstate(e) == "22023" and "over the limit" in str(e.value)
    alice.execute("SET rag.max_document_bytes = 1000")          # lowering is fine
    with pytest.raises(psycopg.Error) as e:
        _ingest(alice, "small", "word " * 300)
    assert _sqlstate(e) == "22023"
    db.execute("SELECT rag.configure('max_document_bytes', '20000000')")   # an admin raises it
    alice.execute("RESET rag.max_document_bytes")
    assert alice.execute("SELECT value FROM rag.settings() WHERE name = 'max_document_bytes'").fetchone()[0] == "20000000"
    for name in ("max_k", "max_query_chars", "max_chunks_per_document", "embedding_threads", "index_batch_size"):
        alice.execute(f"SET rag.{name} = 999999999")
        value, default = alice.execute("SELECT value, default_value FROM rag.settings() WHERE name = %s",
                                       (name,)).fetchone()
        assert value == default, name


def test_a_token_longer_than_the_window_is_split(connect):
    alice = connect("alice")
    doc = _ingest(alice, "token", "x" * 60_000)                 # one chunk of 5 MB with tokens = 1 on main
    rows = alice.execute("SELECT length(content), tokens FROM rag.chunks WHERE document_id = %s", (doc,)).fetchall()
    assert len(rows) > 1 and sum(n for n, _ in rows) >= 60_000
    assert max(n for n, _ in rows) <= 16 * 254       # at most 16 characters per token of the window


def test_html_with_a_cdata_opener_is_not_a_traceback(connect):
    alice = connect("alice")
    for i, html in enumerate(["<p>a<![ b</p>", "<html><body><![CDATA[x]]><p>after</p></body></html>", "<![" * 1000]):
        try:
            _ingest(alice, f"cdata{i}.html", html)
        except psycopg.Error as e:
            assert e.sqlstate.startswith("22") and "Traceback" not in str(e), e


def _cancel_during(connect, db, how: str) -> tuple[str, float]:
    """Start an ingest that takes minutes (the largest document allowed), then cancel or
    terminate its backend; (SQLSTATE, seconds from the signal to the error)."""
    alice = connect("alice")
    pid = _pid(alice)
    out: dict = {}

    def run():
        try:
            _ingest(alice, "long", " ".join(f"sentence {i} of a long report about harbours." for i in range(200_000)))
            out["state"] = "finished"
        except psycopg.Error as e:
            out["state"], out["at"] = e.sqlstate or type(e).__name__, time.perf_counter()
    th = threading.Thread(target=run)
    th.start()
    deadline = time.time() + 30
    while time.time() < deadline:     # wait until the backend is in the model / chunker loop
        if db.execute("SELECT state = 'active' FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]:
            break
        time.sleep(0.1)
    time.sleep(2)
    t0 = time.perf_counter()
    db.execute(f"SELECT pg_{how}_backend(%s)", (pid,))
    th.join(30)
    assert not th.is_alive() and "at" in out, out
    return out["state"], out["at"] - t0


def test_cancel_stops_a_long_ingest_within_a_second(connect, db):
    state, secs = _cancel_during(connect, db, "cancel")
    assert state == "57014" and secs < 1.0, (state, secs)


def test_terminate_stops_a_long_ingest_within_a_second(connect, db):
    state, secs = _cancel_during(connect, db, "terminate")
    assert secs < 1.0, (state, secs)
    assert db.execute("SELECT count(*) FROM rag.documents WHERE source = 'long'").fetchone()[0] == 0


def test_a_model_server_that_hangs_does_not_hold_the_backend(db, connect, fake_openai):
    url = fake_openai.add("hangs", Scenario(hang=20))
    quick = fake_openai.add("quick", Scenario(chat_text="Five business days [1]."))
    db.execute("SELECT rag.add_model('hangs', 'chat', base_url => %s)", (url,))
    db.execute("SELECT rag.add_model('quick', 'chat', base_url => %s)", (quick,))
    alice = connect("alice")
    _ingest(alice)
    alice.execute("SELECT rag.ask('How long do refunds take?', model => 'quick')")  # the client's imports, once
    pid = _pid(alice)   # (not from the timer: alice's connection is busy then)
    for how in ("statement_timeout", "cancel"):
        if how == "statement_timeout":
            alice.execute("SET statement_timeout = '1s'")
        else:
            alice.execute("RESET statement_timeout")
            threading.Timer(1.0, lambda: db.execute("SELECT pg_cancel_backend(%s)", (pid,))).start()
        t0 = time.perf_counter()
        with pytest.raises(psycopg.Error) as e:
            alice.execute("SELECT rag.ask('How long do refunds take?', model => 'hangs')")
        assert _sqlstate(e) == "57014" and time.perf_counter() - t0 < 2.0, how   # 1 s + a poll, not 20 s


def test_a_hand_written_10_mb_chunk_does_not_hold_an_answer_past_its_timeout(db, connect):
    """Hostile review 21: a writer's own chunk of 10 MB (rag.chunks took any length from a
    writer) and a question of 540 distinct words made the extractive answerer score every
    sentence of the chunk against every word with no interrupt check (statement_timeout 3 s
    ended it after 10 s). It now reads a chunk's first 131,072 characters and checks for a
    cancel between chunks: the answer takes a fraction of a second. Since 0.9.0 a writer's
    chunk is at most that long (tests/test_hostile_reads.py); one written before stays, and
    is planted here past the check, as a superuser with triggers off."""
    alice = connect("alice")
    _ingest(alice)
    db.execute("SET session_replication_role = replica")
    db.execute("""INSERT INTO rag.chunks (tenant, document_id, ord, content, tokens, content_hash, model, embedding)
                     SELECT c.tenant, c.document_id, 1000, repeat('Vacation alpha beta gamma delta epsilon. ', 250000),
                            10, sha256('x'::bytea), c.model, c.embedding
                     FROM rag.chunks AS c WHERE c.ord = 0""")
    db.execute("RESET session_replication_role")
    assert alice.execute("SELECT max(length(content)) FROM rag.chunks").fetchone()[0] > 10_000_000
    question = "vacation " + " ".join(f"w{i:04d}x" for i in range(540))
    alice.execute("SET statement_timeout = '3s'")
    t0 = time.perf_counter()
    try:
        out = alice.execute("SELECT rag.ask(%s, 8)", (question,)).fetchone()[0]
        assert out["answer"]
    except psycopg.Error as e:
        assert e.sqlstate == "57014", e
    assert time.perf_counter() - t0 < 4.0, time.perf_counter() - t0


# -- 2. ids no role can forge or exhaust -----------------------------------------------

def test_a_reader_cannot_take_the_next_ids_of_the_ledger(connect):
    alice, carol = connect("alice"), connect("carol")
    for sql in ["INSERT INTO rag.usage (id, operation, model, provider, input_tokens) "
                "SELECT g, 'x', 'x', 'x', 0 FROM generate_series(1, 200000) AS g",
                "INSERT INTO rag.usage (id, operation, model, provider, input_tokens) OVERRIDING SYSTEM VALUE "
                "SELECT g, 'x', 'x', 'x', 0 FROM generate_series(1, 200000) AS g",
                "INSERT INTO rag.answers (id, question, answer, model, mode, latency_ms) "
                "OVERRIDING SYSTEM VALUE VALUES (999, 'q', 'a', 'm', 'x', 1)",
                "INSERT INTO rag.usage (operation, model, provider, input_tokens, role_name) VALUES ('x', 'x', 'x', 0, 'alice')"]:
        with pytest.raises(psycopg.Error) as e:
            carol.execute(sql)
        assert _sqlstate(e) in ("42501", "428C9"), sql
    _ingest(alice)                                              # everyone else goes on
    assert alice.execute("SELECT count(*) FROM rag.search('refunds', 3)").fetchone()[0] >= 1
    assert alice.execute("SELECT rag.ask('How long do refunds take?')").fetchone()[0]["answer_id"] >= 1


def test_a_writer_cannot_forge_document_ids_or_block_a_model_switch(connect, db):
    alice, bob = connect("alice"), connect("bob")
    for sql in ["INSERT INTO rag.documents (id, source, content) OVERRIDING SYSTEM VALUE VALUES (1000000, 's', 'c')",
                "INSERT INTO rag.chunks (id, document_id, ord, content, tokens, content_hash, model, embedding) "
                "OVERRIDING SYSTEM VALUE VALUES (5, 1, 0, 'c', 1, '\\x00', 'm', '[1]')"]:
        with pytest.raises(psycopg.Error) as e:
            alice.execute(sql)
        assert _sqlstate(e) in ("42501", "428C9"), sql
    _ingest(bob, "b.md")
    chunk = db.execute("SELECT id FROM rag.chunks WHERE tenant = 'bob'").fetchone()[0]
    # alice squats bob's chunk id in the next-model table: her own tenant's row, not his
    alice.execute("INSERT INTO rag.embeddings_next (chunk_id, model, content_hash, embedding) "
                  "VALUES (%s, 'all-MiniLM-L6-v2', '\\x00', rag.embed('x'))", (chunk,))
    assert db.execute("SELECT tenant FROM rag.embeddings_next WHERE chunk_id = %s", (chunk,)).fetchone()[0] == "alice"
    db.execute("INSERT INTO rag.embeddings_next (chunk_id, tenant, model, content_hash, embedding) "
               "VALUES (%s, 'bob', 'all-MiniLM-L6-v2', '\\x00', rag.embed('x'))", (chunk,))   # his still fits


def test_a_writer_cannot_choose_its_tenants_embedding_model(connect, db):
    """Hostile review 21: writers update rag.tenant_models (rag.work finishes a switch), and
    bob pointed his tenant at another model with a plain UPDATE. Only the switch an admin
    started can be finished now."""
    bob = connect("bob")
    _ingest(bob, "b.md")
    # his first ingest made his tenant's row, which chooses nothing (the database's model)
    assert db.execute("SELECT embedding_model, next_model FROM rag.tenant_models WHERE tenant = 'bob'").fetchone() \
        == (None, None)
    choosing = ["UPDATE rag.tenant_models SET embedding_model = 'text-embedding-3-small'",
                "UPDATE rag.tenant_models SET next_model = 'text-embedding-3-small', switch_started_at = now()",
                "INSERT INTO rag.tenant_models (embedding_model) VALUES ('text-embedding-3-small') "
                "ON CONFLICT (tenant) DO UPDATE SET embedding_model = excluded.embedding_model"]
    for sql in choosing:
        with pytest.raises(psycopg.Error) as e:
            bob.execute(sql)
        assert _sqlstate(e) == "42501" and "only rag_admin chooses" in str(e.value), sql
    # (writers may insert the row since 0.5.0: only the one that chooses nothing)
    db.execute("DELETE FROM rag.tenant_models WHERE tenant = 'bob'")
    for sql in ["INSERT INTO rag.tenant_models (embedding_model) VALUES ('text-embedding-3-small')",
                "INSERT INTO rag.tenant_models (next_model, switch_started_at) VALUES ('text-embedding-3-small', now())",
                "INSERT INTO rag.tenant_models (switched_at) VALUES (now())"]:
        with pytest.raises(psycopg.Error) as e:
            bob.execute(sql)
        assert _sqlstate(e) == "42501" and "only rag_admin chooses" in str(e.value), sql
    with pytest.raises(psycopg.Error) as e:
        bob.execute("INSERT INTO rag.tenant_models (tenant) VALUES ('alice')")    # not his tenant
    assert _sqlstate(e) == "42501"
    bob.execute("INSERT INTO rag.tenant_models DEFAULT VALUES")
    # a switch an admin started is finished by rag.work once its vectors are in place; by
    # hand before, it left the tenant's vector search with none (review 48, F7)
    db.execute("SELECT rag.add_model('other-embed', 'embed', base_url => 'http://127.0.0.1:9/v1', dimensions => 8)")
    db.execute("UPDATE rag.tenant_models SET embedding_model = 'all-MiniLM-L6-v2', next_model = 'other-embed', "
               "switch_started_at = now() WHERE tenant = 'bob'")
    with pytest.raises(psycopg.Error) as e:
        bob.execute("UPDATE rag.tenant_models SET embedding_model = next_model, next_model = NULL, switched_at = now()")
    assert _sqlstate(e) == "55000" and "is not done" in str(e.value), e.value
    db.execute("UPDATE rag.tenant_models SET embedding_model = 'all-MiniLM-L6-v2', next_model = 'all-MiniLM-L6-v2', "
               "switch_started_at = now() WHERE tenant = 'bob'")
    bob.execute("UPDATE rag.tenant_models SET embedding_model = next_model, next_model = NULL, switched_at = now()")
    assert db.execute("SELECT embedding_model, next_model FROM rag.tenant_models WHERE tenant = 'bob'").fetchone() == \
        ("all-MiniLM-L6-v2", None)
    assert bob.execute("SELECT count(*) FROM rag.search('refunds', 3)").fetchone()[0] >= 1


def test_an_admin_cannot_switch_every_tenant_through_rag_config(connect, db):
    """Hostile review 30: rag.configure refuses embedding_model, but dora (rag_admin of
    another tenant) wrote the row into rag.config directly, and every tenant that never
    chose a model (its rag.tenant_models row NULL) searched with that model at once, over
    chunks of the old one: bob's vector leg came back empty."""
    dora, bob = connect("dora"), connect("bob")
    _ingest(bob, "b.md")
    assert bob.execute("SELECT embedding_model FROM rag.tenant_models").fetchone()[0] is None
    for sql in ["INSERT INTO rag.config (name, value) VALUES ('embedding_model', 'smollm2-embed')",
                "UPDATE rag.config SET name = 'embedding_model', value = 'smollm2-embed' WHERE name = 'max_k'"]:
        dora.execute("SELECT rag.configure('max_k', '50')")
        with pytest.raises(psycopg.Error) as e:
            dora.execute(sql)
        assert _sqlstate(e) == "22023" and "rag.set_embedding_model" in str(e.value), sql
    assert bob.execute("SELECT value FROM rag.settings() WHERE name = 'embedding_model'").fetchone()[0] \
        == "all-MiniLM-L6-v2"
    assert bob.execute("SELECT count(*) FROM rag.search('refunds', 3, mode => 'vector')").fetchone()[0] >= 1


def test_another_tenants_flood_does_not_empty_the_vector_leg(connect, db):
    """Hostile review 21: alice filled the shared HNSW index with 60,000 chunks whose vector
    is the query's; pgvector's iterative scan stopped at hnsw.max_scan_tuples before it
    reached any of bob's, and his vector leg came back empty. The same here with 3,000
    chunks and a budget of 1,000 tuples: when the index gives fewer than k, the leg scans
    the tenant's chunks exactly."""
    alice, bob = connect("alice"), connect("bob")
    _ingest(bob, "b.md")
    _ingest(alice, "a.md")
    alice.execute("""INSERT INTO rag.chunks (tenant, document_id, ord, content, tokens, content_hash, model, embedding,
                                            window_embeddings)
                     SELECT c.tenant, c.document_id, 1000 + g, 'filler ' || g, 2, sha256(g::text::bytea), c.model,
                            rag.embed('How long do refunds take?'), '{}'
                     FROM rag.chunks AS c, generate_series(1, 3000) AS g WHERE c.ord = 0""")
    bob.execute("SET hnsw.max_scan_tuples = 1000")
    bob.execute("SET enable_sort = off")   # the plan a big shared table gets: the HNSW index, not a sort
    mine = bob.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
    rows = bob.execute("SELECT chunk_id FROM rag.search('How long do refunds take?', 3, mode => 'vector')").fetchall()
    assert len(rows) == min(3, mine) and mine >= 1
    assert bob.execute("SELECT (rag.backend_stats()->>'exact_vector_scans')::int").fetchone()[0] >= 1


def _true_df(conn) -> dict:
    """Each lexeme's document frequency over the session's chunks, from their tsvectors."""
    return dict(conn.execute("SELECT l, count(*) FROM rag.chunks AS c, unnest(tsvector_to_array(c.tsv)) AS l "
                             "GROUP BY l").fetchall())


def test_no_role_can_hold_off_a_tenants_merges_or_compactions(connect):
    """Hostile review 21: a merge of a lexeme's posting blocks and a compaction of a tenant's
    statistics deltas took advisory locks keyed by a hash of the tenant's name (and the
    lexeme), which any role can take first: the tenant's blocks and deltas then grew, one a
    writing statement. They lock the rows they fold now, which only the tenant's roles see;
    two of the tenant's own sessions still never wait for each other."""
    alice, alice2, bob, nobody = connect("alice"), connect("alice"), connect("bob"), connect("nobody")
    _ingest(alice, "a.md")
    _ingest(alice, "b.md", "# Refunds\n\nA refund of a gift card goes to its buyer.")
    nobody.execute("SELECT pg_advisory_lock(hashtext('rag.compact_lexical_stats:alice'))")   # the old keys
    nobody.execute("SELECT pg_advisory_lock(hashtext('rag.posting_blocks'), hashtext('alice refund'))")
    bob.execute("BEGIN")
    assert bob.execute("SELECT count(*) FROM (SELECT FROM rag.posting_blocks FOR UPDATE) AS x").fetchone()[0] == 0
    assert bob.execute("SELECT count(*) FROM (SELECT FROM rag.lexeme_stats FOR UPDATE) AS x").fetchone()[0] == 0
    assert alice.execute("SELECT count(*) FROM rag.posting_blocks WHERE lexeme = 'refund'").fetchone()[0] == 2
    assert alice.execute("SELECT rag.merge_posting_blocks(lexemes => ARRAY['refund'])").fetchone()[0] == 1
    assert alice.execute("SELECT count(*) FROM rag.posting_blocks WHERE lexeme = 'refund'").fetchone()[0] == 1
    assert alice.execute("SELECT rag.compact_lexical_stats()").fetchone()[0] > 0
    assert alice.execute("SELECT count(*) FROM rag.corpus_stats").fetchone()[0] == 1
    bob.execute("ROLLBACK")

    # alice's own sessions: one holds the rows in an open transaction, the other goes on
    alice2.execute("SET lock_timeout = '2s'")      # a wait would fail this test, not hang it
    _ingest(alice, "c.md", "# Refunds\n\nRefunds to a card take a week.")
    alice.execute("BEGIN")
    assert alice.execute("SELECT rag.merge_posting_blocks(lexemes => ARRAY['refund'])").fetchone()[0] == 1
    assert alice.execute("SELECT rag.compact_lexical_stats()").fetchone()[0] > 0
    assert alice2.execute("SELECT rag.merge_posting_blocks(lexemes => ARRAY['refund'])").fetchone()[0] == 0
    _ingest(alice2, "d.md", "# Refunds\n\nA refund needs the receipt.")   # new deltas, not held
    alice2.execute("SELECT rag.compact_lexical_stats()")
    alice.execute("COMMIT")
    stats = dict(alice.execute("SELECT lexeme, sum(df) FROM rag.lexeme_stats GROUP BY lexeme HAVING sum(df) <> 0").fetchall())
    assert stats == _true_df(alice) and stats["refund"] == 4
    assert alice.execute("SELECT sum(chunks) FROM rag.corpus_stats").fetchone()[0] == \
        alice.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]


# -- 3. attach: usable by the table's owner, safe for everyone else --------------------

def test_a_writer_attaches_its_own_table(connect, db):
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = connect("alice")
    alice.execute("CREATE TABLE alice_notes (id int PRIMARY KEY, body text)")
    alice.execute("INSERT INTO alice_notes VALUES (1, 'The harbour ferry leaves at six.')")
    alice.execute("SELECT rag.attach('alice_notes', 'body')")            # 42501 on main
    alice.execute("INSERT INTO alice_notes VALUES (2, 'The night train runs on Fridays.')")
    assert alice.execute("SELECT count(*) FROM rag.documents WHERE attachment_id IS NOT NULL").fetchone()[0] == 2


def test_a_writer_cannot_point_its_rows_at_another_tenants_attachment(connect, db):
    """Hostile review 21: documents, queue and failed rows referenced an attachment by id
    alone, so bob could point his own rows at alice's attachment (and learn which ids
    exist); alice's rag.detach then failed in the cascade into bob's rows. The key is
    (tenant, id) now: bob's rows are refused, whether her attachment exists or not."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice, bob = connect("alice"), connect("bob")
    alice.execute("CREATE TABLE alice_pages (id int PRIMARY KEY, body text)")
    alice.execute("INSERT INTO alice_pages VALUES (1, 'The harbour ferry leaves at six.')")
    att = alice.execute("SELECT rag.attach('alice_pages', 'body')").fetchone()[0]
    for sql in ("INSERT INTO rag.documents (source, content, attachment_id) VALUES ('mine', 'Bob''s text.', %s)",
                "INSERT INTO rag.queue (tenant, attachment_id, source_key) VALUES ('bob', %s, '{\"id\": 1}')",
                "INSERT INTO rag.errors (tenant, attachment_id, source_key, attempts, last_error, enqueued_at) "
                "VALUES ('bob', %s, '{\"id\": 1}', 1, 'x', now())"):
        for target in (att, att + 1000):            # hers, and one that does not exist: the same error
            with pytest.raises(psycopg.Error) as e:
                bob.execute(sql, (target,))
            assert _sqlstate(e) == "23503" and "attachment_fkey" in str(e.value), e.value
    doc = _ingest(bob, "mine.md")
    with pytest.raises(psycopg.Error) as e:
        bob.execute("UPDATE rag.documents SET attachment_id = %s WHERE id = %s", (att, doc))
    assert _sqlstate(e) == "23503"
    assert alice.execute("SELECT rag.detach('alice_pages')").fetchone()[0] is True
    assert alice.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 0   # its documents go with it
    assert bob.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 1


def _plant_key_type(alice) -> None:
    """The attack: a key type alice_key whose CHECK runs alice's function with the rights of
    whoever evaluates it; the function records that role in public.ran_as and, run by a
    superuser, makes alice one."""
    alice.execute("CREATE TABLE ran_as (who name)")
    alice.execute("GRANT INSERT ON ran_as TO PUBLIC")
    alice.execute("""CREATE FUNCTION alice_check(v int) RETURNS boolean LANGUAGE plpgsql AS $$
                     BEGIN
                         INSERT INTO public.ran_as VALUES (current_user);
                         IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                             EXECUTE 'ALTER ROLE alice SUPERUSER';
                         END IF;
                         RETURN true;
                     END $$""")
    alice.execute("CREATE DOMAIN alice_key AS int CHECK (alice_check(VALUE))")


def test_attaching_another_roles_table_runs_none_of_its_code_unless_forced(connect, db):
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice, dora = connect("alice"), connect("dora")
    _plant_key_type(alice)
    alice.execute("CREATE TABLE trap (id alice_key PRIMARY KEY, body text)")
    alice.execute("INSERT INTO trap VALUES (1, 'bait')")
    alice.execute("GRANT SELECT ON trap TO dora")
    for conn in (db, dora):
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT rag.attach('public.trap', 'body')")
        assert _sqlstate(e) == "42501" and "belongs to role alice" in str(e.value)
    assert not db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'").fetchone()[0]


def test_the_worker_leaves_another_roles_attached_table_to_its_owner(connect, db):
    """Hostile review 21: alice attaches her own table (allowed) in async mode; its key type's
    CHECK is her function. A superuser's CALL rag.work() for her tenant (the upgrade note's
    step) used to evaluate it with superuser rights. The worker now indexes only rows of
    tables its role owns, and says which table it left to whom."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = connect("alice")
    _plant_key_type(alice)
    alice.execute("CREATE TABLE notes (id alice_key PRIMARY KEY, body text)")
    alice.execute("INSERT INTO notes VALUES (1, 'The harbour ferry leaves at six.')")
    alice.execute("SELECT rag.attach('public.notes', 'body', mode => 'async')")
    alice.execute("DELETE FROM ran_as")
    db.execute("SET rag.tenant = 'alice'")
    warnings = []
    db.add_notice_handler(lambda d: warnings.append(d.message_primary))
    db.execute("CALL rag.work()")
    assert not db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'").fetchone()[0]
    assert db.execute("SELECT count(*) FROM public.ran_as WHERE who <> 'alice'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 1           # left, not failed
    assert any("left for its owner, role alice" in w for w in warnings), warnings
    alice.execute("CALL rag.work()")                                                   # the owner indexes it
    assert alice.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0
    assert alice.execute("SELECT count(*) FROM rag.documents WHERE attachment_id IS NOT NULL").fetchone()[0] == 1
    db.execute("RESET rag.tenant")


# -- 4. an API key goes only to the host it was set for --------------------------------

class _Listener:
    """A TCP listener on loopback that records what arrives (an admin's exfiltration target)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.data = b""
        self.stop = False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _run(self):
        deadline = time.time() + 120
        while not self.stop and time.time() < deadline:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.settimeout(1)
            try:
                self.data += c.recv(65536)
            except OSError:
                pass
            c.close()

    def close(self):
        self.stop = True
        self.th.join(2)
        self.sock.close()


def test_an_admin_cannot_send_a_key_elsewhere(db, connect, fake_openai):
    secret = "sk-prod-" + "7" * 24
    good = fake_openai.add("prod", Scenario(chat_text="Five business days [1]."))
    db.execute("SELECT rag.set_api_key('prodkey', %s, base_url => %s)", (secret, good))
    db.execute("SELECT rag.grant_api_key('prodkey', 'alice')")
    db.execute("SELECT rag.add_model('prod', 'chat', base_url => %s, api_key => 'prodkey')", (good,))
    dora, alice = connect("dora"), connect("alice")
    _ingest(alice)
    assert alice.execute("SELECT rag.ask('How long do refunds take?', model => 'prod')").fetchone()[0]["mode"] == "llm"
    evil = _Listener()
    try:
        dora.execute("SELECT rag.grant_api_key('prodkey', 'dora')")           # allowed: use, not move
        for sql, args in [
            ("SELECT rag.add_model('steal', 'chat', base_url => %s, api_key => 'prodkey')", (evil.url,)),
            ("UPDATE rag.models SET base_url = %s WHERE name = 'prod'", (evil.url,)),
            ("UPDATE rag.api_keys SET base_url = %s WHERE name = 'prodkey'", (evil.url,)),
            ("SELECT rag.set_api_key('prodkey', 'mine', base_url => %s)", (evil.url,)),
            ("SELECT rag.set_api_key('envkey', env_var => 'PGDATA', base_url => %s)", (evil.url,)),
        ]:
            with pytest.raises(psycopg.Error) as e:
                dora.execute(sql, args)
            assert _sqlstate(e) == "42501", sql
        # the table is only a mirror: a row rewritten by hand does not move the secret's binding
        dora.execute("DELETE FROM rag.models WHERE name = 'prod'")
        dora.execute("DELETE FROM rag.api_keys WHERE name = 'prodkey'")
        dora.execute("INSERT INTO rag.api_keys (name, source, base_url) VALUES ('prodkey', 'file', %s)", (evil.url,))
        dora.execute("INSERT INTO rag.api_key_grants (key_name, role_name) VALUES ('prodkey', 'dora')")
        dora.execute("SELECT rag.add_model('steal', 'chat', base_url => %s, api_key => 'prodkey')", (evil.url,))
        _ingest(dora)                                   # so that rag.ask has context to send
        with pytest.raises(psycopg.Error) as e:
            dora.execute("SELECT rag.ask('How long do refunds take?', model => 'steal')")
        assert _sqlstate(e) == "42501" and "may only be sent to" in str(e.value)
    finally:
        evil.close()
    assert secret.encode() not in evil.data and evil.data == b""


# -- 5. smaller leaks ------------------------------------------------------------------

def test_tenant_partitions_show_a_tenant_only_its_own(connect, db):
    alice, bob = connect("alice"), connect("bob")
    _ingest(alice)
    _ingest(bob)
    db.execute("SELECT rag.create_tenant_partition('alice')")
    db.execute("SELECT rag.create_tenant_partition('bob')")
    mine = alice.execute("SELECT bound FROM rag.tenant_partitions").fetchall()
    assert sorted(b for (b,) in mine) == ["DEFAULT", "FOR VALUES IN ('alice')"]
    assert db.execute("SELECT count(*) FROM rag.tenant_partitions").fetchone()[0] == 3   # the owner: all


def test_a_group_role_is_not_a_tenant(connect):
    alice = connect("alice")
    alice.execute("SET ROLE rag_writer")
    with pytest.raises(psycopg.Error) as e:
        _ingest(alice, "shared.md")
    assert _sqlstate(e) == "42501" and "group role" in str(e.value)
    with pytest.raises(psycopg.Error) as e:
        alice.execute("SELECT count(*) FROM rag.search('refunds', 3)")
    assert _sqlstate(e) == "42501"


def test_a_stream_read_on_after_set_role_stops(db):
    """A SET ROLE between two FETCHes of rag.ask_stream's cursor: the rest of the opener's
    answer went to the other role, and its ledger row and answer log to the other role's
    tenant (hostile review 33). The check ran only at the first read; now each piece's."""
    db.execute("CREATE ROLE mallory LOGIN IN ROLE rag_reader")
    db.execute("GRANT mallory TO tester")
    try:
        _ingest(db)
        answers = db.execute("SELECT count(*) FROM rag.answers").fetchone()[0]
        db.execute("BEGIN")
        db.execute("DECLARE a NO SCROLL CURSOR FOR SELECT (s).* FROM "
                   "(SELECT rag.ask_stream('How long do refunds take?') AS s) AS q")
        assert db.execute("FETCH 1 FROM a").fetchone()[1]
        db.execute("SET LOCAL ROLE mallory")
        with pytest.raises(psycopg.Error) as e:
            db.execute("FETCH ALL FROM a")
        assert _sqlstate(e) == "42501" and e.value.diag.message_primary.startswith(
            "rag.ask_stream: the role or tenant changed"), str(e.value)
        db.execute("ROLLBACK")
        assert db.execute("SELECT count(*) FROM rag.answers").fetchone()[0] == answers
    finally:
        db.execute("ROLLBACK") if db.info.transaction_status else None
        db.execute("DROP ROLE mallory")


def test_a_writer_cannot_lock_the_tenants_model_table(connect):
    """Writers update rag.tenant_models by column, not the table: table-level UPDATE lets a
    role LOCK TABLE it in any mode, and every tenant's writers lock their own row there."""
    alice = connect("alice")
    alice.execute("BEGIN")
    for mode in ("SHARE", "ACCESS EXCLUSIVE"):
        with pytest.raises(psycopg.Error) as e:
            alice.execute(f"LOCK TABLE rag.tenant_models IN {mode} MODE")
        assert _sqlstate(e) == "42501"
        alice.execute("ROLLBACK")
        alice.execute("BEGIN")
    alice.execute("ROLLBACK")
    alice.execute("SELECT rag.ingest('# Mine\n\nStill writes.', source => 'mine.md')")   # and still writes


def test_a_stream_handle_is_read_only_by_the_role_that_opened_it(db):
    db.execute("CREATE ROLE mallory LOGIN IN ROLE rag_reader")
    db.execute("GRANT mallory TO tester")
    try:
        _ingest(db)
        db.execute("BEGIN")
        handle = db.execute("SELECT rag._ask_stream_open('How long do refunds take?', 4, NULL, NULL, 30)").fetchone()[0]
        db.execute("SET LOCAL ROLE mallory")
        with pytest.raises(psycopg.Error) as e:
            db.execute("SELECT * FROM rag._ask_stream_read(%s)", (handle,))
        assert _sqlstate(e) == "22023" and e.value.diag.message_primary == "rag.ask_stream: unknown stream handle"
        db.execute("ROLLBACK")
        rows = db.execute("SELECT * FROM rag._ask_stream_read(%s)", (handle,)).fetchall()   # its owner still can
        assert rows and rows[-1][2] is not None
    finally:
        db.execute("ROLLBACK") if db.info.transaction_status else None
        db.execute("DROP ROLE mallory")


# -- a writer's LOCK TABLE on a shared table: the lock guard ends it ---------------------

def _search_in_thread(conn, out: dict) -> threading.Thread:
    def run():
        try:
            out["rows"] = conn.execute("SELECT chunk_id FROM rag.search('refunds', 3)").fetchall()
        except psycopg.Error as e:
            out["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t


def _guard_sees(db, pid: int, victim: int, deadline: float = 20) -> tuple:
    """The row rag.lock_holders() gives for pid once the victim has waited on it for a second."""
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        for row in db.execute("SELECT pid, role, relation::text, mode, granted, waiting_pids FROM rag.lock_holders()"):
            if row[0] == pid and victim in row[5]:
                return row
        time.sleep(0.2)
    raise AssertionError("the guard never saw the lock holder")


def test_a_writer_holding_a_shared_table_locked_is_ended_by_the_guard(connect, db):
    """alice's LOCK TABLE rag.chunks IN ACCESS EXCLUSIVE MODE (her DELETE on her own chunks
    lets Postgres grant it) stalls bob's search; one pass of the guard ends her session and
    his search completes. A role that may not end sessions cannot run the pass."""
    alice, bob, dora = connect("alice"), connect("bob"), connect("dora")
    alice_pid, bob_pid = _pid(alice), _pid(bob)
    _ingest(bob)
    bob.execute("SET statement_timeout = '60s'")
    alice.execute("BEGIN")
    alice.execute("LOCK TABLE rag.chunks IN ACCESS EXCLUSIVE MODE")
    out: dict = {}
    t = _search_in_thread(bob, out)
    try:
        row = _guard_sees(db, alice_pid, bob_pid)
        assert row[1:5] == ("alice", "rag.chunks", "AccessExclusiveLock", True)
        assert "rows" not in out                              # still waiting
        with pytest.raises(psycopg.Error) as e:               # rag_admin without pg_signal_backend
            dora.execute("SELECT * FROM rag.end_lock_holders()")
        assert _sqlstate(e) == "42501" and "pg_signal_backend" in str(e.value)
        ended = db.execute("SELECT pid, role FROM rag.end_lock_holders()").fetchall()
        assert ended == [(row[0], "alice")]
        t.join(30)
        assert not t.is_alive() and len(out.get("rows", [])) > 0, out
        with pytest.raises(psycopg.OperationalError):
            alice.execute("SELECT 1")
        assert db.execute("SELECT count(*) FROM rag.lock_holders()").fetchone()[0] == 0
    finally:
        t.join(60)


def test_a_writer_queued_for_a_strong_lock_is_ended_and_the_reader_it_waits_for_is_not(connect, db):
    """Queuing is enough to stall: alice asks for ACCESS EXCLUSIVE while carol reads in an
    open transaction, and bob's search queues behind alice. The guard ends alice only."""
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    alice_pid, bob_pid = _pid(alice), _pid(bob)
    _ingest(bob)
    bob.execute("SET statement_timeout = '60s'")
    carol.execute("BEGIN")
    carol.execute("SELECT count(*) FROM rag.chunks")       # holds ACCESS SHARE until she commits
    queued: dict = {}

    def lock():
        try:
            alice.execute("BEGIN")
            alice.execute("LOCK TABLE rag.chunks IN ACCESS EXCLUSIVE MODE")
        except psycopg.Error as e:
            queued["error"] = e
    a = threading.Thread(target=lock)
    a.start()
    out: dict = {}
    t = None
    try:
        deadline = time.monotonic() + 10
        while not db.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (alice_pid,)
                             ).fetchone()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        t = _search_in_thread(bob, out)
        row = _guard_sees(db, alice_pid, bob_pid)
        assert row[1:5] == ("alice", "rag.chunks", "AccessExclusiveLock", False)
        assert [r[0] for r in db.execute("SELECT pid FROM rag.end_lock_holders()")] == [row[0]]
        t.join(30)
        a.join(30)
        assert len(out.get("rows", [])) > 0, out
        assert isinstance(queued.get("error"), psycopg.OperationalError)
        assert carol.execute("SELECT 1").fetchone() == (1,)  # the reader's transaction goes on
        carol.execute("COMMIT")
    finally:
        a.join(60)
        if t:
            t.join(60)


def test_a_prepared_transaction_holding_a_lock_is_named_for_the_dba():
    """Where max_prepared_transactions > 0 (0 by default), a writer can PREPARE the
    transaction that holds the lock and leave: no session is left to end. The guard lists
    it (pid NULL, its name), and each pass warns with the ROLLBACK PREPARED to run."""
    pg = start_server("app", "-c max_prepared_transactions=2")
    try:
        url = pg.get_connection_url()
        with psycopg.connect(url, autocommit=True) as su:
            su.execute("CREATE EXTENSION rag CASCADE")
            su.execute("CREATE ROLE mallory LOGIN PASSWORD 'mallory' IN ROLE rag_writer")
            su.execute("CREATE ROLE victim LOGIN PASSWORD 'victim' IN ROLE rag_writer")
            from pgtest import as_role
            with psycopg.connect(as_role(url, "victim"), autocommit=True) as victim, \
                    psycopg.connect(as_role(url, "mallory"), autocommit=True) as mallory:
                _ingest(victim)
                victim_pid = _pid(victim)
                mallory.execute("BEGIN")
                mallory.execute("LOCK TABLE rag.chunks IN ACCESS EXCLUSIVE MODE")
                mallory.execute("PREPARE TRANSACTION 'stall'")
                mallory.close()
                out: dict = {}
                victim.execute("SET statement_timeout = '60s'")
                t = _search_in_thread(victim, out)
                try:
                    stop = time.monotonic() + 60
                    while True:
                        rows = su.execute("SELECT pid, role, relation::text, mode, granted, waiting_pids, prepared "
                                          "FROM rag.lock_holders()").fetchall()
                        if any(victim_pid in r[5] for r in rows) or time.monotonic() > stop:
                            break
                        time.sleep(0.2)
                    # (an autovacuum worker may queue behind it too, and is no session to end)
                    assert [r[:5] + (r[6],) for r in rows] == \
                        [(None, "mallory", "rag.chunks", "AccessExclusiveLock", True, "stall")], rows
                    assert victim_pid in rows[0][5], rows
                    warnings = []
                    # (a notice's fields are read in the handler: they are gone after it)
                    su.add_notice_handler(lambda d: warnings.append((d.message_primary, d.message_hint or "")))
                    assert su.execute("SELECT count(*) FROM rag.end_lock_holders()").fetchone()[0] == 0
                    assert any("prepared transaction 'stall' of role mallory" in m and "ROLLBACK PREPARED 'stall'" in h
                               for m, h in warnings), warnings
                    su.execute("ROLLBACK PREPARED 'stall'")      # what the hint says
                    t.join(30)
                    assert len(out.get("rows", [])) > 0, out
                finally:
                    t.join(60)
    finally:
        pg.stop()


def test_a_writer_holding_a_lock_nobody_waits_for_yet_is_ended_too(connect, db):
    """SHARE UPDATE EXCLUSIVE blocks no reader or writer, but every DDL and VACUUM of the
    table; no role but the owner, a superuser or rag_admin has a reason to take it."""
    alice = connect("alice")
    alice_pid = _pid(alice)
    alice.execute("BEGIN")
    alice.execute("LOCK TABLE rag.chunks IN SHARE UPDATE EXCLUSIVE MODE")
    # (nobody of ours waits; an autovacuum worker may)
    assert db.execute("SELECT pid, role, mode FROM rag.lock_holders()").fetchall() == \
        [(alice_pid, "alice", "ShareUpdateExclusiveLock")]
    assert db.execute("SELECT pid FROM rag.end_lock_holders()").fetchall() == [(alice_pid,)]
    with pytest.raises(psycopg.OperationalError):
        alice.execute("SELECT 1")


def test_maintenance_of_another_table_does_not_shelter_a_lock(connect, db):
    """The guard spares a VACUUM, ANALYZE or CREATE INDEX at work on rag's table, not one
    on the writer's own temporary table run in the transaction that holds the lock
    (hostile review 29: that kept SHARE UPDATE EXCLUSIVE on rag.chunks for as long as the
    index's expression slept)."""
    alice = connect("alice")
    alice_pid = _pid(alice)
    alice.execute("CREATE TEMP TABLE t AS SELECT 1 AS x")
    alice.execute("CREATE FUNCTION pg_temp.slow(int) RETURNS int LANGUAGE plpgsql IMMUTABLE "
                  "AS $$BEGIN PERFORM pg_sleep(30); RETURN $1; END$$")
    out: dict = {}

    def run():
        try:
            alice.execute("BEGIN")
            alice.execute("LOCK TABLE rag.chunks IN SHARE UPDATE EXCLUSIVE MODE")
            alice.execute("CREATE INDEX ON t (pg_temp.slow(x))")
        except psycopg.Error as e:
            out["error"] = e
    th = threading.Thread(target=run)
    th.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not db.execute(
            "SELECT 1 FROM pg_stat_progress_create_index WHERE pid = %s", (alice_pid,)).fetchone():
        time.sleep(0.1)
    assert db.execute("SELECT relid::regclass::text FROM pg_stat_progress_create_index WHERE pid = %s",
                      (alice_pid,)).fetchone()[0].endswith("t")
    assert db.execute("SELECT pid, mode FROM rag.lock_holders()").fetchall() == \
        [(alice_pid, "ShareUpdateExclusiveLock")]
    assert db.execute("SELECT pid FROM rag.end_lock_holders()").fetchall() == [(alice_pid,)]
    th.join(10)
    assert not th.is_alive() and isinstance(out.get("error"), psycopg.OperationalError)


def test_the_guard_keeps_passing_for_its_whole_run(connect, db, dsn):
    """CALL rag.lock_guard() commits between passes (a procedure with SET search_path
    could not): a lock taken after its first pass is ended by a later one, and the CALL
    returns without error."""
    alice = connect("alice")
    alice_pid = _pid(alice)
    guard = psycopg.connect(dsn, autocommit=True)
    out: dict = {}

    def run():
        try:
            guard.execute("CALL rag.lock_guard(run_for => '6 seconds', every => '200 milliseconds')")
            out["done"] = True
        except psycopg.Error as e:
            out["error"] = e
    t = threading.Thread(target=run)
    t.start()
    try:
        time.sleep(1.5)
        alice.execute("BEGIN")
        alice.execute("LOCK TABLE rag.documents IN EXCLUSIVE MODE")
        stop = time.monotonic() + 5
        while time.monotonic() < stop and db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                                     (alice_pid,)).fetchone()[0]:
            time.sleep(0.1)
        assert db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (alice_pid,)).fetchone()[0] == 0
        t.join(15)
        assert out == {"done": True}, out
    finally:
        t.join(30)
        guard.close()


# -- Hostile review 39 (0.7.0): the restore's settings turned off inside a statement -------

# rag._restoring() saw a restore when row_security and check_function_bodies were both off.
# Any role may turn both off with set_config() inside its own statement, after row-level
# security let the statement through at plan time: the row triggers then skipped every
# check. Now a restore is also a role that can write rag's tables with row-level security
# off (a superuser, or BYPASSRLS).
RESTORING = ("set_config('row_security', 'off', true) IS NOT NULL "
             "AND set_config('check_function_bodies', 'off', true) IS NOT NULL")


def _refused(conn, sql: str, *args) -> None:
    """An attack statement: it may fail (with any error), or do what an honest one does."""
    try:
        conn.execute(sql, args or None)
    except psycopg.Error:
        pass


def test_rag_config_rows_are_checked_whatever_the_statement_sets(db, connect):
    """Review 39, findings 1 and 2: dora stored forget_answers = 'maybe' (every tenant's ask
    and chunk delete failed), an unknown name with a megabyte value, max_k = 'many', and the
    embedding_model row review 30 forbade (every tenant without a model of its own switched
    at once, or failed)."""
    dora, bob = connect("dora"), connect("bob")
    _ingest(bob, "b.md")
    for sql in [f"INSERT INTO rag.config (name, value) SELECT 'forget_answers', 'maybe' WHERE {RESTORING}",
                f"INSERT INTO rag.config (name, value) VALUES ('forget_answers', CASE WHEN {RESTORING} THEN 'x' END)"
                " ON CONFLICT (name) DO UPDATE SET value = 'maybe'",
                f"INSERT INTO rag.config (name, value) SELECT 'no_such_setting', repeat('x', 1000000) WHERE {RESTORING}",
                f"INSERT INTO rag.config (name, value) SELECT 'max_k', 'many' WHERE {RESTORING}",
                f"INSERT INTO rag.config (name, value) VALUES ('embedding_model', CASE WHEN {RESTORING} THEN 'smollm2-embed' END)",
                f"UPDATE rag.config SET name = 'embedding_model', value = 'nope' WHERE {RESTORING}"]:
        dora.execute("SELECT rag.configure('max_k', '50')")
        _refused(dora, sql)
        assert dict(db.execute("SELECT name, value FROM rag.config").fetchall()) == {"max_k": "50"}, sql
    assert bob.execute("SELECT value FROM rag.settings() WHERE name = 'embedding_model'").fetchone()[0] \
        == "all-MiniLM-L6-v2"
    assert bob.execute("SELECT rag.ask('How long do refunds take?')->>'answer_id'").fetchone()[0]
    bob.execute("DELETE FROM rag.documents WHERE source = 'b.md'")


def test_a_writer_cannot_skip_rags_row_checks_or_indexing_inside_a_statement(db, connect):
    """Review 39, finding 4: alice planted an attachment naming pg_authid past
    rag._attachments_guard (review 37). The same flip skipped the documents' checks and
    their indexing (a document without chunks, its limits unchecked)."""
    alice = connect("alice")
    alice.execute("SET rag.tenant = 'alice'")
    _refused(alice, "INSERT INTO rag.attachments (source_table, key_columns, content_column, mode) "
                    f"VALUES ('pg_catalog.pg_authid'::regclass, '{{oid}}', 'rolname', CASE WHEN {RESTORING} THEN 'sync' END)")
    assert db.execute("SELECT source_table::text FROM rag.attachments").fetchall() == []
    alice.execute("SET rag.max_document_bytes = 100")
    _refused(alice, f"INSERT INTO rag.documents (source, content) SELECT 'big.md', repeat('word ', 100) WHERE {RESTORING}")
    _refused(alice, f"INSERT INTO rag.documents (source, content) SELECT 'small.md', 'Refunds take days.' WHERE {RESTORING}")
    alice.execute("RESET rag.max_document_bytes")
    assert alice.execute("SELECT * FROM rag.check()").fetchall() == []   # nothing stored without its chunks
    assert alice.execute("SELECT count(*) FROM rag.documents WHERE source = 'big.md'").fetchone()[0] == 0


@pytest.mark.parametrize("setting,value", [("bm25_k1", "1e-999"), ("bm25_b", "1e-400"),
                                           ("retry_base_seconds", "1e-999")])
def test_a_number_the_readers_cannot_read_is_refused_when_configured(db, connect, setting, value):
    """Review 39, finding 3: numeric holds 1e-999, so rag.configure and the guard stored it
    (within 0..1e6); the SQL readers' float8 refuses it, and every tenant's search, ask or
    rag.work failed with a bare 22003 naming neither the setting nor rag.config."""
    dora, alice = connect("dora"), connect("alice")
    _ingest(alice, "a.md")
    for sql in ["SELECT rag.configure(%s, %s)",
                "INSERT INTO rag.config (name, value) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = excluded.value"]:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"setting rag.{setting} must be 0 or a number"):
            dora.execute(sql, (setting, value))
    alice.execute("SELECT count(*) FROM rag.search('refunds', mode => 'lexical')")
    alice.execute("CALL rag.work(1)")
