"""ragpg.lexical.proximity: how close together a chunk holds the query's lexemes (the
optional proximity term of score fusion), against a brute-force count of every window."""
from __future__ import annotations

import random

import pytest

from ragpg.lexical import proximity, term_frequencies


def hits(occurrences):
    """[(lexeme index, position)] -> the encoding rag.search's query returns."""
    return [p * 65536 + i for i, p in occurrences]


def brute(occurrences, idf, window):
    best = 0.0
    for start in range(0, 16384):
        inside = {i for i, p in occurrences if start <= p < start + window}
        best = max(best, sum(idf[i] for i in inside))
        if start > max((p for _, p in occurrences), default=0):
            break
    return min(1.0, best / sum(idf)) if sum(idf) > 0 else 0.0


def test_all_terms_together_is_one_and_scattered_is_less():
    idf = [1.0, 2.0, 3.0]
    assert proximity(hits([(0, 5), (1, 6), (2, 8)]), idf, 12) == pytest.approx(1.0)
    # the rarest lexeme (idf 3) far from the others: the best window holds 1 + 2 of 6
    assert proximity(hits([(0, 5), (1, 6), (2, 400)]), idf, 12) == pytest.approx(0.5)
    # a window is `window` consecutive positions: 5 and 17 are 13 positions apart
    assert proximity(hits([(0, 5), (1, 17)]), [1.0, 1.0], 12) == pytest.approx(0.5)
    assert proximity(hits([(0, 5), (1, 16)]), [1.0, 1.0], 12) == pytest.approx(1.0)


def test_no_hits_or_no_weight_is_zero():
    assert proximity([], [1.0, 2.0]) == 0.0
    assert proximity(hits([(0, 1)]), [0.0]) == 0.0


def test_repeated_lexemes_count_once_per_window():
    # the same lexeme five times in a row is still only its own share
    assert proximity(hits([(0, p) for p in range(1, 6)]), [1.0, 1.0], 12) == pytest.approx(0.5)


def test_matches_brute_force_on_random_chunks():
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 6)
        idf = [rng.uniform(0.1, 5.0) for _ in range(n)]
        occ = [(rng.randrange(n), rng.randint(1, 300)) for _ in range(rng.randint(0, 40))]
        window = rng.choice([1, 5, 12, 40])
        assert proximity(hits(occ), idf, window) == pytest.approx(brute(occ, idf, window)), (occ, idf, window)


def test_linear_in_the_number_of_occurrences():
    # 200,000 occurrences (a hostile chunk is bounded far below this by the chunk size):
    # one pass, no quadratic window scan
    occ = [(i % 7, i // 13) for i in range(200_000)]
    assert 0.0 < proximity(hits(occ), [1.0] * 8, 12) <= 1.0


def test_term_frequencies_count_each_lexemes_occurrences():
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 6)
        occ = [(rng.randrange(n), rng.randint(1, 16383)) for _ in range(rng.randint(0, 40))]
        want = [sum(1 for i, _ in occ if i == lx) for lx in range(n)]
        assert term_frequencies(hits(occ), n) == want
    assert term_frequencies([], 3) == [0, 0, 0]
