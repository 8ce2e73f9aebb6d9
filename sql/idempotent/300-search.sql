-- Retrieval: vector leg (HNSW, cosine) + lexical leg (BM25 over any query term), fused by
-- their scores (or by Reciprocal Rank Fusion). One call, one round trip.

-- rag._check_query
-- Validate a question or search query and k (internal).
CREATE OR REPLACE FUNCTION rag._check_query(query text, k int, caller text)
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
                  HINT = 'shorten the query, or ask an administrator to raise rag.max_query_chars: SELECT rag.configure(''max_query_chars'', ...)';
    ELSIF k IS NULL OR k < 1 OR k > max_k THEN
        RAISE EXCEPTION '%: k must be between 1 and %, got %', caller, max_k, coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- rag.any_terms_tsquery
-- A tsquery matching any of the query's terms (english stemming, stop words dropped).
-- websearch_to_tsquery requires every term, and natural questions then match nothing.
CREATE OR REPLACE FUNCTION rag.any_terms_tsquery(query text)
RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery
    FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, query))) AS lexeme
$$;

-- rag._filter_predicate
-- SQL predicate on documents alias d for a search filter (internal). A filter is a JSON
-- object: "source" matches the document's source (a string, or an array of strings);
-- every other key must match the document's metadata (jsonb containment, @>).
CREATE OR REPLACE FUNCTION rag._filter_predicate(filter jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[] := ARRAY['true'];
    src jsonb := filter->'source';
BEGIN
    IF filter IS NULL THEN
        RETURN NULL;
    ELSIF jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION 'rag.search: filter must be a JSON object, got %', jsonb_typeof(filter)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. ''{"source": "handbook.md"}'' or ''{"team": "support"}'' (matched against metadata)';
    ELSIF octet_length(filter::text) > 1048576 THEN
        -- (its text is pasted into the legs' SQL, quoted: a plan's memory grows with it)
        RAISE EXCEPTION 'rag.search: the filter is % bytes, over the limit of 1048576', octet_length(filter::text)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'filter by fewer sources or metadata values, or by a metadata key they share';
    END IF;
    IF src IS NOT NULL THEN
        IF jsonb_typeof(src) = 'string' THEN
            parts := parts || format('d.source = %L', src->>0);
        ELSIF jsonb_typeof(src) = 'array' AND NOT EXISTS (
                SELECT 1 FROM jsonb_array_elements(src) AS e WHERE jsonb_typeof(e) <> 'string') THEN
            parts := parts || format('d.source = ANY (%L::text[])',
                                     ARRAY(SELECT jsonb_array_elements_text(src)));
        ELSE
            RAISE EXCEPTION 'rag.search: filter->''source'' must be a string or an array of strings, got %',
                            jsonb_typeof(src) USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF (filter - 'source') <> '{}'::jsonb THEN
        parts := parts || format('d.metadata @> %L::jsonb', (filter - 'source')::text);
    END IF;
    RETURN array_to_string(parts, ' AND ');
END
$$;

-- rag._ef_search (internal)
-- The HNSW candidate list for a tenant's search: the setting rag.ef_search, or with
-- 'auto' one that grows with the corpus. Measured (make bench-full, 2026-12-02): on 1M
-- synthetic chunks, recall@10 0.77 at 100, 0.91 at 400 and 0.92 at 800 (the vector leg
-- 5.4 and 11 ms): past 400 the graph, not the list, limits recall.
CREATE OR REPLACE FUNCTION rag._ef_search(tenant text)
RETURNS int
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := rag._setting('ef_search');
    n bigint;
BEGIN
    IF v = 'auto' THEN
        SELECT coalesce(sum(c.chunks), 0) INTO n FROM rag.corpus_stats AS c WHERE c.tenant = _ef_search.tenant;
        RETURN least(1000, greatest(100, n / 2500))::int;
    ELSIF v !~ '^\s*\d{1,4}\s*$' OR v::int NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'rag.search: setting rag.ef_search must be auto or between 1 and 1000, got %', rag._shown(v)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'RESET rag.ef_search';
    END IF;
    RETURN v::int;
END
$$;

-- rag._search_legs (internal): rag.search's candidates (ragpg.pg.search_legs), the union
-- of each leg's best: ids, each leg's score (vector: cosine similarity, averaged with the
-- best window's for a chunk with window embeddings; lexical: BM25 or ts_rank) and rank
-- (NULL outside that leg's top; the vector leg ranked by its score; window_embeddings: the
-- setting, off: cosines only). With both_scores every candidate gets both legs' scores,
-- and with proximity (BM25) its proximity: the IDF-weighted share of the query's lexemes
-- it holds within 12 word positions (0..1), and unless lexical_windows (the setting) is
-- off its best window's BM25 (its windows, the sentences its window embeddings are made
-- of, each scored as a document). usage: the rag.usage rows of its model calls, for the
-- caller to write (rag._log_usage: from plpgsql, with no subtransaction id of its own).
-- ok is NULL with a pending error. The query's embedding runs in a worker thread while the
-- BM25 leg runs.
CREATE OR REPLACE FUNCTION rag._search_legs(query text, mode text, vector_k int, lexical_k int, k1 float8, b float8,
                                            filter jsonb, lexical_ranking text, both_scores boolean, proximity boolean,
                                            window_embeddings text DEFAULT 'on', lexical_windows text DEFAULT 'on',
                                            OUT ids bigint[], OUT vector_scores float8[], OUT lexical_scores float8[],
                                            OUT vector_ranks int[], OUT lexical_ranks int[], OUT proximities float8[],
                                            OUT window_lexical_scores float8[], OUT usage jsonb, OUT ok boolean)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.search_legs(plpy, query, mode, vector_k, lexical_k, k1, b, filter, lexical_ranking, both_scores,
                                proximity, window_embeddings, lexical_windows)
$python$;

-- rag._rerank (internal): each passage's new rank (1-based) by a reranker or a chat model
-- (ragpg.rerank), its scores (rerank models), or the error that made it fail (then the
-- search keeps its fused order); usage as rag._search_legs'; ok is NULL with a pending error.
CREATE OR REPLACE FUNCTION rag._rerank(query text, model text, kind text, passages text[],
                                       OUT ranks int[], OUT scores float8[], OUT error text, OUT usage jsonb,
                                       OUT ok boolean)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.rerank(plpy, query, model, kind, passages)
$python$;

-- rag.page_url
-- A document's URL pointing at a page: '#page=N' (the PDF open parameter browsers and
-- PDF viewers follow) in place of any fragment. NULL without a URL; the URL as it is
-- without a page.
CREATE OR REPLACE FUNCTION rag.page_url(url text, page int)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN page IS NULL THEN url
                ELSE split_part(url, '#', 1) OPERATOR(pg_catalog.||) '#page=' OPERATOR(pg_catalog.||) page::text END
$$;

-- rag.search
-- Hybrid search: the vector leg (HNSW, cosine) and the lexical leg (BM25 over any query
-- term, or ts_rank) each give their top candidates, fused:
--   fusion 'convex' (default): every candidate gets both legs' scores (its cosine, its
--            exact BM25), each min-max normalised over the candidates, combined as
--            (w_v * vector + w_l * lexical) / (w_v + w_l) + w_p * proximity
--            where, with proximity_weight w_p > 0 (0.2; 0 turns both off) and the setting
--            rag.lexical_windows on, lexical = 0.7 * BM25 + 0.3 * its best window's BM25
--            (each normalised: the passage-level evidence the vector score has from the
--            window embeddings)
--            and proximity (0..1) is the IDF-weighted share of the query's lexemes the
--            chunk holds within 12 word positions: a passage that answers a question
--            tends to hold its words together (measured in docs/retrieval-quality.md)
--   fusion 'rrf': Reciprocal Rank Fusion, w_v / (rrf_c + vector_rank) + w_l / (rrf_c +
--            lexical_rank)
-- (weights w_v, w_l: vector_weight and lexical_weight, 1 and 1)
-- In mode 'vector' the score is the vector score (the cosine, or with window embeddings
-- its mean with the best window's cosine), in 'lexical' the BM25 (ts_rank) score.
--   rerank   a model of kind 'rerank' (POST {base_url}/rerank) or a chat model (listwise):
--            it reorders the fused best rerank_k (30) candidates; rerank_rank is its order.
--            If it fails, the fused order stays, rerank_rank is NULL and a WARNING says why.
--   mode     'hybrid' (default), 'vector' or 'lexical'
--   filter   JSON object on documents: {"source": ...} and/or metadata keys (see above);
--            HNSW iterative scans keep returning k rows when the filter is selective
-- HNSW knobs come from the settings rag.ef_search (rag._ef_search) and rag.iterative_scan.
-- Results always come from the current tenant, also for roles that bypass row-level security.
CREATE OR REPLACE FUNCTION rag.search(
    query           text,
    k               int DEFAULT 8,
    mode            text DEFAULT 'hybrid',
    filter          jsonb DEFAULT NULL,
    vector_k        int DEFAULT 30,
    lexical_k       int DEFAULT 30,
    rrf_c           int DEFAULT 60,
    vector_weight   float8 DEFAULT 1,
    lexical_weight  float8 DEFAULT 1,
    lexical_ranking text DEFAULT 'bm25',
    fusion          text DEFAULT 'convex',
    rerank          text DEFAULT NULL,
    rerank_k        int DEFAULT 30,
    proximity_weight float8 DEFAULT 0.2)
RETURNS TABLE (
    chunk_id     bigint,
    document_id  bigint,
    ord          int,
    content      text,
    score        double precision,
    vector_rank  int,
    lexical_rank int,
    source_table text,      -- for documents of an attached table: the table ...
    source_key   jsonb,     -- ... and the row's primary key, to JOIN back to it
    rerank_rank  int,       -- the reranker's order (NULL: not reranked)
    heading      text,      -- where the chunk is: its heading path,
    page         int,       -- its page (PDF; NULL for text without pages),
    url          text)      -- and its document's URL, with #page=N when the page is known
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_k int := rag._setting('max_k')::int;
    my_tenant text := rag.current_tenant();
    legs record;
    ef int;
    rerank_kind text;
    f_ids bigint[];      -- the fused order's best, and their scores and leg ranks
    f_scores float8[];
    f_vr int[];
    f_lr int[];
    rr record;
    rr_ranks int[];      -- the reranker's rank of each of the first rerank_k
BEGIN
    PERFORM rag._check_query(query, k, 'rag.search');
    PERFORM rag._filter_predicate(filter);   -- a bad filter is named here
    IF fusion IS NULL OR fusion NOT IN ('convex', 'rrf') THEN
        RAISE EXCEPTION 'rag.search: fusion must be convex or rrf, got %', rag._shown(fusion)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF mode IS NULL OR mode NOT IN ('hybrid', 'vector', 'lexical') THEN
        RAISE EXCEPTION 'rag.search: mode must be hybrid, vector or lexical, got %', rag._shown(mode)
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF lexical_ranking IS NULL OR lexical_ranking NOT IN ('bm25', 'ts_rank') THEN
        RAISE EXCEPTION 'rag.search: lexical_ranking must be bm25 or ts_rank, got %',
                        rag._shown(lexical_ranking) USING ERRCODE = 'invalid_parameter_value';
    ELSIF vector_k IS NULL OR lexical_k IS NULL OR least(vector_k, lexical_k) < 1 OR greatest(vector_k, lexical_k) > max_k THEN
        RAISE EXCEPTION 'rag.search: vector_k and lexical_k must be between 1 and %, got % and %',
                        max_k, coalesce(vector_k::text, 'NULL'), coalesce(lexical_k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF rrf_c IS NULL OR rrf_c < 0 THEN
        RAISE EXCEPTION 'rag.search: rrf_c must be >= 0, got %', coalesce(rrf_c::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    -- weights are bounded, so that no sum or product of the fusion overflows or underflows
    -- (float8 arithmetic raises 22003 for either); only their ratios matter
    ELSIF vector_weight IS NULL OR lexical_weight IS NULL
          OR NOT (vector_weight = 0 OR vector_weight BETWEEN 1e-6 AND 1e6)
          OR NOT (lexical_weight = 0 OR lexical_weight BETWEEN 1e-6 AND 1e6)
          OR (vector_weight = 0 AND lexical_weight = 0) THEN
        RAISE EXCEPTION 'rag.search: weights must each be 0 or between 1e-6 and 1e6, and not both 0, got % and %',
                        coalesce(vector_weight::text, 'NULL'), coalesce(lexical_weight::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'only their ratio matters: vector_weight => 2, lexical_weight => 1';
    ELSIF proximity_weight IS NULL OR NOT (proximity_weight = 0 OR proximity_weight BETWEEN 1e-6 AND 1e6) THEN
        RAISE EXCEPTION 'rag.search: proximity_weight must be 0 or between 1e-6 and 1e6, got %',
                        coalesce(proximity_weight::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = '0 turns the proximity term off';
    END IF;
    IF rerank IS NOT NULL THEN
        SELECT m.kind INTO rerank_kind FROM rag.models AS m WHERE m.name = rerank;
        IF NOT FOUND THEN
            PERFORM rag._model(rerank, 'rerank');   -- 42704, named
        ELSIF rerank_kind = 'embed' THEN
            RAISE EXCEPTION 'rag.search: model % is an embedding model; rerank takes a rerank or chat model',
                            rag._shown(rerank) USING ERRCODE = 'invalid_parameter_value';
        ELSIF rerank_k IS NULL OR rerank_k < 1 OR rerank_k > least(100, max_k) THEN
            RAISE EXCEPTION 'rag.search: rerank_k must be between 1 and %, got %', least(100, max_k),
                            coalesce(rerank_k::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    IF mode IN ('hybrid', 'vector') THEN
        ef := greatest(rag._ef_search(my_tenant), vector_k);
        PERFORM set_config('hnsw.ef_search', ef::text, true);
        PERFORM set_config('hnsw.iterative_scan', rag._setting('iterative_scan'), true);
    END IF;
    -- the query's embedding, then the tenant's chunks of its embedding model through that
    -- model's partial HNSW index (on a small table the planner may prefer an exact scan
    -- and sort: also right); BM25 meanwhile; then, for score fusion, each candidate's
    -- score in the leg that did not rank it
    SELECT * INTO legs FROM rag._search_legs(query, mode, vector_k, lexical_k,
                                             CASE WHEN mode <> 'vector' THEN rag._setting('bm25_k1')::float8 END,
                                             CASE WHEN mode <> 'vector' THEN rag._setting('bm25_b')::float8 END,
                                             filter, lexical_ranking, mode = 'hybrid' AND fusion = 'convex',
                                             mode = 'hybrid' AND fusion = 'convex' AND proximity_weight > 0,
                                             rag._setting('window_embeddings'), rag._setting('lexical_windows'));
    IF legs.ok IS NULL THEN
        PERFORM rag._raise_python_error();
    ELSIF legs.usage IS NOT NULL THEN   -- the query's embedding by a remote model
        PERFORM rag._log_usage(legs.usage);
    END IF;

    -- the fusion is static SQL, planned once per session: the best 2k candidates (so that
    -- a chunk deleted meanwhile by another transaction leaves k), or rerank_k
    WITH u AS (SELECT u.id, u.vs, u.ls, u.vr, u.lr, u.px, u.wl
               FROM unnest(legs.ids, legs.vector_scores, legs.lexical_scores, legs.vector_ranks, legs.lexical_ranks,
                           legs.proximities, legs.window_lexical_scores) AS u (id, vs, ls, vr, lr, px, wl)),
         span AS (SELECT min(u.vs) AS vlo, max(u.vs) - min(u.vs) AS vw, min(u.ls) AS llo, max(u.ls) - min(u.ls) AS lw,
                         min(u.wl) AS wlo, max(u.wl) - min(u.wl) AS ww
                  FROM u),
         fused AS (
            SELECT u.id, u.vr, u.lr,
                   CASE WHEN mode = 'vector' THEN u.vs
                        WHEN mode = 'lexical' THEN u.ls
                        WHEN fusion = 'rrf' THEN coalesce(vector_weight / (rrf_c + u.vr), 0)
                                                 + coalesce(lexical_weight / (rrf_c + u.lr), 0)
                        -- min-max normalised (all equal: 1), then the weighted mean, and
                        -- the proximity term; the lexical score with its best window's
                        ELSE (vector_weight * coalesce((u.vs - span.vlo) / nullif(span.vw, 0), 1)
                              + lexical_weight * CASE WHEN u.wl IS NULL
                                                      THEN coalesce((u.ls - span.llo) / nullif(span.lw, 0), 1)
                                                      ELSE 0.7 * coalesce((u.ls - span.llo) / nullif(span.lw, 0), 1)
                                                           + 0.3 * coalesce((u.wl - span.wlo) / nullif(span.ww, 0), 1)
                                                 END)
                             / (vector_weight + lexical_weight)
                             + proximity_weight * coalesce(u.px, 0) END AS score
            FROM u, span),
         best AS (SELECT * FROM fused ORDER BY fused.score DESC, fused.vr NULLS LAST, fused.lr NULLS LAST, fused.id
                  LIMIT greatest(2 * k, CASE WHEN rerank IS NOT NULL THEN rerank_k ELSE 0 END))
    SELECT array_agg(b.id ORDER BY b.score DESC, b.vr NULLS LAST, b.lr NULLS LAST, b.id),
           array_agg(b.score ORDER BY b.score DESC, b.vr NULLS LAST, b.lr NULLS LAST, b.id),
           array_agg(b.vr ORDER BY b.score DESC, b.vr NULLS LAST, b.lr NULLS LAST, b.id),
           array_agg(b.lr ORDER BY b.score DESC, b.vr NULLS LAST, b.lr NULLS LAST, b.id)
    INTO f_ids, f_scores, f_vr, f_lr
    FROM best AS b;

    -- the reranker reads the best rerank_k passages and gives them a new order
    IF rerank IS NOT NULL AND f_ids IS NOT NULL THEN
        SELECT * INTO rr FROM rag._rerank(query, rerank, rerank_kind, ARRAY(
            SELECT coalesce(c.content, '') FROM unnest(f_ids[1:rerank_k]) WITH ORDINALITY AS x (id, n)
            LEFT JOIN rag.chunks AS c ON c.id = x.id AND c.tenant = my_tenant ORDER BY x.n));
        IF rr.ok IS NULL THEN
            PERFORM rag._raise_python_error();
        END IF;
        IF rr.usage IS NOT NULL THEN
            PERFORM rag._log_usage(rr.usage);
        END IF;
        IF rr.error IS NOT NULL THEN
            RAISE WARNING 'rag.search: the reranker % failed; the results keep the fused order: %', rag._shown(rerank), rr.error
                USING HINT = 'rerank_rank is NULL on every row';
        ELSE
            rr_ranks := rr.ranks;
        END IF;
    END IF;

    -- the rows by key (LATERAL: a few index probes, where a join planned for any number
    -- of ids hashed the whole documents table)
    RETURN QUERY
    SELECT c.id, c.document_id, c.ord, c.content, f.score, f.vr, f.lr, d.source_table, d.source_key, f.rr,
           c.heading, c.page, rag.page_url(d.url, c.page)
    FROM unnest(f_ids, f_scores, f_vr, f_lr, rr_ranks) WITH ORDINALITY AS f (id, score, vr, lr, rr, n)
    CROSS JOIN LATERAL (SELECT c.id, c.document_id, c.ord, c.content, c.heading, c.page FROM rag.chunks AS c
                        WHERE c.id = f.id AND c.tenant = my_tenant) AS c
    CROSS JOIN LATERAL (SELECT d.source_table, d.source_key, d.url FROM rag.documents AS d
                        WHERE d.id = c.document_id) AS d
    ORDER BY f.rr NULLS LAST, f.n
    LIMIT k;
END
$$;
