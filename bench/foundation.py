"""Foundation numbers: rag.search and rag.ask latency (median of 20 distinct questions),
and the resident memory of a backend after the model loads.

usage: .venv/bin/python bench/foundation.py --dsn "$(bash scripts/localdb.sh dsn)"
The database must hold a corpus (e.g. after `make demo`). RSS is read from /proc, so the
server must run on this machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import psycopg

QUESTIONS = [
    "How do I create an index without blocking writes?", "What does VACUUM FULL do?",
    "How can I see running queries?", "How do I change a column's data type?",
    "What is a partial index?", "How do I set up streaming replication?",
    "What is the default transaction isolation level?", "How do I grant select on all tables?",
    "How does point in time recovery work?", "What is the maximum size of a text value?",
    "How do I list all databases in psql?", "What does EXPLAIN ANALYZE show?",
    "How do I create a foreign key?", "What is a tablespace?", "How do I use COPY to load a CSV file?",
    "How do window functions work?", "What is the difference between json and jsonb?",
    "How do I write a recursive query?", "How does autovacuum decide when to run?",
    "How do I create a read-only user?",
]


def rss_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


def timed(conn, sql: str, q: str) -> float:
    t0 = time.perf_counter()
    conn.execute(sql, (q,)).fetchall()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    args = ap.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        before = rss_kb(pid)
        t0 = time.perf_counter()
        conn.execute("SELECT rag.embed('warm up the model')").fetchone()
        load_ms = (time.perf_counter() - t0) * 1000
        after_load = rss_kb(pid)
        chunks = conn.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
        search = [timed(conn, "SELECT * FROM rag.search(%s)", q) for q in QUESTIONS]
        ask = [timed(conn, "SELECT rag.ask(%s)", q + " Please explain.") for q in QUESTIONS]
        after_all = rss_kb(pid)
    result = {
        "chunks": chunks,
        "first_call_ms (model load + 1 embedding)": round(load_ms, 1),
        "rag.search median ms (20 distinct questions)": round(statistics.median(search), 1),
        "rag.search p95 ms": round(sorted(search)[int(0.95 * len(search)) - 1], 1),
        "rag.ask median ms (20 distinct questions)": round(statistics.median(ask), 1),
        "backend RSS MB before model": round(before["VmRSS"] / 1024, 1),
        "backend RSS MB after model load": round(after_load["VmRSS"] / 1024, 1),
        "backend RSS MB after 20 search + 20 ask": round(after_all["VmRSS"] / 1024, 1),
        "backend peak RSS MB": round(after_all["VmHWM"] / 1024, 1),
    }
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
