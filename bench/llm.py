"""rag.ask with the real local LLM (SmolLM2-135M via llama.cpp on loopback): time to first
token and total time, median of N, on an idle machine and with one core kept busy.

    .venv/bin/python bench/llm.py --dsn "$(bash scripts/localdb.sh dsn)" [--n 10]

Makes its own database (<dbname>_llm) with --pages pages of the PostgreSQL manual, starts
its own llama server on a free port (1 thread), and writes bench/results/llm-<date>.json.
Time to first token is what a client sees: the first row of rag.ask_stream read through a
cursor. Total: rag.ask end to end, and the last row of rag.ask_stream.
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import re
import socket
import statistics
import sys
import time
from pathlib import Path

import psycopg

QUESTIONS = [
    "How do I create an index without locking writes?",
    "What does VACUUM FULL do?",
    "How can I see running queries?",
    "What is a tablespace?",
    "How do I grant select on a table?",
    "What does EXPLAIN ANALYZE show?",
    "How do I create a role that can log in?",
    "What is the default port?",
    "How do sequences work?",
    "What is a partial index?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _burn(stop):
    while not stop.is_set():
        sum(i * i for i in range(10000))


def _measure(dsn: str, n: int) -> dict:
    ask_total, stream_first, stream_total, in_tok, out_tok = [], [], [], [], []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT rag.ask('warm up', model => 'smollm2-bench')")
        for i in range(n):
            # two different questions, so that neither finds its prompt in llama.cpp's cache
            q, q2 = QUESTIONS[i % len(QUESTIONS)], QUESTIONS[(i + len(QUESTIONS) // 2) % len(QUESTIONS)]
            t0 = time.perf_counter()
            out = conn.execute("SELECT rag.ask(%s, model => 'smollm2-bench')", (q2,)).fetchone()[0]
            ask_total.append(time.perf_counter() - t0)
            in_tok.append(out["usage"]["input_tokens"])
            out_tok.append(out["usage"]["output_tokens"])
            with conn.transaction():
                t0 = time.perf_counter()
                conn.execute("DECLARE s NO SCROLL CURSOR FOR SELECT (x).* FROM "
                             "(SELECT rag.ask_stream(%s, model => 'smollm2-bench') AS x) AS q", (q,))
                conn.execute("FETCH 1 FROM s").fetchone()
                stream_first.append(time.perf_counter() - t0)
                conn.execute("FETCH ALL FROM s").fetchall()
                stream_total.append(time.perf_counter() - t0)
            print(f"  {i + 1}/{n}: ask {ask_total[-1]:.2f} s, stream first row {stream_first[-1]:.2f} s, "
                  f"stream total {stream_total[-1]:.2f} s", flush=True)
    med = lambda xs: round(statistics.median(xs), 3)  # noqa: E731
    return {"ask_total_s": med(ask_total), "stream_first_row_s": med(stream_first),
            "stream_total_s": med(stream_total), "input_tokens": med(in_tok), "output_tokens": med(out_tok),
            "n": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--pages", type=int, default=60)
    ap.add_argument("--docs", default="/usr/share/doc/postgresql-doc-15/html")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()

    from ragpg_cli import llm

    db = re.search(r"dbname=(\S+)", args.dsn).group(1) + "_llm"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db}")
        conn.execute(f"CREATE DATABASE {db}")
    dsn = re.sub(r"dbname=\S+", f"dbname={db}", args.dsn)
    port = _free_port()
    t0 = time.perf_counter()
    proc = llm.start(port, threads=1)
    startup = time.perf_counter() - t0
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION rag CASCADE")
            # as the registered 'smollm2', on this server
            conn.execute("SELECT rag.add_model('smollm2-bench', 'chat', base_url => %s, provider_model => 'smollm2', "
                         "max_input_tokens => 2048, options => (SELECT options FROM rag.models WHERE name = 'smollm2'))",
                         (f"http://127.0.0.1:{port}/v1",))
            files = sorted(Path(args.docs).glob("*.html"))[: args.pages]
            for f in files:
                conn.execute("INSERT INTO rag.documents (source, content, metadata) VALUES (%s, %s, "
                             "'{\"format\": \"html\"}')", (f.name, f.read_text(errors="replace")))
            chunks = conn.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
        print(f"{len(files)} pages, {chunks} chunks; llama server up in {startup:.1f} s")
        print("idle machine:")
        idle = _measure(dsn, args.n)
        print("one core kept busy by another process:")
        stop = multiprocessing.Event()
        burner = multiprocessing.Process(target=_burn, args=(stop,))
        burner.start()
        try:
            loaded = _measure(dsn, args.n)
        finally:
            stop.set()
            burner.join()
    finally:
        llm.stop(proc)
    res = {"date": datetime.date.today().isoformat(), "pages": args.pages, "chunks": chunks,
           "server_startup_s": round(startup, 2), "threads": 1, "idle": idle, "one_core_busy": loaded}
    print("\n| machine | rag.ask total (median) | ask_stream first row | ask_stream total | tokens in/out |")
    print("|---|---|---|---|---|")
    for name, r in (("idle", idle), ("one core busy", loaded)):
        print(f"| {name} | {r['ask_total_s']:.2f} s | {r['stream_first_row_s']:.2f} s | {r['stream_total_s']:.2f} s "
              f"| {r['input_tokens']:.0f}/{r['output_tokens']:.0f} |")
    out = Path(args.out) / f"llm-{res['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
