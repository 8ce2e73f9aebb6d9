-- Workers on a schedule, where pg_cron is installed (Debian: postgresql-15-cron, with
-- shared_preload_libraries = 'pg_cron' and this database as cron.database_name).
-- Called through dynamic SQL, so rag itself does not depend on pg_cron.

-- rag.schedule_worker
-- A pg_cron job that runs CALL rag.work(max_batches) on `schedule` (cron syntax) as the
-- current role, in its default tenant. Returns the job id. Without pg_cron, use
-- `ragpg worker --dsn ...` instead.
CREATE OR REPLACE FUNCTION rag.schedule_worker(schedule text DEFAULT '* * * * *', max_batches int DEFAULT 10)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'rag.schedule_worker: pg_cron is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'CREATE EXTENSION pg_cron (needs shared_preload_libraries), or run: ragpg worker --dsn ...';
    ELSIF max_batches IS NULL OR max_batches < 1 THEN
        RAISE EXCEPTION 'rag.schedule_worker: max_batches must be >= 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE 'SELECT cron.schedule($1, $2, $3)'
        INTO job
        USING 'rag.work:' || current_database() || ':' || current_user, schedule,
              format('CALL rag.work(max_batches => %s)', max_batches);
    RETURN job;
END
$$;

-- rag.unschedule_worker: remove the current role's worker job; true if there was one.
CREATE OR REPLACE FUNCTION rag.unschedule_worker()
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        EXECUTE 'SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = $1'
            INTO done USING 'rag.work:' || current_database() || ':' || current_user;
    END IF;
    RETURN coalesce(done, false);
END
$$;
