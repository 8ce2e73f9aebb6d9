-- The lexical leg: Okapi BM25 computed in SQL over an inverted index that the ingest
-- path keeps up to date (no C extension). Per tenant:
--   rag.postings      (tenant, lexeme, chunk_id, tf, len): one row per lexeme of a chunk,
--                     with its term frequency and the chunk's length in lexemes
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
    tf       int NOT NULL,      -- occurrences of the lexeme in the chunk
    len      int NOT NULL,      -- the chunk's length in lexeme occurrences
    PRIMARY KEY (tenant, lexeme, chunk_id)
) PARTITION BY LIST (tenant);   -- as rag.chunks (rag.create_tenant_partition)
CREATE TABLE rag.postings_default PARTITION OF rag.postings DEFAULT;
CREATE INDEX postings_chunk ON rag.postings (chunk_id);

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

-- rag._chunks_lexical_insert / rag._chunks_lexical_delete
-- Statement triggers on rag.chunks: postings and +/- deltas for the rows of the statement.
CREATE FUNCTION rag._chunks_lexical_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH p AS (
        SELECT n.tenant, u.lexeme, n.id AS chunk_id, cardinality(u.positions) AS tf,
               sum(cardinality(u.positions)) OVER (PARTITION BY n.id) AS len
        FROM new_rows AS n, unnest(n.tsv) AS u
    ), postings AS (
        INSERT INTO rag.postings (tenant, lexeme, chunk_id, tf, len)
        SELECT p.tenant, p.lexeme, p.chunk_id, p.tf, p.len FROM p
    ), df AS (
        INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
        SELECT p.tenant, p.lexeme, count(*) FROM p GROUP BY 1, 2
    )
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT n.tenant, count(*), coalesce(sum(l.len), 0)
    FROM new_rows AS n LEFT JOIN (SELECT DISTINCT p.chunk_id, p.len FROM p) AS l ON l.chunk_id = n.id
    GROUP BY n.tenant;
    PERFORM rag.compact_lexical_stats(t.tenant, 32) FROM (SELECT DISTINCT n.tenant FROM new_rows AS n) AS t;
    RETURN NULL;
END
$$;

CREATE FUNCTION rag._chunks_lexical_delete()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM rag.postings AS po USING old_rows AS o WHERE po.chunk_id = o.id;
    INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
    SELECT o.tenant, u.lexeme, -count(*) FROM old_rows AS o, unnest(o.tsv) AS u GROUP BY 1, 2;
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT o.tenant, -count(*),
           -coalesce(sum((SELECT sum(cardinality(u.positions)) FROM unnest(o.tsv) AS u)), 0)
    FROM old_rows AS o GROUP BY o.tenant;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_lexical_insert AFTER INSERT ON rag.chunks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._chunks_lexical_insert();
CREATE TRIGGER chunks_lexical_delete AFTER DELETE ON rag.chunks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._chunks_lexical_delete();

-- rag.compact_lexical_stats
-- Fold a tenant's statistics deltas into one row per lexeme, once more than
-- `min_statements` writing statements have added deltas since the last time (the
-- triggers call it with 32, so a query sums at most ~33 rows per lexeme). Safe with
-- concurrent writers: DELETE ... RETURNING never hands the same delta to two
-- compactions, and deltas added meanwhile are left for the next one.
CREATE FUNCTION rag.compact_lexical_stats(tenant text DEFAULT rag.current_tenant(), min_statements int DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM (SELECT 1 FROM rag.corpus_stats AS s
                                 WHERE s.tenant = compact_lexical_stats.tenant
                                 LIMIT greatest(min_statements, 0) + 1) AS x;
    IF n <= min_statements OR NOT pg_try_advisory_xact_lock(hashtext('rag.compact_lexical_stats:' || tenant)) THEN
        RETURN 0;
    END IF;
    WITH d AS (DELETE FROM rag.lexeme_stats AS s WHERE s.tenant = compact_lexical_stats.tenant
               RETURNING s.lexeme, s.df)
    INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
    SELECT compact_lexical_stats.tenant, d.lexeme, sum(d.df) FROM d GROUP BY d.lexeme HAVING sum(d.df) <> 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    WITH d AS (DELETE FROM rag.corpus_stats AS s WHERE s.tenant = compact_lexical_stats.tenant
               RETURNING s.chunks, s.total_len)
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT compact_lexical_stats.tenant, sum(d.chunks), sum(d.total_len) FROM d HAVING count(*) > 0;
    RETURN n;
END
$$;

-- rag.query_lexemes
-- The distinct lexemes of a query, as the lexical leg sees them (english stemming).
CREATE FUNCTION rag.query_lexemes(query text)
RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tsvector_to_array(to_tsvector('english'::regconfig, query)) $$;

-- rag.bm25
-- Okapi BM25 over the current tenant's chunks, best first (the lexical leg of rag.search):
--   score = sum over query lexemes t in the chunk of
--           idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))
--   idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
-- N (chunks), df and avglen (lexemes per chunk) are the tenant's corpus statistics; k1
-- and b default to the settings rag.bm25_k1 and rag.bm25_b. Candidates are the postings
-- of the query's lexemes (an index lookup per lexeme); `filter` is rag.search's filter.
CREATE FUNCTION rag.bm25(query text, n int DEFAULT 30, k1 float8 DEFAULT NULL, b float8 DEFAULT NULL,
                         filter jsonb DEFAULT NULL)
RETURNS TABLE (chunk_id bigint, score float8)
LANGUAGE plpgsql STABLE ROWS 30
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    my_tenant text := rag.current_tenant();
    pred text := rag._filter_predicate(filter);
    n_chunks float8;
    total_len float8;
BEGIN
    k1 := coalesce(k1, rag._setting('bm25_k1')::float8);
    b := coalesce(b, rag._setting('bm25_b')::float8);
    IF k1 < 0 OR b < 0 OR b > 1 THEN
        RAISE EXCEPTION 'rag.bm25: k1 must be >= 0 and b between 0 and 1, got % and %', k1, b
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT sum(c.chunks), sum(c.total_len) INTO n_chunks, total_len
    FROM rag.corpus_stats AS c WHERE c.tenant = my_tenant;
    IF coalesce(n_chunks, 0) <= 0 OR query IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT po.chunk_id,
               sum(i.idf * po.tf * ($3 + 1) / (po.tf + $3 * (1 - $4 + $4 * po.len / $6))) AS score
        FROM (SELECT s.lexeme, ln(1 + ($5 - sum(s.df) + 0.5) / (sum(s.df) + 0.5)) AS idf
              FROM rag.lexeme_stats AS s
              WHERE s.tenant = $1 AND s.lexeme = ANY ($2)
              GROUP BY s.lexeme
              HAVING sum(s.df) > 0) AS i
        JOIN rag.postings AS po ON po.tenant = $1 AND po.lexeme = i.lexeme %s
        GROUP BY po.chunk_id
        ORDER BY score DESC, po.chunk_id
        LIMIT $7 $q$,
        CASE WHEN pred IS NULL THEN ''
             ELSE 'JOIN rag.chunks AS c ON c.id = po.chunk_id AND c.tenant = po.tenant JOIN rag.documents AS d ON d.id = c.document_id AND ' || pred END)
    USING my_tenant, rag.query_lexemes(query), k1, b, n_chunks, greatest(total_len / n_chunks, 1), n;
END
$$;

-- rag.lexical_stats
-- The current tenant's lexical statistics, for inspection and BI: one row per lexeme.
CREATE VIEW rag.lexical_stats WITH (security_invoker = true) AS
    SELECT s.lexeme, sum(s.df)::bigint AS document_frequency
    FROM rag.lexeme_stats AS s
    WHERE s.tenant = rag.current_tenant()
    GROUP BY s.lexeme
    HAVING sum(s.df) > 0;

SELECT pg_catalog.pg_extension_config_dump('rag.postings_default', '');
SELECT pg_catalog.pg_extension_config_dump('rag.lexeme_stats', '');
SELECT pg_catalog.pg_extension_config_dump('rag.corpus_stats', '');
