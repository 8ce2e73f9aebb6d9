"""rag.search: hybrid retrieval, both legs, fusion, ordering."""
from __future__ import annotations

import pytest

DOCS = {
    "refunds.md": "Refunds take five business days to reach your card after approval.",
    "errors.md": "If the dashboard shows code ZX-4471 the export job ran out of disk space.",
    "shipping.md": "Parcels are shipped with a tracked courier and arrive within a week.",
    "security.md": "Passwords are hashed with scrypt and never stored in plain text.",
    "holidays.md": "The office is closed on public holidays and between Christmas and New Year.",
    "pets.md": "Dogs are allowed in the office on Fridays if they are vaccinated.",
}


def ingest_all(db):
    for source, text in DOCS.items():
        db.execute("SELECT rag.ingest(%s, %s)", (text, source))


def sources(db, query, k=8):
    return db.execute("""
        SELECT d.source, s.vector_rank, s.lexical_rank, s.score
        FROM rag.search(%s, k => %s) s JOIN rag.documents d ON d.id = s.document_id
        ORDER BY s.score DESC""", (query, k)).fetchall()


def test_lexical_match_on_an_exact_code(db):
    ingest_all(db)
    rows = sources(db, "ZX-4471")
    top, vr, lr, _ = rows[0]
    assert top == "errors.md"
    assert lr == 1  # found by the full-text leg


def test_paraphrase_found_by_the_vector_leg_alone(db):
    ingest_all(db)
    # no word in common with the refunds document (after stemming and stop words)
    q = "how long until I get my money back"
    assert db.execute("SELECT rag.any_terms_tsquery(%s) @@ to_tsvector('english', %s)",
                      (q, DOCS["refunds.md"])).fetchone()[0] is False
    top, vr, lr, _ = sources(db, q)[0]
    assert (top, vr, lr) == ("refunds.md", 1, None)


def test_lexical_leg_matches_any_query_term(db):
    ingest_all(db)
    # websearch_to_tsquery would need every term; ours needs one
    rows = sources(db, "are dogs welcome at work on fridays")
    pets = [r for r in rows if r[0] == "pets.md"][0]
    assert pets[2] is not None and rows[0][0] == "pets.md"


def test_rrf_scores_and_ranks(db):
    ingest_all(db)
    rows = db.execute("SELECT score, vector_rank, lexical_rank FROM rag.search('office closed holidays', 8, "
                      "fusion => 'rrf')").fetchall()
    assert len(rows) == len(DOCS)  # every chunk is within the vector leg's top 30
    for score, vr, lr in rows:
        expected = (1 / (60 + vr) if vr else 0) + (1 / (60 + lr) if lr else 0)
        assert abs(score - expected) < 1e-12
    assert [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)


def leg_scores(db, query):
    """Each chunk's cosine similarity to the query and its exact BM25 (0 without a query
    term), computed apart from rag.search: pgvector's operator and rag.bm25 over all chunks."""
    cos = dict(db.execute("SELECT id, 1 - (embedding::vector(384) <=> rag.embed(%s)::vector(384)) FROM rag.chunks",
                          (query,)).fetchall())
    bm = dict(db.execute("SELECT chunk_id, score FROM rag.bm25(%s, 1000)", (query,)).fetchall())
    return cos, {i: bm.get(i, 0.0) for i in cos}


def test_convex_fusion_scores_every_candidate_by_both_legs(db):
    ingest_all(db)
    q = "office closed holidays"
    cos, bm = leg_scores(db, q)
    assert sum(1 for v in bm.values() if v > 0) < len(bm)   # some chunks have no query term
    norm = lambda d: {i: (x - min(d.values())) / (max(d.values()) - min(d.values())) for i, x in d.items()}  # noqa: E731
    nc, nb = norm(cos), norm(bm)
    for weights, (wv, wl) in (("", (1, 1)), (", vector_weight => 3, lexical_weight => 1", (3, 1))):
        # (the proximity term off: test_proximity_term_lifts_the_chunk_holding_the_query_words_together)
        rows = db.execute(f"SELECT chunk_id, score, vector_rank, lexical_rank FROM rag.search(%s, 8{weights}, "
                          "proximity_weight => 0)", (q,)).fetchall()
        assert len(rows) == len(DOCS)   # all are candidates: the vector leg's top 30
        for chunk, score, vr, lr in rows:
            assert score == pytest.approx((wv * nc[chunk] + wl * nb[chunk]) / (wv + wl), abs=1e-6)
            assert (lr is not None) == (bm[chunk] > 0)
        assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


@pytest.mark.parametrize("proximity", [False, True])
def test_the_other_legs_bm25_is_exact_with_or_without_positions(db, proximity):
    """A candidate only the vector leg found gets its exact BM25; with the proximity term
    its term frequencies come from the positions fetched for it (one filter of its
    tsvector), without it from its tsvector directly: the same scores either way."""
    ingest_all(db)
    q = "office closed holidays dogs fridays"
    _, bm = leg_scores(db, q)
    assert sum(1 for v in bm.values() if v > 0) >= 2
    # a lexical leg of 1: chunks holding query terms are left for the vector leg to bring
    ids, lex, ranks = db.execute(
        """SELECT ids, lexical_scores, lexical_ranks FROM rag._search_legs(%s, 'hybrid', 30, 1,
               rag._setting('bm25_k1')::float8, rag._setting('bm25_b')::float8, NULL, 'bm25', true, %s)""",
        (q, proximity)).fetchone()
    brought = [i for i, r in zip(ids, ranks) if r is None and bm[i] > 0]
    assert brought, "no candidate with a query term came from the vector leg alone"
    for i, score in zip(ids, lex):
        assert score == pytest.approx(bm[i], rel=1e-9), i


def test_single_leg_scores_are_the_legs_own(db):
    ingest_all(db)
    q = "office closed holidays"
    cos, bm = leg_scores(db, q)
    for chunk, score in db.execute("SELECT chunk_id, score FROM rag.search(%s, 8, mode => 'vector')", (q,)).fetchall():
        assert score == pytest.approx(cos[chunk], abs=1e-6)
    rows = db.execute("SELECT chunk_id, score FROM rag.search(%s, 8, mode => 'lexical')", (q,)).fetchall()
    assert rows and all(score == pytest.approx(bm[chunk], rel=1e-9) for chunk, score in rows)


def test_k_limits_the_results(db):
    ingest_all(db)
    assert len(sources(db, "office", k=2)) == 2
    assert len(sources(db, "office", k=1)) == 1


def test_search_on_an_empty_corpus_returns_nothing(db):
    assert sources(db, "anything at all") == []


def test_stopword_only_query_still_searches_by_vector(db):
    ingest_all(db)
    rows = sources(db, "the and of")
    assert rows and all(r[2] is None for r in rows)


def test_proximity_term_lifts_the_chunk_holding_the_query_words_together(db):
    """proximity_weight (0.1 by default) adds w_p * proximity to the fused score: the
    IDF-weighted share of the query's lexemes a chunk holds within 12 word positions."""
    together = "The turbine blade cracked near the root after the vibration test, engineers found."
    scattered = ("Engineers found the blade in the storeroom. Hours later, after lunch, someone ran a "
                 "vibration test on a different machine entirely. Much later still, a turbine was "
                 "delivered, and a crack appeared in a wall near the root cellar.")
    db.execute("SELECT rag.ingest(%s, 'together.md')", (together,))
    db.execute("SELECT rag.ingest(%s, 'scattered.md')", (scattered,))
    q = "turbine blade crack root vibration"

    def scores(extra=""):
        return {src: (score, vr, lr) for src, score, vr, lr in db.execute(
            f"""SELECT d.source, s.score, s.vector_rank, s.lexical_rank FROM rag.search(%s, 8{extra}) AS s
                JOIN rag.documents AS d ON d.id = s.document_id""", (q,)).fetchall()}

    off, on = scores(", proximity_weight => 0"), scores(", proximity_weight => 1")
    default = scores()
    two = scores(", proximity_weight => 2")
    # every query lexeme of together.md is within 12 positions: + 1; scattered.md's are not
    lift = {src: on[src][0] - off[src][0] for src in off}
    assert lift["together.md"] == pytest.approx(1.0, abs=1e-9)
    # scattered.md: every query lexeme is in both chunks (equal IDF), so its proximity is
    # the most of them any 12 consecutive positions of its tsvector hold, over 5
    pos = db.execute("""SELECT u.lexeme, u.positions FROM rag.chunks AS c JOIN rag.documents AS d ON d.id = c.document_id,
                               unnest(c.tsv) AS u WHERE d.source = 'scattered.md'
                               AND u.lexeme = ANY (rag.query_lexemes(%s))""", (q,)).fetchall()
    assert len(pos) == 5
    best = max(len({lx for lx, ps in pos if any(start <= p < start + 12 for p in ps)}) for start in range(1, 200))
    assert 0 < best < 5 and lift["scattered.md"] == pytest.approx(best / 5, abs=1e-9)
    for src in off:   # the term scales with the weight; the legs' ranks do not move
        assert two[src][0] - off[src][0] == pytest.approx(2 * lift[src], abs=1e-9)
        assert default[src][0] - off[src][0] == pytest.approx(0.1 * lift[src], abs=1e-9)
        assert on[src][1:] == off[src][1:]
    # the term is score fusion's: mode lexical and rrf keep their own scores
    for extra in (", mode => 'lexical'", ", fusion => 'rrf'"):
        assert scores(extra + ", proximity_weight => 1") == scores(extra + ", proximity_weight => 0")
