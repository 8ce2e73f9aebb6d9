"""rag.ask: extractive answers with citations that always resolve."""
from __future__ import annotations

import re

import pytest
from pgtest import skip_without_subxact_stats, subtransactions

NO_ANSWER = "I don't have that in the docs."


def seed(db):
    db.execute("""SELECT rag.ingest(%s, 'policies/refunds.md', title => 'Refund policy',
                  url => 'https://example.com/refunds')""",
               ("# Refunds\n\nWe accept returns of unused items. Refunds take five business days to "
                "reach your card after we approve the return.\n\nGift cards cannot be refunded.",))
    db.execute("SELECT rag.ingest(%s, 'policies/shipping.md', url => 'https://example.com/shipping')",
               ("# Shipping\n\nOrders leave the warehouse within 24 hours. International parcels "
                "take up to three weeks.",))


def test_ask_answers_with_a_citation_from_the_database(db):
    seed(db)
    out = db.execute("SELECT rag.ask('How long do refunds take?')").fetchone()[0]
    assert "five business days" in out["answer"]
    markers = {int(m) for m in re.findall(r"\[(\d+)\]", out["answer"])}
    assert markers and markers == {c["index"] for c in out["citations"]}
    cited = {c["index"]: c for c in out["citations"]}
    sentence_marker = re.search(r"five business days[^\[]*\[(\d+)\]", out["answer"]).group(1)
    c = cited[int(sentence_marker)]
    assert (c["source"], c["title"], c["url"]) == ("policies/refunds.md", "Refund policy",
                                                   "https://example.com/refunds")
    row = db.execute("SELECT document_id, content FROM rag.chunks WHERE id = %s", (c["chunk_id"],)).fetchone()
    assert row[0] == c["document_id"]
    assert "five business days" in c["snippet"] and c["snippet"] in " ".join(row[1].split())


def test_every_marker_resolves_and_indices_are_dense(db):
    seed(db)
    for q in ("What happens with international parcels?", "Can gift cards be refunded?",
              "When do orders leave the warehouse?"):
        out = db.execute("SELECT rag.ask(%s)", (q,)).fetchone()[0]
        markers = {int(m) for m in re.findall(r"\[(\d+)\]", out["answer"])}
        indices = [c["index"] for c in out["citations"]]
        assert indices == list(range(1, len(indices) + 1))
        assert markers == set(indices)
        ids = [c["chunk_id"] for c in out["citations"]]
        assert db.execute("SELECT count(*) FROM rag.chunks WHERE id = ANY(%s)", (ids,)).fetchone()[0] == len(ids)


def test_unrelated_question_gets_no_answer(db):
    seed(db)
    out = db.execute("SELECT rag.ask('Who painted the Mona Lisa?')").fetchone()[0]
    assert out["answer"] == NO_ANSWER and out["citations"] == []


def test_empty_corpus_gets_no_answer(db):
    out = db.execute("SELECT rag.ask('How long do refunds take?')").fetchone()[0]
    assert out == {"answer": NO_ANSWER, "citations": [], "mode": "extractive", "model": None} or \
        (out["answer"] == NO_ANSWER and out["citations"] == [])


def _stats(db) -> dict:
    return db.execute("SELECT rag.backend_stats()").fetchone()[0]


def test_sentences_are_embedded_once_per_backend_and_tenant(db):
    seed(db)
    q = "How long do refunds take?"
    before = _stats(db)
    first = db.execute("SELECT rag.ask(%s)", (q,)).fetchone()[0]
    mid = _stats(db)
    embedded = mid["texts_embedded"] - before["texts_embedded"]
    assert embedded >= 3                                   # the question and the chunks' sentences
    second = db.execute("SELECT rag.ask(%s)", (q,)).fetchone()[0]
    after = _stats(db)
    assert after["texts_embedded"] == mid["texts_embedded"]            # nothing embedded again
    assert after["sentences_cached"] - mid["sentences_cached"] >= embedded - 1   # (with repeats)
    for k in ("answer", "citations"):
        assert second[k] == first[k]                       # the same vectors: the same answer
    # another question over the same chunks reuses their sentences: only the question is new
    db.execute("SELECT rag.ask('Can gift cards be refunded?')")
    assert _stats(db)["texts_embedded"] - after["texts_embedded"] == 1
    # the rag.usage rows of rag.ask count what was embedded, not what was reused
    texts = db.execute("SELECT sum(calls) FROM rag.usage WHERE operation = 'ask'").fetchone()[0]
    assert texts == embedded - 1                           # (the question: operation query)
    # another tenant's identical sentences are embedded for it, not taken from this one's
    db.execute("SET rag.tenant = 'other'")
    seed(db)
    mark = _stats(db)["texts_embedded"]
    again = db.execute("SELECT rag.ask(%s)", (q,)).fetchone()[0]
    assert _stats(db)["texts_embedded"] - mark >= embedded - 1
    assert again["answer"] == first["answer"]


def test_an_ask_takes_no_subtransaction_id(db, fake_openai):
    """rag.ask wrote its answer and its model call's rag.usage row in two statements from
    PL/Python, each a subtransaction with an id: 32 asks through a chat model in one
    transaction overflowed the backend's cache of 64, and every snapshot in the cluster
    then read pg_subtrans. Now rag.ask's plpgsql writes both (rag._store_answer), in the
    caller's transaction: 40 asks, one statement, take none, and every call is in the
    ledger."""
    from openai_fake import Scenario

    skip_without_subxact_stats(db)
    seed(db)
    url = fake_openai.add("chatty", Scenario(chat_text="Five business days [1]."))
    db.execute("SELECT rag.add_model('chatty', 'chat', base_url => %s, price_input_per_1m => 1)", (url,))
    with db.transaction():
        n = db.execute("SELECT count(rag.ask('How long do refunds take for order ' || i || '?', model => 'chatty'))"
                       " FROM generate_series(1, 40) AS i").fetchone()[0]
        count, overflowed = subtransactions(db)
    assert n == 40 and not overflowed and count <= 2, count
    assert db.execute("SELECT count(*) FROM rag.answers WHERE model = 'chatty'").fetchone()[0] == 40
    assert db.execute("SELECT count(*), sum(input_tokens) > 0 FROM rag.usage WHERE model = 'chatty'"
                      ).fetchone() == (40, True)
    assert len(fake_openai.requests["chatty"]) == 40


def test_a_streamed_answer_takes_one_subtransaction_id(db, fake_openai):
    """rag.ask_stream wrote the chat call's rag.usage row and the answer in two statements,
    each a subtransaction with an id (PL/Python). Now the row goes with the answer. It
    spans two calls: what opening it cost (a reranker, a question's embedding by a remote
    model) is written when it opens, in one statement, as a client may never read on."""
    from openai_fake import Scenario

    skip_without_subxact_stats(db)
    seed(db)
    url = fake_openai.add("streamy", Scenario(chat_text="Refunds take five business days [1]."))
    db.execute("SELECT rag.add_model('streamy', 'chat', base_url => %s, price_input_per_1m => 1)", (url,))
    with db.transaction():
        rows = db.execute("SELECT i, s.citations, s.answer_id FROM generate_series(1, 25) AS i, "
                          "rag.ask_stream('How long do refunds take for order ' || i || '?', model => 'streamy') AS s "
                          "WHERE s.piece IS NULL").fetchall()
        count, overflowed = subtransactions(db)
    assert len(rows) == 25 and all(r[1] and r[2] for r in rows), rows[:2]
    assert not overflowed and count <= 25 + 2, count
    assert db.execute("SELECT count(*) FROM rag.answers WHERE model = 'streamy'").fetchone()[0] == 25
    # every chat call is in the ledger, with the tokens the stream's last chunk reported
    assert db.execute("SELECT count(*), sum(input_tokens), sum(output_tokens) FROM rag.usage "
                      "WHERE model = 'streamy'").fetchone() == (25, 2500, 250)
    assert len(fake_openai.requests["streamy"]) == 25
