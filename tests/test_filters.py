"""Filters on metadata and source return k rows even when selective (iterative HNSW scans)."""
from __future__ import annotations

TOPICS = ["databases", "gardening", "cooking", "astronomy", "football", "music", "travel", "finance"]


def load_corpus(db, n=2000, rare_every=100):
    # n one-chunk documents; 1% of them (every 100th) carry {"tier": "rare"}
    db.execute("""
        INSERT INTO rag.documents (source, metadata, content)
        SELECT 'doc-' || i,
               CASE WHEN i %% %s = 0 THEN '{"tier": "rare", "team": "a"}' ELSE '{"tier": "common"}' END::jsonb,
               'Note ' || i || ' about ' || (%s::text[])[1 + i %% 8] || ': item ' || i || ' of the catalogue.'
        FROM generate_series(1, %s) AS i""", (rare_every, TOPICS, n))


def test_selective_metadata_filter_still_returns_k_rows(db):
    load_corpus(db)
    assert db.execute("SELECT count(*) FROM rag.chunks").fetchone()[0] == 2000
    q = "notes about astronomy and the stars"
    rows = db.execute("""SELECT s.vector_rank, d.metadata->>'tier' FROM rag.search(%s, k => 8, mode => 'vector',
                         filter => '{"tier": "rare"}') AS s JOIN rag.documents AS d ON d.id = s.document_id""",
                      (q,)).fetchall()
    assert len(rows) == 8 and all(t == "rare" for _, t in rows)
    assert sorted(r[0] for r in rows) == list(range(1, 9))


def test_iterative_hnsw_scan_is_what_keeps_k_rows(db):
    """The vector leg's query shape, forced onto the HNSW index: with rag.search's settings
    (iterative_scan = relaxed_order) a 1% filter still yields k rows; without, it does not."""
    load_corpus(db)
    db.execute("SET enable_seqscan = off")
    db.execute("SET enable_bitmapscan = off")
    db.execute("SET hnsw.ef_search = 100")
    leg = """SELECT c.id FROM rag.chunks AS c JOIN rag.documents AS d ON d.id = c.document_id
             AND d.metadata @> '{"tier": "rare"}' WHERE c.tenant = rag.current_tenant()
             ORDER BY c.embedding <=> rag.embed('notes about astronomy') LIMIT 8"""
    db.execute("SET hnsw.iterative_scan = " + db.execute(
        "SELECT value FROM rag.settings() WHERE name = 'iterative_scan'").fetchone()[0])
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + leg))
    if "chunks_default_embedding_idx" not in plan:
        # the planner may still prefer the tenant btree + exact sort; then there is nothing to show
        assert "Sort" in plan
        return
    assert len(db.execute(leg).fetchall()) == 8
    db.execute("SET hnsw.iterative_scan = off")
    assert len(db.execute(leg).fetchall()) < 8


def test_hybrid_filter_and_source_filters(db):
    load_corpus(db, n=300)
    rows = db.execute("""SELECT d.source FROM rag.search('item catalogue', k => 5, filter => '{"team": "a"}') s
                         JOIN rag.documents d ON d.id = s.document_id""").fetchall()
    assert {r[0] for r in rows} == {"doc-100", "doc-200", "doc-300"}
    one = db.execute("""SELECT d.source FROM rag.search('item', k => 5, filter => '{"source": "doc-7"}') s
                        JOIN rag.documents d ON d.id = s.document_id""").fetchall()
    assert one == [("doc-7",)]
    two = db.execute("""SELECT d.source FROM rag.search('item', k => 5, filter => '{"source": ["doc-7", "doc-9"]}') s
                        JOIN rag.documents d ON d.id = s.document_id""").fetchall()
    assert {r[0] for r in two} == {"doc-7", "doc-9"}
    none = db.execute("""SELECT count(*) FROM rag.search('item', filter => '{"tier": "missing"}')""").fetchone()[0]
    assert none == 0
