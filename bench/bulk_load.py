"""Bulk load of N documents via COPY into an attached table, sync vs async.

usage: .venv/bin/python bench/bulk_load.py --dsn "$(bash scripts/localdb.sh dsn)" [--rows 10000]
Documents are real sentences of the PostgreSQL manual (one short document each). Prints
rows/s, model runs and the share of wall time spent in the model, per mode.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plpy"))


def sentences(n: int) -> list[str]:
    from ragpg.text import to_text
    out, seen = [], set()
    for p in sorted(Path("/usr/share/doc/postgresql-doc-15/html").glob("*.html")):
        text, _ = to_text(p.read_text(errors="replace"), "html")
        for s in re.split(r"(?<=[.!?])\s+", text):
            s = " ".join(s.split())
            if 40 <= len(s) <= 300 and s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) == n:
                    return out
    return out


def copy_rows(conn, rows):
    with conn.cursor() as cur, cur.copy("COPY bulk (id, body) FROM STDIN") as cp:
        for i, s in enumerate(rows):
            cp.write_row((i, s))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rows = sentences(args.rows)
    admin = psycopg.connect(args.dsn, autocommit=True)
    results = {}
    for mode in ("sync", "async"):
        admin.execute("DROP DATABASE IF EXISTS ragbulk WITH (FORCE)")
        admin.execute("CREATE DATABASE ragbulk")
        dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname="ragbulk")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION rag CASCADE")
            conn.execute("CREATE TABLE bulk (id int PRIMARY KEY, body text)")
            conn.execute("SELECT rag.attach('bulk', 'body', mode => %s)", (mode,))
            conn.execute("SELECT rag.embed('warm up')")
            s0 = conn.execute("SELECT rag.backend_stats()").fetchone()[0]
            t0 = time.perf_counter()
            copy_rows(conn, rows)
            t_copy = time.perf_counter() - t0
            s1 = conn.execute("SELECT rag.backend_stats()").fetchone()[0]
        embed_s, runs = s1["embed_seconds"] - s0["embed_seconds"], s1["model_calls"] - s0["model_calls"]
        t_drain = 0.0
        if mode == "async":
            stats = []

            def worker():
                with psycopg.connect(dsn, autocommit=True) as c:
                    c.execute("SELECT rag.embed('warm up')")
                    a = c.execute("SELECT rag.backend_stats()").fetchone()[0]
                    c.execute("CALL rag.work()")
                    b = c.execute("SELECT rag.backend_stats()").fetchone()[0]
                    stats.append((b["embed_seconds"] - a["embed_seconds"], b["model_calls"] - a["model_calls"]))
            t0 = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(args.workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            t_drain = time.perf_counter() - t0
            embed_s, runs = sum(s[0] for s in stats), sum(s[1] for s in stats)
        with psycopg.connect(dsn, autocommit=True) as conn:
            docs, chunks = conn.execute("SELECT (SELECT count(*) FROM rag.documents), (SELECT count(*) FROM rag.chunks)").fetchone()
        total = t_copy + t_drain
        conns = 1 if mode == "sync" else args.workers
        results[mode] = {
            "rows": len(rows), "documents": docs, "chunks": chunks,
            "copy_seconds (the user's statement)": round(t_copy, 2),
            "copy_rows_per_s": round(len(rows) / t_copy, 1),
            "drain_seconds (rag.work)": round(t_drain, 1) if mode == "async" else None,
            "end_to_end_rows_per_s": round(len(rows) / total, 1),
            "model_runs": runs,
            "share_of_connection_time_in_model": round(embed_s / (total if mode == "sync" else t_drain * conns), 3),
        }
        print(mode, json.dumps(results[mode]), flush=True)
    admin.execute("DROP DATABASE IF EXISTS ragbulk WITH (FORCE)")
    print(json.dumps(results, indent=2))
    import datetime
    out = Path(__file__).resolve().parent / "results" / f"bulk-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
