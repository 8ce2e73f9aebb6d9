"""How should rag.search fuse its two legs? For every query of the shared eval sets, the
candidates of both legs (each leg's top 100) with both legs' exact scores, fetched once
from a database where `ragpg eval` loaded the sets (rag._search_legs, as rag.search calls
it), then fusion rules compared offline on exactly the same candidates, at 30 candidates
per leg (rag.search's default) and 100 (the eval's). docs/retrieval-quality.md has the
results.

    python bench/fusion_study.py --dsn "$(bash scripts/localdb.sh dsn)" [--cache /tmp/legs.json]
    python bench/fusion_study.py --dsn ... --rules 0.5.0 [--k1 0.9 --b 0.4]

--rules 0.5.0 compares 0.5.0's rule (min-max 1:1, the lexical score 0.7 BM25 + 0.3 the
best window's, plus 0.2 x proximity; the vector score averaged with the best window's, as
`rag.search` ranks) with other window shares and proximity weights, and variants of the
rule before the lexical windows (0.1 x proximity): fewer chunks of one article at the
top, a bonus for chunks both legs found, per-query leg weights; --k1 and
--b fetch the lexical leg with other BM25 parameters (each pair has its own cache).

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


def fetch(dsn: str, eval_dir: Path, k1: float | None = None, b: float | None = None) -> dict:
    """Per set: each query's candidates (id, vector score, BM25, vector rank, lexical rank,
    proximity, best window's BM25), the judgments, the answers and each chunk's (document, content). BM25 with
    the database's k1 and b unless given."""
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
                r = c.execute("""SELECT ids, vector_scores, lexical_scores, vector_ranks, lexical_ranks, proximities,
                                        window_lexical_scores
                                 FROM rag._search_legs(%s, 'hybrid', %s, %s,
                                                       coalesce(%s, rag._setting('bm25_k1')::float8),
                                                       coalesce(%s, rag._setting('bm25_b')::float8),
                                                       NULL, 'bm25', true, true)""",
                              (text, DEPTH, DEPTH, k1, b)).fetchone()
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
    def fuse(rows, depth, chunks=None):
        k = 3 if leg == "vector" else 4
        return [r[0] for r in sorted((r for r in rows if r[k] is not None and r[k] <= depth), key=lambda r: r[k])]
    return fuse


def rrf(c=60, wv=1.0, wl=1.0):
    def fuse(rows, depth, chunks=None):
        rows = _within(rows, depth)
        s = [(wv / (c + r[3]) if r[3] and r[3] <= depth else 0) + (wl / (c + r[4]) if r[4] and r[4] <= depth else 0)
             for r in rows]
        return _order([r[0] for r in rows], s, rows)
    return fuse


def convex(wv=1.0, wl=1.0, norm_fn=_minmax, clip_to_leg=False):
    """(wv * vector + wl * lexical) / (wv + wl), each normalised over the candidates
    (clip_to_leg: over that leg's own top, clipped at 0 below it)."""
    def fuse(rows, depth, chunks=None):
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


# ---- 0.5.0's rule and variants of it: rows also carry the proximity (r[5]) and the best
# window's BM25 (r[6]), and r[1] is the vector score as rag.search ranks by it (averaged
# with the best window's) ----

def _fused(rows, wp=0.2, wv=1.0, wl=1.0, a=0.3):
    """a: the best window's share of the lexical score (0: BM25 alone)."""
    nv, nl = _minmax([r[1] for r in rows]), _minmax([r[2] for r in rows])
    if a:
        nl = [(1 - a) * x + a * y for x, y in zip(nl, _minmax([r[6] for r in rows]))]
    return [(wv * x + wl * y) / (wv + wl) + wp * (r[5] or 0.0) for x, y, r in zip(nv, nl, rows)]


def shipped(wp=0.2, a=0.3):
    """0.5.0: min-max 1:1, the lexical score 0.7 BM25 + 0.3 the best window's, plus wp x
    proximity."""
    def fuse(rows, depth, chunks=None):
        rows = _within(rows, depth)
        return _order([r[0] for r in rows], _fused(rows, wp, a=a), rows) if rows else []
    return fuse


def per_article(cap, top=10):
    """At most cap chunks of one article among the first `top` (the rest follow in order)."""
    def fuse(rows, depth, chunks=None):
        first, later, seen = [], [], {}
        for i in shipped(0.1, a=0)(rows, depth):
            doc = chunks[str(i)][0]
            if len(first) < top and seen.get(doc, 0) < cap:
                seen[doc] = seen.get(doc, 0) + 1
                first.append(i)
            else:
                later.append(i)
        return first + later
    return fuse


def both_legs(beta, top=None):
    """CombMNZ-like: the fused score x (1 + beta) for a chunk in both legs' top `top`."""
    def fuse(rows, depth, chunks=None):
        rows = _within(rows, depth)
        t = top or depth
        s = [x * (1 + beta * (r[3] is not None and r[3] <= t and r[4] is not None and r[4] <= t))
             for x, r in zip(_fused(rows, 0.1, a=0), rows)]
        return _order([r[0] for r in rows], s, rows) if rows else []
    return fuse


def leg_confidence(kind, floor=0.25):
    """Per-query leg weights, each leg's share of the two legs' confidence: how far its best
    normalised score stands above the next (gap1) or above the mean of the next 10 (gap10);
    neither weight below floor."""
    def fuse(rows, depth, chunks=None):
        rows = _within(rows, depth)
        if not rows:
            return []
        nv, nl = _minmax([r[1] for r in rows]), _minmax([r[2] for r in rows])

        def gap(xs):
            xs = sorted(xs, reverse=True)
            if len(xs) < 2:
                return 1.0
            return xs[0] - (xs[1] if kind == "gap1" else sum(xs[1:11]) / len(xs[1:11]))
        gv, gl = gap(nv), gap(nl)
        wv = max(floor, gv / (gv + gl)) if gv + gl > 0 else 0.5
        wl = max(floor, 1 - wv)
        s = [(wv * a + wl * b) / (wv + wl) + 0.1 * (r[5] or 0.0) for a, b, r in zip(nv, nl, rows)]
        return _order([r[0] for r in rows], s, rows)
    return fuse


_YEAR = re.compile(r"\b(?:19|20)\d{2}\b")
_ETAL = re.compile(r"\bet al\b", re.I)
_LINK = re.compile(r"\bdoi\b|\bhttps?://", re.I)


def reference_likeness(text: str) -> float:
    """How much a chunk reads like a reference list: years, "et al" and links per word."""
    hits = len(_YEAR.findall(text)) + 2 * len(_ETAL.findall(text)) + 2 * len(_LINK.findall(text))
    return hits / max(len(text.split()), 1)


def references(w, scale=5.0):
    """0.5.0's score minus w x min(1, scale x reference_likeness): a reference list (or
    front matter full of years and links) sharing the question's words ranks lower."""
    def fuse(rows, depth, chunks=None):
        rows = _within(rows, depth)
        s = [x - w * min(1.0, scale * reference_likeness(chunks[str(r[0])][1])) for x, r in zip(_fused(rows, 0.1, a=0), rows)]
        return _order([r[0] for r in rows], s, rows) if rows else []
    return fuse


RULES_050 = {
    "vector": only("vector"),
    "lexical": only("lexical"),
    "0.5.0 before the lexical windows (min-max 1:1 + 0.1 proximity)": shipped(0.1, a=0),
    "same, proximity 0.2": shipped(0.2, a=0),
    "**0.5.0 (lexical 0.7 BM25 + 0.3 best window, + 0.2 proximity)**": shipped(),
    "lexical windows, proximity 0.1": shipped(0.1),
    "lexical windows, proximity 0.15": shipped(0.15),
    "lexical windows, proximity 0.25": shipped(0.25),
    "lexical windows 0.5, proximity 0.2": shipped(0.2, a=0.5),
    "at most 1 chunk of an article in the top 10": per_article(1),
    "at most 2": per_article(2),
    "at most 3": per_article(3),
    "at most 2 in the top 5": per_article(2, top=5),
    "x 1.1 if in both legs' top": both_legs(0.1),
    "x 1.3 if in both legs' top": both_legs(0.3),
    "x 1.2 if in both legs' top 10": both_legs(0.2, top=10),
    "leg weights by confidence, gap to the next 10": leg_confidence("gap10"),
    "leg weights by confidence, gap to the next": leg_confidence("gap1"),
    "- 0.05 x reference-likeness": references(0.05),
    "- 0.1 x reference-likeness": references(0.1),
    "- 0.2 x reference-likeness": references(0.2),
}

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
        ranked = fuse(rows, depth, d["chunks"])
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
    ap.add_argument("--cache", default="/tmp/ragpg-fusion-legs-v3.json")
    ap.add_argument("--eval-dir", default=str(ROOT.parent / "shared" / "eval"))
    ap.add_argument("--rules", choices=("0.4.0", "0.5.0"), default="0.4.0")
    ap.add_argument("--k1", type=float)
    ap.add_argument("--b", type=float)
    args = ap.parse_args()
    cache = Path(args.cache)
    if args.k1 is not None or args.b is not None:
        cache = cache.with_name(f"{cache.stem}-k1-{args.k1}-b-{args.b}{cache.suffix}")
    if not cache.exists():
        cache.write_text(json.dumps(fetch(args.dsn, Path(args.eval_dir), args.k1, args.b)))
    data = json.loads(cache.read_text())
    rules = RULES_050 if args.rules == "0.5.0" else RULES
    print("| rule | candidates per leg | cisi nDCG@10 | cranfield nDCG@10 | med nDCG@10 "
          "| covid-qa-dev success@1 | success@5 | success@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for depth in (30, 100):
        for label, fuse in rules.items():
            r = {s: score(data, s, fuse, depth) for s in SETS}
            c = r["covid-qa-dev"]
            print(f"| {label} | {depth} | " + " | ".join(f"{r[s]['ndcg10']:.3f}" for s in SETS[:3])
                  + f" | {c['s1']:.3f} | {c['s5']:.3f} | {c['s10']:.3f} |")


if __name__ == "__main__":
    main()
