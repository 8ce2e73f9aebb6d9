-- The lock guard. Postgres lets any role with UPDATE or DELETE on a table take any lock on
-- it (LOCK TABLE ... IN ACCESS EXCLUSIVE MODE), and writers update and delete their own
-- rows of rag's shared tables: such a lock, held, stalls every tenant. rag itself never
-- has a reader or writer hold a lock stronger than ROW EXCLUSIVE on its tables for longer
-- than 100 ms (a model switch's wait, rag._wait_for_chunk_writers); only the tables'
-- owner (rag.create_tenant_partition, upgrades) and rag_admin (rag.create_model_index)
-- do. So a session of any other role that holds, or queues for, such a lock while another
-- session has waited on that table for longer than a second is ended.

-- rag._may_signal (internal): whether the current role may end other roles' sessions
CREATE OR REPLACE FUNCTION rag._may_signal()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rag._is_superuser() OR pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')
$$;

-- rag.lock_holders: the sessions the guard would end now (see rag.end_lock_holders), and
-- the prepared transactions (PREPARE TRANSACTION, where max_prepared_transactions > 0)
-- that hold such a lock: pid NULL and `prepared` their name, which no session can end
CREATE OR REPLACE FUNCTION rag.lock_holders(after interval DEFAULT '1 second')
RETURNS TABLE (pid int, role name, relation regclass, mode text, granted boolean, waiting_pids int[], prepared text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH waiting AS MATERIALIZED (
        SELECT w.pid, w.database, w.relation, pg_blocking_pids(w.pid) AS blockers
        FROM pg_locks AS w JOIN pg_class AS c ON c.oid = w.relation
        WHERE w.locktype = 'relation' AND NOT w.granted
          AND w.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
          AND c.relnamespace = 'rag'::regnamespace
          AND w.waitstart < clock_timestamp() - after
    ), blocking AS (
        -- a prepared transaction's locks have no pid; pg_blocking_pids gives it as 0
        SELECT h.pid, h.virtualtransaction, h.relation, h.mode, bool_or(h.granted) AS granted,
               array_agg(DISTINCT w.pid ORDER BY w.pid) AS waiting_pids
        FROM waiting AS w
        JOIN pg_locks AS h ON h.locktype = 'relation' AND h.database = w.database AND h.relation = w.relation
                          AND (h.pid = ANY (w.blockers) OR (h.pid IS NULL AND 0 = ANY (w.blockers)))
        WHERE h.mode IN ('ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock',
                         'AccessExclusiveLock')
        GROUP BY h.pid, h.virtualtransaction, h.relation, h.mode
    ), holder AS (
        SELECT b.*, a.usesysid AS session_role, px.gid, px.owner
        FROM blocking AS b
        LEFT JOIN pg_stat_activity AS a ON a.pid = b.pid
        LEFT JOIN LATERAL (SELECT p.gid, p.owner
                           FROM pg_locks AS x JOIN pg_prepared_xacts AS p ON p.transaction = x.transactionid
                           WHERE b.pid IS NULL AND x.pid IS NULL AND x.locktype = 'transactionid'
                             AND x.virtualtransaction = b.virtualtransaction
                           LIMIT 1) AS px ON true
    )
    SELECT h.pid, r.rolname, h.relation::regclass, h.mode, h.granted, h.waiting_pids, h.gid
    FROM holder AS h
    JOIN pg_roles AS r ON r.oid = h.session_role OR (h.session_role IS NULL AND r.rolname = h.owner)
    JOIN pg_class AS c ON c.oid = h.relation
    WHERE NOT r.rolsuper
      AND NOT pg_has_role(r.oid, c.relowner, 'MEMBER')
      AND NOT pg_has_role(r.oid, 'rag_admin', 'MEMBER')
    ORDER BY h.pid, h.relation
$$;

-- rag.end_lock_holders: one pass of the guard. Ends (pg_terminate_backend) each session
-- rag.lock_holders(after) lists, with a WARNING naming it, and returns them. A prepared
-- transaction cannot be ended so (ROLLBACK PREPARED cannot run inside a function): a
-- WARNING names it, every pass, for its owner or a superuser to roll back.
CREATE OR REPLACE FUNCTION rag.end_lock_holders(after interval DEFAULT '1 second')
RETURNS TABLE (pid int, role name, relation regclass, mode text, granted boolean, waiting_pids int[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h record;
BEGIN
    IF after IS NULL OR after < interval '0' THEN
        RAISE EXCEPTION 'rag.end_lock_holders: after must be an interval >= 0' USING ERRCODE = 'invalid_parameter_value';
    ELSIF NOT rag._may_signal() THEN
        RAISE EXCEPTION 'rag.end_lock_holders: ending other sessions needs a superuser or a member of pg_signal_backend'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    FOR h IN SELECT * FROM rag.lock_holders(after) LOOP
        IF h.prepared IS NOT NULL THEN
            RAISE WARNING 'rag: prepared transaction % of role % holds % on % while sessions % wait',
                rag._shown(h.prepared), h.role, h.mode, h.relation, h.waiting_pids
                USING HINT = format('ROLLBACK PREPARED %L (as %I or a superuser); keep max_prepared_transactions = 0 '
                                    'unless something of yours prepares transactions', h.prepared, h.role);
        -- (a session that ended meanwhile gives false)
        ELSIF pg_terminate_backend(h.pid) THEN
            RAISE WARNING 'rag: ended session % of role %: it % % on % while sessions % waited',
                h.pid, h.role, CASE WHEN h.granted THEN 'held' ELSE 'queued for' END, h.mode, h.relation,
                h.waiting_pids;
            pid := h.pid; role := h.role; relation := h.relation; mode := h.mode; granted := h.granted;
            waiting_pids := h.waiting_pids;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- rag.lock_guard: the guard for `run_for`, one pass (rag.end_lock_holders(after)) every
-- `every`, each in its own transaction. rag.schedule_lock_guard runs it every minute.
CREATE OR REPLACE PROCEDURE rag.lock_guard(run_for interval DEFAULT '55 seconds', every interval DEFAULT '1 second',
                                           after interval DEFAULT '1 second')
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stop_at timestamptz := clock_timestamp() + run_for;
BEGIN
    IF run_for IS NULL OR every IS NULL OR every <= interval '0' THEN
        RAISE EXCEPTION 'rag.lock_guard: run_for and every must be intervals, every > 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOOP
        PERFORM rag.end_lock_holders(after);
        COMMIT;
        EXIT WHEN clock_timestamp() + every > stop_at;
        PERFORM pg_sleep(extract(epoch FROM every)::float8);
    END LOOP;
END
$$;

-- rag.schedule_lock_guard: a pg_cron job that runs CALL rag.lock_guard() every minute in
-- this database, as the current role (which must be allowed to end sessions). Returns the
-- job id.
CREATE OR REPLACE FUNCTION rag.schedule_lock_guard()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'rag.schedule_lock_guard: pg_cron is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'CREATE EXTENSION pg_cron (needs shared_preload_libraries), or run CALL rag.lock_guard() '
                         'from a scheduler of yours';
    ELSIF NOT rag._may_signal() THEN
        RAISE EXCEPTION 'rag.schedule_lock_guard: the guard ends other sessions: it needs a superuser or a member of '
                        'pg_signal_backend' USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE 'SELECT cron.schedule($1, $2, $3)'
        INTO job USING 'rag.lock_guard:' || current_database(), '* * * * *', 'CALL rag.lock_guard()';
    RETURN job;
END
$$;

-- rag.unschedule_lock_guard: remove this database's guard job; true if there was one
CREATE OR REPLACE FUNCTION rag.unschedule_lock_guard()
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        EXECUTE 'SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = $1'
            INTO done USING 'rag.lock_guard:' || current_database();
    END IF;
    RETURN coalesce(done, false);
END
$$;
