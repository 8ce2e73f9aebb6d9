-- rag._eval_tenant
-- The tenant of the eval set a name means (internal). Sets are keyed by (tenant, name),
-- and a name is read as follows:
--   * with rag.tenant set (SET rag.tenant): that tenant's set of the name, else the only
--     set of that name the caller can see;
--   * unset: the only set of that name the caller can see (row-level security: those of
--     tenants it may act for). The default tenant gets no priority: a role's default is
--     its only granted tenant, which others share, and a set one of them adds there must
--     not silently take the place of the caller's own.
-- None is 42704, several 42P08 listing their tenants; both name the caller.
CREATE OR REPLACE FUNCTION rag._eval_tenant(set_name text, caller text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenants text[];
    mine text;
BEGIN
    IF nullif(btrim(current_setting('rag.tenant', true)), '') IS NOT NULL THEN
        mine := rag.current_tenant();  -- 42501 unless the role may act for it
        IF EXISTS (SELECT 1 FROM rag.eval_sets AS s WHERE s.tenant = mine AND s.name = set_name) THEN
            RETURN mine;
        END IF;
    END IF;
    SELECT array_agg(s.tenant ORDER BY s.tenant) INTO tenants FROM rag.eval_sets AS s WHERE s.name = set_name;
    IF tenants IS NULL THEN
        RAISE EXCEPTION '%: no eval set %', caller, rag._shown(set_name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'load one: ragpg eval --dsn ... --dir DIR --set NAME (a folder of sets in the BEIR layout)';
    ELSIF cardinality(tenants) = 1 THEN
        RETURN tenants[1];
    END IF;
    RAISE EXCEPTION '%: eval set % exists in % tenants: %', caller, rag._shown(set_name), cardinality(tenants),
        rag._shown_list(tenants)
        USING ERRCODE = 'ambiguous_parameter', HINT = 'SET rag.tenant to the tenant whose set you mean';
END
$$;

-- rag._eval_row_tenant (internal, trigger)
-- A row inserted below an eval set without its tenant belongs to the current tenant, as
-- every tenant row does (rag.current_tenant()), and must name a set that tenant holds:
-- else 42704, naming the tenant. Without SET rag.tenant, a name that another tenant the
-- caller can see also holds is 42P08, so a set that someone added to a tenant the caller
-- shares (its default) never silently takes rows meant for the caller's own. A tenant
-- given is kept (row-level security and the foreign key on (tenant, set_name) check it).
CREATE OR REPLACE FUNCTION rag._eval_row_tenant()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mine text;
    others text[];
BEGIN
    IF NEW.tenant IS NOT NULL THEN
        RETURN NEW;
    END IF;
    mine := rag.current_tenant();
    IF NOT EXISTS (SELECT 1 FROM rag.eval_sets AS s WHERE s.tenant = mine AND s.name = NEW.set_name) THEN
        RAISE EXCEPTION 'rag.%: no eval set % in tenant %', TG_TABLE_NAME, rag._shown(NEW.set_name), rag._shown(mine)
            USING ERRCODE = 'undefined_object',
                  HINT = 'give the row its tenant (the set''s), or SET rag.tenant to the set''s tenant';
    END IF;
    IF nullif(btrim(current_setting('rag.tenant', true)), '') IS NULL THEN
        SELECT array_agg(s.tenant ORDER BY s.tenant) INTO others
        FROM rag.eval_sets AS s WHERE s.name = NEW.set_name AND s.tenant <> mine;
        IF others IS NOT NULL THEN
            RAISE EXCEPTION 'rag.%: eval set % exists in your tenant % and in %', TG_TABLE_NAME,
                rag._shown(NEW.set_name), rag._shown(mine),
                rag._shown_list(others)
                USING ERRCODE = 'ambiguous_parameter',
                      HINT = 'give the row its tenant, or SET rag.tenant to the set''s tenant';
        END IF;
    END IF;
    NEW.tenant := mine;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER eval_queries_tenant BEFORE INSERT ON rag.eval_queries
    FOR EACH ROW EXECUTE FUNCTION rag._eval_row_tenant();
CREATE OR REPLACE TRIGGER eval_qrels_tenant BEFORE INSERT ON rag.eval_qrels
    FOR EACH ROW EXECUTE FUNCTION rag._eval_row_tenant();
CREATE OR REPLACE TRIGGER eval_answers_tenant BEFORE INSERT ON rag.eval_answers
    FOR EACH ROW EXECUTE FUNCTION rag._eval_row_tenant();
CREATE OR REPLACE TRIGGER eval_run_tenant BEFORE INSERT ON rag.eval_run
    FOR EACH ROW EXECUTE FUNCTION rag._eval_row_tenant();
CREATE OR REPLACE TRIGGER eval_answer_run_tenant BEFORE INSERT ON rag.eval_answer_run
    FOR EACH ROW EXECUTE FUNCTION rag._eval_row_tenant();

-- rag._eval_text (internal)
-- Text as answers are matched: lower-cased, every whitespace run one space. A gold answer
-- is also trimmed and cut to its first 200 characters (gold => true). rag.evaluate
-- (success@k: does a chunk hold the answer?) and rag.evaluate_answers (does the answer?)
-- match the same way.
CREATE OR REPLACE FUNCTION rag._eval_text(t text, gold boolean DEFAULT false)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN gold THEN left(btrim(lower(regexp_replace(t, '\s+', ' ', 'g'))), 200)
                ELSE lower(regexp_replace(t, '\s+', ' ', 'g')) END
$$;

-- rag.evaluate
-- Run every judged query of an eval set (one with rag.eval_qrels rows; trec_eval and BEIR
-- score only those) through rag.search(mode, k results) in the set's tenant,
-- store per-query and overall nDCG@10 (linear gain), recall@10, recall@100 and MRR@10,
-- and return the run id. Document judgments are scored on chunk results by each
-- document's best chunk rank. A set with gold answers (rag.eval_answers) also gets
-- success@1/5/10: one of the top k chunks comes from an answer's document and contains
-- that answer (both lower-cased with whitespace runs as one space; the answer's first 200
-- characters). Extra rag.search parameters can be passed in `params`
-- (e.g. '{"fusion": "rrf", "rrf_c": 20, "lexical_ranking": "ts_rank"}').
-- rag._eval_params (internal): an evaluation's params checked against the keys it reads
-- and their types (`types`: key -> int, float8 or text); JSON null is any type's. A key
-- it does not read, or a value of the wrong type, is a 22023 naming it (before, a typo was
-- stored with the run as if used, and a wrong type failed deep in the run, unnamed:
-- hostile review 43).
CREATE OR REPLACE FUNCTION rag._eval_params(caller text, params jsonb, types jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    fits boolean;
BEGIN
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION '%: params must be a JSON object', caller USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR p IN SELECT e.key, e.value, types->>e.key AS type, jsonb_typeof(e.value) AS got
             FROM jsonb_each(params) AS e ORDER BY e.key LOOP
        -- (as the run casts them: an int's text is digits, "5.0" is not; a number's is a
        -- float8's, "1e-400" is not: review 44b)
        fits := p.got = 'null' OR CASE p.type
                WHEN 'text' THEN p.got = 'string'
                WHEN 'int' THEN p.got = 'number' AND p.value::text ~ '^-?[0-9]{1,10}$'
                                AND p.value::numeric BETWEEN -2147483648 AND 2147483647
                ELSE p.got = 'number' AND abs(p.value::numeric) < 1e300
                     AND (p.value::numeric = 0 OR abs(p.value::numeric) > 1e-300) END;
        IF p.type IS NULL THEN
            RAISE EXCEPTION '%: params has key %, which it does not read', caller, rag._shown(p.key)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('its keys: %s', (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(types) AS k));
        ELSIF NOT fits THEN
            RAISE EXCEPTION '%: params->% must be %, got %', caller, rag._shown(p.key),
                            CASE p.type WHEN 'text' THEN 'a string' WHEN 'int' THEN 'an integer' ELSE 'a number' END,
                            left(p.value::text, 100)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION rag.evaluate(set_name text, mode text DEFAULT 'hybrid', k int DEFAULT 100, params jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    set_tenant text := rag._eval_tenant(set_name, 'rag.evaluate');
    caller_tenant text := current_setting('rag.tenant', true);
    run bigint;
    q record;
    t0 timestamptz := clock_timestamp();
    cand int := greatest(30, k);
BEGIN
    PERFORM rag._eval_params('rag.evaluate', params,
        '{"vector_k": "int", "lexical_k": "int", "rrf_c": "int", "vector_weight": "float8", "lexical_weight": "float8",
          "lexical_ranking": "text", "fusion": "text", "rerank": "text", "rerank_k": "int", "proximity_weight": "float8"}');
    IF mode IS NULL OR k IS NULL THEN
        RAISE EXCEPTION 'rag.evaluate: % is NULL', CASE WHEN mode IS NULL THEN 'mode' ELSE 'k' END
            USING ERRCODE = 'invalid_parameter_value', HINT = 'mode: hybrid, vector or lexical; k: how many chunks a query retrieves';
    END IF;
    PERFORM set_config('rag.tenant', set_tenant, true);
    PERFORM rag.current_tenant();  -- 42501 unless the caller may act for the set's tenant
    IF NOT EXISTS (SELECT 1 FROM rag.eval_qrels AS r WHERE r.tenant = set_tenant AND r.set_name = evaluate.set_name) THEN
        RAISE EXCEPTION 'rag.evaluate: eval set % has no judged queries', rag._shown(set_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'add judgments to rag.eval_qrels (qrels.tsv in the BEIR layout); a query without one is not scored';
    END IF;
    params := jsonb_build_object('vector_k', cand, 'lexical_k', cand, 'rrf_c', 60, 'vector_weight', 1,
                                 'lexical_weight', 1, 'lexical_ranking', 'bm25', 'fusion', 'convex',
                                 'rerank', NULL, 'rerank_k', 30, 'proximity_weight', 0.2)
              || params
              || jsonb_build_object('settings', (SELECT jsonb_object_agg(s.name, s.value) FROM rag.settings() AS s));
    INSERT INTO rag.eval_run (tenant, set_name, mode, k, params)
    VALUES (set_tenant, evaluate.set_name, evaluate.mode, evaluate.k, params)
    RETURNING id INTO run;

    -- the queries with judgments, as trec_eval and BEIR score (one without has no nDCG)
    FOR q IN SELECT eq.query_id, eq.query FROM rag.eval_queries AS eq
             WHERE eq.tenant = set_tenant AND eq.set_name = evaluate.set_name
               AND EXISTS (SELECT 1 FROM rag.eval_qrels AS r
                           WHERE r.tenant = eq.tenant AND r.set_name = eq.set_name AND r.query_id = eq.query_id)
             ORDER BY eq.query_id LOOP
        INSERT INTO rag.eval_run_query (run_id, query_id, ndcg_10, recall_10, recall_100, mrr_10,
                                        success_1, success_5, success_10)
        WITH hits AS (
            SELECT s.chunk_id, s.document_id, s.content,
                   row_number() OVER (ORDER BY s.rerank_rank NULLS LAST, s.score DESC, s.vector_rank NULLS LAST, s.chunk_id) AS rn
            FROM rag.search(q.query, evaluate.k, evaluate.mode, NULL,
                            (params->>'vector_k')::int, (params->>'lexical_k')::int, (params->>'rrf_c')::int,
                            (params->>'vector_weight')::float8, (params->>'lexical_weight')::float8,
                            params->>'lexical_ranking', params->>'fusion', params->>'rerank',
                            (params->>'rerank_k')::int, (params->>'proximity_weight')::float8) AS s
        ), rel AS (
            SELECT r.doc_source, r.chunk_id, r.grade FROM rag.eval_qrels AS r
            WHERE r.tenant = set_tenant AND r.set_name = evaluate.set_name AND r.query_id = q.query_id
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
        ), ans AS (      -- gold answers, normalised
            SELECT a.doc_source, rag._eval_text(a.answer, true) AS answer
            FROM rag.eval_answers AS a
            WHERE a.tenant = set_tenant AND a.set_name = evaluate.set_name AND a.query_id = q.query_id
        ), found AS (    -- the best rank of a chunk holding one
            SELECT min(h.rn) AS rn FROM hits AS h JOIN rag.documents AS d ON d.id = h.document_id
            JOIN ans ON ans.doc_source = d.source
            WHERE strpos(rag._eval_text(h.content), ans.answer) > 0
        )
        SELECT run, q.query_id,
               coalesce((SELECT sum(grade / log(2, rank + 1)) FROM ranked WHERE rank <= 10), 0)
                 / nullif((SELECT sum(grade / log(2, pos + 1)) FROM ideal WHERE pos <= 10), 0),
               coalesce((SELECT count(*) FROM ranked WHERE rank <= 10)::float8 / nullif((SELECT count(*) FROM rel), 0), 0),
               coalesce((SELECT count(*) FROM ranked WHERE rank <= 100)::float8 / nullif((SELECT count(*) FROM rel), 0), 0),
               coalesce((SELECT 1.0 / min(rank) FROM ranked WHERE rank <= 10), 0),
               CASE WHEN EXISTS (SELECT FROM ans) THEN coalesce((SELECT (f.rn <= 1)::int FROM found AS f), 0) END,
               CASE WHEN EXISTS (SELECT FROM ans) THEN coalesce((SELECT (f.rn <= 5)::int FROM found AS f), 0) END,
               CASE WHEN EXISTS (SELECT FROM ans) THEN coalesce((SELECT (f.rn <= 10)::int FROM found AS f), 0) END;
    END LOOP;

    UPDATE rag.eval_run AS r
    SET queries = a.n, ndcg_10 = a.ndcg, recall_10 = a.r10, recall_100 = a.r100, mrr_10 = a.mrr,
        success_1 = a.s1, success_5 = a.s5, success_10 = a.s10,
        seconds = extract(epoch FROM clock_timestamp() - t0)
    FROM (SELECT count(*) AS n, avg(x.ndcg_10) AS ndcg, avg(x.recall_10) AS r10,
                 avg(x.recall_100) AS r100, avg(x.mrr_10) AS mrr,
                 avg(x.success_1) AS s1, avg(x.success_5) AS s5, avg(x.success_10) AS s10
          FROM rag.eval_run_query AS x WHERE x.run_id = run) AS a
    WHERE r.id = run;
    -- the caller's rag.tenant again (the run set the set's for this transaction)
    PERFORM set_config('rag.tenant', coalesce(caller_tenant, ''), true);
    RETURN run;
END
$$;

-- rag.evaluate_answers
-- Answer a QA set's questions (those with gold answers in rag.eval_answers; the first
-- `questions` of them by id, or all) with rag.ask in the set's tenant, and store per
-- question and overall how the answers compare with the gold ones:
--   gold_share       the share of the gold answer's content words (english lexemes) that the
--                    answer holds (the best of a question's gold answers; a gold answer
--                    without content words counts 1 if the answer contains it, else 0)
--   exact            the answer contains the whole gold answer (lower-cased, whitespace runs
--                    as one space, its first 200 characters)
--   citations_right  citations that point into a gold answer's document
--   refusals         questions answered with no citation
-- plus answer length in words and latency. `params`: rerank, rerank_k (rag.ask's).
-- With rag.daily_budget set and a priced model in the run, the run stops (a WARNING)
-- before a question once the day's budget is spent, and keeps what it has.
-- Returns the run id; rag.eval_answer_runs has the summaries.
CREATE OR REPLACE FUNCTION rag.evaluate_answers(set_name text, model text DEFAULT NULL, k int DEFAULT 8,
                                                params jsonb DEFAULT '{}', questions int DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    set_tenant text := rag._eval_tenant(set_name, 'rag.evaluate_answers');
    caller_tenant text := current_setting('rag.tenant', true);
    chat text;
    run bigint;
    q record;
    out jsonb;
    done int := 0;
    budget numeric;
    t0 timestamptz := clock_timestamp();
BEGIN
    PERFORM rag._eval_params('rag.evaluate_answers', params, '{"rerank": "text", "rerank_k": "int"}');
    IF k IS NULL THEN
        RAISE EXCEPTION 'rag.evaluate_answers: k is NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'k: how many chunks rag.ask answers from';
    ELSIF questions IS NOT NULL AND questions < 1 THEN
        RAISE EXCEPTION 'rag.evaluate_answers: questions must be >= 1 (or NULL: all), got %', questions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('rag.tenant', set_tenant, true);
    PERFORM rag.current_tenant();  -- 42501 unless the caller may act for the set's tenant
    IF NOT EXISTS (SELECT 1 FROM rag.eval_answers AS a
                   WHERE a.tenant = set_tenant AND a.set_name = evaluate_answers.set_name) THEN
        RAISE EXCEPTION 'rag.evaluate_answers: eval set % has no gold answers', rag._shown(set_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'load a QA set: answers.jsonl beside its BEIR files (the covid-qa layout)';
    END IF;
    chat := (rag._model(coalesce(model, rag._setting('chat_model')), 'chat')).name;
    params := jsonb_build_object('rerank', NULL, 'rerank_k', 30)
              || params
              || jsonb_build_object('settings', (SELECT jsonb_object_agg(s.name, s.value) FROM rag.settings() AS s));
    INSERT INTO rag.eval_answer_run (tenant, set_name, model, k, params)
    VALUES (set_tenant, evaluate_answers.set_name, chat, k, params)
    RETURNING id INTO run;
    -- with a daily budget and a priced model in the run (the chat model, the reranker, the
    -- tenant's embedding model), the run stops before the question the budget would refuse:
    -- a refusal would fail the statement, and roll back the answers so far and the ledger
    -- rows of the calls already made (and paid for)
    IF nullif(rag._setting('daily_budget'), '') IS NOT NULL
       AND EXISTS (SELECT 1 FROM rag.models AS m
                   WHERE m.name IN (chat, params->>'rerank', rag._setting('embedding_model'))
                     AND (m.price_input_per_1m > 0 OR m.price_output_per_1m > 0)) THEN
        budget := rag._setting('daily_budget')::numeric;
    END IF;

    FOR q IN SELECT eq.query_id, eq.query FROM rag.eval_queries AS eq
             WHERE eq.tenant = set_tenant AND eq.set_name = evaluate_answers.set_name
               AND EXISTS (SELECT 1 FROM rag.eval_answers AS a
                           WHERE a.tenant = eq.tenant AND a.set_name = eq.set_name AND a.query_id = eq.query_id)
             ORDER BY eq.query_id LIMIT questions LOOP
        IF budget IS NOT NULL AND rag.spent_today() >= budget THEN
            RAISE WARNING 'rag.evaluate_answers: the daily budget of % for tenant % is spent; the run stopped after % questions',
                          budget, rag._shown(set_tenant), done
                USING HINT = 'its answers so far are stored (rag.eval_answer_runs); raise rag.daily_budget or run the rest after 00:00 UTC';
            EXIT;
        END IF;
        out := rag.ask(q.query, k, chat, params->>'rerank', (params->>'rerank_k')::int);
        done := done + 1;
        INSERT INTO rag.eval_answer_run_query (run_id, query_id, answer, gold_share, exact, citations,
                                               citations_right, words, latency_ms)
        WITH gold AS (
            SELECT a.doc_source, tsvector_to_array(to_tsvector('english'::regconfig, a.answer)) AS words,
                   rag._eval_text(a.answer, true) AS norm
            FROM rag.eval_answers AS a
            WHERE a.tenant = set_tenant AND a.set_name = evaluate_answers.set_name
              AND a.query_id = q.query_id
        ), ans AS (
            SELECT out->>'answer' AS text, tsvector_to_array(to_tsvector('english'::regconfig, out->>'answer')) AS words,
                   rag._eval_text(out->>'answer') AS norm
        ), cit AS (
            SELECT c->>'source' AS source FROM jsonb_array_elements(out->'citations') AS c
        )
        SELECT run, q.query_id, ans.text,
               (SELECT max(CASE WHEN cardinality(g.words) = 0 THEN (strpos(ans.norm, g.norm) > 0)::int::float8
                                ELSE cardinality(ARRAY(SELECT unnest(g.words) INTERSECT SELECT unnest(ans.words)))::float8
                                     / cardinality(g.words) END) FROM gold AS g),
               EXISTS (SELECT 1 FROM gold AS g WHERE strpos(ans.norm, g.norm) > 0),
               (SELECT count(*) FROM cit),
               (SELECT count(*) FROM cit WHERE cit.source IN (SELECT g.doc_source FROM gold AS g)),
               cardinality(regexp_split_to_array(btrim(ans.text), '\s+')) - (btrim(ans.text) = '')::int,
               (out->>'latency_ms')::float8
        FROM ans;
    END LOOP;

    UPDATE rag.eval_answer_run AS r
    SET questions = a.n, gold_share = a.gold, half_share = a.half, exact_share = a.exact,
        citations_right = a.right_share, refusals = a.refused, mean_words = a.words, p50_ms = a.p50, p95_ms = a.p95,
        seconds = extract(epoch FROM clock_timestamp() - t0)
    FROM (SELECT count(*) AS n, avg(x.gold_share) AS gold, avg((x.gold_share >= 0.5)::int) AS half,
                 avg(x.exact::int) AS exact, sum(x.citations_right)::float8 / nullif(sum(x.citations), 0) AS right_share,
                 avg((x.citations = 0)::int) AS refused, avg(x.words) AS words,
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY x.latency_ms) AS p50,
                 percentile_cont(0.95) WITHIN GROUP (ORDER BY x.latency_ms) AS p95
          FROM rag.eval_answer_run_query AS x WHERE x.run_id = run) AS a
    WHERE r.id = run;
    -- the caller's rag.tenant again (the run set the set's for this transaction)
    PERFORM set_config('rag.tenant', coalesce(caller_tenant, ''), true);
    RETURN run;
END
$$;

-- rag.eval_answer_runs: every answer run with its summary, newest first.
CREATE OR REPLACE VIEW rag.eval_answer_runs WITH (security_invoker = true) AS
    SELECT r.id AS run_id, r.set_name, r.model, r.k, r.questions,
           round(r.gold_share::numeric, 4) AS gold_share, round(r.half_share::numeric, 4) AS half_share,
           round(r.exact_share::numeric, 4) AS exact_share, round(r.citations_right::numeric, 4) AS citations_right,
           round(r.refusals::numeric, 4) AS refusals, round(r.mean_words::numeric, 1) AS mean_words,
           round(r.p50_ms::numeric, 1) AS p50_ms, round(r.p95_ms::numeric, 1) AS p95_ms,
           round(r.seconds::numeric, 1) AS seconds, r.params, r.created_at, r.run_by, r.tenant
    FROM rag.eval_answer_run AS r
    ORDER BY r.id DESC;

-- rag.eval_runs: every run with its overall metrics, newest first.
CREATE OR REPLACE VIEW rag.eval_runs WITH (security_invoker = true) AS
    SELECT r.id AS run_id, r.set_name, r.mode, r.k, r.queries,
           round(r.ndcg_10::numeric, 4) AS ndcg_10, round(r.recall_10::numeric, 4) AS recall_10,
           round(r.recall_100::numeric, 4) AS recall_100, round(r.mrr_10::numeric, 4) AS mrr_10,
           round(r.seconds::numeric, 1) AS seconds, r.params, r.created_at, r.run_by,
           round(r.success_1::numeric, 4) AS success_1, round(r.success_5::numeric, 4) AS success_5,
           round(r.success_10::numeric, 4) AS success_10, r.tenant
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
            WHERE qa.run_id = a.id AND qb.run_id = b.id AND qb.ndcg_10 < qa.ndcg_10) AS queries_worse,
           a.tenant
    FROM rag.eval_run AS a JOIN rag.eval_run AS b ON b.tenant = a.tenant AND b.set_name = a.set_name AND b.id <> a.id;
