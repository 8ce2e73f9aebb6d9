"""ragpg.rerank: the listwise prompt and the reading of a model's answer."""
from __future__ import annotations

from ragpg import rerank


def test_parse_order_is_always_a_permutation():
    assert rerank.parse_order("3, 1, 2", 3) == [2, 0, 1]
    assert rerank.parse_order("[2] > [2] > [9] > [1]", 4) == [1, 0, 2, 3]   # repeats, out of range, missing
    assert rerank.parse_order("I cannot rank these.", 3) == [0, 1, 2]
    assert rerank.parse_order("0, 4", 4) == [3, 0, 1, 2]                   # 0 is not a passage number
    assert rerank.parse_order("1" * 30_000, 5) == [0, 1, 2, 3, 4]          # no huge integers parsed


def test_order_by_scores_keeps_the_fused_order_on_ties():
    assert rerank.order_by_scores([0.1, 0.9, 0.1, 0.5]) == [1, 3, 0, 2]


def test_listwise_prompt_numbers_every_passage_and_fits_the_window():
    # a word is a token here (the backend counts with the registry's tiktoken encoding)
    passages = ["alpha " * 500, "beta gamma", "delta\n\n  epsilon"]
    msgs = rerank.listwise_messages("which  letter?", passages, 600, lambda t, n: " ".join(t.split()[:n]))
    user = msgs[-1]["content"]
    assert "Question: which letter?" in user
    assert "[1] alpha" in user and "[2] beta gamma" in user and "[3] delta epsilon" in user
    # each passage gets an equal share of the window: the long one is cut, and the whole
    # prompt fits
    assert 100 < sum(len(m["content"].split()) for m in msgs) <= 600
    assert "Rank all 3 passage numbers" in user
