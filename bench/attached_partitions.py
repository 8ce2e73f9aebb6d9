"""What following an attached table's partitions costs (0.8.0): a partition detached,
truncated or dropped, and the event triggers' cost for DDL that has nothing to do with rag.

    .venv/bin/python bench/attached_partitions.py --dsn "$(bash scripts/localdb.sh dsn)" [--sizes 20000,100000]

Makes its own database (<dbname>_parts). For each size n: a table of n rows in 10 range
partitions, attached (sync) by its owner, whose documents are written as its trigger would
write them (no model is run: a document of one chunk with a random vector is not what is
measured). Timed, as the owner in its own session, each once per size (each changes the
table): DETACH PARTITION of one tenth (its rows' keys are read, their documents deleted),
TRUNCATE of one partition and DROP TABLE of another (which rows they held is not known:
the documents whose row is gone are found by reading the whole table and its documents,
rag._apply_gone), then TRUNCATE of 20 empty partitions added for it, in one statement
(each fires its trigger; since rag._truncated the first reads the table, the others not). Then --runs times: making and dropping 100 partitions of a table nobody
attached, with rag's event triggers enabled and disabled (ALTER EVENT TRIGGER ... DISABLE),
alternating; medians and their ratio. Writes bench/results/attached-partitions-<date>.json.
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


def fill(c, n: int) -> None:
    """Table public.notes of n rows in 10 partitions, attached by role bench, with documents."""
    step = n // 10
    c.execute("CREATE TABLE public.notes (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    for p in range(10):
        c.execute(f"CREATE TABLE public.notes_{p} PARTITION OF public.notes "
                  f"FOR VALUES FROM ({p * step + 1}) TO ({(p + 1) * step + 1})")
    c.execute("ALTER TABLE public.notes OWNER TO bench")
    for p in range(10):
        c.execute(f"ALTER TABLE public.notes_{p} OWNER TO bench")
    c.execute("SET ROLE bench")
    c.execute("SELECT rag.attach('public.notes', 'body')")
    c.execute("RESET ROLE")
    write_attached_rows(c, step * 10)   # rows and documents: no model


def timed(c, sql: str) -> float:
    t0 = time.perf_counter()
    c.execute(sql)
    return (time.perf_counter() - t0) * 1000


def ddl_round(c, tag: str) -> float:
    """100 partitions made and dropped on a table nobody attached, in ms."""
    t0 = time.perf_counter()
    c.execute(f"CREATE TABLE public.plain_{tag} (id int PRIMARY KEY, v text) PARTITION BY LIST (id)")
    for i in range(100):
        c.execute(f"CREATE TABLE public.plain_{tag}_{i} PARTITION OF public.plain_{tag} FOR VALUES IN ({i})")
    c.execute(f"DROP TABLE public.plain_{tag}")
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--sizes", default="20000,100000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        dsn = fresh_database(args.dsn, "parts")
        as_bench = bench_writer(dsn)
        with psycopg.connect(dsn, autocommit=True) as c:
            print(f"filling {n:,} attached rows in 10 partitions ...", flush=True)
            t0 = time.perf_counter()
            fill(c, n)
            print(f"  filled in {time.perf_counter() - t0:.0f} s", flush=True)
        with psycopg.connect(as_bench, autocommit=True) as c:
            docs = "SELECT count(*) FROM rag.documents"
            row = {"attached_rows": n, "partition_rows": n // 10}
            row["detach_ms"] = round(timed(c, "ALTER TABLE public.notes DETACH PARTITION public.notes_0"), 1)
            assert c.execute(docs).fetchone()[0] == n - n // 10
            row["truncate_ms"] = round(timed(c, "TRUNCATE public.notes_1"), 1)
            assert c.execute(docs).fetchone()[0] == n - 2 * (n // 10)
            row["drop_ms"] = round(timed(c, "DROP TABLE public.notes_2"), 1)
            assert c.execute(docs).fetchone()[0] == n - 3 * (n // 10)
            # 20 empty partitions truncated in one statement: each fires its trigger, and
            # what the table's rows are is the same for all of them
            for e in range(20):
                c.execute(f"CREATE TABLE public.notes_e{e} PARTITION OF public.notes "
                          f"FOR VALUES FROM ({n + 1 + e * 10}) TO ({n + 11 + e * 10})")
            row["truncate20_ms"] = round(timed(c, "TRUNCATE " + ", ".join(f"public.notes_e{e}" for e in range(20))), 1)
            assert c.execute(docs).fetchone()[0] == n - 3 * (n // 10)
            assert c.execute("SELECT count(*) FROM rag.check()").fetchone()[0] == 0
            print(f"  {n:,} rows: DETACH of {n // 10:,} {row['detach_ms']:,.0f} ms, TRUNCATE of a partition "
                  f"{row['truncate_ms']:,.0f} ms, DROP of a partition {row['drop_ms']:,.0f} ms, TRUNCATE of 20 "
                  f"empty partitions in one statement {row['truncate20_ms']:,.0f} ms", flush=True)
            rows.append(row)
    # the event triggers' cost for other DDL: enabled and disabled, alternating
    on, off = [], []
    with psycopg.connect(dsn, autocommit=True) as c:
        for r in range(args.runs):
            for enabled, into in ((True, on), (False, off)):
                c.execute(f"ALTER EVENT TRIGGER rag_partitions_changed {'ENABLE' if enabled else 'DISABLE'}")
                c.execute(f"ALTER EVENT TRIGGER rag_partitions_dropped {'ENABLE' if enabled else 'DISABLE'}")
                into.append(ddl_round(c, f"{r}_{int(enabled)}"))
        c.execute("ALTER EVENT TRIGGER rag_partitions_changed ENABLE")
        c.execute("ALTER EVENT TRIGGER rag_partitions_dropped ENABLE")
    ddl = {"ms_enabled_median": round(statistics.median(on), 1), "ms_disabled_median": round(statistics.median(off), 1),
           "ratio": round(statistics.median(on) / statistics.median(off), 3), "runs": args.runs}
    drop_database(args.dsn, "parts")
    print("\n| attached rows | DETACH PARTITION (1/10) | TRUNCATE of a partition | DROP of a partition "
          "| TRUNCATE of 20 empty partitions |\n|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['attached_rows']:,} | {r['detach_ms']:,.0f} ms | {r['truncate_ms']:,.0f} ms | {r['drop_ms']:,.0f} ms "
              f"| {r['truncate20_ms']:,.0f} ms |")
    print(f"\n100 partitions made and dropped on a table nobody attached: {ddl['ms_enabled_median']:,.0f} ms with rag's "
          f"event triggers, {ddl['ms_disabled_median']:,.0f} ms without ({ddl['ratio']:.2f}x; medians of {args.runs})")
    out = Path(args.out) / f"attached-partitions-{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "other_ddl": ddl,
                               "note": "documents written without the model (random vectors)"}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
