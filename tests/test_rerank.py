"""Reranking in rag.search and rag.ask: the /rerank protocol against a scripted server
(tests/openai_fake.py, named as a FAKE: no reranker weights can be installed here), the
LLM route against the real local LLM (SmolLM2 through llama.cpp), and the fallback to
the fused order when the reranker fails."""
from __future__ import annotations

import psycopg
import pytest
from openai_fake import Scenario
from pgtest import skip_without_subxact_stats, subtransactions

DOCS = {
    "refunds.md": "Refunds take five business days to reach your card after approval by the finance team.",
    "refund-short.md": "Refunds take five business days.",
    "shipping.md": "Parcels are shipped with a tracked courier and arrive within a week.",
    "returns.md": "Returned items must be unused; the refund is issued once the parcel is back in the warehouse.",
    "pets.md": "Dogs are allowed in the office on Fridays if they are vaccinated.",
    "gift.md": "No refunds on gifts.",
}
Q = "how long does a refund take"


def ingest(db):
    for source, text in DOCS.items():
        db.execute("SELECT rag.ingest(%s, %s)", (text, source))


def fused(db, k=6):
    return db.execute("SELECT chunk_id, content FROM rag.search(%s, %s)", (Q, k)).fetchall()


def add_reranker(db, fake, name, **kw):
    url = fake.add(name, Scenario(**kw))
    db.execute("SELECT rag.add_model(%s, 'rerank', base_url => %s, max_input_tokens => 512, "
               "price_input_per_1m => 2)", (name, url))
    return url


@pytest.mark.parametrize("fmt", ["cohere", "tei"])
def test_a_rerank_server_reorders_the_fused_best(db, fake_openai, fmt):
    ingest(db)
    add_reranker(db, fake_openai, f"rr-{fmt}", rerank_format=fmt)
    before = fused(db)
    rows = db.execute("SELECT chunk_id, content, rerank_rank, score FROM rag.search(%s, 4, rerank => %s, "
                      "rerank_k => 6)", (Q, f"rr-{fmt}")).fetchall()
    # the server got the question and the fused best 6, in the fused order ...
    req = fake_openai.requests[f"rr-{fmt}"]
    assert len(req) == 1 and req[0]["path"].endswith("/v1/rerank")
    assert req[0]["body"]["query"] == Q and req[0]["body"]["documents"] == [c for _, c in before]
    # ... and its order is the result's: shortest first (the fake scores 1 / (1 + length))
    want = sorted(before, key=lambda r: (len(r[1]), [x for x, _ in before].index(r[0])))[:4]
    assert [r[0] for r in rows] == [r[0] for r in want]
    assert [r[2] for r in rows] == [1, 2, 3, 4]
    # the call is in the ledger, priced
    usage = db.execute("SELECT operation, calls, input_tokens, cost FROM rag.usage WHERE model = %s",
                       (f"rr-{fmt}",)).fetchall()
    n_in = 42 if fmt == "cohere" else None   # the fake's usage (7 a document); tei sends none: counted
    assert len(usage) == 1 and usage[0][:2] == ("rerank", 1)
    assert usage[0][2] == n_in if n_in else usage[0][2] > 10
    assert float(usage[0][3]) == pytest.approx(usage[0][2] * 2 / 1e6)


@pytest.mark.parametrize("scenario,fragment", [
    (dict(always=500), "HTTP 500"),
    (dict(rerank_format="broken"), "not a list"),
])
def test_a_failing_reranker_leaves_the_fused_order_and_says_why(db, fake_openai, scenario, fragment):
    ingest(db)
    name = "rr-bad-" + ("500" if "always" in scenario else "broken")
    add_reranker(db, fake_openai, name, **scenario)
    db.execute("SET rag.provider_max_retries = 0")
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    rows = db.execute("SELECT chunk_id, rerank_rank FROM rag.search(%s, 4, rerank => %s)", (Q, name)).fetchall()
    assert [r[0] for r in rows] == [r[0] for r in fused(db, 4)]
    assert all(r[1] is None for r in rows)
    assert any("reranker" in n and fragment in n for n in notices), notices
    # the request was sent (and answered, or failed): its row is in the ledger (review 44)
    assert db.execute("SELECT calls, input_tokens > 0 FROM rag.usage WHERE operation = 'rerank' AND model = %s",
                      (name,)).fetchall() == [(1, True)]
    out = db.execute("SELECT rag.ask(%s, rerank => %s)", (Q, name)).fetchone()[0]
    assert out["rerank"]["model"] == name and out["rerank"]["reranked"] is False
    assert fragment in out["rerank"]["error"] and out["citations"]


@pytest.mark.parametrize("kw,state,fragment", [
    ("rerank => 'nope'", "42704", "model 'nope' is not registered"),
    ("rerank => 'all-MiniLM-L6-v2'", "22023", "is an embedding model"),
    ("rerank => 'extractive'", "22023", "cannot rerank"),
    ("rerank => 'smollm2', rerank_k => 0", "22023", "rerank_k must be between 1 and"),
    ("rerank => 'smollm2', rerank_k => 101", "22023", "rerank_k must be between 1 and"),
])
def test_bad_rerank_arguments(db, kw, state, fragment):
    ingest(db)
    with pytest.raises(psycopg.Error) as exc:
        db.execute(f"SELECT * FROM rag.search('refund', {kw})")
    assert exc.value.sqlstate == state and fragment in str(exc.value)


def test_a_reranker_is_not_a_default_model(db, fake_openai):
    add_reranker(db, fake_openai, "rr-default")
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.use_model('rr-default')")
    assert exc.value.sqlstate == "22023" and "name it per call" in str(exc.value)


@pytest.fixture
def llm_db(db, local_llm):
    db.execute("SELECT rag.add_model('smollm2', 'chat', base_url => %s, max_input_tokens => 2048, "
               "options => (SELECT options FROM rag.models WHERE name = 'smollm2'))", (local_llm,))
    return db


def test_a_chat_model_reranks_listwise(llm_db):
    """The real local LLM (SmolLM2-135M) ranks the passages in one call; whatever it
    answers, the result is a permutation of the fused best rerank_k."""
    db = llm_db
    ingest(db)
    before = [r[0] for r in fused(db, 4)]
    rows = db.execute("SELECT chunk_id, rerank_rank FROM rag.search(%s, 4, rerank => 'smollm2', rerank_k => 4)",
                      (Q,)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(before)
    assert [r[1] for r in rows] == [1, 2, 3, 4]
    calls = db.execute("SELECT calls, input_tokens, output_tokens FROM rag.usage "
                       "WHERE model = 'smollm2' AND operation = 'rerank'").fetchall()
    assert len(calls) == 1 and calls[0][0] == 1 and calls[0][1] > 50 and calls[0][2] > 0
    out = db.execute("SELECT rag.ask(%s, k => 3, rerank => 'smollm2', rerank_k => 4)", (Q,)).fetchone()[0]
    assert out["rerank"] == {"model": "smollm2", "rerank_k": 4, "reranked": True, "error": None}
    assert out["citations"] and {c["chunk_id"] for c in out["citations"]} <= set(before)


def test_ask_and_ask_stream_answer_from_the_reranked_best(db, fake_openai):
    """k => 1: the context is the one chunk the reranker put first (the shortest, for the
    fake), not the fused first."""
    ingest(db)
    add_reranker(db, fake_openai, "rr-ask")
    fused_first = fused(db, 1)[0][0]
    top = db.execute("SELECT chunk_id FROM rag.search(%s, 1, rerank => 'rr-ask', rerank_k => 6)", (Q,)).fetchone()[0]
    assert top != fused_first      # the fake's order differs from the fusion's here
    out = db.execute("SELECT rag.ask(%s, k => 1, rerank => 'rr-ask', rerank_k => 6)", (Q,)).fetchone()[0]
    assert [c["chunk_id"] for c in out["citations"]] == [top] and out["rerank"]["reranked"] is True
    rows = db.execute("SELECT * FROM rag.ask_stream(%s, k => 1, rerank => 'rr-ask', rerank_k => 6)", (Q,)).fetchall()
    assert rows[-1][1] is None and [c["chunk_id"] for c in rows[-1][2]] == [top]


@pytest.mark.parametrize("passages,fragment", [
    ("array_fill('a passage'::text, ARRAY[101])", "101 passages, over the limit of 100"),
    ("ARRAY[repeat('x', 100001)]", "passage 1 is 100001 characters, over the limit of 100000"),
])
def test_direct_callers_of_rerank_are_bounded(db, passages, fragment):
    """rag.search sends at most rerank_k (100) chunks; a role calling rag._rerank itself
    gets the same bound, before any provider is called (an internal function: ok NULL and
    the error pending, which rag._raise_python_error raises)."""
    calls = db.execute("SELECT count(*) FROM rag.usage WHERE operation = 'rerank'").fetchone()[0]
    row = db.execute(f"SELECT ranks, scores, error, ok FROM rag._rerank('q', 'smollm2', 'chat', {passages})").fetchone()
    assert row == (None, None, None, None)
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag._raise_python_error()")
    assert exc.value.sqlstate == "54000" and fragment in str(exc.value)
    assert db.execute("SELECT count(*) FROM rag.usage WHERE operation = 'rerank'").fetchone()[0] == calls


def test_searches_write_their_calls_without_a_subtransaction_id(db, fake_openai):
    """rag.search's reranker call and its query embedding by a remote model each wrote a
    rag.usage row from PL/Python, whose every statement is a subtransaction: one that writes
    takes an id, and a report of 70 reranked searches in one statement overflowed the
    backend's cache of 64 (every snapshot in the cluster then reads pg_subtrans). Now
    the rows go back to rag.search's plpgsql, which writes them in the statement's own
    transaction. Every call is still in the ledger, priced."""
    skip_without_subxact_stats(db)
    ingest(db)
    add_reranker(db, fake_openai, "rr-many")
    before = db.execute("SELECT count(*) FROM rag.usage WHERE operation = 'query'").fetchone()[0]
    with db.transaction():
        n = db.execute("SELECT count(DISTINCT i) FROM generate_series(1, 70) AS i, "
                       "rag.search(%s || ' ' || i, 3, rerank => 'rr-many', rerank_k => 6) AS s "
                       "WHERE s.rerank_rank IS NOT NULL", (Q,)).fetchone()[0]
        count, overflowed = subtransactions(db)
    assert n == 70 and not overflowed and count <= 2, count
    assert db.execute("SELECT count(*), sum(input_tokens), sum(cost)::float8 FROM rag.usage WHERE model = 'rr-many'"
                      ).fetchone() == (70, 70 * 7 * 6, pytest.approx(70 * 7 * 6 * 2 / 1e6))
    # the local model's query embeddings, summed per 64 (record_usage), went the same way
    assert db.execute("SELECT coalesce(sum(calls), 0) FROM rag.usage WHERE operation = 'query'").fetchone()[0] \
        - before >= 64
