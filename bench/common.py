"""What the benchmark stages share: queries, the seed's app-side pattern, load generators
(Python clients in processes, and pgbench), percentiles and memory readings."""
from __future__ import annotations

import multiprocessing as mp
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import psycopg.conninfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plpy"))
os.environ.setdefault("RAGPG_MODELS", "/usr/local/lib/ragpg/0.12.0/models")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the load generator forks after tokenizing
PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
PGBENCH_WARMUP = 3  # transactions per client not timed
MODEL = "all-MiniLM-L6-v2"

# The seed's two queries (../shared/seed: retrieve()), on our schema: the embedding is cast
# to the model's dimensions and the model named, so that the seed pattern uses the same
# HNSW index as rag.search; the lexical query is the seed's, websearch_to_tsquery + ts_rank.
SEED_VEC = f"""SELECT id, document_id, content, ord, 1 - (embedding::vector(384) <=> %s::vector) AS score
               FROM rag.chunks WHERE model = '{MODEL}'
               ORDER BY embedding::vector(384) <=> %s::vector LIMIT 30"""
SEED_LEX = """SELECT id, document_id, content, ord, ts_rank(tsv, websearch_to_tsquery('english', %s)) AS score
              FROM rag.chunks WHERE tsv @@ websearch_to_tsquery('english', %s) ORDER BY score DESC LIMIT 30"""
RAG_SEARCH = "SELECT * FROM rag.search(%s, 8)"

_GENERIC = {"description", "see also", "parameters", "notes", "note", "examples", "compatibility", "synopsis",
            "outputs", "caution", "tip", "warning", "usage", "options", "environment", "files", "diagnostics",
            "return value", "arguments", "overview", "introduction", "history", "author", "bugs", "exit status"}


def queries(conn, n: int, seed: int = 15) -> list[str]:
    """n distinct search queries, the way people type them: the titles of the manual's
    pages and sections ("Row Security Policies", "pg_class", "Free Space Map"), numbering
    removed, generic ones ("Description", "See Also") left out; shuffled, fixed seed."""
    names = set()
    for (h,) in conn.execute("SELECT DISTINCT title FROM rag.documents WHERE title IS NOT NULL "
                             "UNION SELECT DISTINCT heading FROM rag.chunks WHERE heading IS NOT NULL"):
        for part in h.split(" > "):
            part = re.sub(r"^(Chapter|Appendix|Part)?\s*[A-Z]?[\d.]+\s+", "", part.strip()).strip()
            if 3 <= len(part) <= 80 and part.lower() not in _GENERIC:
                names.add(part)
    out = sorted(names)
    random.Random(seed).shuffle(out)
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct queries in this corpus, {n} asked for")
    return out[:n]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(ms: list[float], seconds: float | None = None) -> dict:
    out = {"n": len(ms), "p50_ms": round(statistics.median(ms), 2), "p95_ms": round(pct(ms, 95), 2),
           "p99_ms": round(pct(ms, 99), 2), "mean_ms": round(statistics.mean(ms), 2)}
    if seconds:
        out["qps"] = round(len(ms) / seconds, 1)
    return out


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and its parts (RssAnon: private; RssShmem: shared buffers touched)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


# -- the seed's pattern: a Python app that embeds the query itself -----------------------

class SeedClient:
    """The seed's retrieve(): query embedding computed in the client (the same model, the
    same ONNX int8 file the extension runs), a vector query and a full-text query sent
    separately over one reused connection, RRF (c = 60) in Python, top 8."""

    def __init__(self, conn):
        from ragpg.embedding import Embedder
        self.conn = conn
        self.embedder = Embedder(MODEL, 1)

    def __call__(self, q: str):
        vec = "[" + ",".join(map(repr, self.embedder.embed([q], 1)[0].tolist())) + "]"
        v = self.conn.execute(SEED_VEC, (vec, vec)).fetchall()
        lx = self.conn.execute(SEED_LEX, (q, q)).fetchall()
        ranks: dict[int, float] = {}
        for rank, row in enumerate(v, start=1):
            ranks[row[0]] = ranks.get(row[0], 0) + 1 / (60 + rank)
        for rank, row in enumerate(lx, start=1):
            ranks[row[0]] = ranks.get(row[0], 0) + 1 / (60 + rank)
        by_id = {r[0]: r for r in (*v, *lx)}
        return sorted(by_id.values(), key=lambda r: ranks[r[0]], reverse=True)[:8]


class RagClient:
    """One SQL call: SELECT * FROM rag.search(q, 8)."""

    def __init__(self, conn):
        self.conn = conn

    def __call__(self, q: str):
        return self.conn.execute(RAG_SEARCH, (q,)).fetchall()


def _client(kind: str, dsn: str, warm: str, mine: list[str], ready, go, out) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        fn = (SeedClient if kind == "seed" else RagClient)(conn)
        fn(warm)  # model loaded, plans made: only searches are timed
        ready.wait()
        go.wait()
        ms = []
        for q in mine:
            t0 = time.perf_counter()
            fn(q)
            ms.append((time.perf_counter() - t0) * 1000)
        out.put(ms)


def run_clients(kind: str, dsn: str, qs: list[str], clients: int) -> dict:
    """Latency and throughput of `kind` ('rag' or 'seed') with `clients` processes, each
    with its own connection (and, for the seed, its own model, as app workers would),
    splitting distinct queries between them: no query is repeated, so rag.search's
    per-backend cache of query embeddings never hits (the seed has none)."""
    ctx = mp.get_context("fork")
    ready, go, out = ctx.Barrier(clients + 1), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_client, args=(kind, dsn, f"warm up {i}", qs[i::clients], ready, go, out))
             for i in range(clients)]
    for p in procs:
        p.start()
    ready.wait()
    t0 = time.perf_counter()
    go.set()
    ms = [x for _ in procs for x in out.get()]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return summary(ms, wall)


def pgbench(dsn: str, qs: list[str], clients: int, per_client: int) -> dict:
    """rag.search under pgbench (-c clients, -t per_client, one connection per client),
    each transaction taking the next unused query from a table; latencies from its
    per-transaction log."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.bench_queries")
        conn.execute("CREATE TABLE public.bench_queries (id int PRIMARY KEY, q text NOT NULL)")
        conn.execute("INSERT INTO public.bench_queries SELECT i, q FROM unnest(%s::text[]) WITH ORDINALITY AS u (q, i)",
                     (qs,))
        conn.execute("DROP SEQUENCE IF EXISTS public.bench_next; CREATE SEQUENCE public.bench_next")
    tmp = Path(tempfile.mkdtemp(prefix="ragpg-pgbench-"))
    try:
        (tmp / "search.sql").write_text(
            "SELECT count(*) FROM (SELECT q FROM public.bench_queries "
            f"WHERE id = (SELECT nextval('public.bench_next') % {len(qs)} + 1)) AS b, rag.search(b.q, 8) AS s;\n")
        params = dict(kv.split("=", 1) for kv in dsn.split())
        env = {**os.environ, "PGHOST": params.get("host", ""), "PGPORT": params.get("port", "5432"),
               "PGUSER": params.get("user", ""), "PGDATABASE": params.get("dbname", "")}
        cmd = [PGBENCH, "-n", "-c", str(clients), "-j", str(min(clients, 2)), "-t", str(per_client),
               "-f", str(tmp / "search.sql"), "-l", "--log-prefix", str(tmp / "log")]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"pgbench failed:\n{r.stdout}\n{r.stderr}")
        # each client's first transactions load the model and warm its backend: left out
        ms = [int(f[2]) / 1000 for log in tmp.glob("log*") for f in map(str.split, log.read_text().splitlines())
              if int(f[1]) >= PGBENCH_WARMUP]
        # a closed loop without think time: throughput = clients / mean latency (Little's law)
        return {**summary(ms), "qps": round(clients * 1000 / statistics.mean(ms), 1)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pgbench_available() -> bool:
    return Path(PGBENCH).exists()


def fresh_database(dsn: str, suffix: str) -> str:
    """The database of a bench stage, `<dsn's dbname>_<suffix>`, made anew (one left by an
    earlier run is dropped) with rag installed; returns its conninfo."""
    drop_database(dsn, suffix)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{_stage_db(dsn, suffix)}"')
    stage = psycopg.conninfo.make_conninfo(dsn, dbname=_stage_db(dsn, suffix))
    with psycopg.connect(stage, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION rag CASCADE")
    return stage


def drop_database(dsn: str, suffix: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_stage_db(dsn, suffix)}" WITH (FORCE)')


def _stage_db(dsn: str, suffix: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"] + "_" + suffix


def bench_writer(stage: str) -> str:
    """The conninfo of role `bench` (made if missing: a LOGIN role of the cluster) in database
    `stage`, where it is a rag_writer that may create tables in public."""
    with psycopg.connect(stage, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'bench'").fetchone():
            conn.execute("CREATE ROLE bench LOGIN")
        conn.execute("GRANT rag_writer TO bench")
        conn.execute("GRANT CREATE ON SCHEMA public TO bench")
    return psycopg.conninfo.make_conninfo(stage, user="bench")


def write_attached_rows(c, n: int) -> None:
    """n rows of public.notes (attached by role bench, sync) written with rag's triggers off,
    and their documents as its trigger would write them, one chunk each with a random vector
    (no model runs: the model's cost is not what bench/check.py and
    bench/attached_partitions.py measure); then bench's lexical index rebuilt (the chunks came
    in untriggered) and the database analyzed."""
    c.execute("SET session_replication_role = replica")
    c.execute("INSERT INTO public.notes SELECT i, 'Note ' || i || ': the carrier picks the parcel up at ' || i %% 24 "
              "FROM generate_series(1, %s) AS i", (n,))
    c.execute("""
        INSERT INTO rag.documents (tenant, source, content, content_hash, attachment_id, source_table, source_key)
        SELECT 'bench', 'public.notes#' || jsonb_build_object('id', t.id)::text, t.body,
               sha256(convert_to(t.body, 'UTF8')), a.id, 'public.notes', jsonb_build_object('id', t.id)
        FROM public.notes AS t, rag.attachments AS a""")
    c.execute("""
        INSERT INTO rag.chunks (tenant, document_id, ord, content, tokens, content_hash, model, embedding)
        SELECT d.tenant, d.id, 0, d.content, 20, d.content_hash, 'all-MiniLM-L6-v2',
               (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE d.id IS NOT NULL)::vector(384)
        FROM rag.documents AS d WHERE d.attachment_id IS NOT NULL""")
    c.execute("RESET session_replication_role")
    c.execute("SET ROLE bench")
    c.execute("SELECT rag.rebuild_lexical_index()")
    c.execute("RESET ROLE")
    c.execute("VACUUM ANALYZE")
