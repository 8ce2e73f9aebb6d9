"""rag.evaluate computes the metrics it claims, on a set small enough to check by hand."""
from __future__ import annotations

import math

import psycopg
import pytest
from pgtest import has_subxact_stats, subtransactions

DOCS = {"a": "The refund takes five days.", "b": "Shipping is free over fifty euros.",
        "c": "Refund requests need the order number.", "d": "Our office dog is called Biscuit.",
        "e": "Refunds of gift cards are not possible."}
QUERIES = {"q1": "refund", "q2": "dog name", "q3": "shipping cost"}
QRELS = [("q1", "a", 2), ("q1", "c", 1), ("q1", "e", 1), ("q2", "d", 1), ("q3", "b", 3), ("q3", "x", 1)]


def setup_set(db):
    db.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('tiny', 'eval:tiny')")
    db.execute("SET rag.tenant = 'eval:tiny'")
    for source, text in DOCS.items():
        db.execute("SELECT rag.ingest(%s, %s)", (text, source))
    for qid, text in QUERIES.items():
        db.execute("INSERT INTO rag.eval_queries VALUES ('tiny', %s, %s)", (qid, text))
    for qid, doc, grade in QRELS:
        db.execute("INSERT INTO rag.eval_qrels (set_name, query_id, doc_source, grade) VALUES ('tiny', %s, %s, %s)",
                   (qid, doc, grade))
    db.execute("RESET rag.tenant")


def expected(db, mode):
    db.execute("SET rag.tenant = 'eval:tiny'")
    out = {}
    for qid, text in QUERIES.items():
        ranked = [r[0] for r in db.execute("""
            SELECT d.source FROM rag.search(%s, 100, %s, NULL, 100, 100) s JOIN rag.documents d ON d.id = s.document_id
            ORDER BY s.score DESC, s.vector_rank NULLS LAST, s.chunk_id""", (text, mode))]
        rel = {d: g for q, d, g in QRELS if q == qid}
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(rel.values(), reverse=True)[:10]))
        hits10 = [d for d in ranked[:10] if d in rel]
        first = next((i + 1 for i, d in enumerate(ranked[:10]) if d in rel), None)
        out[qid] = (dcg / idcg, len(hits10) / len(rel), len([d for d in ranked[:100] if d in rel]) / len(rel),
                    1 / first if first else 0.0)
    db.execute("RESET rag.tenant")
    return out


@pytest.mark.parametrize("mode", ["lexical", "vector", "hybrid"])
def test_metrics_match_a_recomputation(db, mode):
    setup_set(db)
    run = db.execute("SELECT rag.evaluate('tiny', %s, 100)", (mode,)).fetchone()[0]
    got = {r[0]: r[1:] for r in db.execute("""SELECT query_id, ndcg_10, recall_10, recall_100, mrr_10
                                              FROM rag.eval_run_query WHERE run_id = %s""", (run,))}
    want = expected(db, mode)
    assert got.keys() == want.keys()
    for qid in want:
        assert got[qid] == pytest.approx(want[qid], abs=1e-9), qid
    # q3 has a judged document that is not in the corpus: recall can never reach 1
    assert got["q3"][2] <= 0.5
    overall = db.execute("SELECT queries, ndcg_10, recall_100 FROM rag.eval_runs WHERE run_id = %s", (run,)).fetchone()
    assert overall[0] == 3
    assert float(overall[1]) == pytest.approx(sum(w[0] for w in want.values()) / 3, abs=1e-4)


def test_compare_view_puts_two_runs_side_by_side(db):
    setup_set(db)
    with db.transaction():   # a run acts for the set's tenant, then gives rag.tenant back unset
        a = db.execute("SELECT rag.evaluate('tiny', 'lexical', 100)").fetchone()[0]
        assert db.execute("SELECT coalesce(current_setting('rag.tenant', true), '')").fetchone()[0] == ""
        b = db.execute("SELECT rag.evaluate('tiny', 'vector', 100)").fetchone()[0]
    row = db.execute("""SELECT mode_a, mode_b, ndcg_10_b - ndcg_10_a = ndcg_10_delta, queries_better + queries_worse <= 3
                        FROM rag.eval_compare WHERE run_a = %s AND run_b = %s""", (a, b)).fetchone()
    assert row == ("lexical", "vector", True, True)


def test_unknown_set_is_a_clear_error(db):
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.evaluate('nope')")
    assert exc.value.sqlstate == "42704" and "rag.evaluate: no eval set 'nope'" in str(exc.value)
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.evaluate_answers('nope')")
    assert exc.value.sqlstate == "42704" and "rag.evaluate_answers: no eval set 'nope'" in str(exc.value)
    assert "ragpg eval --dsn" in exc.value.diag.message_hint


def test_a_set_added_to_a_shared_tenant_never_takes_a_members_own(db, connect):
    """Hostile review 24: alice's default tenant is the one tenant granted to her, "team",
    which bob shares. Her own set "med" is in tenant alice. When bob adds a "med" to team,
    neither her rag.evaluate('med') nor her rows that name "med" alone may go to bob's."""
    db.execute("SELECT rag.grant_tenant('alice', 'team'), rag.grant_tenant('bob', 'team')")
    alice, bob = connect("alice"), connect("bob")
    assert alice.execute("SELECT rag.current_tenant()").fetchone()[0] == "team"
    alice.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('med', 'alice')")
    alice.execute("INSERT INTO rag.eval_queries (tenant, set_name, query_id, query) VALUES ('alice', 'med', 'q1', 'x')")
    alice.execute("INSERT INTO rag.eval_qrels (tenant, set_name, query_id, doc_source, grade) "
                  "VALUES ('alice', 'med', 'q1', 'a.md', 1)")
    run = alice.execute("SELECT rag.evaluate('med', 'lexical', 10)").fetchone()[0]   # the only 'med' she sees
    assert alice.execute("SELECT tenant FROM rag.eval_run WHERE id = %s", (run,)).fetchone()[0] == "alice"
    bob.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('med', 'team')")
    bob.execute("INSERT INTO rag.eval_queries (set_name, query_id, query) VALUES ('med', 'q1', 'bob asks')")
    bob.execute("INSERT INTO rag.eval_qrels (set_name, query_id, doc_source, grade) VALUES ('med', 'q1', 'b.md', 1)")
    with pytest.raises(psycopg.Error) as exc:
        alice.execute("SELECT rag.evaluate('med', 'lexical', 10)")
    assert exc.value.sqlstate == "42P08" and "exists in 2 tenants: 'alice', 'team'" in str(exc.value)
    with pytest.raises(psycopg.Error) as exc:
        alice.execute("INSERT INTO rag.eval_answers (set_name, query_id, doc_source, answer) "
                      "VALUES ('med', 'q1', 'a.md', 'a confidential answer')")
    assert exc.value.sqlstate == "42P08" and "exists in your tenant 'team' and in 'alice'" in str(exc.value)
    # saying which: SET rag.tenant picks that tenant's set, for runs and for rows alike
    alice.execute("SET rag.tenant = 'alice'")
    run = alice.execute("SELECT rag.evaluate('med', 'lexical', 10)").fetchone()[0]
    alice.execute("INSERT INTO rag.eval_answers (set_name, query_id, doc_source, answer) "
                  "VALUES ('med', 'q1', 'a.md', 'a confidential answer')")
    assert alice.execute("SELECT tenant FROM rag.eval_run WHERE id = %s", (run,)).fetchone()[0] == "alice"
    assert bob.execute("SELECT count(*) FROM rag.eval_answers").fetchone()[0] == 0
    assert bob.execute("SELECT count(*) FROM rag.eval_run").fetchone()[0] == 0


def test_group_roles_are_no_tenant_even_when_named(db, connect):
    """Hostile review 24: after SET ROLE rag_writer, SET rag.tenant = 'rag_writer' made the
    group role one tenant shared by every writer (the default case was refused already)."""
    alice = connect("alice")
    alice.execute("SET ROLE rag_writer")
    alice.execute("SET rag.tenant = 'rag_writer'")
    for sql in ("SELECT rag.current_tenant()", "INSERT INTO rag.eval_sets (name, tenant) VALUES ('grp', 'rag_writer')"):
        with pytest.raises(psycopg.Error) as exc:
            alice.execute(sql)
        assert exc.value.sqlstate == "42501", sql


def test_a_query_without_judgments_is_not_scored(db):
    """As trec_eval and BEIR: it has no nDCG (it used to fail the run with a not-null error)."""
    setup_set(db)
    db.execute("SET rag.tenant = 'eval:tiny'")
    db.execute("INSERT INTO rag.eval_queries VALUES ('tiny', 'q9', 'an unjudged question')")
    run = db.execute("SELECT rag.evaluate('tiny', 'lexical', 100)").fetchone()[0]
    assert db.execute("SELECT queries FROM rag.eval_runs WHERE run_id = %s", (run,)).fetchone()[0] == 3
    assert "q9" not in {r[0] for r in db.execute("SELECT query_id FROM rag.eval_run_query WHERE run_id = %s", (run,))}
    db.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('unjudged', 'eval:tiny')")
    db.execute("INSERT INTO rag.eval_queries VALUES ('unjudged', 'q1', 'refund')")
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.evaluate('unjudged')")
    assert exc.value.sqlstate == "22023" and "eval set 'unjudged' has no judged queries" in str(exc.value)


def test_eval_runs_are_scoped_to_who_may_act_for_the_set(db, connect):
    setup_set(db)
    db.execute("SELECT rag.evaluate('tiny', 'lexical', 100)")
    alice = connect("alice")
    assert alice.execute("SELECT count(*) FROM rag.eval_runs").fetchone()[0] == 0
    assert alice.execute("SELECT count(*) FROM rag.eval_qrels").fetchone()[0] == 0
    with pytest.raises(psycopg.Error) as exc:
        alice.execute("SELECT rag.evaluate('tiny')")
    assert exc.value.sqlstate in ("42704", "42501")
    db.execute("SELECT rag.grant_tenant('alice', 'eval:tiny')")
    assert alice.execute("SELECT count(*) FROM rag.eval_runs").fetchone()[0] == 1


def test_two_tenants_may_each_have_a_set_of_the_same_name(db, connect):
    """Sets are keyed by (tenant, name): a name one tenant took neither blocks another
    tenant nor tells it that the name is taken; each evaluates its own set."""
    alice, bob = connect("alice"), connect("bob")
    for who, text in ((alice, "Alice sells refunds in five days."), (bob, "Bob ships parcels on Mondays.")):
        me = who.execute("SELECT rag.current_tenant()").fetchone()[0]
        who.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('mine', %s)", (me,))
        who.execute("SELECT rag.ingest(%s, 'doc.md')", (text,))
        who.execute("INSERT INTO rag.eval_queries (set_name, query_id, query) VALUES ('mine', 'q1', 'refunds')")
        who.execute("INSERT INTO rag.eval_qrels (set_name, query_id, doc_source, grade) VALUES ('mine', 'q1', 'doc.md', 1)")
    runs = {}
    for name, who in (("alice", alice), ("bob", bob)):
        assert who.execute("SELECT tenant FROM rag.eval_sets").fetchall() == [(name,)]
        assert who.execute("SELECT DISTINCT tenant FROM rag.eval_qrels").fetchall() == [(name,)]
        runs[name] = who.execute("SELECT rag.evaluate('mine', 'lexical', 10)").fetchone()[0]
        assert who.execute("SELECT tenant, queries FROM rag.eval_runs").fetchall() == [(name, 1)]
    # the same query scored on each tenant's own documents: alice's holds "refunds", bob's not
    got = dict(db.execute("SELECT tenant, ndcg_10 FROM rag.eval_runs").fetchall())
    assert got == {"alice": 1, "bob": 0}
    assert db.execute("SELECT count(*) FROM rag.eval_compare").fetchone()[0] == 0   # never across tenants
    # a role that sees both sets must say which it means, unless its tenant has one
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.evaluate('mine', 'lexical', 10)")
    assert exc.value.sqlstate == "42P08"
    assert "rag.evaluate: eval set 'mine' exists in 2 tenants: 'alice', 'bob'" in str(exc.value)
    assert "SET rag.tenant" in exc.value.diag.message_hint
    db.execute("SET rag.tenant = 'bob'")
    run = db.execute("SELECT rag.evaluate('mine', 'lexical', 10)").fetchone()[0]
    assert db.execute("SELECT tenant FROM rag.eval_run WHERE id = %s", (run,)).fetchone()[0] == "bob"
    # a writer cannot put a row under another tenant's set, nor a set into another tenant
    with pytest.raises(psycopg.Error) as exc:
        alice.execute("INSERT INTO rag.eval_queries (tenant, set_name, query_id, query) VALUES ('bob', 'mine', 'q2', 'x')")
    assert exc.value.sqlstate == "42501"
    with pytest.raises(psycopg.Error) as exc:
        alice.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('other', 'bob')")
    assert exc.value.sqlstate == "42501"
    # nor a row under a set its tenant does not have
    with pytest.raises(psycopg.Error) as exc:
        alice.execute("INSERT INTO rag.eval_queries (set_name, query_id, query) VALUES ('nosuch', 'q1', 'x')")
    assert exc.value.sqlstate == "42704" and "rag.eval_queries: no eval set 'nosuch' in tenant 'alice'" in str(exc.value)
    with pytest.raises(psycopg.Error) as exc:
        alice.execute("INSERT INTO rag.eval_queries (tenant, set_name, query_id, query) VALUES ('alice', 'nosuch', 'q1', 'x')")
    assert exc.value.sqlstate == "23503"
    # a row that names the set alone belongs to the current tenant, as every tenant row does
    db.execute("INSERT INTO rag.eval_queries (set_name, query_id, query) VALUES ('mine', 'q2', 'parcels')")
    assert db.execute("SELECT tenant FROM rag.eval_queries WHERE query_id = 'q2'").fetchall() == [("bob",)]
    db.execute("RESET rag.tenant")
    with pytest.raises(psycopg.Error) as exc:   # the superuser's own tenant holds no 'mine'
        db.execute("INSERT INTO rag.eval_queries (set_name, query_id, query) VALUES ('mine', 'q3', 'x')")
    assert exc.value.sqlstate == "42704" and "no eval set 'mine' in tenant" in str(exc.value)
    # deleting a set removes its queries, judgments and runs, and only its own
    alice.execute("DELETE FROM rag.eval_sets WHERE name = 'mine'")
    assert dict(db.execute("SELECT tenant, count(*) FROM rag.eval_queries GROUP BY 1").fetchall()) == {"bob": 2}
    assert dict(db.execute("SELECT tenant, count(*) FROM rag.eval_run GROUP BY 1").fetchall()) == {"bob": 2}


# gold answers (the covid-qa layout): an answer counts where a top-k chunk comes from its
# document and contains it, whatever its case and line breaks
ANSWERS = [("q1", "a", "FIVE\n  days"), ("q2", "d", "called Biscuit"), ("q2", "b", "called Biscuit"),
           ("q3", "b", "free over sixty euros")]


@pytest.mark.parametrize("mode", ["lexical", "vector", "hybrid"])
def test_success_at_k_counts_answers_in_the_right_document(db, mode):
    setup_set(db)
    for qid, doc, text in ANSWERS:   # with the set's tenant, as `ragpg eval` loads them
        db.execute("INSERT INTO rag.eval_answers (tenant, set_name, query_id, doc_source, answer) "
                   "VALUES ('eval:tiny', 'tiny', %s, %s, %s)", (qid, doc, text))
    run = db.execute("SELECT rag.evaluate('tiny', %s, 100)", (mode,)).fetchone()[0]
    got = {r[0]: r[1:] for r in db.execute("""SELECT query_id, success_1, success_5, success_10
                                              FROM rag.eval_run_query WHERE run_id = %s""", (run,))}
    db.execute("SET rag.tenant = 'eval:tiny'")
    for qid, text in QUERIES.items():
        ranked = [r[0] for r in db.execute("""
            SELECT d.source FROM rag.search(%s, 100, %s, NULL, 100, 100) s JOIN rag.documents d ON d.id = s.document_id
            ORDER BY s.score DESC, s.vector_rank NULLS LAST, s.chunk_id""", (text, mode))]
        # q1's answer is in a; q2's in d (b does not contain it); q3's text is in no document
        holder = {"q1": "a", "q2": "d", "q3": None}[qid]
        rank = ranked.index(holder) + 1 if holder in ranked else None
        assert got[qid] == tuple(float(rank is not None and rank <= k) for k in (1, 5, 10)), (qid, ranked)
    assert got["q3"] == (0.0, 0.0, 0.0)
    overall = db.execute("SELECT success_1, success_5, success_10 FROM rag.eval_runs WHERE run_id = %s",
                         (run,)).fetchone()
    assert [float(x) for x in overall] == pytest.approx([sum(g[i] for g in got.values()) / 3 for i in range(3)],
                                                        abs=1e-4)


def test_sets_without_answers_have_no_success(db):
    setup_set(db)
    run = db.execute("SELECT rag.evaluate('tiny', 'hybrid', 100)").fetchone()[0]
    assert db.execute("SELECT success_1, success_5, success_10 FROM rag.eval_runs WHERE run_id = %s",
                      (run,)).fetchone() == (None, None, None)


def test_answers_are_measured_against_the_gold_ones(db):
    """rag.evaluate_answers with the extractive answerer, every metric recomputed here from
    the stored answers: the answers themselves come from rag.ask."""
    setup_set(db)
    db.execute("SET rag.tenant = 'eval:tiny'")   # rows that name the set alone: the current tenant's set
    for qid, doc, text in ANSWERS:
        db.execute("INSERT INTO rag.eval_answers (set_name, query_id, doc_source, answer) VALUES ('tiny', %s, %s, %s)",
                   (qid, doc, text))
    db.execute("RESET rag.tenant")
    run = db.execute("SELECT rag.evaluate_answers('tiny', k => 3)").fetchone()[0]
    rows = {r[0]: r[1:] for r in db.execute("""SELECT query_id, answer, gold_share, exact, citations, citations_right,
                                                      words, latency_ms
                                               FROM rag.eval_answer_run_query WHERE run_id = %s""", (run,))}
    assert set(rows) == {"q1", "q2", "q3"}
    for qid, (answer, share, exact, cites, right, words, ms) in rows.items():
        golds = [(d, t) for q, d, t in ANSWERS if q == qid]
        norm = " ".join(answer.lower().split())
        assert exact == any(" ".join(t.lower().split()) in norm for _, t in golds), (qid, answer)
        want = max(len(set(db.execute("SELECT tsvector_to_array(to_tsvector('english', %s))", (t,)).fetchone()[0])
                       & set(db.execute("SELECT tsvector_to_array(to_tsvector('english', %s))", (answer,)).fetchone()[0]))
                   / len(db.execute("SELECT tsvector_to_array(to_tsvector('english', %s))", (t,)).fetchone()[0])
                   for _, t in golds)
        assert share == pytest.approx(want), (qid, answer)
        assert words == len(answer.split()) and ms > 0
    # q1's answer is in document a, and the extractive answer quotes it: all of it, cited there
    assert rows["q1"][1] == 1.0 and rows["q1"][2] is True
    # citations: rag.ask logged each answer with the chunks it cites (rag.answers)
    db.execute("SET rag.tenant = 'eval:tiny'")
    for qid, (answer, share, exact, cites, right, words, ms) in rows.items():
        cited = [r[0] for r in db.execute("""
            SELECT d.source FROM rag.answers AS a, unnest(a.cited_chunk_ids) AS c (id)
            JOIN rag.chunks AS ch ON ch.id = c.id JOIN rag.documents AS d ON d.id = ch.document_id
            WHERE a.question = %s AND a.answer = %s""", (QUERIES[qid], answer))]
        assert cites == len(cited) and right == sum(s in {d for q, d, _ in ANSWERS if q == qid} for s in cited)
    db.execute("RESET rag.tenant")
    summary = db.execute("""SELECT questions, gold_share, half_share, exact_share, citations_right, refusals, mean_words
                            FROM rag.eval_answer_runs WHERE run_id = %s""", (run,)).fetchone()
    n = len(rows)
    assert summary[0] == n
    assert float(summary[1]) == pytest.approx(sum(r[1] for r in rows.values()) / n, abs=1e-4)
    assert float(summary[2]) == pytest.approx(sum(r[1] >= 0.5 for r in rows.values()) / n, abs=1e-4)
    assert float(summary[3]) == pytest.approx(sum(r[2] for r in rows.values()) / n, abs=1e-4)
    assert float(summary[4]) == pytest.approx(sum(r[4] for r in rows.values()) / sum(r[3] for r in rows.values()),
                                              abs=1e-4)
    assert float(summary[5]) == pytest.approx(sum(r[3] == 0 for r in rows.values()) / n, abs=1e-4)
    assert float(summary[6]) == pytest.approx(sum(r[5] for r in rows.values()) / n, abs=0.05)


def test_evaluate_answers_needs_a_set_with_answers(db):
    setup_set(db)
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.evaluate_answers('tiny')")
    assert exc.value.sqlstate == "22023" and "has no gold answers" in str(exc.value)
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.evaluate_answers('tiny', questions => 0)")
    assert exc.value.sqlstate == "22023" and "questions must be >= 1" in str(exc.value)


def test_an_answer_run_takes_no_subtransaction_id_a_question(db):
    """rag.evaluate_answers asks rag.ask once a question, and each ask wrote its answer from
    PL/Python, whose every statement is a subtransaction: one that writes takes an id, and
    a run of more than ~64 questions overflowed the backend's cache of 64 for the rest of
    the run. Now rag.ask's plpgsql writes the answer (rag._store_answer). 80 questions:
    each question's row holds the answer rag.ask gives it alone, every answer is logged
    with its own question, and (16+) the run takes no id a question."""
    setup_set(db)
    db.execute("SET rag.tenant = 'eval:tiny'")
    topics = [("refund", "a", "five days"), ("dog name", "d", "Biscuit"), ("shipping cost", "b", "fifty euros"),
              ("gift card refunds", "e", "not possible")]
    for i in range(80):
        text, doc, gold = topics[i % 4]
        qid = f"m{i:02d}"
        db.execute("INSERT INTO rag.eval_queries VALUES ('tiny', %s, %s)", (qid, f"{text} {i}"))
        db.execute("INSERT INTO rag.eval_answers (set_name, query_id, doc_source, answer) VALUES ('tiny', %s, %s, %s)",
                   (qid, doc, gold))
    db.execute("RESET rag.tenant")
    logged = db.execute("SELECT count(*) FROM rag.answers").fetchone()[0]
    subx = has_subxact_stats(db)
    with db.transaction():
        run = db.execute("SELECT rag.evaluate_answers('tiny', k => 3)").fetchone()[0]
        if subx:
            count, overflowed = subtransactions(db)
            assert not overflowed and count <= 2, count
    rows = dict(db.execute("SELECT query_id, answer FROM rag.eval_answer_run_query WHERE run_id = %s", (run,)).fetchall())
    assert len(rows) == 80 and db.execute("SELECT questions FROM rag.eval_answer_run WHERE id = %s",
                                          (run,)).fetchone()[0] == 80
    assert db.execute("SELECT count(*) FROM rag.answers").fetchone()[0] - logged == 80
    db.execute("SET rag.tenant = 'eval:tiny'")
    # every answer logged beside its own question
    queries = dict(db.execute("SELECT query_id, query FROM rag.eval_queries WHERE set_name = 'tiny'").fetchall())
    pairs = set(db.execute("SELECT question, answer FROM rag.answers ORDER BY id DESC LIMIT 80").fetchall())
    assert pairs == {(queries[q], a) for q, a in rows.items()}
    for qid in ("m00", "m33", "m79"):
        alone = db.execute("SELECT rag.ask(%s, 3)", (queries[qid],)).fetchone()[0]
        assert alone["answer"] == rows[qid], qid
        assert "_log" not in alone and db.execute("SELECT question, answer FROM rag.answers WHERE id = %s",
                                                  (alone["answer_id"],)).fetchone() == (queries[qid], rows[qid])
    db.execute("RESET rag.tenant")


def test_an_answer_run_stops_at_the_budget_and_keeps_what_it_paid_for(db, fake_openai):
    """With a priced chat model, the ask the daily budget refused failed the whole run: the
    answers so far and the ledger rows of the calls already made (and paid for) rolled
    back with it (hostile review 33). Now the run stops before that question, with a
    WARNING, and keeps its answers and its ledger rows."""
    from openai_fake import Scenario

    setup_set(db)
    db.execute("SET rag.tenant = 'eval:tiny'")
    for qid, doc, text in ANSWERS:
        db.execute("INSERT INTO rag.eval_answers (set_name, query_id, doc_source, answer) VALUES ('tiny', %s, %s, %s)",
                   (qid, doc, text))
    for i in range(4, 9):
        db.execute("INSERT INTO rag.eval_queries VALUES ('tiny', %s, %s)", (f"q{i}", f"refund {i}"))
        db.execute("INSERT INTO rag.eval_answers (set_name, query_id, doc_source, answer) "
                   "VALUES ('tiny', %s, 'a', 'five days')", (f"q{i}",))
    db.execute("RESET rag.tenant")
    # 100 prompt tokens a call (the fake's usage) at 1000 per million: 0.1 a question
    url = fake_openai.add("dear", Scenario(chat_text="Five days [1]."))
    db.execute("SELECT rag.add_model('dear', 'chat', base_url => %s, price_input_per_1m => 1000)", (url,))
    db.execute("SET rag.daily_budget = '0.25'")
    notices = []
    db.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
    run = db.execute("SELECT rag.evaluate_answers('tiny', 'dear', 3)").fetchone()[0]
    # 0 -> 0.1 -> 0.2 -> 0.3: the fourth question finds the budget spent
    assert db.execute("SELECT questions FROM rag.eval_answer_runs WHERE run_id = %s", (run,)).fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM rag.eval_answer_run_query WHERE run_id = %s", (run,)).fetchone()[0] == 3
    assert ("WARNING", "rag.evaluate_answers: the daily budget of 0.25 for tenant 'eval:tiny' is spent; "
            "the run stopped after 3 questions") in notices
    assert len(fake_openai.requests["dear"]) == 3
    assert db.execute("SELECT count(*), sum(cost)::float8 FROM rag.usage WHERE model = 'dear'").fetchone() == \
        (3, pytest.approx(0.3))
    db.execute("RESET rag.daily_budget")
