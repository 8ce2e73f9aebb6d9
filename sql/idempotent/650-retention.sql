-- Retention of the ledger. rag.usage gets a row for every model call (every search and
-- ask) and rag.answers one for every answer, with its question: both grow for as long as
-- the database lives, and the answers are what users asked. rag.purge_ledger removes the
-- rows older than rag.answer_retention and rag.usage_retention (empty, the default: kept),
-- in batches of their own transactions; the usage it removes is summed per UTC day into
-- rag.usage_history first, so rag.usage_daily and rag.cost_by_model keep their totals.

-- rag._retention (internal): a retention setting's value as an interval, NULL for empty
-- (kept for good); 22023 naming `caller` and the setting for anything else than an
-- interval from `shortest` to 1000 years
CREATE OR REPLACE FUNCTION rag._retention(caller text, setting_name text, value text, shortest text)
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := btrim(coalesce(value, ''));
    keep interval;
BEGIN
    IF v = '' THEN
        RETURN NULL;
    END IF;
    BEGIN
        keep := v::interval;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow
                   OR invalid_parameter_value THEN
        keep := NULL;
    END;
    IF keep IS NULL OR keep < shortest::interval OR keep > interval '1000 years' THEN
        RAISE EXCEPTION '%: setting rag.% must be empty (kept for good) or an interval from % to 1000 years, got %',
              caller, setting_name, shortest, rag._shown(value)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'for example ''90 days''';
    END IF;
    RETURN keep;
END
$$;

-- rag._ledger_cutoffs (internal): rag.purge_ledger's checks (a superuser, batch_rows >= 1,
-- the two settings) and the time before which each ledger's rows go, NULL: none go.
-- rag.usage keeps at least a day: today's calls are the daily budget's measure.
CREATE OR REPLACE FUNCTION rag._ledger_cutoffs(batch_rows int, OUT answers timestamptz, OUT usage timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT rag._is_superuser() THEN
        RAISE EXCEPTION 'rag.purge_ledger: needs a superuser (it removes rows of every tenant)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF batch_rows IS NULL OR batch_rows < 1 THEN
        RAISE EXCEPTION 'rag.purge_ledger: batch_rows must be >= 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    answers := now() - rag._retention('rag.purge_ledger', 'answer_retention', rag._setting('answer_retention'),
                                      '1 hour');
    usage := now() - rag._retention('rag.purge_ledger', 'usage_retention', rag._setting('usage_retention'), '1 day');
END
$$;

-- rag._purge_ledger_batch (internal): one batch of rag.purge_ledger. Looks at the next
-- batch_rows rows of `ledger` ('answers' or 'usage') after id after_id, removes those made
-- before `cutoff` (usage: summed into rag.usage_history in the same statement), and
-- returns the last id it looked at (NULL: no row was left) and how many it removed. Each
-- row is looked at once per purge, in id order: the cost is linear in the ledger's size.
CREATE OR REPLACE FUNCTION rag._purge_ledger_batch(ledger text, after_id bigint, cutoff timestamptz, batch_rows int,
                                                   OUT last_id bigint, OUT removed bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT rag._is_superuser() THEN
        RAISE EXCEPTION 'rag.purge_ledger: needs a superuser (it removes rows of every tenant)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF ledger = 'answers' THEN
        WITH batch AS MATERIALIZED (
                 SELECT a.id, a.at FROM rag.answers AS a WHERE a.id > after_id ORDER BY a.id LIMIT batch_rows),
             gone AS (
                 DELETE FROM rag.answers AS a WHERE a.id IN (SELECT b.id FROM batch AS b WHERE b.at < cutoff)
                 RETURNING a.id)
        SELECT (SELECT max(b.id) FROM batch AS b), (SELECT count(*) FROM gone) INTO last_id, removed;
    ELSIF ledger = 'usage' THEN
        WITH batch AS MATERIALIZED (
                 SELECT u.id, u.at FROM rag.usage AS u WHERE u.id > after_id ORDER BY u.id LIMIT batch_rows),
             gone AS (
                 DELETE FROM rag.usage AS u WHERE u.id IN (SELECT b.id FROM batch AS b WHERE b.at < cutoff)
                 RETURNING u.*),
             summed AS (
                 INSERT INTO rag.usage_history AS h (tenant, day, model, provider, operation, calls, input_tokens,
                                                     output_tokens, cost)
                 SELECT g.tenant, (g.at AT TIME ZONE 'UTC')::date, g.model, g.provider, g.operation, sum(g.calls),
                        sum(g.input_tokens), sum(g.output_tokens), sum(g.cost)
                 FROM gone AS g GROUP BY 1, 2, 3, 4, 5
                 ON CONFLICT (tenant, day, model, provider, operation) DO UPDATE
                 SET calls = h.calls + excluded.calls, input_tokens = h.input_tokens + excluded.input_tokens,
                     output_tokens = h.output_tokens + excluded.output_tokens, cost = h.cost + excluded.cost
                 RETURNING 1)
        -- (a data-modifying WITH runs to its end whether or not it is read)
        SELECT (SELECT max(b.id) FROM batch AS b), (SELECT count(*) FROM gone) INTO last_id, removed;
    ELSE
        RAISE EXCEPTION 'rag.purge_ledger: no ledger %', rag._shown(ledger) USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- rag.purge_ledger: remove the answers older than rag.answer_retention and the usage rows
-- older than rag.usage_retention (summed into rag.usage_history), batch_rows rows looked at
-- per transaction; returns how many of each went. A superuser's, outside a transaction
-- block (it commits each batch); rag.schedule_ledger_purge runs it nightly.
-- (No SET search_path: a procedure with one cannot COMMIT; each name is qualified.)
CREATE OR REPLACE PROCEDURE rag.purge_ledger(batch_rows int DEFAULT 10000, INOUT answers_removed bigint DEFAULT NULL,
                                             INOUT usage_removed bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    cut record;
    step record;
    ledger pg_catalog.text;
    cutoff pg_catalog.timestamptz;
    after bigint;
    removed bigint;
BEGIN
    SELECT * INTO cut FROM rag._ledger_cutoffs(batch_rows);
    FOREACH ledger IN ARRAY ARRAY['answers', 'usage'] LOOP
        cutoff := CASE WHEN ledger OPERATOR(pg_catalog.=) 'answers' THEN cut.answers ELSE cut.usage END;
        after := 0;
        removed := 0;
        WHILE cutoff IS NOT NULL LOOP
            SELECT * INTO step FROM rag._purge_ledger_batch(ledger, after, cutoff, batch_rows);
            EXIT WHEN step.last_id IS NULL;
            removed := removed OPERATOR(pg_catalog.+) step.removed;
            after := step.last_id;
            COMMIT;
        END LOOP;
        IF ledger OPERATOR(pg_catalog.=) 'answers' THEN
            answers_removed := removed;
        ELSE
            usage_removed := removed;
        END IF;
    END LOOP;
END
$$;

-- rag.schedule_ledger_purge: a pg_cron job that runs CALL rag.purge_ledger() on
-- `schedule` (cron syntax; nightly at 03:17 by default) in this database, as the current
-- role (a superuser). Returns the job id.
CREATE OR REPLACE FUNCTION rag.schedule_ledger_purge(schedule text DEFAULT '17 3 * * *')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT rag._is_superuser() THEN
        RAISE EXCEPTION 'rag.schedule_ledger_purge: the purge removes rows of every tenant: it needs a superuser'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN rag._cron_schedule('rag.schedule_ledger_purge', 'rag.purge_ledger:' || current_database(), schedule,
                              'CALL rag.purge_ledger()',
                              'CREATE EXTENSION pg_cron (needs shared_preload_libraries), or run CALL rag.purge_ledger() '
                              'from a scheduler of yours');
END
$$;

-- rag.unschedule_ledger_purge: remove this database's purge job; true if there was one
CREATE OR REPLACE FUNCTION rag.unschedule_ledger_purge()
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rag._cron_unschedule('rag.purge_ledger:' || current_database())
$$;

-- rag._chunks_forget_answers (internal): statement trigger on rag.chunks, after a delete.
-- With rag.forget_answers on (the database's value in rag.config: a session can neither
-- turn it off nor on), the answers of rag.answers that retrieved a deleted chunk go with
-- it, for their text may quote it (an extractive answer is its sentences, a chat model
-- read it); the citations are among the retrieved chunks. A document's chunks are deleted
-- with it (DELETE, an attached row deleted, rag.detach, rag.erase_tenant) and when its text
-- or format changes (it is chunked again); rows moved into a tenant's own partition are
-- not deleted from rag.chunks (no trigger fires).
-- rag's first SECURITY DEFINER function (hostile review 38; the other: rag._embedding_model_used), as the extension's owner: under
-- row-level security the GIN index on retrieved_chunk_ids could not be used (&& is not
-- leakproof), so a writer's delete compared every answer of its tenant with every deleted
-- id (a 20,000-chunk document beside 200,000 answers: ~55 s), and a reader could plant
-- answers of a million ids that made each delete slow; and writers would have needed
-- DELETE on the answer log. What it deletes is bound to what the deleting statement
-- deleted: the transition table holds the chunks the caller's own row-level security let
-- it delete, and an answer goes only with a chunk of its own tenant (a row a reader wrote
-- naming another tenant's chunk ids is not that tenant's to remove). It refuses to run on
-- any other table (EXECUTE is granted to no one, so no one may create such a trigger).
-- The ids go in slices of 1,000 through the GIN index alone: cost linear in the deleted
-- chunks and the answers that retrieved them.
CREATE OR REPLACE FUNCTION rag._chunks_forget_answers()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- (the GIN index is the one way in: a caller's planner settings cannot choose another,
-- such as a sequential scan or a full scan of the primary key comparing every answer's
-- ids with the slice's (hostile review 38b), nor make the bitmap lossy)
SET enable_seqscan = off
SET enable_indexscan = off
SET enable_indexonlyscan = off
SET enable_tidscan = off
SET enable_bitmapscan = on
SET work_mem = '4MB'
AS $$
DECLARE
    t record;
BEGIN
    IF TG_RELID <> 'rag.chunks'::pg_catalog.regclass OR TG_LEVEL <> 'STATEMENT' OR TG_OP <> 'DELETE' THEN
        RAISE EXCEPTION 'rag._chunks_forget_answers: a trigger of rag.chunks only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- (no restore test: a restore deletes no chunks, and run as the owner this function
    -- would take any session's settings for a restore's)
    IF NOT rag._bool_setting('forget_answers') THEN
        RETURN NULL;
    END IF;
    FOR t IN SELECT o.tenant, array_agg(o.id) AS ids
             FROM (SELECT o.tenant, o.id, (row_number() OVER (PARTITION BY o.tenant ORDER BY o.id) - 1) / 1000 AS slice
                   FROM old_rows AS o) AS o
             GROUP BY o.tenant, o.slice LOOP
        -- (the tenant as an expression: its index, (tenant, at), would read every answer of
        -- the tenant and compare each one's ids with all of the slice's, which the planner
        -- chose for a 1,000-id slice: 2.1 s instead of 2 ms beside 40,000 answers)
        DELETE FROM rag.answers AS a
        WHERE a.retrieved_chunk_ids OPERATOR(pg_catalog.&&) t.ids AND (a.tenant || '') = t.tenant;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER chunks_forget_answers AFTER DELETE ON rag.chunks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._chunks_forget_answers();

-- rag.forget_stale_answers (superuser): remove the answers that retrieved a chunk which
-- no longer exists, of every tenant. What rag.forget_answers does as chunks go, for the
-- chunks that went before it was turned on, and for an ask that stored its answer before
-- its chunks' delete and committed after it. Whatever the setting. Returns how many went.
-- One statement, linear in the answers' retrieved ids (each looked up by rag.chunks' key).
-- A superuser's, as rag.purge_ledger: no other role deletes from the answer log.
CREATE OR REPLACE FUNCTION rag.forget_stale_answers()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    removed bigint;
BEGIN
    IF NOT rag._is_superuser() THEN
        RAISE EXCEPTION 'rag.forget_stale_answers: needs a superuser (it removes answers of every tenant)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM rag.answers AS a
    WHERE EXISTS (SELECT 1 FROM unnest(a.retrieved_chunk_ids) AS r (id)
                  WHERE NOT EXISTS (SELECT 1 FROM rag.chunks AS c WHERE c.tenant = a.tenant AND c.id = r.id));
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;
