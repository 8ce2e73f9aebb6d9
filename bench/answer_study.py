"""How should the extractive answerer pick its sentences? covid-qa-dev's first N questions
(rag.evaluate_answers' order) with the chunks rag.search retrieves for them (k 8, as
rag.ask does), fetched once from a database where `ragpg eval` loaded the set; then
ragpg.answer's stages (score_sentences -> pick_sentences -> compose_answer) run here with
the installed model, once as they are and once per variant of the sentence score, each
answer scored as rag.evaluate_answers scores it (the gold answer's english lexemes found in
the answer; citations whose document is the answer's article). The first row reproduces
`rag.evaluate_answers('covid-qa-dev', questions => N)` exactly. docs/retrieval-quality.md
has the results.

    .venv/bin/python bench/answer_study.py --dsn "$(bash scripts/localdb.sh dsn)" [--questions 200]

The model runs in this process from the installed release (/usr/local/lib/ragpg/<version>:
its models and its Python packages), so the Python must be the server's version (3.11).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SET = "covid-qa-dev"
WORD = re.compile(r"[A-Za-z0-9_]+")
# a question asking for an amount, a date or a duration
NUMERIC_QUESTION = re.compile(r"(?i)\s*(how (many|much|long|old|often)"
                              r"|what (percentage|proportion|year|number|rate)|when)\b")
# bibliography entries: "1991;65:4-21", "12(3), 45-67", DOIs, PubMed ids, links, "et al"
REFERENCE = re.compile(r"\b(?:1[89]|20)\d{2}\s*;\s*\d+\s*(?:\(\s*[\w-]+\s*\))?\s*:\s*[eE]?\d+"
                       r"|\b\d+\s*\(\s*\d+\s*\)\s*[,:]\s*\d+\s*[-–]\s*\d+|\bdoi\b|\bPMID\b|https?://|\bet al\b", re.I)


def fetch(conn, n: int) -> list[dict]:
    """Per question: its text, gold answers (article, english lexemes, normalised text) and
    the chunks rag.search retrieves for it."""
    conn.execute("SELECT set_config('rag.tenant', %s, false)", (f"eval:{SET}",))
    out = []
    qs = conn.execute("""SELECT q.query_id, q.query FROM rag.eval_queries AS q WHERE q.set_name = %s
                         AND EXISTS (SELECT 1 FROM rag.eval_answers AS a WHERE a.set_name = q.set_name
                                     AND a.query_id = q.query_id)
                         ORDER BY q.query_id LIMIT %s""", (SET, n)).fetchall()
    for i, (qid, q) in enumerate(qs):
        gold = conn.execute("""SELECT doc_source, tsvector_to_array(to_tsvector('english', answer)),
                                      rag._eval_text(answer, true)
                               FROM rag.eval_answers WHERE set_name = %s AND query_id = %s""", (SET, qid)).fetchall()
        hits = conn.execute("""SELECT s.chunk_id, s.document_id, d.source, s.content FROM rag.search(%s, 8) AS s
                               JOIN rag.documents AS d ON d.id = s.document_id ORDER BY s.score DESC""",
                            (q,)).fetchall()
        out.append({"q": q, "gold": gold, "hits": hits})
        print(f"\rfetching: {i + 1}/{len(qs)} questions", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def load_release(conn):
    """ragpg.answer from this checkout, the embedder and its packages from the installed release."""
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'rag'").fetchone()[0]
    lib = Path(f"/usr/local/lib/ragpg/{version}")
    sys.path.insert(0, str(ROOT / "plpy"))
    sys.path.append(str(lib / "deps"))
    os.environ.setdefault("RAGPG_MODELS", str(lib / "models"))
    import numpy as np
    from ragpg import answer, embedding

    model, cache = embedding.get_embedder(), {}

    def embed(texts):
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            cache.update(zip(new, model.embed(new, 1)))   # batch size 1, as rag's default
        return np.stack([cache[t] for t in texts])
    return answer, embed


def as_matched(conn, texts: list[str]) -> list[tuple[set[str], str]]:
    """Each answer as rag.evaluate_answers matches it: its english lexemes and its text
    through rag._eval_text."""
    rows = conn.execute("SELECT tsvector_to_array(to_tsvector('english', t)), rag._eval_text(t) "
                        "FROM unnest(%s::text[]) WITH ORDINALITY AS u (t, i) ORDER BY i", (texts,)).fetchall()
    return [(set(w), n) for w, n in rows]


def bigrams(text: str, stop) -> set:
    ws = [w.lower() for w in WORD.findall(text)]
    return {(a, b) for a, b in zip(ws, ws[1:]) if not (a in stop and b in stop)}


def variants(answer):
    """name -> (score_sentences keyword arguments, extra(question, chunks, sentence) -> added score,
    keep(picked sentences' first chunk document, chunks, sentence) or None)."""
    def bigram(w):
        def extra(q, chunks, s):
            qb = bigrams(q, answer._STOP)
            return w * len(qb & bigrams(s.text, answer._STOP)) / len(qb) if qb else 0.0
        return extra

    def numeric(w):
        return lambda q, chunks, s: w if NUMERIC_QUESTION.match(q) and re.search(r"\d", s.text) else 0.0

    def references(w):
        return lambda q, chunks, s: -w if len(REFERENCE.findall(chunks[s.rank].content)) >= 3 else 0.0

    return {
        "0.5.0 (ragpg.answer as it is)": ({}, None, False),
        "only sentences of the first picked sentence's article": ({}, None, True),
        "document bonus 0.2": ({"doc_weight": 0.2}, None, False),
        "document bonus 0.15": ({"doc_weight": 0.15}, None, False),
        "question words up to 1.0": ({"shared_weight": 1.0}, None, False),
        "+ 0.2 x share of the question's word pairs (bigrams) in the sentence": ({}, bigram(0.2), False),
        "+ 0.6 x share of the question's word pairs": ({}, bigram(0.6), False),
        "+ 0.1 for a number, when the question asks how many/much/long, when...": ({}, numeric(0.1), False),
        "- 0.3 for a sentence that is a question": ({}, lambda q, c, s: -0.3 if s.text.endswith("?") else 0.0, False),
        "- 0.2 for sentences of reference-list chunks (3+ bibliography patterns)": ({}, references(0.2), False),
        "- 0.5 for sentences of reference-list chunks": ({}, references(0.5), False),
    }


def run(answer, embed, data, kwargs, extra, one_article) -> list[dict]:
    outs = []
    for item in data:
        chunks = [answer.Retrieved(h[0], h[1], h[3], h[2]) for h in item["hits"]]
        if not chunks:
            outs.append({"answer": answer.NO_ANSWER, "citations": []})
            continue
        scored, vecs = answer.score_sentences(item["q"], embed([item["q"]])[0], chunks, embed, **kwargs)
        if extra is not None:
            for s in scored:
                s.score += extra(item["q"], chunks, s)
            scored.sort(key=lambda s: -s.score)
        if one_article and scored:
            doc = chunks[scored[0].rank].document_id
            scored = [s for s in scored if chunks[s.rank].document_id == doc]
        outs.append(answer.compose_answer(answer.pick_sentences(scored, vecs), chunks))
    return outs


def score(conn, data, outs) -> dict:
    texts = [o["answer"] for o in outs]
    matched = as_matched(conn, texts)
    gold = half = exact = cites = right = words = 0.0
    for item, o, (have, text) in zip(data, outs, matched):
        share = max((len(set(w) & have) / len(set(w)) if w else float(n in text))
                    for _, w, n in item["gold"])
        gold += share
        half += share >= 0.5
        exact += any(n in text for _, _, n in item["gold"])
        srcs = {g[0] for g in item["gold"]}
        cites += len(o["citations"])
        right += sum(c["source"] in srcs for c in o["citations"])
        words += len(o["answer"].split())
    n = len(data)
    return {"gold": gold / n, "half": half / n, "exact": exact / n, "cites": right / max(cites, 1), "words": words / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--questions", type=int, default=200)
    args = ap.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        answer, embed = load_release(conn)
        data = fetch(conn, args.questions)
        print(f"| covid-qa-dev, first {len(data)}, extractive, k 8 | gold words | >= half | all of it "
              "| citations right | mean words |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, (kwargs, extra, one_article) in variants(answer).items():
            r = score(conn, data, run(answer, embed, data, kwargs, extra, one_article))
            print(f"| {name} | {r['gold']:.3f} | {r['half']:.3f} | {r['exact']:.3f} | {r['cites']:.3f} "
                  f"| {r['words']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
