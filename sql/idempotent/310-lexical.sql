-- rag._chunks_lexical_insert / rag._chunks_lexical_delete
-- Statement triggers on rag.chunks: postings and +/- deltas for the rows of the statement.
CREATE OR REPLACE FUNCTION rag._chunks_lexical_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rag._restoring() THEN
        RETURN NULL;  -- postings and statistics are in the dump
    END IF;
    WITH p AS (
        SELECT n.tenant, u.lexeme, n.id AS chunk_id, cardinality(u.positions) AS tf,
               sum(cardinality(u.positions)) OVER (PARTITION BY n.id) AS len
        FROM new_rows AS n, unnest(n.tsv) AS u
    ), lens AS (     -- the length of each chunk of the statement (none: no lexemes)
        SELECT DISTINCT p.chunk_id, p.len FROM p
    ), avglen AS (   -- per tenant, with this statement's chunks
        SELECT n.tenant, (coalesce(sum(l.len), 0) + coalesce(max(s.total_len), 0))::float8
                         / greatest(count(*) + coalesce(max(s.chunks), 0), 1) AS v
        FROM new_rows AS n
        LEFT JOIN lens AS l ON l.chunk_id = n.id
        LEFT JOIN (SELECT c.tenant, sum(c.chunks) AS chunks, sum(c.total_len) AS total_len
                   FROM rag.corpus_stats AS c
                   WHERE c.tenant IN (SELECT DISTINCT n2.tenant FROM new_rows AS n2)
                   GROUP BY c.tenant) AS s ON s.tenant = n.tenant
        GROUP BY n.tenant
    ), postings AS (
        INSERT INTO rag.postings (tenant, lexeme, chunk_id, tf, len, impact)
        SELECT p.tenant, p.lexeme, p.chunk_id, p.tf, p.len,
               p.tf * 1.9 / (p.tf + 0.9 * (0.6 + 0.4 * p.len / greatest(a.v, 1)))
        FROM p JOIN avglen AS a ON a.tenant = p.tenant
    ), df AS (
        INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
        SELECT p.tenant, p.lexeme, count(*) FROM p GROUP BY 1, 2
    )
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT n.tenant, count(*), coalesce(sum(l.len), 0)
    FROM new_rows AS n LEFT JOIN lens AS l ON l.chunk_id = n.id
    GROUP BY n.tenant;
    PERFORM rag.compact_lexical_stats(t.tenant, 32) FROM (SELECT DISTINCT n.tenant FROM new_rows AS n) AS t;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rag._chunks_lexical_delete()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rag._restoring() THEN
        RETURN NULL;
    END IF;
    -- by primary key: a chunk's postings are the lexemes of its tsv
    DELETE FROM rag.postings AS po
    USING (SELECT o.tenant, o.id, u.lexeme FROM old_rows AS o, unnest(o.tsv) AS u) AS k
    WHERE po.tenant = k.tenant AND po.lexeme = k.lexeme AND po.chunk_id = k.id;
    INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
    SELECT o.tenant, u.lexeme, -count(*) FROM old_rows AS o, unnest(o.tsv) AS u GROUP BY 1, 2;
    -- and the next model's embeddings of a switch in progress (rag.embeddings_next)
    DELETE FROM rag.embeddings_next AS n USING old_rows AS o WHERE n.chunk_id = o.id AND n.tenant = o.tenant;
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT o.tenant, -count(*),
           -coalesce(sum((SELECT sum(cardinality(u.positions)) FROM unnest(o.tsv) AS u)), 0)
    FROM old_rows AS o GROUP BY o.tenant;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER chunks_lexical_insert AFTER INSERT ON rag.chunks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._chunks_lexical_insert();
CREATE OR REPLACE TRIGGER chunks_lexical_delete AFTER DELETE ON rag.chunks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._chunks_lexical_delete();

-- rag.compact_lexical_stats
-- Fold a tenant's statistics deltas into one row per lexeme, once more than
-- `min_statements` writing statements have added deltas since the last time (the
-- triggers call it with 32, so a query sums at most ~33 rows per lexeme). Safe with
-- concurrent writers: DELETE ... RETURNING never hands the same delta to two
-- compactions, and deltas added meanwhile are left for the next one.
CREATE OR REPLACE FUNCTION rag.compact_lexical_stats(tenant text DEFAULT rag.current_tenant(), min_statements int DEFAULT 0)
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
CREATE OR REPLACE FUNCTION rag.query_lexemes(query text)
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
-- and b default to the settings rag.bm25_k1 and rag.bm25_b.
-- Candidates: the best rag.bm25_term_candidates (at least n) postings of each query lexeme (by their
-- stored impact, one index range each), so a query costs about the same at 10k and 1M
-- chunks; the best 10n of them by the lexemes that found them are then scored exactly
-- over every query lexeme. While no query lexeme has more postings than that, this is
-- exact BM25; past it, it is top-k retrieval with a recall measured by `make bench`
-- (against exact BM25 at 100k and 1M chunks). bm25_term_candidates = 0, or a `filter`
-- (rag.search's), reads every posting of every query lexeme: exact at any size, slower.
CREATE OR REPLACE FUNCTION rag.bm25(query text, n int DEFAULT 30, k1 float8 DEFAULT NULL, b float8 DEFAULT NULL,
                         filter jsonb DEFAULT NULL)
RETURNS TABLE (chunk_id bigint, score float8)
LANGUAGE plpgsql STABLE ROWS 30
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    my_tenant text := rag.current_tenant();
    pred text := rag._filter_predicate(filter);
    per_term int := rag._setting('bm25_term_candidates')::int;
    n_chunks float8;
    total_len float8;
    avglen float8;
    lexemes text[];
    idfs float8[];
    whole boolean[];   -- the lexemes with at most per_term postings: read whole
BEGIN
    k1 := coalesce(k1, rag._setting('bm25_k1')::float8);
    b := coalesce(b, rag._setting('bm25_b')::float8);
    IF k1 < 0 OR b < 0 OR b > 1 THEN
        RAISE EXCEPTION 'rag.bm25: k1 must be >= 0 and b between 0 and 1, got % and %', k1, b
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF per_term < 0 THEN
        RAISE EXCEPTION 'rag.bm25: rag.bm25_term_candidates must be >= 0, got %', per_term
            USING ERRCODE = 'invalid_parameter_value', HINT = 'RESET rag.bm25_term_candidates';
    END IF;
    SELECT sum(c.chunks), sum(c.total_len) INTO n_chunks, total_len
    FROM rag.corpus_stats AS c WHERE c.tenant = my_tenant;
    IF coalesce(n_chunks, 0) <= 0 OR query IS NULL OR n IS NULL OR n < 1 THEN
        RETURN;
    END IF;
    avglen := greatest(total_len / n_chunks, 1);
    IF pred IS NULL AND per_term > 0 THEN
        per_term := greatest(per_term, n);   -- a one-lexeme query still gets its n results
        SELECT array_agg(i.lexeme), array_agg(i.idf), array_agg(i.df <= per_term) INTO lexemes, idfs, whole
        FROM (SELECT s.lexeme, sum(s.df) AS df,
                     ln(1 + (n_chunks - sum(s.df)::float8 + 0.5) / (sum(s.df)::float8 + 0.5)) AS idf
              FROM rag.lexeme_stats AS s
              WHERE s.tenant = my_tenant AND s.lexeme = ANY (rag.query_lexemes(query))
              GROUP BY s.lexeme
              HAVING sum(s.df) > 0) AS i;
        RETURN QUERY
        WITH cand AS (         -- the best 10n by the lexemes that found them ...
            SELECT h.chunk_id,
                   sum(h.w) FILTER (WHERE q.whole) AS known   -- exact for the lexemes read whole
            FROM unnest(lexemes, idfs, whole) AS q (lexeme, idf, whole)
            CROSS JOIN LATERAL (  -- ... each lexeme's best postings, from the impact index
                SELECT po.chunk_id, q.idf * po.tf * (k1 + 1) / (po.tf + k1 * (1 - b + b * po.len / avglen)) AS w
                FROM rag.postings AS po
                WHERE po.tenant = my_tenant AND po.lexeme = q.lexeme
                ORDER BY po.impact DESC
                LIMIT per_term) AS h
            GROUP BY h.chunk_id
            ORDER BY sum(h.w) DESC
            LIMIT 10 * n
        )
        SELECT cand.chunk_id, coalesce(cand.known, 0) + coalesce(e.rest, 0)
        FROM cand CROSS JOIN LATERAL (   -- ... scored exactly: the lexemes read in part are
            SELECT sum(q.idf * po.tf * (k1 + 1) / (po.tf + k1 * (1 - b + b * po.len / avglen))) AS rest
            FROM unnest(lexemes, idfs, whole) AS q (lexeme, idf, whole)   -- looked up by key
            JOIN rag.postings AS po ON po.tenant = my_tenant AND po.lexeme = q.lexeme AND po.chunk_id = cand.chunk_id
            WHERE NOT q.whole) AS e
        ORDER BY 2 DESC, 1
        LIMIT n;
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
    USING my_tenant, rag.query_lexemes(query), k1, b, n_chunks, avglen, n;
END
$$;

-- rag.lexical_stats
-- The current tenant's lexical statistics, for inspection and BI: one row per lexeme.
CREATE OR REPLACE VIEW rag.lexical_stats WITH (security_invoker = true) AS
    SELECT s.lexeme, sum(s.df)::bigint AS document_frequency
    FROM rag.lexeme_stats AS s
    WHERE s.tenant = rag.current_tenant()
    GROUP BY s.lexeme
    HAVING sum(s.df) > 0;
