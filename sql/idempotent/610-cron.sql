-- Workers on a schedule, where pg_cron is installed (Debian: postgresql-15-cron, with
-- shared_preload_libraries = 'pg_cron' and this database as cron.database_name).
-- Called through dynamic SQL, so rag itself does not depend on pg_cron.

-- rag._cron_schedule (internal): schedule pg_cron job `job_name` (the same name again
-- replaces it); 55000 naming `caller`, with `hint`, where pg_cron is not installed. A
-- WARNING where pg_cron is older than 1.5 and runs its jobs in background workers: its
-- launcher then starts no job while another runs (pg_cron issue #200, fixed in 1.5), and
-- rag.lock_guard runs 55 s a minute (said to those who may read pg_cron's settings).
CREATE OR REPLACE FUNCTION rag._cron_schedule(caller text, job_name text, schedule text, command text, hint text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job bigint;
    version text := (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron');
BEGIN
    IF version IS NULL THEN
        RAISE EXCEPTION '%: pg_cron is not installed in this database', caller
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = hint;
    END IF;
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job USING job_name, schedule, command;
    -- (pg_settings: pg_cron lets only superusers and pg_read_all_settings read its settings,
    -- and current_setting would fail for everyone else: hostile review 30)
    IF (SELECT s.setting FROM pg_catalog.pg_settings AS s WHERE s.name = 'cron.use_background_workers') = 'on'
       AND string_to_array(substring(version FROM '^[0-9]+(?:\.[0-9]+)*'), '.')::int[] < '{1,5}' THEN
        RAISE WARNING '%: pg_cron % runs jobs in background workers here, and then starts no job while another runs (pg_cron issue #200, fixed in 1.5)',
            caller, version
            USING DETAIL = 'rag.lock_guard runs 55 seconds a minute, rag.work and rag.purge_ledger as long as their work: the other jobs wait',
                  HINT = 'set cron.use_background_workers = off and cron.host to the server''s socket directory (with local '
                         'trust or a .pgpass for the job''s role), or install pg_cron 1.5 or later';
    END IF;
    RETURN job;
END
$$;

-- rag._cron_unschedule (internal): remove pg_cron job `job_name`; true if there was one
CREATE OR REPLACE FUNCTION rag._cron_unschedule(job_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        EXECUTE 'SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = $1' INTO done USING job_name;
    END IF;
    RETURN coalesce(done, false);
END
$$;

-- rag.schedule_worker
-- A pg_cron job that runs CALL rag.work(max_batches) on `schedule` (cron syntax) as the
-- current role, in its default tenant. Returns the job id. Without pg_cron, use
-- `ragpg worker --dsn ...` instead.
CREATE OR REPLACE FUNCTION rag.schedule_worker(schedule text DEFAULT '* * * * *', max_batches int DEFAULT 10)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF max_batches IS NULL OR max_batches < 1 THEN
        RAISE EXCEPTION 'rag.schedule_worker: max_batches must be >= 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN rag._cron_schedule('rag.schedule_worker', 'rag.work:' || current_database() || ':' || current_user,
                              schedule, format('CALL rag.work(max_batches => %s)', max_batches),
                              'CREATE EXTENSION pg_cron (needs shared_preload_libraries), or run: ragpg worker --dsn ...');
END
$$;

-- rag.unschedule_worker: remove the current role's worker job; true if there was one.
CREATE OR REPLACE FUNCTION rag.unschedule_worker()
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rag._cron_unschedule('rag.work:' || current_database() || ':' || current_user)
$$;
