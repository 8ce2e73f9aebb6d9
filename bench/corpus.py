"""Corpora for the benchmark: the PostgreSQL manual ingested for real, then grown to
100k and 1M chunks with synthetic chunks made from it.

Why synthetic past the manual: the manual is ~10,700 chunks, and embedding a million
chunks with the local model would take ~7 hours on 2 cores. So chunk n >= B (B: the
real chunks) is made from two real chunks a = real[n % B] and o (random, seeded by n):

- text: the first part of a's words followed by the last part of o's, as long as a
  (real words, real term statistics, a new mix in every chunk for the lexical leg);
- vector: the length-weighted mix of a's and o's real MiniLM vectors plus N(0, 0.01^2)
  noise per dimension, renormalised. Uniformly random vectors would be a worst case for
  HNSW, not a stand-in for embeddings (../shared/PLATFORM.md); these keep the clusters
  of real ones. The model is not run for them: that is stated in every result.

Rows go in with binary COPY into rag.chunks (so the statement triggers keep the BM25
postings and statistics, as for any insert), into synthetic documents that copy the real
documents' structure (copy j of document d holds copy j of d's chunks). Then each gets
what ingest keeps for its windows (`fill_windows`): their bounds among its tsvector's
positions from rag's own window pass (`rag._window_batch`, no model), and one
embedding per window, its chunk's vector plus one of 64 fixed noise vectors (norm ~0.2)
renormalised. Without them every search would tokenize the synthetic chunks' windows,
the slow path of a chunk indexed before 0.5.0, and take ~8 ms longer at 5k chunks
than a corpus ingested for real (2026-12-04). The HNSW index
is dropped while loading and rebuilt after (that build is what `build_hnsw` times), the
usual recipe for bulk loads: inserting into HNSW one row at a time is much slower.
"""
from __future__ import annotations

import hashlib
import random
import struct
import time
from dataclasses import dataclass

import numpy as np

NOISE = 0.01
MODEL = "all-MiniLM-L6-v2"
HNSW = "chunks_default_embedding_idx"   # the default partition's (the bench's tenant lives there)
COPY_COLUMNS = "(tenant, document_id, ord, content, heading, tokens, content_hash, model, embedding)"


@dataclass
class Base:
    """The real chunks, in id order: what synthetic chunks are made of."""
    tenant: str
    doc: np.ndarray        # document id of each real chunk
    ord: list[int]
    words: list[list[str]]
    heading: list[str | None]
    tokens: list[int]
    vec: np.ndarray        # (B, 384) float32, unit rows

    def __len__(self) -> int:
        return len(self.words)


def load_base(conn) -> Base:
    rows = conn.execute("""SELECT c.tenant, c.document_id, c.ord, c.content, c.heading, c.tokens, c.embedding::text
                           FROM rag.chunks AS c WHERE c.model = %s ORDER BY c.id""", (MODEL,)).fetchall()
    if not rows:
        raise SystemExit("no real chunks to grow the corpus from: ingest first")
    vec = np.array([np.array(r[6][1:-1].split(","), dtype=np.float32) for r in rows])
    return Base(tenant=rows[0][0], doc=np.array([r[1] for r in rows]), ord=[r[2] for r in rows],
                words=[r[3].split() for r in rows], heading=[r[4] for r in rows],
                tokens=[r[5] for r in rows], vec=vec)


def _pg_copy_header() -> bytes:
    return b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)


def _field(b: bytes | None) -> bytes:
    return struct.pack(">i", -1) if b is None else struct.pack(">i", len(b)) + b


def synthetic_rows(base: Base, start: int, stop: int, doc_ids: dict[tuple[int, int], int]) -> bytes:
    """Binary COPY data for synthetic chunks start..stop-1 (start >= len(base))."""
    B = len(base)
    n = stop - start
    partner = np.empty(n, dtype=np.int64)
    weight = np.empty(n, dtype=np.float32)
    texts = []
    for k, i in enumerate(range(start, stop)):
        rng = random.Random(i)
        a, o = i % B, rng.randrange(B)
        wa, wo = base.words[a], base.words[o]
        keep = rng.randint(len(wa) // 2, len(wa)) if wa else 0
        tail = wo[max(0, len(wo) - (len(wa) - keep)):] if keep < len(wa) else []
        texts.append(" ".join(wa[:keep] + tail) or "empty")
        partner[k] = o
        weight[k] = keep / max(1, len(wa))
    idx = np.arange(start, stop) % B
    rng = np.random.default_rng(start)
    v = weight[:, None] * base.vec[idx] + (1 - weight[:, None]) * base.vec[partner]
    v += rng.normal(0, NOISE, v.shape).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    dim = v.shape[1]
    vhead = struct.pack(">HH", dim, 0)
    vbytes = v.astype(">f4")
    out = []
    tenant = base.tenant.encode()
    model = MODEL.encode()
    for k, i in enumerate(range(start, stop)):
        a = i % B
        text = texts[k].encode()
        heading = base.heading[a]
        out.append(struct.pack(">h", 9) + _field(tenant)
                   + _field(struct.pack(">q", doc_ids[(i // B, int(base.doc[a]))]))
                   + _field(struct.pack(">i", base.ord[a])) + _field(text)
                   + _field(heading.encode() if heading is not None else None)
                   + _field(struct.pack(">i", base.tokens[a])) + _field(hashlib.sha256(text).digest())
                   + _field(model) + _field(vhead + vbytes[k].tobytes()))
    return b"".join(out)


def _make_documents(conn, base: Base, copies: range) -> dict[tuple[int, int], int]:
    """Synthetic documents: copy j of each real document (made once; they hold no text of
    their own and are not indexed: their chunks are loaded directly). Returns
    (copy, real document id) -> synthetic document id, for every copy made so far."""
    docs = sorted(set(int(d) for d in base.doc))
    conn.execute("SET session_replication_role = replica")  # no indexing trigger for these rows
    try:
        for j in copies:
            conn.execute("""
                INSERT INTO rag.documents (tenant, source, title, metadata, content, content_hash)
                SELECT %s, 'synthetic/' || %s || '/' || d.source, d.title,
                       d.metadata || jsonb_build_object('synthetic_copy', %s, 'synthetic_of', d.id),
                       'synthetic copy', sha256('synthetic copy')
                FROM rag.documents AS d WHERE d.id = ANY (%s)
                ON CONFLICT (tenant, source) DO NOTHING""", (base.tenant, j, j, docs))
    finally:
        conn.execute("RESET session_replication_role")
    return {(int(j), int(of)): i for i, j, of in conn.execute(
        """SELECT id, metadata->>'synthetic_copy', metadata->>'synthetic_of' FROM rag.documents
           WHERE tenant = %s AND metadata ? 'synthetic_copy'""", (base.tenant,))}


def grow(conn, base: Base, target: int, batch: int = 20000, progress=print) -> dict:
    """Add synthetic chunks until the tenant has `target` chunks (HNSW dropped meanwhile:
    call build_hnsw after). Returns the load's timings."""
    have = conn.execute("SELECT count(*) FROM rag.chunks WHERE tenant = %s", (base.tenant,)).fetchone()[0]
    if have >= target:
        return {"chunks_added": 0, "seconds": 0.0}
    B = len(base)
    conn.execute(f"DROP INDEX IF EXISTS rag.{HNSW}")
    t0 = time.perf_counter()
    doc_ids = _make_documents(conn, base, range(1, (target - 1) // B + 1))
    gen = 0.0
    for s in range(have, target, batch):
        e = min(s + batch, target)
        g0 = time.perf_counter()
        data = synthetic_rows(base, s, e, doc_ids)
        gen += time.perf_counter() - g0
        with conn.cursor().copy(f"COPY rag.chunks {COPY_COLUMNS} FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(_pg_copy_header())
            cp.write(data)
            cp.write(struct.pack(">h", -1))
        el = time.perf_counter() - t0
        progress(f"  {e:,}/{target:,} chunks, {el:.0f} s ({(e - have) / el:,.0f} chunks/s)")
    load = time.perf_counter() - t0
    windows = fill_windows(conn, base.tenant, progress=progress)
    t1 = time.perf_counter()
    conn.execute("VACUUM ANALYZE rag.chunks")
    conn.execute("VACUUM ANALYZE rag.posting_blocks")
    conn.execute("VACUUM ANALYZE rag.lexeme_stats")
    return {"chunks_added": target - have, "seconds": round(load, 1), "generate_seconds": round(gen, 1),
            **windows, "vacuum_analyze_seconds": round(time.perf_counter() - t1, 1)}


def fill_windows(conn, tenant: str, batch: int = 2000, progress=print) -> dict:
    """The windows' bounds and embeddings of the tenant's chunks that have none (the
    synthetic ones), as ingest keeps them for the chunks it writes: bounds from rag's
    window pass with window embeddings off (no model), then for a chunk of k > 1 windows
    k vectors, its own plus fixed noise (a chunk of one window has none: '{}', as ingest).
    Returns the seconds of each pass."""
    t0 = time.perf_counter()
    conn.execute("SELECT set_config('rag.tenant', %s, false), set_config('rag.window_embeddings', 'off', false)",
                 (tenant,))
    done = 0
    while n := conn.execute("SELECT rag._window_batch(%s)", (batch,)).fetchone()[0]:
        done += n
        if done % (10 * batch) == 0:
            progress(f"  window bounds: {done:,} chunks, {time.perf_counter() - t0:.0f} s")
    conn.execute("RESET rag.window_embeddings")
    conn.execute("RESET rag.tenant")
    t1 = time.perf_counter()
    dim = conn.execute("SELECT vector_dims(embedding) FROM rag.chunks WHERE tenant = %s LIMIT 1", (tenant,)).fetchone()[0]
    noise = np.random.default_rng(7).normal(0, NOISE, (64, dim))
    conn.execute("CREATE TEMP TABLE bench_window_noise (n int PRIMARY KEY, v vector)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO bench_window_noise VALUES (%s, %s::vector)",
                        [(i, "[" + ",".join(f"{x:.6f}" for x in r) + "]") for i, r in enumerate(noise)])
    hi = conn.execute("SELECT coalesce(max(id), 0) FROM rag.chunks WHERE tenant = %s", (tenant,)).fetchone()[0]
    step = 50 * batch
    for lo in range(0, hi + 1, step):
        conn.execute("""
            UPDATE rag.chunks AS c
            SET window_embeddings = ARRAY(
                SELECT l2_normalize(c.embedding + z.v)
                FROM generate_series(0, cardinality(c.window_bounds) - 2) AS j
                JOIN bench_window_noise AS z ON z.n = (c.id + j) %% 64
                WHERE cardinality(c.window_bounds) > 2 ORDER BY j)
            WHERE c.tenant = %s AND c.window_embeddings IS NULL AND c.id >= %s AND c.id < %s""",
                     (tenant, lo, lo + step))
    conn.execute("DROP TABLE bench_window_noise")
    return {"window_bounds_seconds": round(t1 - t0, 1), "window_embeddings_seconds": round(time.perf_counter() - t1, 1)}



def build_hnsw(conn, maintenance_work_mem: str = "4GB") -> dict:
    """Rebuild the model's HNSW index from scratch (parallel build); time and size."""
    conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
    conn.execute(f"DROP INDEX IF EXISTS rag.{HNSW}")
    t0 = time.perf_counter()
    conn.execute("SELECT rag.create_model_index(%s)", (MODEL,))
    secs = time.perf_counter() - t0
    conn.execute("RESET maintenance_work_mem")
    return {"hnsw_build_seconds": round(secs, 1), **sizes(conn)}


def sizes(conn) -> dict:
    """On-disk sizes in MB: the HNSW index, the GIN index, chunks (table + TOAST), and the
    lexical index: posting blocks with their index and TOAST, and bytes per posting (the
    blocks alone, and with the document-frequency and corpus statistics)."""
    def mb(sql: str) -> float:
        return round(float(conn.execute(sql).fetchone()[0] or 0) / 2**20, 1)
    # every partition's own index of that access method (0.2.0: no index on rag.chunks itself)
    by_am = ("SELECT sum(pg_relation_size(c.oid)) FROM pg_class AS c JOIN pg_am AS a ON a.oid = c.relam "
             "JOIN pg_index AS x ON x.indexrelid = c.oid JOIN pg_inherits AS h ON h.inhrelid = x.indrelid "
             "WHERE h.inhparent = 'rag.chunks'::regclass AND a.amname = '{}'")
    blocks = float(conn.execute("SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('rag.posting_blocks')"
                                ).fetchone()[0] or 0)
    stats = float(conn.execute("SELECT pg_total_relation_size('rag.lexeme_stats') + pg_total_relation_size('rag.corpus_stats')"
                               ).fetchone()[0] or 0)
    postings = int(conn.execute("SELECT coalesce(sum(n), 0) FROM rag.posting_blocks").fetchone()[0])
    return {"hnsw_mb": mb(by_am.format("hnsw")), "gin_mb": mb(by_am.format("gin")),
            "chunks_table_mb": mb("SELECT sum(pg_table_size(relid)) FROM pg_partition_tree('rag.chunks')"),
            "postings": postings, "posting_blocks_mb": round(blocks / 2**20, 1),
            "lexical_index_mb": round((blocks + stats) / 2**20, 1),
            "bytes_per_posting": round(blocks / max(postings, 1), 1),
            "bytes_per_posting_with_statistics": round((blocks + stats) / max(postings, 1), 1)}
