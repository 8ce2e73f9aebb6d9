"""ragpg benchmark (quick profile): ingest split, embedding overhead in the database,
rag.search latency at 1 and 8 clients against the seed's app-side pattern, HNSW recall.

usage: .venv/bin/python bench/run.py --dsn "$(bash scripts/localdb.sh dsn)" [--pages 150]
Writes bench/results/bench-<date>.json and .png and prints a table. The database must be
on this machine (RSS is read from /proc). It uses a database of its own (`ragbench`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plpy"))
os.environ.setdefault("RAGPG_MODELS", "/usr/local/lib/ragpg/0.1.0/models")
sys.path.insert(0, str(ROOT / "bench"))
from foundation import QUESTIONS, rss_kb  # noqa: E402

MANUAL = Path("/usr/share/doc/postgresql-doc-15/html")
# the seed's queries on our schema: the embedding is cast to the model's dimensions (and
# the model named) so that the seed pattern uses the same HNSW index as rag.search
SEED_VEC = """SELECT id, document_id, content, ord, 1 - (embedding::vector(384) <=> %s::vector) AS score
              FROM rag.chunks WHERE model = 'all-MiniLM-L6-v2'
              ORDER BY embedding::vector(384) <=> %s::vector LIMIT 30"""
SEED_LEX = """SELECT id, document_id, content, ord, ts_rank(tsv, websearch_to_tsquery('english', %s)) AS score
              FROM rag.chunks WHERE tsv @@ websearch_to_tsquery('english', %s) ORDER BY score DESC LIMIT 30"""


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def seed_search(conn, embedder, q):
    """The seed's retrieve(): client-side query embedding, two queries, RRF in Python."""
    vec = "[" + ",".join(map(repr, embedder.embed([q])[0].tolist())) + "]"
    v = conn.execute(SEED_VEC, (vec, vec)).fetchall()
    lx = conn.execute(SEED_LEX, (q, q)).fetchall()
    ranks: dict[int, float] = {}
    for rank, row in enumerate(v, start=1):
        ranks[row[0]] = ranks.get(row[0], 0) + 1 / (60 + rank)
    for rank, row in enumerate(lx, start=1):
        ranks[row[0]] = ranks.get(row[0], 0) + 1 / (60 + rank)
    by_id = {r[0]: r for r in (*v, *lx)}
    return sorted(by_id.values(), key=lambda r: ranks[r[0]], reverse=True)[:8]


def latencies(dsn, fn_factory, queries, clients):
    """Per-call latencies (ms) and throughput (calls/s) with `clients` threads."""
    out, lock = [], threading.Lock()
    ready = threading.Barrier(clients + 1)
    go = threading.Event()

    def worker(i):
        with psycopg.connect(dsn, autocommit=True) as conn:
            fn = fn_factory(conn)
            fn(queries[0])  # warm: model load, plans
            ready.wait()
            go.wait()
            mine = []
            for q in queries[i::clients] if clients > 1 else queries:
                t0 = time.perf_counter()
                fn(q)
                mine.append((time.perf_counter() - t0) * 1000)
            with lock:
                out.extend(mine)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()  # every client connected and warm: time only the searches
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return out, len(out) / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True, help="a database on the local cluster (ragbench is created next to it)")
    ap.add_argument("--pages", type=int, default=150)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    from ragpg.embedding import Embedder

    admin = psycopg.connect(args.dsn, autocommit=True)
    admin.execute("DROP DATABASE IF EXISTS ragbench WITH (FORCE)")
    admin.execute("CREATE DATABASE ragbench")
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname="ragbench")
    res: dict = {"profile": "quick", "pages": args.pages, "date": datetime.now(timezone.utc).isoformat()}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION rag CASCADE")
        files = sorted(MANUAL.glob("*.html"))[: args.pages]
        print(f"ingest: {len(files)} pages of the manual, one connection", flush=True)
        t0 = time.perf_counter()
        for i in range(0, len(files), 16):
            batch = files[i:i + 16]
            conn.execute("""INSERT INTO rag.documents (source, metadata, content)
                            SELECT s, '{"format": "html"}', c FROM unnest(%s::text[], %s::text[]) AS x (s, c)""",
                         ([p.name for p in batch], [p.read_text(errors="replace") for p in batch]))
            print(f"\r  {min(i + 16, len(files))}/{len(files)} pages", end="", flush=True)
        wall = time.perf_counter() - t0
        print()
        st = conn.execute("SELECT rag.backend_stats()").fetchone()[0]
        chunks = conn.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
        other = wall - st["embed_seconds"] - st["chunk_seconds"] - st["db_seconds"]
        res["ingest"] = {"chunks": chunks, "seconds": round(wall, 1), "chunks_per_s": round(chunks / wall, 1),
                         "share_model": round(st["embed_seconds"] / wall, 3),
                         "share_chunking": round(st["chunk_seconds"] / wall, 3),
                         "share_db_reads_writes": round(st["db_seconds"] / wall, 3),
                         "share_other (triggers, BM25 postings, HNSW/GIN upkeep, SQL<->Python)": round(other / wall, 3)}
        res["embedding_in_db"] = {"passages_per_s": round(st["texts_embedded"] / st["embed_seconds"], 1)}
        texts = [r[0] for r in conn.execute("SELECT content FROM rag.chunks ORDER BY id LIMIT 100")]
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        res["memory_mb"] = {"backend_after_ingest": round(rss_kb(pid)["VmRSS"] / 1024, 1)}

    emb = Embedder("all-MiniLM-L6-v2", 1)
    t0 = time.perf_counter()
    emb.embed(texts, 1)
    py_passages = len(texts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for q in QUESTIONS * 5:
        emb.embed([q], 1)
    py_queries = len(QUESTIONS) * 5 / (time.perf_counter() - t0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT rag.embed('warm')")
        t0 = time.perf_counter()
        for i, q in enumerate(QUESTIONS * 5):
            conn.execute("SELECT rag.embed(%s)", (f"{q} #{i}",)).fetchone()  # distinct: no cache hit
        db_queries = len(QUESTIONS) * 5 / (time.perf_counter() - t0)
    res["embedding_in_db"].update({"passages_per_s_python": round(py_passages, 1),
                                   "passage_overhead_ratio": round(py_passages / res["embedding_in_db"]["passages_per_s"], 2),
                                   "queries_per_s_in_db (round trip)": round(db_queries, 1),
                                   "queries_per_s_python": round(py_queries, 1)})

    queries = [f"{q}" for q in QUESTIONS] * 5
    rag_fn = lambda conn: (lambda q: conn.execute("SELECT * FROM rag.search(%s)", (q,)).fetchall())  # noqa: E731
    seed_fn = lambda conn: (lambda q: seed_search(conn, emb, q))  # noqa: E731
    res["search"] = {}
    for name, fn in (("rag.search", rag_fn), ("seed pattern", seed_fn)):
        for clients in (1, 8):
            if name == "seed pattern" and clients > 1:
                continue  # one in-process embedder: the seed's app would run one model per worker
            lat, qps = latencies(dsn, fn, queries, clients)
            res["search"][f"{name}, {clients} client(s)"] = {
                "p50_ms": round(statistics.median(lat), 2), "p95_ms": round(pct(lat, 95), 2),
                "p99_ms": round(pct(lat, 99), 2), "qps": round(qps, 1)}
    res["search"]["p50 ratio seed/rag (1 client)"] = round(
        res["search"]["seed pattern, 1 client(s)"]["p50_ms"] / res["search"]["rag.search, 1 client(s)"]["p50_ms"], 2)

    with psycopg.connect(dsn, autocommit=True) as conn:
        qv = [conn.execute("SELECT rag.embed(%s)::text", (q,)).fetchone()[0] for q in QUESTIONS]
        exact = []
        conn.execute("SET enable_indexscan = off")
        for v in qv:
            exact.append({r[0] for r in conn.execute(
                "SELECT id FROM rag.chunks WHERE model = 'all-MiniLM-L6-v2' "
                "ORDER BY embedding::vector(384) <=> %s::vector LIMIT 10", (v,))})
        conn.execute("RESET enable_indexscan")
        conn.execute("SET enable_seqscan = off")
        res["hnsw_recall_at_10"] = {}
        for ef in (40, 100, 200):
            conn.execute(f"SET hnsw.ef_search = {ef}")
            got = [{r[0] for r in conn.execute(
                "SELECT id FROM rag.chunks WHERE model = 'all-MiniLM-L6-v2' "
                "ORDER BY embedding::vector(384) <=> %s::vector LIMIT 10", (v,))} for v in qv]
            res["hnsw_recall_at_10"][f"ef_search={ef}"] = round(
                statistics.mean(len(a & b) / 10 for a, b in zip(got, exact)), 3)
        res["index"] = {"hnsw_mb": round(float(conn.execute(
            "SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('rag.chunks_embedding_hnsw')"
        ).fetchone()[0]) / 2**20, 1)}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    (out / f"bench-{stamp}.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        rows = [(k, v) for k, v in res["search"].items() if isinstance(v, dict)]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.barh([k for k, _ in rows], [v["p50_ms"] for _, v in rows], label="p50")
        ax.barh([k for k, _ in rows], [v["p95_ms"] - v["p50_ms"] for _, v in rows],
                left=[v["p50_ms"] for _, v in rows], alpha=0.5, label="p50 -> p95")
        ax.set_xlabel("ms per search")
        ax.set_title(f"hybrid search latency, {res['ingest']['chunks']} chunks")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"bench-{stamp}.png", dpi=120)
    except ImportError:
        pass
    admin.close()


if __name__ == "__main__":
    main()
