"""Where a search's milliseconds go: rag.search and its parts, and the seed pattern's,
medians over the same queries on one connection each (a stage of `make bench`, or alone):

    .venv/bin/python bench/search_profile.py --dsn "host=127.0.0.1 port=55432 user=postgres dbname=manual010"

Works on any release of the extension (only public functions are called), so the same
command profiles a database before and after an upgrade. Every query text is new to the
backend where the embedding cache would otherwise answer ("uncached"); "cached" repeats a
query the backend has just embedded.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SEED_LEX, SEED_VEC, SeedClient, queries  # noqa: E402


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def profile(dsn: str, qs: list[str]) -> dict:
    """Medians in ms per part; each part runs over all of `qs` (a suffix per part keeps the
    texts new to the embedding cache)."""
    out: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as rag, psycopg.connect(dsn, autocommit=True) as app:
        seed = SeedClient(app)
        rag.execute("SELECT * FROM rag.search('warm up', 8)").fetchall()
        seed("warm up")

        def part(name: str, fn) -> None:
            out[name] = round(statistics.median(fn(q) for q in qs), 3)

        part("round trip (SELECT 1)", lambda q: _ms(lambda: rag.execute("SELECT 1").fetchall()))
        part("query embedding, plain Python (same model file)", lambda q: _ms(lambda: seed.embedder.embed([q + " ~"], 1)))
        part("rag.embed, uncached", lambda q: _ms(lambda: rag.execute("SELECT rag.embed(%s)", (q + " ~",)).fetchall()))
        part("rag.embed, cached", lambda q: _ms(lambda: rag.execute("SELECT rag.embed(%s)", (q + " ~",)).fetchall()))
        vecs = {q: rag.execute("SELECT rag.embed(%s)::text", (q + " ~",)).fetchone()[0] for q in qs}
        part("seed: vector query", lambda q: _ms(lambda: app.execute(SEED_VEC, (vecs[q], vecs[q])).fetchall()))
        part("seed: full-text query", lambda q: _ms(lambda: app.execute(SEED_LEX, (q, q)).fetchall()))
        part("seed pattern (embed + 2 queries + RRF)", lambda q: _ms(lambda: seed(q + " #")))
        part("rag.bm25(q, 30)", lambda q: _ms(lambda: rag.execute("SELECT * FROM rag.bm25(%s, 30)", (q,)).fetchall()))
        part("rag.search lexical", lambda q: _ms(lambda: rag.execute(
            "SELECT * FROM rag.search(%s, 8, mode => 'lexical')", (q,)).fetchall()))
        part("rag.search vector, cached embedding", lambda q: _ms(lambda: rag.execute(
            "SELECT * FROM rag.search(%s, 8, mode => 'vector')", (q + " ~",)).fetchall()))
        part("rag.search hybrid, cached embedding", lambda q: _ms(lambda: rag.execute(
            "SELECT * FROM rag.search(%s, 8)", (q + " ~",)).fetchall()))
        part("rag.search hybrid, uncached", lambda q: _ms(lambda: rag.execute(
            "SELECT * FROM rag.search(%s, 8)", (q + " #",)).fetchall()))
    out["derived: rag.search hybrid overhead (cached hybrid - cached vector - lexical + round trip)"] = round(
        out["rag.search hybrid, cached embedding"] - out["rag.search vector, cached embedding"]
        - out["rag.search lexical"] + out["round trip (SELECT 1)"], 3)
    out["derived: query embedding through SQL / plain Python"] = round(
        out["rag.embed, uncached"] / out["query embedding, plain Python (same model file)"], 2)
    out["derived: seed / rag.search hybrid (uncached)"] = round(
        out["seed pattern (embed + 2 queries + RRF)"] / out["rag.search hybrid, uncached"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'rag'").fetchone()[0]
        chunks = conn.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
        qs = queries(conn, args.queries)
    res = {"rag": version, "chunks": chunks, "queries": len(qs), "median_ms": profile(args.dsn, qs)}
    width = max(map(len, res["median_ms"]))
    print(f"rag {version}, {chunks:,} chunks, {len(qs)} queries: median ms")
    for k, v in res["median_ms"].items():
        print(f"  {k:<{width}}  {v}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
