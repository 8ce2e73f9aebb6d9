"""Search for one tenant among 50: all tenants in one table (the default partition) vs the
tenant in partitions of its own (rag.create_tenant_partition).

    .venv/bin/python bench/partitions.py --dsn "$(bash scripts/localdb.sh dsn)" [--per-tenant 1000]

Makes its own database (<dbname>_parts). The chunks are real: text and MiniLM embeddings
of the PostgreSQL manual (ingested once, --pages pages), copied to 50 tenants with small
noise on the vectors (each tenant's copy is a near-duplicate corpus, as real tenants of
one product are), so the lexical leg sees real text and HNSW real-like vectors. Queries
are rag.search(k => 8) as the tenant, median and p95 of --queries runs, in one session.
Writes bench/results/partitions-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import drop_database, fresh_database  # noqa: E402

QUERIES = ["create an index without locking writes", "vacuum full versus vacuum", "see running queries",
           "grant select on a table", "partial index", "default port", "how sequences work",
           "explain analyze output", "tablespace location", "role that can log in"]


def _timed(conn, tenant: str, mode: str, n: int) -> dict:
    conn.execute("SELECT set_config('rag.tenant', %s, false)", (tenant,))
    for q in QUERIES:  # warm: the query embeddings are cached per backend, as in a real app
        conn.execute("SELECT count(*) FROM rag.search(%s, 8, mode => %s)", (q, mode))
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        conn.execute("SELECT count(*) FROM rag.search(%s, 8, mode => %s)", (QUERIES[i % len(QUERIES)], mode))
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--tenants", type=int, default=50)
    ap.add_argument("--per-tenant", type=int, default=1000, help="chunks per tenant")
    ap.add_argument("--pages", type=int, default=120)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--docs", default="/usr/share/doc/postgresql-doc-15/html")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()

    dsn = fresh_database(args.dsn, "parts")
    tenants = [f"t{i:02d}" for i in range(args.tenants)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET rag.tenant = 'seed'")
        t0 = time.perf_counter()
        for f in sorted(Path(args.docs).glob("*.html"))[: args.pages]:
            conn.execute("INSERT INTO rag.documents (source, content, metadata) VALUES (%s, %s, "
                         "'{\"format\": \"html\"}')", (f.name, f.read_text(errors="replace")))
        seed = conn.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
        print(f"seed corpus: {args.pages} pages, {seed} chunks embedded in {time.perf_counter() - t0:.0f} s", flush=True)
        conn.execute("""CREATE TEMP TABLE seed AS SELECT row_number() OVER (ORDER BY id) - 1 AS rn, content, heading,
                        tokens, model, embedding FROM rag.chunks WHERE tenant = 'seed'""")
        t0 = time.perf_counter()
        for n, t in enumerate(tenants):
            conn.execute("SELECT set_config('rag.tenant', %s, false)", (t,))
            doc = conn.execute("INSERT INTO rag.documents (source, content) VALUES ('corpus', 'x') RETURNING id"
                               ).fetchone()[0]
            conn.execute("DELETE FROM rag.chunks WHERE document_id = %s", (doc,))
            # the seed's chunks, repeated to --per-tenant, vectors + N(0, 0.01) noise, renormalised
            conn.execute("""
                INSERT INTO rag.chunks (tenant, document_id, ord, content, heading, tokens, content_hash, model, embedding)
                SELECT %s, %s, g.i, s.content, s.heading, s.tokens, sha256(convert_to(s.content || g.i, 'UTF8')), s.model,
                       l2_normalize((SELECT array_agg(x + 0.01 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))
                                     FROM unnest(s.embedding::real[]) AS x)::vector)
                FROM generate_series(0, %s - 1) AS g (i) JOIN seed AS s ON s.rn = g.i %% %s""",
                         (t, doc, args.per_tenant, seed))
            if (n + 1) % 10 == 0:
                print(f"  {n + 1}/{len(tenants)} tenants, {time.perf_counter() - t0:.0f} s", flush=True)
        conn.execute("DELETE FROM rag.documents WHERE tenant = 'seed'")
        conn.execute("VACUUM ANALYZE")
        total = conn.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
        print(f"{total} chunks in {len(tenants)} tenants", flush=True)

        probe = tenants[len(tenants) // 2]
        res = {"date": datetime.date.today().isoformat(), "tenants": len(tenants), "chunks": total,
               "per_tenant": args.per_tenant, "queries": args.queries, "one_table": {}, "own_partition": {}}
        for mode in ("vector", "hybrid"):
            res["one_table"][mode] = _timed(conn, probe, mode, args.queries)
            print(f"one table, {mode}: {res['one_table'][mode]}", flush=True)
        t0 = time.perf_counter()
        conn.execute("RESET rag.tenant")
        conn.execute("SELECT rag.create_tenant_partition(%s)", (probe,))
        res["create_partition_s"] = round(time.perf_counter() - t0, 2)
        for mode in ("vector", "hybrid"):
            res["own_partition"][mode] = _timed(conn, probe, mode, args.queries)
            print(f"own partition, {mode}: {res['own_partition'][mode]}", flush=True)
    print("\n| layout | vector p50 | vector p95 | hybrid p50 | hybrid p95 |\n|---|---|---|---|---|")
    for name, key in (("one table (default partition)", "one_table"), ("tenant's own partition", "own_partition")):
        r = res[key]
        print(f"| {name} | {r['vector']['p50_ms']} ms | {r['vector']['p95_ms']} ms | "
              f"{r['hybrid']['p50_ms']} ms | {r['hybrid']['p95_ms']} ms |")
    for mode in ("vector", "hybrid"):
        res[f"{mode}_p50_ratio"] = round(res["one_table"][mode]["p50_ms"] / res["own_partition"][mode]["p50_ms"], 2)
    print(f"p50 one table / own partition: vector {res['vector_p50_ratio']}x, hybrid {res['hybrid_p50_ratio']}x")
    out = Path(args.out) / f"partitions-{res['date']}.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    drop_database(args.dsn, "parts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
