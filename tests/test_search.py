"""rag.search: hybrid retrieval, both legs, fusion, ordering."""
from __future__ import annotations

import psycopg
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
    """proximity_weight (0.2 by default) adds w_p * proximity to the fused score: the
    IDF-weighted share of the query's lexemes a chunk holds within 12 word positions. (Any
    w_p > 0 also mixes the best window's BM25 into the lexical score, the same for every
    w_p: the difference between two weights is the proximity term alone.)"""
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

    one, two = scores(", proximity_weight => 1"), scores(", proximity_weight => 2")
    default, three = scores(), scores(", proximity_weight => 3")
    # every query lexeme of together.md is within 12 positions: + 1; scattered.md's are not
    lift = {src: two[src][0] - one[src][0] for src in one}
    assert lift["together.md"] == pytest.approx(1.0, abs=1e-9)
    # scattered.md: every query lexeme is in both chunks (equal IDF), so its proximity is
    # the most of them any 12 consecutive positions of its tsvector hold, over 5
    pos = db.execute("""SELECT u.lexeme, u.positions FROM rag.chunks AS c JOIN rag.documents AS d ON d.id = c.document_id,
                               unnest(c.tsv) AS u WHERE d.source = 'scattered.md'
                               AND u.lexeme = ANY (rag.query_lexemes(%s))""", (q,)).fetchall()
    assert len(pos) == 5
    best = max(len({lx for lx, ps in pos if any(start <= p < start + 12 for p in ps)}) for start in range(1, 200))
    assert 0 < best < 5 and lift["scattered.md"] == pytest.approx(best / 5, abs=1e-9)
    for src in one:   # the term scales with the weight; the legs' ranks do not move
        assert three[src][0] - one[src][0] == pytest.approx(2 * lift[src], abs=1e-9)
        assert one[src][0] - default[src][0] == pytest.approx(0.8 * lift[src], abs=1e-9)
        assert two[src][1:] == one[src][1:] == default[src][1:]
    # the term is score fusion's: mode lexical and rrf keep their own scores
    for extra in (", mode => 'lexical'", ", fusion => 'rrf'"):
        assert scores(extra + ", proximity_weight => 1") == scores(extra + ", proximity_weight => 0")


WORDS = ("apple river garden window market yellow silver forest mountain village teacher letter kitchen "
         "button pocket candle harbor meadow basket ladder orange purple dinner summer winter autumn spring "
         "island valley desert ocean bridge castle tower street corner station ticket travel journey morning "
         "evening night cloud storm rain snow wind thunder sunlight shadow mirror picture painting music "
         "guitar piano violin drum song dance story poem novel chapter page library museum theater cinema "
         "coffee tea bread butter cheese honey sugar salt pepper lemon cherry grape melon peach plum carrot "
         "potato onion garlic tomato bean rice noodle soup salad dessert cake cookie pie jam juice water milk "
         "chair table sofa carpet curtain lamp clock pillow blanket towel soap brush comb ribbon wallet "
         "umbrella helmet").split()
FILLER = [" ".join(WORDS[20 * n:20 * n + 20]).capitalize() + "." for n in range(6)]   # no query word
QUERY_SENTENCES = ["The turbine hummed.", "The blade shone.", "The vibration grew."]


def test_the_lexical_score_mixes_in_the_best_windows_bm25(db):
    """With w_p > 0 a chunk's lexical score in score fusion is 0.7 x its BM25 + 0.3 x its
    best window's (each min-max normalised over the candidates). Two chunks of the same
    words: one holds the query's words in one window (of the sentences its window
    embeddings are made of), the other one in each of three; their BM25 is the same, their
    best windows' not. rag.search's fused scores follow from rag._search_legs'."""
    f, (q1, q2, q3) = FILLER, QUERY_SENTENCES
    db.execute("SELECT rag.ingest(%s, 'together.md')", (" ".join([q1, q2, q3] + f),))
    db.execute("SELECT rag.ingest(%s, 'spread.md')", (" ".join([q1, f[0], f[1], f[2], q2, f[3], f[4], f[5], q3]),))
    q = "turbine blade vibration"
    ids, vs, ls, px, wl = db.execute(
        """SELECT ids, vector_scores, lexical_scores, proximities, window_lexical_scores
           FROM rag._search_legs(%s, 'hybrid', 30, 30, rag._setting('bm25_k1')::float8,
                                 rag._setting('bm25_b')::float8, NULL, 'bm25', true, true)""", (q,)).fetchone()
    src = dict(db.execute("SELECT c.id, d.source FROM rag.chunks AS c JOIN rag.documents AS d ON d.id = c.document_id"))
    by = {src[i]: (l, w) for i, l, w in zip(ids, ls, wl)}
    assert by["together.md"][0] == pytest.approx(by["spread.md"][0], rel=1e-9) and by["spread.md"][0] > 0
    assert by["together.md"][1] > 1.5 * by["spread.md"][1] > 0
    # the windows' bounds were kept at ingest (3 windows each); without them (a chunk
    # indexed before 0.5.0) search tokenizes the windows itself, with the same scores
    spans = db.execute("""SELECT d.source, c.window_bounds, c.window_lengths FROM rag.chunks AS c
                          JOIN rag.documents AS d ON d.id = c.document_id ORDER BY 1""").fetchall()
    assert [(x, len(b), len(n)) for x, b, n in spans] == [("spread.md", 4, 3), ("together.md", 4, 3)]
    db.execute("UPDATE rag.chunks SET window_bounds = NULL, window_lengths = NULL")
    again = db.execute("""SELECT ids, window_lexical_scores FROM rag._search_legs(%s, 'hybrid', 30, 30,
                              rag._setting('bm25_k1')::float8, rag._setting('bm25_b')::float8, NULL, 'bm25', true,
                              true)""", (q,)).fetchone()
    assert again[0] == ids and again[1] == pytest.approx(wl, rel=1e-12)
    # bounds written by hand that describe no windows: that chunk has none (0), no error
    db.execute("UPDATE rag.chunks SET window_bounds = '{9,3}', window_lengths = '{5}'")
    assert db.execute("""SELECT window_lexical_scores FROM rag._search_legs(%s, 'hybrid', 30, 30,
                             rag._setting('bm25_k1')::float8, rag._setting('bm25_b')::float8, NULL, 'bm25', true,
                             true)""", (q,)).fetchone()[0] == [0.0, 0.0]
    db.execute("UPDATE rag.chunks SET window_bounds = NULL, window_lengths = NULL")
    # without the proximity term (w_p 0) there are no window scores either
    off = db.execute("""SELECT window_lexical_scores, proximities FROM rag._search_legs(%s, 'hybrid', 30, 30,
                            rag._setting('bm25_k1')::float8, rag._setting('bm25_b')::float8, NULL, 'bm25', true,
                            false)""", (q,)).fetchone()
    assert off == (None, None)
    # rag.lexical_windows off: the proximity term stays, the windows go
    db.execute("SET rag.lexical_windows = off")
    px_only = db.execute("""SELECT window_lexical_scores, proximities FROM rag._search_legs(%s, 'hybrid', 30, 30,
                                rag._setting('bm25_k1')::float8, rag._setting('bm25_b')::float8, NULL, 'bm25', true,
                                true, rag._setting('window_embeddings'), rag._setting('lexical_windows'))""",
                         (q,)).fetchone()
    assert px_only[0] is None and px_only[1] == px
    db.execute("RESET rag.lexical_windows")

    def mm(xs):
        lo, hi = min(xs), max(xs)
        return [(x - lo) / (hi - lo) if hi > lo else 1.0 for x in xs]
    want = {i: (v + 0.7 * l + 0.3 * w) / 2 + 1.0 * p for i, v, l, w, p in zip(ids, mm(vs), mm(ls), mm(wl), px)}
    got = db.execute("SELECT chunk_id, score FROM rag.search(%s, 8, proximity_weight => 1)", (q,)).fetchall()
    assert len(got) == len(ids) == 2
    for i, score in got:
        assert score == pytest.approx(want[i], abs=1e-9)
    assert got[0][0] == next(i for i in ids if src[i] == "together.md")


# -- window embeddings: a long chunk is also scored by its best window -----------------------

TOPICS = ["the night ferry to the island leaves from the northern pier at eleven",
          "passwords are hashed with scrypt and are never written to any log file",
          "the bakery sells rye bread and cinnamon buns every morning before seven",
          "refunds reach the card five business days after the manager approves them",
          "the lighthouse keeper feeds the seagulls on the rocks each winter dawn",
          "the quarterly report is printed on recycled paper in the basement office",
          "volunteers repaint the school fence in bright green every single summer",
          "the orchestra rehearses the symphony twice a week in the old town hall",
          "the museum lends its oldest maps to universities for careful scanning"]
# each topic as one sentence of exactly 20 words: three fit a 64-word window
SENTENCES = [" ".join((t + " and so it has been for many long years now").split()[:20]) + "." for t in TOPICS]
LONG = " ".join(SENTENCES)
WINDOWS = [" ".join(SENTENCES[i:i + 3]) for i in range(0, 9, 3)]


def vector_scores(db, query):
    """Each chunk's vector score computed apart from rag.search: the mean of its cosine and
    its best window's, or its cosine when it has no windows."""
    return dict(db.execute("""
        SELECT c.id, (cos + coalesce((SELECT max(1 - (w <=> q.v)) FROM unnest(c.window_embeddings) AS w), cos)) / 2
        FROM rag.chunks AS c, rag.embed(%s) AS q (v),
             LATERAL (SELECT 1 - (c.embedding <=> q.v) AS cos) AS x""", (query,)).fetchall())


def test_a_long_chunk_gets_the_embeddings_of_its_windows(db):
    assert all(len(s.split()) == 20 for s in SENTENCES)
    db.execute("SELECT rag.ingest(%s, 'long.md')", (LONG,))
    db.execute("SELECT rag.ingest('Refunds take five business days.', 'short.md')")
    rows = db.execute("""SELECT d.source, count(*), max(cardinality(c.window_embeddings))
                         FROM rag.chunks AS c JOIN rag.documents AS d ON d.id = c.document_id GROUP BY 1 ORDER BY 1""").fetchall()
    assert rows == [("long.md", 1, 3), ("short.md", 1, 0)]   # '{}': one window, its own embedding stands
    for n, text in enumerate(WINDOWS, 1):
        dist = db.execute("""SELECT c.window_embeddings[%s] <=> rag.embed(%s) FROM rag.chunks AS c
                             JOIN rag.documents AS d ON d.id = c.document_id WHERE d.source = 'long.md'""",
                          (n, text)).fetchone()[0]
        assert dist < 1e-6, (n, dist)


@pytest.mark.parametrize("query", ["who feeds the seagulls in winter", "office closed holidays"])
def test_the_vector_score_is_the_mean_of_the_chunks_cosine_and_its_best_windows(db, query):
    ingest_all(db)
    db.execute("SELECT rag.ingest(%s, 'long.md')", (LONG,))
    vs = vector_scores(db, query)
    rows = db.execute("SELECT chunk_id, score, vector_rank FROM rag.search(%s, 8, mode => 'vector')", (query,)).fetchall()
    assert len(rows) == len(DOCS) + 1
    for chunk, score, _ in rows:
        assert score == pytest.approx(vs[chunk], abs=1e-6)
    # ranked by it, in the results and in vector_rank
    assert [r[0] for r in rows] == sorted(vs, key=lambda i: -vs[i])
    assert [r[2] for r in rows] == list(range(1, len(rows) + 1))
    # and score fusion takes it as the vector leg's score
    _, bm = leg_scores(db, query)
    norm = lambda d: {i: (x - min(d.values())) / (max(d.values()) - min(d.values())) for i, x in d.items()}  # noqa: E731
    nv, nb = norm(vs), norm(bm)
    for chunk, score in db.execute("SELECT chunk_id, score FROM rag.search(%s, 8, proximity_weight => 0)",
                                   (query,)).fetchall():
        assert score == pytest.approx((nv[chunk] + nb[chunk]) / 2, abs=1e-6)


def test_the_seagull_window_lifts_the_long_chunk_it_sits_in(db):
    """The case windows are for: one sentence of a long chunk answers the question. The
    chunk's own cosine is diluted by its eight other topics; its window's is not."""
    db.execute("SELECT rag.ingest(%s, 'long.md')", (LONG,))
    cos, best = db.execute("""SELECT 1 - (c.embedding <=> q.v), (SELECT max(1 - (w <=> q.v)) FROM unnest(c.window_embeddings) w)
                              FROM rag.chunks AS c, rag.embed('who feeds the seagulls in winter') AS q (v)""").fetchone()
    assert best > cos + 0.05
    score = db.execute("SELECT score FROM rag.search('who feeds the seagulls in winter', 1, mode => 'vector')").fetchone()[0]
    assert score == pytest.approx((cos + best) / 2, abs=1e-6)


def test_window_embeddings_off_then_rag_work_embeds_them(db):
    db.execute("SET rag.window_embeddings = off")
    db.execute("SELECT rag.ingest(%s, 'long.md')", (LONG,))
    assert db.execute("SELECT window_embeddings IS NULL FROM rag.chunks").fetchone()[0] is True
    q = "who feeds the seagulls in winter"
    cos = db.execute("SELECT 1 - (embedding <=> rag.embed(%s)) FROM rag.chunks", (q,)).fetchone()[0]
    # without windows a chunk scores its cosine
    assert db.execute("SELECT score FROM rag.search(%s, 1, mode => 'vector')", (q,)).fetchone()[0] == pytest.approx(cos)
    # the windows' bounds are kept at ingest whatever the setting; a chunk without them
    # (indexed before 0.5.0) gets them from rag.work, which needs no model for them
    kept = db.execute("SELECT window_bounds, window_lengths FROM rag.chunks").fetchone()
    assert len(kept[0]) == 4 and len(kept[1]) == 3
    db.execute("UPDATE rag.chunks SET window_bounds = NULL, window_lengths = NULL")
    db.execute("CALL rag.work()")          # off: the bounds only
    assert db.execute("SELECT window_bounds, window_lengths FROM rag.chunks").fetchone() == kept
    assert db.execute("SELECT window_embeddings IS NULL FROM rag.chunks").fetchone()[0] is True
    db.execute("CALL rag.work()")          # nothing left to do
    assert db.execute("SELECT windows_pending FROM rag.model_status").fetchone()[0] == 1
    db.execute("RESET rag.window_embeddings")
    db.execute("CALL rag.work()")
    assert db.execute("SELECT windows_pending FROM rag.model_status").fetchone()[0] == 0
    assert db.execute("SELECT cardinality(window_embeddings) FROM rag.chunks").fetchone()[0] == 3
    # the same windows as indexing makes
    db.execute("SELECT rag.ingest(%s, 'again.md')", (LONG,))
    a, b = db.execute("SELECT window_embeddings::text FROM rag.chunks ORDER BY id").fetchall()
    assert a == b
    assert db.execute("SELECT score FROM rag.search(%s, 1, mode => 'vector')",
                      (q,)).fetchone()[0] == pytest.approx(max(vector_scores(db, q).values()), abs=1e-6)
    # off again: search ignores the windows it has (cosines only), and keeps them
    db.execute("SET rag.window_embeddings = off")
    assert db.execute("SELECT score FROM rag.search(%s, 1, mode => 'vector')", (q,)).fetchone()[0] == pytest.approx(cos)
    assert db.execute("SELECT count(*) FROM rag.chunks WHERE cardinality(window_embeddings) = 3").fetchone()[0] == 2


def test_a_bad_window_embeddings_setting_is_refused_by_name(db):
    db.execute("SET rag.window_embeddings = 'sometimes'")
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT rag.ingest(%s, 'long.md')", (LONG,))
    assert e.value.sqlstate == "22023" and "rag.window_embeddings" in str(e.value)
    db.execute("RESET rag.window_embeddings")
    assert db.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 0   # nothing half-written


def test_a_zero_vector_cannot_make_the_scores_nan(db):
    """pgvector accepts a zero vector (a provider might return one; a writer may write one),
    and its cosine is NaN: one such window or chunk must not make every fused score NaN."""
    ingest_all(db)
    db.execute("SELECT rag.ingest(%s, 'long.md')", (LONG,))
    zero = "[" + ",".join(["0"] * 384) + "]"
    db.execute("UPDATE rag.chunks SET window_embeddings = ARRAY[%s::vector] || window_embeddings "
               "WHERE cardinality(window_embeddings) > 0", (zero,))
    db.execute("UPDATE rag.chunks SET embedding = %s::vector WHERE content LIKE 'Passwords%%'", (zero,))
    zero_id = db.execute("SELECT id FROM rag.chunks WHERE content LIKE 'Passwords%%'").fetchone()[0]
    for args in ("", ", mode => 'vector'", ", fusion => 'rrf'"):
        # (the zero chunk comes in through the lexical leg: its cosine is computed, NaN)
        rows = db.execute(f"SELECT chunk_id, score FROM rag.search('who feeds the seagulls in winter, and passwords', "
                          f"8{args})").fetchall()
        assert rows and all(s == s for _, s in rows), (args, rows)       # no NaN
        if not args:
            assert zero_id in dict(rows)
    # the long chunk still scores by its real windows (the zero one skipped)
    q = "who feeds the seagulls in winter"
    long_id = db.execute("SELECT id FROM rag.chunks WHERE cardinality(window_embeddings) > 0").fetchone()[0]
    cos, best = db.execute("""SELECT 1 - (c.embedding <=> q.v), (SELECT max(1 - (w <=> q.v)) FROM unnest(c.window_embeddings) w
                                                           WHERE vector_norm(w) > 0)
                              FROM rag.chunks AS c, rag.embed(%s) AS q (v) WHERE c.id = %s""", (q, long_id)).fetchone()
    got = db.execute("SELECT chunk_id, score FROM rag.search(%s, 8, mode => 'vector')", (q,)).fetchall()
    assert dict(got)[long_id] == pytest.approx((cos + best) / 2, abs=1e-6)


def test_a_chunk_holds_at_most_twelve_windows(db):
    db.execute("SELECT rag.ingest(%s, 'long.md')", (LONG,))
    with pytest.raises(psycopg.Error) as e:
        db.execute("UPDATE rag.chunks SET window_embeddings = array_fill(embedding, ARRAY[13])")
    assert e.value.sqlstate == "23514" and "chunks_window_embeddings_check" in str(e.value)


def test_a_window_of_another_length_is_skipped_not_an_error(db):
    """A writer may write its own tenant's chunks (the triggers run as the caller): a window
    embedding of the wrong length must not break that tenant's search."""
    db.execute("SELECT rag.ingest(%s, 'long.md')", (LONG,))
    db.execute("UPDATE rag.chunks SET window_embeddings = ARRAY['[1,2,3]'::vector]")
    q = "who feeds the seagulls in winter"
    cos = db.execute("SELECT 1 - (embedding <=> rag.embed(%s)) FROM rag.chunks", (q,)).fetchone()[0]
    assert db.execute("SELECT score FROM rag.search(%s, 1, mode => 'vector')", (q,)).fetchone()[0] == pytest.approx(cos)
    assert db.execute("SELECT count(*) FROM rag.search(%s, 3)", (q,)).fetchone()[0] == 1


def test_windows_are_embedded_per_insert_slice_and_reused_across_slices(db):
    """A document of more chunks than one INSERT takes (512) has its windows embedded slice
    by slice; a chunk whose text was already embedded reuses its windows, in the next slice
    too: 600 identical paragraphs cost one chunk embedding and three window embeddings."""
    db.execute("SET rag.chunk_overlap_tokens = 0")
    before = db.execute("SELECT (rag.backend_stats()->>'texts_embedded')::int").fetchone()[0]
    db.execute("SELECT rag.ingest(%s, 'repeated.md')", ("\n\n".join([LONG] * 600),))
    after = db.execute("SELECT (rag.backend_stats()->>'texts_embedded')::int").fetchone()[0]
    assert db.execute("SELECT count(*), count(DISTINCT window_embeddings::text), min(cardinality(window_embeddings)) "
                      "FROM rag.chunks").fetchone() == (600, 1, 3)
    assert after - before == 1 + 3
