-- The lexical leg: Okapi BM25 computed in SQL over an inverted index that the ingest
-- path keeps up to date (no C extension). Per tenant:
--   rag.postings      (tenant, lexeme, chunk_id, tf, len, impact): one row per lexeme of a
--                     chunk, with its term frequency, the chunk's length in lexemes and its
--                     BM25 term weight at the default k1/b (the order in which a query
--                     reads a lexeme's postings: best first, so it can stop early)
--   rag.lexeme_stats  document frequency per lexeme, as insert-only deltas (+n / -n), so
--                     concurrent writers never wait on each other; rag.compact_lexical_stats
--                     folds them (called by the triggers now and then)
--   rag.corpus_stats  chunk count and total length, as deltas too (one row per statement)
-- The statement triggers on rag.chunks maintain all three. to_tsvector('english') is the
-- tokenizer (stemming, stop words), the same as the tsv column and the GIN index.

CREATE TABLE rag.postings (
    tenant   text NOT NULL,
    lexeme   text NOT NULL,
    chunk_id bigint NOT NULL,   -- rag.chunks.id; removed with the chunk by its delete trigger
                                -- (by primary key: no index on chunk_id, so plans keep to the key)
    tf       int NOT NULL,      -- occurrences of the lexeme in the chunk
    len      int NOT NULL,      -- the chunk's length in lexeme occurrences
    impact   real NOT NULL,     -- tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen)) at
                                -- k1 = 0.9, b = 0.4 and the tenant's avglen when written
    -- covering, so that scoring a candidate is one index-only probe per query lexeme
    PRIMARY KEY (tenant, lexeme, chunk_id) INCLUDE (tf, len)
) PARTITION BY LIST (tenant);   -- as rag.chunks (rag.create_tenant_partition)
CREATE TABLE rag.postings_default PARTITION OF rag.postings DEFAULT;
-- a lexeme's postings best first, read without visiting the table (rag.bm25)
CREATE INDEX postings_impact ON rag.postings (tenant, lexeme, impact DESC) INCLUDE (chunk_id, tf, len);

CREATE TABLE rag.lexeme_stats (
    tenant text NOT NULL,
    lexeme text NOT NULL,
    df     bigint NOT NULL       -- a delta: sum(df) per (tenant, lexeme) is the document frequency
);
CREATE INDEX lexeme_stats_key ON rag.lexeme_stats (tenant, lexeme) INCLUDE (df);

CREATE TABLE rag.corpus_stats (
    tenant    text NOT NULL,
    chunks    bigint NOT NULL,   -- deltas, summed per tenant: one row per writing statement
    total_len bigint NOT NULL
);
CREATE INDEX corpus_stats_tenant ON rag.corpus_stats (tenant) INCLUDE (chunks, total_len);

SELECT pg_catalog.pg_extension_config_dump('rag.postings_default', '');
SELECT pg_catalog.pg_extension_config_dump('rag.lexeme_stats', '');
SELECT pg_catalog.pg_extension_config_dump('rag.corpus_stats', '');
