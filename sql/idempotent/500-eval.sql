-- rag._eval_tenant
-- The tenant of an eval set, checked: the caller must be allowed to act for it (internal).
CREATE OR REPLACE FUNCTION rag._eval_tenant(set_name text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text;
BEGIN
    SELECT s.tenant INTO t FROM rag.eval_sets AS s WHERE s.name = set_name;
    IF t IS NULL THEN
        RAISE EXCEPTION 'rag.evaluate: no eval set %', coalesce(quote_literal(set_name), 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'load one: ragpg eval load --dsn ... --set NAME --dir DIR (BEIR layout)';
    END IF;
    RETURN t;
END
$$;

-- rag.evaluate
-- Run every query of an eval set through rag.search(mode, k results) in the set's tenant,
-- store per-query and overall nDCG@10 (linear gain), recall@10, recall@100 and MRR@10,
-- and return the run id. Document judgments are scored on chunk results by each
-- document's best chunk rank. Extra rag.search parameters can be passed in `params`
-- (e.g. '{"rrf_c": 20, "lexical_ranking": "ts_rank"}').
CREATE OR REPLACE FUNCTION rag.evaluate(set_name text, mode text DEFAULT 'hybrid', k int DEFAULT 100, params jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant text := rag._eval_tenant(set_name);
    run bigint;
    q record;
    t0 timestamptz := clock_timestamp();
    cand int := greatest(30, k);
BEGIN
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'rag.evaluate: params must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('rag.tenant', tenant, true);
    PERFORM rag.current_tenant();  -- 42501 unless the caller may act for the set's tenant
    params := jsonb_build_object('vector_k', cand, 'lexical_k', cand, 'rrf_c', 60, 'vector_weight', 1,
                                 'lexical_weight', 1, 'lexical_ranking', 'bm25')
              || params
              || jsonb_build_object('settings', (SELECT jsonb_object_agg(s.name, s.value) FROM rag.settings() AS s));
    INSERT INTO rag.eval_run (set_name, mode, k, params) VALUES (evaluate.set_name, evaluate.mode, evaluate.k, params)
    RETURNING id INTO run;

    FOR q IN SELECT eq.query_id, eq.query FROM rag.eval_queries AS eq
             WHERE eq.set_name = evaluate.set_name ORDER BY eq.query_id LOOP
        INSERT INTO rag.eval_run_query (run_id, query_id, ndcg_10, recall_10, recall_100, mrr_10)
        WITH hits AS (
            SELECT s.chunk_id, s.document_id,
                   row_number() OVER (ORDER BY s.score DESC, s.vector_rank NULLS LAST, s.chunk_id) AS rn
            FROM rag.search(q.query, evaluate.k, evaluate.mode, NULL,
                            (params->>'vector_k')::int, (params->>'lexical_k')::int, (params->>'rrf_c')::int,
                            (params->>'vector_weight')::float8, (params->>'lexical_weight')::float8,
                            params->>'lexical_ranking') AS s
        ), rel AS (
            SELECT r.doc_source, r.chunk_id, r.grade FROM rag.eval_qrels AS r
            WHERE r.set_name = evaluate.set_name AND r.query_id = q.query_id
        ), by_doc AS (   -- each document at its best chunk's rank
            SELECT d.source, row_number() OVER (ORDER BY min(h.rn)) AS rank
            FROM hits AS h JOIN rag.documents AS d ON d.id = h.document_id
            GROUP BY d.source
        ), ranked AS (   -- judged items with the rank they got (NULL: not retrieved)
            SELECT rel.grade,
                   CASE WHEN rel.chunk_id IS NOT NULL THEN (SELECT h.rn FROM hits AS h WHERE h.chunk_id = rel.chunk_id)
                        ELSE (SELECT b.rank FROM by_doc AS b WHERE b.source = rel.doc_source) END AS rank
            FROM rel
        ), ideal AS (
            SELECT grade, row_number() OVER (ORDER BY grade DESC) AS pos FROM rel
        )
        SELECT run, q.query_id,
               coalesce((SELECT sum(grade / log(2, rank + 1)) FROM ranked WHERE rank <= 10), 0)
                 / nullif((SELECT sum(grade / log(2, pos + 1)) FROM ideal WHERE pos <= 10), 0),
               coalesce((SELECT count(*) FROM ranked WHERE rank <= 10)::float8 / nullif((SELECT count(*) FROM rel), 0), 0),
               coalesce((SELECT count(*) FROM ranked WHERE rank <= 100)::float8 / nullif((SELECT count(*) FROM rel), 0), 0),
               coalesce((SELECT 1.0 / min(rank) FROM ranked WHERE rank <= 10), 0);
    END LOOP;

    UPDATE rag.eval_run AS r
    SET queries = a.n, ndcg_10 = a.ndcg, recall_10 = a.r10, recall_100 = a.r100, mrr_10 = a.mrr,
        seconds = extract(epoch FROM clock_timestamp() - t0)
    FROM (SELECT count(*) AS n, avg(x.ndcg_10) AS ndcg, avg(x.recall_10) AS r10,
                 avg(x.recall_100) AS r100, avg(x.mrr_10) AS mrr
          FROM rag.eval_run_query AS x WHERE x.run_id = run) AS a
    WHERE r.id = run;
    RETURN run;
END
$$;

-- rag.eval_runs: every run with its overall metrics, newest first.
CREATE OR REPLACE VIEW rag.eval_runs WITH (security_invoker = true) AS
    SELECT r.id AS run_id, r.set_name, r.mode, r.k, r.queries,
           round(r.ndcg_10::numeric, 4) AS ndcg_10, round(r.recall_10::numeric, 4) AS recall_10,
           round(r.recall_100::numeric, 4) AS recall_100, round(r.mrr_10::numeric, 4) AS mrr_10,
           round(r.seconds::numeric, 1) AS seconds, r.params, r.created_at, r.run_by
    FROM rag.eval_run AS r
    ORDER BY r.id DESC;

-- rag.eval_compare: any two runs of the same set side by side (filter on run_a, run_b).
CREATE OR REPLACE VIEW rag.eval_compare WITH (security_invoker = true) AS
    SELECT a.set_name, a.id AS run_a, b.id AS run_b, a.mode AS mode_a, b.mode AS mode_b,
           round(a.ndcg_10::numeric, 4) AS ndcg_10_a, round(b.ndcg_10::numeric, 4) AS ndcg_10_b,
           round((b.ndcg_10 - a.ndcg_10)::numeric, 4) AS ndcg_10_delta,
           round(a.recall_10::numeric, 4) AS recall_10_a, round(b.recall_10::numeric, 4) AS recall_10_b,
           round(a.recall_100::numeric, 4) AS recall_100_a, round(b.recall_100::numeric, 4) AS recall_100_b,
           round(a.mrr_10::numeric, 4) AS mrr_10_a, round(b.mrr_10::numeric, 4) AS mrr_10_b,
           (SELECT count(*) FROM rag.eval_run_query AS qa JOIN rag.eval_run_query AS qb USING (query_id)
            WHERE qa.run_id = a.id AND qb.run_id = b.id AND qb.ndcg_10 > qa.ndcg_10) AS queries_better,
           (SELECT count(*) FROM rag.eval_run_query AS qa JOIN rag.eval_run_query AS qb USING (query_id)
            WHERE qa.run_id = a.id AND qb.run_id = b.id AND qb.ndcg_10 < qa.ndcg_10) AS queries_worse
    FROM rag.eval_run AS a JOIN rag.eval_run AS b ON b.set_name = a.set_name AND b.id <> a.id;
