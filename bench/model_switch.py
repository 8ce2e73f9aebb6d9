"""The database's share of an embedding model switch: how long a re-embedding batch takes
as the switch goes on, and that it does not grow with the chunks already done (hostile
review 48, F5: each batch read every chunk done before it, so a switch was quadratic).

    .venv/bin/python bench/model_switch.py --dsn "$(bash scripts/localdb.sh dsn)" [--sizes 20000,100000]

Makes its own database (<dbname>_switch). For each size n: n chunks of one text (written
with rag's triggers off: the lexical index is not what is measured), a switch to an
embedding model registered at an address where no server listens, and that text's vector
in the new model planted once, so every batch reuses it and no model runs: what is timed
is finding a batch's chunks and writing its rows (rag._reembed_batch(256), each in its own
transaction, as rag.work runs them, by a writer of the tenant under row-level security), then the last step (rag._finish_switch), which moves
every vector in one transaction (random vectors by then: see below). Medians of the first and the last 20 batches; their
ratio is 1.00 when a batch costs the same late as early. Writes
bench/results/model_switch-<date>.json.
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
from common import bench_writer, drop_database, fresh_database  # noqa: E402

TEXT = "The keeper climbs the stairs at dusk, trims the wick and lights the lamp of the lighthouse."
BATCH = 256


def fill(c, n: int) -> None:
    """n chunks of TEXT in one document of tenant bench, written without triggers."""
    c.execute("SET session_replication_role = replica")
    did = c.execute("INSERT INTO rag.documents (tenant, source, content, content_hash) "
                    "VALUES ('bench', 'switch.md', %s, sha256(convert_to(%s, 'UTF8'))) RETURNING id", (TEXT, TEXT)).fetchone()[0]
    for lo in range(0, n, 20000):   # (random vectors: HNSW indexes of one repeated vector build slowly)
        c.execute("""INSERT INTO rag.chunks (tenant, document_id, ord, content, tokens, content_hash, model, embedding)
                     SELECT 'bench', %s, g, %s, 20, sha256(convert_to(%s, 'UTF8')), 'all-MiniLM-L6-v2',
                            (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE g IS NOT NULL)::vector(384)
                     FROM generate_series(%s::int, %s::int) AS g""", (did, TEXT, TEXT, lo, min(n, lo + 20000) - 1))
    c.execute("RESET session_replication_role")
    c.execute("ANALYZE rag.chunks")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--sizes", default="20000,100000")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        dsn = fresh_database(args.dsn, "switch")
        as_bench = bench_writer(dsn)
        with psycopg.connect(dsn, autocommit=True) as su:
            print(f"filling {n:,} chunks ...", flush=True)
            fill(su, n)
            su.execute("SELECT rag.add_model('nowhere-embed', 'embed', base_url => 'http://127.0.0.1:9/v1', dimensions => 8)")
            su.execute("SET rag.tenant = 'bench'")   # (the switch is an admin's; rag.work runs as a writer)
            assert su.execute("SELECT rag.set_embedding_model('nowhere-embed')").fetchone()[0] == "building"
            su.execute("""INSERT INTO rag.embeddings_next (chunk_id, tenant, model, content_hash, embedding)
                          SELECT c.id, c.tenant, 'nowhere-embed', c.content_hash, '[1,0,0,0,0,0,0,0]'
                          FROM rag.chunks AS c ORDER BY c.id LIMIT 1""")
        with psycopg.connect(as_bench, autocommit=True) as c:   # the writer, under row-level security
            assert c.execute("SELECT rag.current_tenant()").fetchone()[0] == "bench"
            ms = []
            t_all = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                got = c.execute("SELECT rag._reembed_batch(%s)", (BATCH,)).fetchone()[0]
                ms.append((time.perf_counter() - t0) * 1000)
                if len(ms) % 50 == 0:
                    print(f"  batch {len(ms):,}: {ms[-1]:.1f} ms", flush=True)
                if got < BATCH:
                    break
            batches_s = time.perf_counter() - t_all
            # (the batches reused one vector; the last step inserts each into the new model's
            # HNSW index, where one vector repeated is a slow case no real switch has: random ones)
            c.execute("""UPDATE rag.embeddings_next AS x
                         SET embedding = (SELECT array_agg(random() - 0.5) FROM generate_series(1, 8)
                                          WHERE x.chunk_id IS NOT NULL)::vector(8)""")
            t0 = time.perf_counter()
            assert c.execute("SELECT rag._finish_switch()").fetchone()[0] is True
            finish_s = time.perf_counter() - t0
            assert c.execute("SELECT count(*) FROM rag.chunks WHERE model <> 'nowhere-embed'").fetchone()[0] == 0
        full = ms[:-1]   # (the last batch is the short one)
        first, last = statistics.median(full[:20]), statistics.median(full[-20:])
        row = {"chunks": n, "batches": len(ms), "first_20_ms_median": round(first, 2),
               "last_20_ms_median": round(last, 2), "last_over_first": round(last / first, 2),
               "batches_seconds": round(batches_s, 2), "finish_seconds": round(finish_s, 2)}
        print(f"  {n:,} chunks: {len(ms):,} batches in {batches_s:.1f} s; a batch {first:.1f} ms early, "
              f"{last:.1f} ms late ({row['last_over_first']:.2f}x); last step {finish_s:.1f} s", flush=True)
        rows.append(row)
        drop_database(args.dsn, "switch")
    print("\n| chunks | batches | first 20 (median) | last 20 (median) | last / first | all batches | last step |\n"
          "|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['chunks']:,} | {r['batches']:,} | {r['first_20_ms_median']:.1f} ms | {r['last_20_ms_median']:.1f} ms "
              f"| {r['last_over_first']:.2f} | {r['batches_seconds']:.1f} s | {r['finish_seconds']:.1f} s |")
    out = Path(args.out) / f"model_switch-{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "note": "one text in every chunk, its vector planted: no model runs; "
                               f"batches of {BATCH}"}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
