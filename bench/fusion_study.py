"""How should rag.search fuse its two legs? For every query of the shared eval sets, the
candidates of both legs (each leg's top 100) with both legs' exact scores, fetched once
from a database where `ragpg eval` loaded the sets (rag._search_legs, as rag.search calls
it), then fusion rules compared offline on exactly the same candidates, at 30 candidates
per leg (rag.search's default) and 100 (the eval's). docs/retrieval-quality.md has the
results.

    python bench/fusion_study.py --dsn "$(bash scripts/localdb.sh dsn)" [--cache /tmp/legs.json]

Scores as rag.evaluate computes them: nDCG@10 with linear gains, documents at their best
chunk's rank; for covid-qa-dev (answer spans), success@k: a top-k chunk comes from the
answer's article and contains the answer (whitespace-normalised, lower-cased, its first
200 characters), as ../shared/eval/README.md defines it.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SETS = ("cisi", "cranfield", "med", "covid-qa-dev")
DEPTH = 100


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def fetch(dsn: str, eval_dir: Path) -> dict:
    """Per set: each query's candidates (id, cosine, BM25, vector rank, lexical rank), the
    judgments, the answers and each chunk's (document, content)."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        for name in SETS:
            c.execute("SELECT set_config('rag.tenant', %s, false)", (f"eval:{name}",))
            # as rag.search sets it: at least the candidates asked for
            c.execute("SELECT set_config('hnsw.ef_search', greatest(rag._ef_search(%s), %s)::text, false)",
                      (f"eval:{name}", DEPTH))
            queries = c.execute("SELECT query_id, query FROM rag.eval_queries WHERE set_name = %s ORDER BY 1",
                                (name,)).fetchall()
            qrels = {}
            for q, d, g in c.execute("SELECT query_id, doc_source, grade FROM rag.eval_qrels WHERE set_name = %s",
                                     (name,)):
                qrels.setdefault(q, {})[d] = g
            answers = {}
            for q, d, a in c.execute("SELECT query_id, doc_source, answer FROM rag.eval_answers WHERE set_name = %s",
                                     (name,)):
                answers.setdefault(q, []).append((d, norm(a)[:200]))
            legs = {}
            for n, (qid, text) in enumerate(queries):
                r = c.execute("""SELECT ids, vector_scores, lexical_scores, vector_ranks, lexical_ranks
                                 FROM rag._search_legs(%s, 'hybrid', %s, %s, rag._setting('bm25_k1')::float8,
                                                       rag._setting('bm25_b')::float8, NULL, 'bm25', true, false)""",
                              (text, DEPTH, DEPTH)).fetchone()
                legs[qid] = [list(x) for x in zip(*r)]
                print(f"\r{name}: {n + 1}/{len(queries)} queries", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            chunks = {str(i): (src, content) for i, src, content in c.execute(
                "SELECT c.id, d.source, c.content FROM rag.chunks AS c JOIN rag.documents AS d ON d.id = c.document_id")}
            out[name] = {"legs": legs, "qrels": qrels, "answers": answers, "chunks": chunks}
    return out


# ---- fusion rules: candidates [(id, cosine, bm25, vector rank, lexical rank)] -> ids ----

def _minmax(xs):
    lo, hi = min(xs), max(xs)
    return [(x - lo) / (hi - lo) if hi > lo else 1.0 for x in xs]


def _zscore(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs)) or 1.0
    return [(x - m) / sd for x in xs]


def _within(rows, depth):
    return [r for r in rows if (r[3] is not None and r[3] <= depth) or (r[4] is not None and r[4] <= depth)]


def _order(ids, score, rows):
    return [i for _, _, i in sorted(zip(score, [r[3] or 10 ** 6 for r in rows], ids), key=lambda t: (-t[0], t[1], t[2]))]


def only(leg: str):
    def fuse(rows, depth):
        k = 3 if leg == "vector" else 4
        return [r[0] for r in sorted((r for r in rows if r[k] is not None and r[k] <= depth), key=lambda r: r[k])]
    return fuse


def rrf(c=60, wv=1.0, wl=1.0):
    def fuse(rows, depth):
        rows = _within(rows, depth)
        s = [(wv / (c + r[3]) if r[3] and r[3] <= depth else 0) + (wl / (c + r[4]) if r[4] and r[4] <= depth else 0)
             for r in rows]
        return _order([r[0] for r in rows], s, rows)
    return fuse


def convex(wv=1.0, wl=1.0, norm_fn=_minmax, clip_to_leg=False):
    """(wv * vector + wl * lexical) / (wv + wl), each normalised over the candidates
    (clip_to_leg: over that leg's own top, clipped at 0 below it)."""
    def fuse(rows, depth):
        rows = _within(rows, depth)
        if not rows:
            return []
        if clip_to_leg:
            nv, nl = [], []
            for k, out in ((3, nv), (4, nl)):
                own = [r[k - 2] for r in rows if r[k] is not None and r[k] <= depth] or [0.0]
                lo, hi = min(own), max(own)
                out += [max(0.0, (r[k - 2] - lo) / (hi - lo)) if hi > lo else 1.0 for r in rows]
        else:
            nv, nl = norm_fn([r[1] for r in rows]), norm_fn([r[2] for r in rows])
        s = [(wv * a + wl * b) / (wv + wl) for a, b in zip(nv, nl)]
        return _order([r[0] for r in rows], s, rows)
    return fuse


RULES = {
    "vector": only("vector"),
    "lexical": only("lexical"),
    "rrf c60 (0.3.0)": rrf(),
    "rrf c60, lexical 1.5": rrf(wl=1.5),
    "convex min-max 1:1 (0.4.0)": convex(),
    "convex min-max 2:3": convex(0.4, 0.6),
    "convex min-max 3:2": convex(0.6, 0.4),
    "convex z-score 1:1": convex(norm_fn=_zscore),
    "convex leg range, clipped 1:1": convex(clip_to_leg=True),
}


# ---- metrics ----

def ndcg10(ranked, chunks, rel):
    seen, docs = set(), []
    for i in ranked:
        d = chunks[str(i)][0]
        if d not in seen:
            seen.add(d)
            docs.append(d)
    dcg = sum(rel.get(d, 0) / math.log2(r + 2) for r, d in enumerate(docs[:10]))
    ideal = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(rel.values(), reverse=True)[:10]))
    return dcg / ideal if ideal else 0.0


def success(ranked, chunks, answers, k):
    for i in ranked[:k]:
        src, content = chunks[str(i)]
        text = norm(content)
        if any(src == doc and a in text for doc, a in answers):
            return 1.0
    return 0.0


def score(data, name, fuse, depth):
    d = data[name]
    vals = {"ndcg10": [], "s1": [], "s5": [], "s10": []}
    for qid, rows in d["legs"].items():
        ranked = fuse(rows, depth)
        if d["answers"]:
            ans = d["answers"].get(qid)
            if not ans:
                continue
            for k, key in ((1, "s1"), (5, "s5"), (10, "s10")):
                vals[key].append(success(ranked, d["chunks"], ans, k))
        vals["ndcg10"].append(ndcg10(ranked, d["chunks"], d["qrels"].get(qid, {})))
    return {k: sum(v) / len(v) for k, v in vals.items() if v}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--cache", default="/tmp/ragpg-fusion-legs.json")
    ap.add_argument("--eval-dir", default=str(ROOT.parent / "shared" / "eval"))
    args = ap.parse_args()
    cache = Path(args.cache)
    if not cache.exists():
        cache.write_text(json.dumps(fetch(args.dsn, Path(args.eval_dir))))
    data = json.loads(cache.read_text())
    print("| rule | candidates per leg | cisi nDCG@10 | cranfield nDCG@10 | med nDCG@10 "
          "| covid-qa-dev success@1 | success@5 | success@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for depth in (30, 100):
        for label, fuse in RULES.items():
            r = {s: score(data, s, fuse, depth) for s in SETS}
            c = r["covid-qa-dev"]
            print(f"| {label} | {depth} | " + " | ".join(f"{r[s]['ndcg10']:.3f}" for s in SETS[:3])
                  + f" | {c['s1']:.3f} | {c['s5']:.3f} | {c['s10']:.3f} |")


if __name__ == "__main__":
    main()
