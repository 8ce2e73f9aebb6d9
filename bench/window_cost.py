"""What window embeddings cost at ingest: the same documents of two shared eval sets (47
long covid-qa-dev articles, 300 cisi abstracts) ingested with rag.window_embeddings off,
then on, twice, in a tenant of their own (`bench:window-cost`, emptied before each pass),
one connection; medians. docs/benchmarks.md has the results.

    .venv/bin/python bench/window_cost.py --dsn "$(bash scripts/localdb.sh dsn)"
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import psycopg

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval"
SETS = {"covid-qa-dev": 47, "cisi": 300}
TENANT = "bench:window-cost"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--eval-dir", default=str(EVAL))
    args = ap.parse_args()
    print("| set | chunks | windows | seconds off | seconds on | on / off | chunks/s off | chunks/s on |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with psycopg.connect(args.dsn, autocommit=True) as c:
        c.execute("SELECT set_config('rag.tenant', %s, false)", (TENANT,))
        for name, n in SETS.items():
            with open(Path(args.eval_dir) / name / "corpus.jsonl") as f:
                docs = [json.loads(line) for line, _ in zip(f, range(n))]
            secs = {"off": [], "on": []}
            for _ in range(2):
                for mode in ("off", "on"):
                    c.execute("DELETE FROM rag.documents WHERE tenant = %s", (TENANT,))
                    c.execute("SELECT set_config('rag.window_embeddings', %s, false)", (mode,))
                    t0 = time.perf_counter()
                    for d in docs:
                        c.execute("SELECT rag.ingest(%s, %s)", (d["text"], d["_id"]))
                    secs[mode].append(time.perf_counter() - t0)
                    print(f"  {name} {mode}: {secs[mode][-1]:.1f} s", flush=True)
            chunks, windows = c.execute("SELECT count(*), coalesce(sum(cardinality(window_embeddings)), 0) "
                                        "FROM rag.chunks WHERE tenant = %s", (TENANT,)).fetchone()
            off, on = statistics.median(secs["off"]), statistics.median(secs["on"])
            print(f"| {name} | {chunks:,} | {windows:,} | {off:.1f} | {on:.1f} | {on / off:.2f}x | "
                  f"{chunks / off:.1f} | {chunks / on:.1f} |", flush=True)
        c.execute("DELETE FROM rag.documents WHERE tenant = %s", (TENANT,))
        c.execute("RESET rag.window_embeddings")


if __name__ == "__main__":
    main()
