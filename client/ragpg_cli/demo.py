"""The main job: ingest the PostgreSQL manual into a database with `rag`, then ask.

Pages go in through plain multi-row INSERTs into rag.documents (the statement trigger
chunks and embeds each batch in the server), from `jobs` connections in parallel.
Re-running is cheap: unchanged pages are skipped by the ON CONFLICT ... WHERE clause.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

QUESTIONS = [
    "How do I create an index without locking writes to the table?",
    "What does VACUUM FULL do differently from plain VACUUM?",
    "How can I see which queries are running right now?",
]
MANUAL_URL = "https://www.postgresql.org/docs/15/"
BATCH = 16  # pages per INSERT statement

INSERT = """
INSERT INTO rag.documents AS d (source, url, metadata, content)
SELECT s, u, '{"format": "html", "corpus": "postgresql-15-manual"}', c
FROM unnest(%s::text[], %s::text[], %s::text[]) AS x (s, u, c)
ON CONFLICT ON CONSTRAINT documents_tenant_source_key DO UPDATE
    SET content = excluded.content, url = excluded.url, metadata = excluded.metadata
    WHERE d.content_hash IS DISTINCT FROM excluded.content_hash
"""


class Progress:
    def __init__(self, total: int):
        self.total, self.done, self.chunks, self.t0 = total, 0, 0, time.perf_counter()
        self.lock = threading.Lock()
        self.tty = sys.stdout.isatty()
        self.last = 0.0

    def add(self, pages: int, chunks: int) -> None:
        with self.lock:
            self.done += pages
            self.chunks += chunks
            now = time.perf_counter()
            if not self.tty and now - self.last < 5 and self.done < self.total:
                return
            self.last = now
            el = now - self.t0
            rate = self.done / el if el else 0
            eta = (self.total - self.done) / rate if rate else 0
            line = (f"ingest: {self.done}/{self.total} pages ({100 * self.done / self.total:.0f}%), "
                    f"{self.chunks} chunks, {self.chunks / el:.1f} chunks/s, eta {eta:.0f}s")
            print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", flush=True)


def _ingest(dsn: str, files: list[Path], jobs: int) -> dict:
    progress = Progress(len(files))
    batches = [files[i:i + BATCH] for i in range(0, len(files), BATCH)]
    local = threading.local()
    conns: list[psycopg.Connection] = []

    def work(batch: list[Path]) -> None:
        if not hasattr(local, "conn"):
            local.conn = psycopg.connect(dsn, autocommit=True)
            conns.append(local.conn)
        sources = [f"postgresql-15/{p.name}" for p in batch]
        texts = [p.read_text(encoding="utf-8", errors="replace") for p in batch]
        urls = [MANUAL_URL + p.name for p in batch]
        with local.conn.cursor() as cur:
            before = cur.execute("SELECT (rag.backend_stats()->>'chunks_written')::int").fetchone()[0]
            cur.execute(INSERT, (sources, urls, texts))
            after = cur.execute("SELECT (rag.backend_stats()->>'chunks_written')::int").fetchone()[0]
        progress.add(len(batch), after - before)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(work, batches))
    elapsed = time.perf_counter() - t0
    if progress.tty:
        print()
    stats = [c.execute("SELECT rag.backend_stats()").fetchone()[0] for c in conns]
    for c in conns:
        c.close()
    model_s = sum(s["embed_seconds"] for s in stats)
    return {"pages": len(files), "chunks_written": progress.chunks, "seconds": round(elapsed, 1),
            "chunks_per_s": round(progress.chunks / elapsed, 1) if elapsed else None,
            "model_calls": sum(s["model_calls"] for s in stats),
            "time_in_model": round(model_s / (elapsed * max(1, len(conns))), 3) if elapsed else None}


FILE_QUESTION = "What is the maximum time that a table can go unvacuumed?"


def run(dsn: str, docs: str, limit: int | None, questions: list[str] | None,
        chat_model: str | None = None, file_paths: list[str] | None = None) -> int:
    root = Path(docs)
    files = sorted(root.glob("*.html"))
    if not files:
        print(f"ragpg demo: no HTML pages in {root}; install postgresql-doc-15 or pass --docs", file=sys.stderr)
        return 1
    if limit:
        files = files[:limit]
    jobs = max(1, min(int(os.environ.get("RAGPG_JOBS", os.cpu_count() or 1)), 8))
    print(f"ingesting {len(files)} pages of the PostgreSQL 15 manual from {root} with {jobs} connections")
    summary = _ingest(dsn, files, jobs)
    if file_paths:  # a folder of PDF and DOCX files, as `ragpg ingest` sends them
        from .ingest import run as ingest_files
        print(f"\ningesting files: {' '.join(file_paths)}")
        if ingest_files(dsn, file_paths, url_prefix="https://example.com/files/"):
            return 1
        questions = [*(questions or QUESTIONS), FILE_QUESTION]
    with psycopg.connect(dsn, autocommit=True) as conn:
        docs_n, chunks_n = conn.execute(
            "SELECT (SELECT count(*) FROM rag.documents), (SELECT count(*) FROM rag.chunks)").fetchone()
        print(f"done: {json.dumps(summary)}")
        print(f"database now holds {docs_n} documents, {chunks_n} chunks\n")
        if chat_model:
            print(f"answers by {chat_model} (rag.models); a tiny model: judge the plumbing, not the prose\n")
        for q in questions or QUESTIONS:
            t0 = time.perf_counter()
            out = conn.execute("SELECT rag.ask(%s, model => %s)", (q, chat_model)).fetchone()[0]
            ms = (time.perf_counter() - t0) * 1000
            extra = (f", {out['usage']['input_tokens']}+{out['usage']['output_tokens']} tokens, "
                     f"{out['removed_citations']} invalid citation(s) removed") if out["mode"] == "llm" else ""
            print(f"Q: {q}\nA: {out['answer']}\n   ({ms:.0f} ms, {out['model']}{extra})")
            for c in out["citations"]:
                where = f", page {c['page']}" if c.get("page") else ""
                print(f"   [{c['index']}] {c['title'] or c['source']}{where} <{c['url']}> (chunk {c['chunk_id']})")
            print()
    return 0
