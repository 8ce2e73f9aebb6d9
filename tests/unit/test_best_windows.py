"""ragpg.lexical.best_windows: each chunk's best window by BM25 (the lexical half of score
fusion's passage evidence), against the Okapi formula written out by hand."""
from __future__ import annotations

import math
import random

import pytest

from ragpg.lexical import best_windows, window_term_frequencies


def okapi(tf, length, idf, k1, b, avg):
    return sum(i * t * (k1 + 1) / (t + k1 * (1 - b + b * length / avg)) for t, i in zip(tf, idf))


def test_each_chunk_scores_its_best_window_by_bm25():
    rnd = random.Random(7)
    for _ in range(200):
        n_lex = rnd.randint(1, 5)
        idf = [rnd.uniform(0.1, 5.0) for _ in range(n_lex)]
        owner = [rnd.randint(1, 6) for _ in range(rnd.randint(1, 25))]
        lengths = [float(rnd.randint(1, 80)) for _ in owner]
        tfs = [[rnd.choice((0, 0, 1, 2, 5)) for _ in range(n_lex)] for _ in owner]
        k1, b = rnd.uniform(0.5, 2.0), rnd.uniform(0.0, 1.0)
        avg = sum(lengths) / len(lengths)
        want = {}
        for o, ln, tf in zip(owner, lengths, tfs):
            want[o] = max(want.get(o, -math.inf), okapi(tf, ln, idf, k1, b, avg))
        got = best_windows(owner, lengths, tfs, idf, k1, b)
        assert got.keys() == want.keys()
        for o in want:
            assert got[o] == pytest.approx(want[o])


def test_the_query_words_in_one_window_beat_the_same_words_in_two():
    idf = [2.0, 3.0]
    # chunk 1: both words in its first window; chunk 2: one in each of its windows
    got = best_windows([1, 1, 2, 2], [60, 60, 60, 60], [[1, 1], [0, 0], [1, 0], [0, 1]], idf, 0.9, 0.4)
    assert got[1] > got[2] > 0


def test_a_shorter_window_with_the_same_words_scores_higher_when_b_is_positive():
    got = best_windows([1, 2], [20, 64], [[1, 1], [1, 1]], [1.0, 1.0], 0.9, 0.4)
    assert got[1] > got[2]
    flat = best_windows([1, 2], [20, 64], [[1, 1], [1, 1]], [1.0, 1.0], 0.9, 0.0)
    assert flat[1] == pytest.approx(flat[2])


def test_nothing_in_nothing_out_and_no_query_words_score_zero():
    assert best_windows([], [], [], [1.0], 0.9, 0.4) == {}
    assert best_windows([3, 4], [10, 0], [[], []], [], 0.9, 0.4) == {3: 0.0, 4: 0.0}
    assert best_windows([5], [0], [[0]], [1.0], 0.9, 0.4) == {5: 0.0}    # an empty window


def hits(occurrences):
    """[(lexeme index, position)] -> the encoding rag.search's query returns."""
    return [p * 65536 + i for i, p in occurrences]


def test_window_term_frequencies_count_each_occurrence_in_its_window():
    rnd = random.Random(11)
    for _ in range(300):
        n = rnd.randint(1, 4)
        cuts = sorted(rnd.sample(range(2, 200), rnd.randint(0, 11)))
        bounds = [1] + cuts + [rnd.randint(cuts[-1] + 1 if cuts else 2, 260)]
        occ = [(rnd.randrange(n), rnd.randint(1, 300)) for _ in range(rnd.randint(0, 40))]
        want = [[sum(1 for i, p in occ if i == lx and bounds[w] <= p < bounds[w + 1]) for lx in range(n)]
                for w in range(len(bounds) - 1)]
        assert window_term_frequencies(hits(occ), bounds, n) == want


def test_a_window_without_a_word_holds_nothing_and_bad_bounds_describe_no_windows():
    # the second window (a line of punctuation) takes no position
    assert window_term_frequencies(hits([(0, 4), (0, 5), (1, 9)]), [1, 5, 5, 10], 2) == [[1, 0], [0, 0], [1, 1]]
    for bad in ([], [1], [5, 3], [1, None, 4], list(range(1, 15))):    # rows written by hand
        assert window_term_frequencies(hits([(0, 2)]), bad, 1) is None
