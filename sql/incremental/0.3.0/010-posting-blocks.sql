-- 0.3.0: the lexical leg's postings as blocks (ragpg/lexical.py has the design).
-- 0.2.0 kept a row per posting (tenant, lexeme, chunk_id, tf, len, impact) and two btrees
-- on them: ~220 bytes a posting. A block row holds up to 8,192 postings of one lexeme as
-- byte strings of big-endian integers: 14 bytes a posting, and the row's own overhead
-- shared among them.

CREATE TABLE rag.posting_blocks (
    tenant   text NOT NULL,
    lexeme   text NOT NULL,
    first_id bigint NOT NULL,     -- the smallest chunk id in the block: its key within the lexeme
    merged   boolean NOT NULL,    -- false: a writing statement's own block, not merged yet
    n        int NOT NULL,        -- postings in the block
    max_tf   int NOT NULL,        -- the block's largest term frequency and smallest chunk
    min_len  int NOT NULL,        -- length: they bound any posting's BM25 weight in it
    ids      bytea NOT NULL,      -- n chunk ids, int8 each (rag.chunks.id)
    tfs      bytea NOT NULL,      -- n term frequencies, int2 each
    lens     bytea NOT NULL       -- n chunk lengths in lexeme occurrences, int4 each
) PARTITION BY LIST (tenant);     -- as rag.chunks (rag.create_tenant_partition)
CREATE TABLE rag.posting_blocks_default PARTITION OF rag.posting_blocks DEFAULT;
-- a lexeme's blocks and their bounds, read without visiting the table
ALTER TABLE rag.posting_blocks_default ADD CONSTRAINT posting_blocks_default_pkey
    PRIMARY KEY (tenant, lexeme, first_id) INCLUDE (merged, n, max_tf, min_len);
SELECT pg_catalog.pg_extension_config_dump('rag.posting_blocks_default', '');

-- a tenant with partitions of its own (rag.create_tenant_partition) gets its blocks partition
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname, pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_catalog.pg_inherits AS h JOIN pg_catalog.pg_class AS c ON c.oid = h.inhrelid
             WHERE h.inhparent = 'rag.postings'::regclass
               AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' LOOP
        EXECUTE pg_catalog.format('CREATE TABLE rag.%I PARTITION OF rag.posting_blocks %s',
                                  'posting_blocks_' || pg_catalog.substr(r.relname, 10), r.bound);
        EXECUTE pg_catalog.format('ALTER TABLE rag.%I ADD CONSTRAINT %I PRIMARY KEY (tenant, lexeme, first_id)'
                                  ' INCLUDE (merged, n, max_tf, min_len)',
                                  'posting_blocks_' || pg_catalog.substr(r.relname, 10),
                                  'posting_blocks_' || pg_catalog.substr(r.relname, 10) || '_pkey');
    END LOOP;
END
$$;

-- The existing index, converted: each lexeme's postings best first (by the BM25 weight at
-- the default k1 = 0.9, b = 0.4 and the tenant's average length), in merged blocks of
-- 128, 256, ... 8,192 postings, then 8,192 each (ragpg.lexical.block_sizes): posting r
-- (from 0) goes to block i for r < 16,256, where 128 * (2^i - 1) <= r, else to block
-- 7 + (r - 16,256) / 8,192.
WITH avglen AS (
    SELECT s.tenant, greatest(pg_catalog.sum(s.total_len)::float8 / greatest(pg_catalog.sum(s.chunks), 1), 1) AS v
    FROM rag.corpus_stats AS s GROUP BY s.tenant
), ranked AS (
    SELECT p.tenant, p.lexeme, p.chunk_id, p.tf, p.len,
           pg_catalog.row_number() OVER (PARTITION BY p.tenant, p.lexeme
               ORDER BY p.tf * 1.9 / (p.tf + 0.9 * (0.6 + 0.4 * p.len / coalesce(a.v, 1))) DESC, p.chunk_id) - 1 AS r
    FROM rag.postings AS p LEFT JOIN avglen AS a ON a.tenant = p.tenant
), blocked AS (
    SELECT x.*, CASE WHEN x.r < 16256
                     THEN 32 - pg_catalog.strpos(((x.r / 128 + 1)::int::bit(32))::text, '1')
                     ELSE 7 + (x.r - 16256) / 8192 END AS blk
    FROM ranked AS x
)
INSERT INTO rag.posting_blocks (tenant, lexeme, first_id, merged, n, max_tf, min_len, ids, tfs, lens)
SELECT b.tenant, b.lexeme, pg_catalog.min(b.chunk_id), true, pg_catalog.count(*), pg_catalog.max(b.tf), pg_catalog.min(b.len),
       pg_catalog.string_agg(pg_catalog.int8send(b.chunk_id), ''::bytea ORDER BY b.r),
       pg_catalog.string_agg(pg_catalog.int2send(b.tf::int2), ''::bytea ORDER BY b.r),
       pg_catalog.string_agg(pg_catalog.int4send(b.len), ''::bytea ORDER BY b.r)
FROM blocked AS b
GROUP BY b.tenant, b.lexeme, b.blk;

DROP TABLE rag.postings;   -- and its partitions

-- rag.bm25_term_candidates bounded 0.2.0's approximate top-k; BM25 is now exact
DELETE FROM rag.config WHERE name = 'bm25_term_candidates';
