-- Retrieval: vector leg (HNSW, cosine) + lexical leg (full text, any query term),
-- fused with Reciprocal Rank Fusion. One call, one round trip.

-- rag._check_query
-- Validate a question or search query and k (internal).
CREATE FUNCTION rag._check_query(query text, k int, caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_chars int := rag._setting('max_query_chars')::int;
    max_k int := rag._setting('max_k')::int;
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION '%: query is NULL', caller USING ERRCODE = 'null_value_not_allowed';
    ELSIF btrim(query, E' \t\r\n\f\v') = '' THEN
        RAISE EXCEPTION '%: query is empty', caller
            USING ERRCODE = 'invalid_parameter_value', HINT = 'ask a question with some words in it';
    ELSIF length(query) > max_chars THEN
        RAISE EXCEPTION '%: query is % characters, over the limit of %', caller, length(query), max_chars
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'shorten the query, or raise the limit: SET rag.max_query_chars = ...';
    ELSIF k IS NULL OR k < 1 OR k > max_k THEN
        RAISE EXCEPTION '%: k must be between 1 and %, got %', caller, max_k, coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- rag.any_terms_tsquery
-- A tsquery matching any of the query's terms (english stemming, stop words dropped).
-- websearch_to_tsquery requires every term, and natural questions then match nothing.
CREATE FUNCTION rag.any_terms_tsquery(query text)
RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery
    FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, query))) AS lexeme
$$;

-- rag.search
-- Hybrid search: top 30 by cosine (HNSW, ef_search 100) and top 30 by full-text rank,
-- fused with RRF (c = 60). Returns k chunks, best first, with each leg's rank.
CREATE FUNCTION rag.search(query text, k int DEFAULT 8)
RETURNS TABLE (
    chunk_id     bigint,
    document_id  bigint,
    ord          int,
    content      text,
    score        double precision,
    vector_rank  int,
    lexical_rank int)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET hnsw.ef_search = 100
AS $$
DECLARE
    qvec vector;
    tsq  tsquery;
BEGIN
    PERFORM rag._check_query(query, k, 'rag.search');
    qvec := rag.embed(query);
    tsq := rag.any_terms_tsquery(query);
    RETURN QUERY
    WITH vec AS (
        SELECT v.id, row_number() OVER (ORDER BY v.dist, v.id) AS r
        FROM (SELECT c.id, c.embedding <=> qvec AS dist
              FROM rag.chunks AS c
              ORDER BY c.embedding <=> qvec
              LIMIT 30) AS v
    ), lex AS (
        SELECT l.id, row_number() OVER (ORDER BY l.rank DESC, l.id) AS r
        FROM (SELECT c.id, ts_rank(c.tsv, tsq) AS rank
              FROM rag.chunks AS c
              WHERE c.tsv @@ tsq
              ORDER BY rank DESC, c.id
              LIMIT 30) AS l
    ), fused AS (
        SELECT coalesce(vec.id, lex.id) AS id, vec.r AS vr, lex.r AS lr,
               coalesce(1.0 / (60 + vec.r), 0) + coalesce(1.0 / (60 + lex.r), 0) AS rrf
        FROM vec FULL JOIN lex ON lex.id = vec.id
    )
    SELECT c.id, c.document_id, c.ord, c.content, f.rrf::double precision, f.vr::int, f.lr::int
    FROM fused AS f JOIN rag.chunks AS c ON c.id = f.id
    ORDER BY f.rrf DESC, f.vr NULLS LAST, c.id
    LIMIT k;
END
$$;
