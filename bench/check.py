"""rag.check's cost: how long the check of a tenant's derived data takes as the corpus and
an attached table grow (it reads every visible document, chunk and statistic once, and
each attached table the caller owns), and that it stays linear.

    .venv/bin/python bench/check.py --dsn "$(bash scripts/localdb.sh dsn)" [--sizes 10000,100000]

Makes its own database (<dbname>_check). For each size n: n documents of one chunk each,
written with rag's triggers on (so the lexical index and its statistics are real), and
an attached table of n rows whose documents are those rows. No model is run: the chunks'
vectors are random unit vectors and the attached table's documents are written as its
sync trigger would write them (rag.check does not read vectors; the model's cost is not
what is measured). rag.check() is run --runs times as the tenant's writer, which owns the
table, connected as that role, then rag.resync() of the unchanged table (every row found by
its key through rag._apply_rows, nothing written); medians are reported. Writes bench/results/check-<date>.json.
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
from common import bench_writer, drop_database, fresh_database, write_attached_rows  # noqa: E402

WORDS = ("refund parcel invoice carrier warehouse return label customer order delivery courier "
         "payment receipt damage replacement voucher account address shipment tracking").split()


def fill(c, n: int) -> None:
    """n documents of one chunk each (tenant bench), and table notes of n attached rows."""
    c.execute("SET session_replication_role = replica")   # the documents: no chunking by the model
    c.execute("""
        INSERT INTO rag.documents (tenant, source, content, content_hash)
        SELECT 'bench', 'doc' || i, t.text, sha256(convert_to(t.text, 'UTF8'))
        FROM generate_series(1, %s) AS i,
             LATERAL (SELECT string_agg((%s::text[])[1 + (i * 7 + j * 13) %% 19], ' ') AS text
                      FROM generate_series(1, 40 + i %% 20) AS j) AS t""", (n, WORDS))
    c.execute("RESET session_replication_role")
    # the chunks, with the lexical index's triggers (5,000 a statement, as ingest writes them)
    for lo in range(0, n, 5000):
        c.execute("""
            INSERT INTO rag.chunks (tenant, document_id, ord, content, tokens, content_hash, model, embedding)
            SELECT d.tenant, d.id, 0, d.content, 60, d.content_hash, 'all-MiniLM-L6-v2',
                   (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE d.id IS NOT NULL)::vector(384)
            FROM rag.documents AS d WHERE d.tenant = 'bench' AND d.source LIKE 'doc%%'
            ORDER BY d.id OFFSET %s LIMIT 5000""", (lo,))
    c.execute("CREATE TABLE public.notes (id int PRIMARY KEY, body text)")
    c.execute("ALTER TABLE public.notes OWNER TO bench")
    c.execute("SET ROLE bench")
    c.execute("SELECT rag.attach('public.notes', 'body')")
    c.execute("RESET ROLE")
    write_attached_rows(c, n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        dsn = fresh_database(args.dsn, "check")
        as_bench = bench_writer(dsn)
        with psycopg.connect(dsn, autocommit=True) as c:
            print(f"filling {n:,} documents and {n:,} attached rows ...", flush=True)
            t0 = time.perf_counter()
            fill(c, n)
            print(f"  filled in {time.perf_counter() - t0:.0f} s", flush=True)
        # as the table's owner, in a session of its own (rag.check reads no table after SET ROLE)
        with psycopg.connect(as_bench, autocommit=True) as c:
            assert c.execute("SELECT rag.current_tenant()").fetchone()[0] == "bench"
            ms = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                found = c.execute("SELECT * FROM rag.check()").fetchall()
                ms.append((time.perf_counter() - t0) * 1000)
            assert found == [], found    # a healthy corpus: nothing to report
            # rag.resync of the unchanged table: every row through rag._apply_rows (found by
            # its key, compared, nothing written or embedded)
            rs = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                c.execute("SELECT rag.resync('public.notes')")
                rs.append((time.perf_counter() - t0) * 1000)
            assert c.execute("SELECT count(*) FROM rag.documents WHERE attachment_id IS NOT NULL").fetchone()[0] == n
            chunks = c.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
            row = {"documents": 2 * n, "chunks": chunks, "attached_rows": n,
                   "check_ms_median": round(statistics.median(ms), 1), "check_ms": [round(x, 1) for x in ms],
                   "resync_ms_median": round(statistics.median(rs), 1), "resync_ms": [round(x, 1) for x in rs]}
            print(f"  {row['documents']:,} documents, {chunks:,} chunks, {n:,} attached rows: "
                  f"rag.check() median {row['check_ms_median']:,.0f} ms, rag.resync() of the unchanged table "
                  f"{row['resync_ms_median']:,.0f} ms ({args.runs} runs)", flush=True)
            rows.append(row)
        drop_database(args.dsn, "check")
    print("\n| documents | chunks | attached rows | rag.check() median | rag.resync() median |\n|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['documents']:,} | {r['chunks']:,} | {r['attached_rows']:,} | {r['check_ms_median']:,.0f} ms "
              f"| {r['resync_ms_median']:,.0f} ms |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\ncost per chunk grows {b['check_ms_median'] / b['chunks'] / (a['check_ms_median'] / a['chunks']):.2f}x "
              f"from {a['chunks']:,} to {b['chunks']:,} chunks (1.00 = linear)")
    out = Path(args.out) / f"check-{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "note": "documents and chunks written without the model "
                               "(random vectors); the lexical index by rag's own triggers"}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
