"""Retrieved chunks -> an answer with [n] citations (the last stage of the data path).

Without an LLM (the default) the answer is extractive: the sentences of the retrieved
chunks that best answer the question, each followed by the marker of the chunk it came
from. A sentence is scored by the cosine between its embedding and the question's, plus
a bonus for the question's content words it holds (each weighted by how rare it is among
the candidate sentences, as IDF is: "coronavirus" in a set of articles about coronaviruses
says little, "heparan" much), for coming from a higher-ranked chunk, and for coming from
the best-ranked chunk's document (an answer from one article cites one article). At most
`max_sentences`, and a sentence that would take the answer past `max_words` is skipped
(the best one is always kept). Nothing scores above `min_similarity`: the answer is
NO_ANSWER and no citations. A lead-in ("To build an index without locking out writes:")
is one sentence with the code block, list item or sentence it introduces. Measured on
covid-qa-dev (docs/retrieval-quality.md).

Citations are numbered 1..m in order of first use, and every marker in the answer has
exactly one citation (nothing else is ever emitted), so a client can trust `[n]`.
`build_prompt` keeps the seed's prompt for the LLM path.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from . import interrupts
from .chunking import CHUNK_CHARS_MAX
from .citations import strip_markers

NO_ANSWER = "I don't have that in the docs."

SYSTEM_PROMPT = (
    "You answer strictly from the provided context.\n"
    "If the context doesn't contain the answer, say \"I don't have that in the docs.\"\n"
    "Always cite sources as [1], [2], ... matching the numbered chunks below."
)

_SENT = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n{2,}|\n(?=[-*#|] )")
_WORD = re.compile(r"[A-Za-z0-9_]+")
_STOP = frozenset("""a an and are as at be by can do does for from how i if in into is it its of on or
that the this to was what when where which who why will with you your""".split())


@dataclass
class Retrieved:
    chunk_id: int
    document_id: int
    content: str
    source: str | None = None
    title: str | None = None
    url: str | None = None      # with #page=N when the page is known
    heading: str | None = None  # where the chunk is: its heading path
    page: int | None = None     # and its page (PDF)


def build_prompt(question: str, chunks: list[Retrieved]) -> list[dict]:
    ctx = "\n\n".join(f"[{i + 1}] {c.content}" for i, c in enumerate(chunks))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Context:\n{ctx}\n\nQuestion: {question}"},
    ]


def answer_pieces(text: str, words: int = 4) -> list[str]:
    """An answer cut into pieces of a few words (with their spaces), for streaming."""
    toks = re.findall(r"\S+\s*", text)
    return ["".join(toks[i:i + words]) for i in range(0, len(toks), words)]


def sentences(text: str) -> list[str]:
    """Readable sentences of a chunk: markdown markers and code fences removed. A lead-in
    ("To create an index without locking out writes:") is one sentence with the piece it
    introduces (the code block, list item or sentence after it): alone it answers nothing."""
    text = re.sub(r"```[a-z]*", " ", text)
    pieces = [(re.sub(r"\s+", " ", re.sub(r"^\s*(#{1,6}|[-*])\s+", "", s)).strip(), s.lstrip().startswith("#"))
              for s in _SENT.split(text)]
    pieces = [(s, heading) for s, heading in pieces if s]
    out = []
    i = 0
    while i < len(pieces):
        s = pieces[i][0]
        # (a heading after it starts something else)
        if s.endswith(":") and i + 1 < len(pieces) and not pieces[i + 1][1] \
                and len(s) + 1 + len(pieces[i + 1][0]) <= 600:
            i += 1
            s += " " + pieces[i][0]
        i += 1
        if 20 <= len(s) <= 600 and len(_WORD.findall(s)) >= 4:
            out.append(s)
    return out


def _terms(text: str) -> set[str]:
    # a crude stem (first 6 letters) is enough to notice shared content words
    return {w.lower()[:6] for w in _WORD.findall(text) if w.lower() not in _STOP and len(w) > 2}


# the most text one answer reads, the chunks in rank order: eight of the longest chunks,
# hundreds of MiniLM's (60 chunks of 131,072 characters written by hand held 499 MB for a
# question: hostile review 43)
ANSWER_TEXT_CHARS = 8 * CHUNK_CHARS_MAX
SHARED_WEIGHT = 0.8   # the most the question's content words add (all of them, in one sentence)
RANK_WEIGHT = 0.2     # the first chunk's sentences get this much more, the second half, ...
DOC_WEIGHT = 0.1      # and every sentence of the first chunk's document this much


@dataclass
class Sentence:
    score: float
    similarity: float   # cosine to the question
    rank: int           # of the chunk it comes from
    text: str
    index: int          # into the candidates (and their vectors)


def score_sentences(question: str, qvec, chunks: list[Retrieved], embed,
                    shared_weight: float = SHARED_WEIGHT, rank_weight: float = RANK_WEIGHT,
                    doc_weight: float = DOC_WEIGHT) -> tuple[list[Sentence], object]:
    """Every sentence of the chunks with its score (module docstring), best first, and the
    sentences' unit vectors (rows in candidate order, for the near-duplicate check)."""
    cands: list[tuple[int, str]] = []
    left = ANSWER_TEXT_CHARS
    for rank, c in enumerate(chunks):
        if left <= 0:
            break
        interrupts.check_interrupts()
        # all of a chunk rag made, and a bound on one a writer wrote by hand (a 10 MB chunk
        # cost 20 s a question); the check between chunks keeps cancel within one chunk's work
        text = c.content[:min(CHUNK_CHARS_MAX, left)]
        left -= len(text)
        cands.extend((rank, s) for s in sentences(text))
    if not cands:
        return [], None
    vecs = embed([s for _, s in cands])
    cos = vecs @ qvec
    qterms = _terms(question)
    # each sentence's words once, and how many sentences hold each of the question's: linear
    # in the sentences' words (each question word against each sentence was 998 x 314,580
    # tests with no cancel for 9 s: hostile review 43)
    terms, df = [], Counter()
    for i, (_, s) in enumerate(cands):
        if i % 1024 == 0:
            interrupts.check_interrupts()
        ts = _terms(s)
        terms.append(ts)
        df.update(ts & qterms)
    idf = {t: math.log(1 + len(cands) / (1 + df[t])) for t in qterms}
    total = sum(idf.values()) or 1.0
    top_doc = chunks[0].document_id
    scored = []
    for i, ((rank, s), sim, ts) in enumerate(zip(cands, cos.tolist(), terms)):
        shared = sum(idf[t] for t in qterms & ts) / total
        # a lead-in to a list or code block ("To do X:") says little on its own
        lead_in = 0.1 if s.endswith(":") else 0.0
        same_doc = doc_weight if chunks[rank].document_id == top_doc else 0.0
        score = sim + shared_weight * shared + rank_weight / (rank + 1) + same_doc - lead_in
        scored.append(Sentence(score, sim, rank, s, i))
    scored.sort(key=lambda x: -x.score)   # stable: equal scores keep the chunks' order
    return scored, vecs


def pick_sentences(scored: list[Sentence], vecs, max_sentences: int = 3, min_similarity: float = 0.3,
                   max_words: int = 95) -> list[Sentence]:
    """The best sentences in score order, skipping those under min_similarity, near
    duplicates of one picked or text inside one picked or around it (overlapping chunks
    repeat sentences, one may end on a lead-in the other continues) and those that would take
    the answer past max_words (the first one is always kept)."""
    picked: list[Sentence] = []
    words = 0
    for c in scored:
        if len(picked) == max_sentences:
            break
        if c.similarity < min_similarity:   # (ordered by score, not by similarity: look further)
            continue
        if any(float(vecs[c.index] @ vecs[p.index]) > 0.95 or c.text in p.text or p.text in c.text for p in picked):
            continue
        n = len(c.text.split())
        if picked and words + n > max_words:
            continue
        picked.append(c)
        words += n
    return picked


def extractive_answer(question: str, qvec, chunks: list[Retrieved], embed,
                      max_sentences: int = 3, min_similarity: float = 0.3, max_words: int = 95) -> dict:
    """{answer, citations, ...}; `embed(list[str]) -> unit vectors` embeds sentences."""
    scored, vecs = score_sentences(question, qvec, chunks, embed)
    picked = pick_sentences(scored, vecs, max_sentences, min_similarity, max_words)
    return compose_answer(picked, chunks)


def compose_answer(picked: list[Sentence], chunks: list[Retrieved]) -> dict:
    """The picked sentences, each followed by its chunk's [n], and one citation per chunk
    used, numbered in order of first use; NO_ANSWER and no citations if none. A marker in
    a sentence's own text (an article's "[7]", or one a writer planted) is left out: it
    would read as one of ours, naming another citation or none (hostile review 43)."""
    if not picked:
        return {"answer": NO_ANSWER, "citations": []}
    number: dict[int, int] = {}
    parts, snippets = [], {}
    for p in picked:
        n = number.setdefault(p.rank, len(number) + 1)
        snippets.setdefault(p.rank, []).append(p.text)
        parts.append(f"{strip_markers(p.text)} [{n}]")
    citations = []
    for rank, n in number.items():
        c = chunks[rank]
        snippet = " ".join(snippets[rank])
        citations.append({
            "index": n, "chunk_id": c.chunk_id, "document_id": c.document_id,
            "source": c.source, "title": c.title, "url": c.url, "heading": c.heading, "page": c.page,
            "snippet": snippet if len(snippet) <= 300 else snippet[:297] + "...",
        })
    return {"answer": " ".join(parts), "citations": citations}
