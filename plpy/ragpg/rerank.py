"""Reranking: a model reads the query with each of a search's best candidates and puts
them in a new order (rag.search(..., rerank => 'model', rerank_k => 30), rag.ask).

Two routes, by the model's kind in rag.models:
- `rerank`: a reranking server scores every passage (providers.rerank: POST
  {base_url}/rerank, the protocol Cohere, Jina, Voyage, Hugging Face TEI, vLLM and
  llama.cpp's server share); the order is by score, ties in the fused order.
- `chat`: listwise, with any chat model. The model gets the question and the numbered
  passages, each cut to an equal share of its input window, and answers with passage
  numbers, most relevant first, in one call. Numbers it does not name keep their fused
  order after the ones it names; numbers out of range or named twice are ignored, so a
  small model's loose answer still gives a permutation.
Nothing here talks to the database (ragpg.pg.rerank is the edge).
"""
from __future__ import annotations

import re
from collections.abc import Callable

from .errors import LimitExceeded

MAX_PASSAGES = 100          # rerank_k's ceiling: one call, and a prompt a model can read
MAX_PASSAGE_CHARS = 100_000  # a passage (rag.search sends chunks, far smaller)
PROMPT_TOKENS = 120         # the instructions and the question's frame, in tokens (about)

SYSTEM = ("You rank passages by how well they answer a question. Reply with the passage numbers only, "
          "most relevant first, separated by commas, e.g. 3, 1, 2.")


def listwise_messages(query: str, passages: list[str], window_tokens: int,
                      truncate: Callable[[str, int], str]) -> list[dict]:
    """The chat messages of a listwise ranking: the question and the numbered passages,
    each cut (by `truncate`, to a number of tokens) to an equal share of what the window
    leaves."""
    q = truncate(" ".join(query.split()), max(16, window_tokens // 4))
    share = max(8, (window_tokens - PROMPT_TOKENS - len(q) // 2) // max(len(passages), 1) - 4)
    lines = [f"[{i}] {truncate(' '.join(p.split()), share)}" for i, p in enumerate(passages, 1)]
    user = f"Question: {q}\n\nPassages:\n" + "\n".join(lines) + \
        f"\n\nRank all {len(passages)} passage numbers, most relevant first."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


_NUMBER = re.compile(r"\d{1,4}")


def parse_order(text: str, n: int) -> list[int]:
    """The model's answer as a permutation of range(n) (0-based): the numbers it named, in
    its order, then the others in their original order."""
    named, seen = [], set()
    for m in _NUMBER.finditer(text[:20_000]):
        i = int(m.group()) - 1
        if 0 <= i < n and i not in seen:
            seen.add(i)
            named.append(i)
    return named + [i for i in range(n) if i not in seen]


def order_by_scores(scores: list[float]) -> list[int]:
    """Indices by score, best first; ties keep the original (fused) order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def check_passages(passages: list[str]) -> None:
    """A reranking's input within bounds: at most MAX_PASSAGES passages of at most
    MAX_PASSAGE_CHARS each (rag.search stays within them; a direct caller of rag._rerank
    gets a clear error, not a huge provider call)."""
    if len(passages) > MAX_PASSAGES:
        raise LimitExceeded(f"rag._rerank: {len(passages)} passages, over the limit of {MAX_PASSAGES}",
                            hint="rerank at most 100 passages in a call (rag.search's rerank_k)")
    for i, p in enumerate(passages, 1):
        if p is not None and len(p) > MAX_PASSAGE_CHARS:
            raise LimitExceeded(f"rag._rerank: passage {i} is {len(p)} characters, over the limit of "
                                f"{MAX_PASSAGE_CHARS}", hint="rerank chunks, not whole documents")
