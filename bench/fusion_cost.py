"""What a fusion option costs per search: the same questions of eval sets loaded by `make
eval`, each option alternated with the others on one connection (embeddings cached: the
first pass embeds every question), medians of rag.search(q, 8, ...) in ms; an option is
rag.window_embeddings (on: window embeddings rescore the vector leg), rag.lexical_windows
(on: the lexical score mixes in the best window's BM25) and rag.search's arguments.

    .venv/bin/python bench/fusion_cost.py --dsn "$(bash scripts/localdb.sh dsn)" \
        [--set covid-qa-dev --set cranfield] [--queries 200]
"""
from __future__ import annotations

import argparse
import statistics
import time

import psycopg

# (rag.window_embeddings, rag.lexical_windows, rag.search's extra arguments)
OPTIONS = {
    "convex + proximity + windows + lexical windows (0.5.0)": ("on", "on", ""),
    "convex + proximity + windows": ("on", "off", ""),
    "convex + proximity": ("off", "off", ""),
    "convex (0.4.0)": ("off", "off", ", proximity_weight => 0"),
    "rrf (0.3.0)": ("off", "off", ", fusion => 'rrf'"),
    "vector + windows": ("on", "off", ", mode => 'vector'"),
    "vector": ("off", "off", ", mode => 'vector'"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--set", action="append", dest="sets")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    print("| set (chunks) | " + " | ".join(f"{o} p50 ms" for o in OPTIONS) + " |")
    print("|---|" + "---:|" * len(OPTIONS))
    with psycopg.connect(args.dsn, autocommit=True) as c:
        for name in args.sets or ["covid-qa-dev", "cranfield"]:
            c.execute("SELECT set_config('rag.tenant', %s, false)", (f"eval:{name}",))
            chunks = c.execute("SELECT count(*) FROM rag.chunks WHERE tenant = rag.current_tenant()").fetchone()[0]
            qs = [q for (q,) in c.execute("SELECT query FROM rag.eval_queries WHERE set_name = %s ORDER BY query_id "
                                          "LIMIT %s", (name, args.queries))]
            for q in qs:   # embed each question once (the backend's query cache)
                c.execute("SELECT count(*) FROM rag.search(%s, 8)", (q,))
            times = {o: [] for o in OPTIONS}
            for q in qs:
                for o, (windows, lexical_windows, extra) in OPTIONS.items():
                    c.execute("SELECT set_config('rag.window_embeddings', %s, false), "
                              "set_config('rag.lexical_windows', %s, false)", (windows, lexical_windows))
                    t0 = time.perf_counter()
                    c.execute(f"SELECT count(*) FROM rag.search(%s, 8{extra})", (q,)).fetchone()
                    times[o].append((time.perf_counter() - t0) * 1000)
            print(f"| {name} ({chunks:,}) | " + " | ".join(f"{statistics.median(t):.2f}" for t in times.values())
                  + " |", flush=True)
            c.execute("RESET rag.window_embeddings; RESET rag.lexical_windows")


if __name__ == "__main__":
    main()
