-- The lock guard. Postgres lets any role with UPDATE or DELETE on a table take any lock on
-- it (LOCK TABLE ... IN ACCESS EXCLUSIVE MODE), and writers update and delete their own
-- rows of rag's shared tables: such a lock, held, stalls every tenant. rag itself never
-- has a reader or writer take a lock stronger than ROW EXCLUSIVE on its tables; only the
-- tables' owner (rag.create_tenant_partition, upgrades) and rag_admin
-- (rag.create_model_index) do. So a session of any other role that holds, or queues for,
-- such a lock is ended, whether or not anyone waits yet (a lock held for half a second
-- at a time stalls the others as well).

-- rag._may_signal (internal): whether the current role may end other roles' sessions
CREATE OR REPLACE FUNCTION rag._may_signal()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rag._is_superuser() OR pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')
$$;

-- rag.lock_holders: the sessions the guard would end now (see rag.end_lock_holders): those
-- holding a strong lock on a table of rag's, or of pg_cron's (whose jobs run the guard), and
-- the prepared transactions (PREPARE TRANSACTION, where max_prepared_transactions > 0)
-- that hold such a lock: pid NULL and `prepared` their name, which no session can end.
-- A VACUUM, ANALYZE or CREATE INDEX CONCURRENTLY at work (Postgres 17's MAINTAIN lets a
-- role run them) keeps its SHARE UPDATE EXCLUSIVE lock.
CREATE OR REPLACE FUNCTION rag.lock_holders()
RETURNS TABLE (pid int, role name, relation regclass, mode text, granted boolean, waiting_pids int[], prepared text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    -- (a partition's lock counts as its table's: LOCK TABLE rag.chunks locks them all)
    WITH strong AS MATERIALIZED (
        SELECT h.pid, h.virtualtransaction, coalesce(pg_partition_root(h.relation), h.relation) AS relation, h.mode,
               bool_or(h.granted) AS granted
        FROM pg_locks AS h JOIN pg_class AS c ON c.oid = h.relation
        WHERE h.locktype = 'relation'
          AND h.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
          -- (and pg_cron's tables, where it is installed: a lock on cron.job_run_details,
          -- which pg_cron lets PUBLIC delete from, holds up the job that runs the guard;
          -- hostile review 29)
          AND (c.relnamespace = 'rag'::regnamespace OR c.relnamespace = to_regnamespace('cron'))
          AND h.mode IN ('ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock',
                         'AccessExclusiveLock')
          -- (of that table: an ANALYZE or CREATE INDEX of one's own temporary table runs
          -- in a transaction block that may hold a lock on ours; hostile review 29)
          AND NOT (h.mode = 'ShareUpdateExclusiveLock'
                   AND EXISTS (SELECT 1
                               FROM (SELECT v.pid, v.relid FROM pg_stat_progress_vacuum AS v
                                     UNION ALL SELECT z.pid, z.relid FROM pg_stat_progress_analyze AS z
                                     UNION ALL SELECT i.pid, i.relid FROM pg_stat_progress_create_index AS i) AS p
                               WHERE p.pid = h.pid
                                 AND coalesce(pg_partition_root(p.relid), p.relid)
                                     = coalesce(pg_partition_root(h.relation), h.relation)))
        GROUP BY 1, 2, 3, 4
    ), holder AS (
        SELECT s.*, a.usesysid AS session_role, px.gid, px.owner,
               -- who waits on that table behind it (a prepared transaction is pid 0 there)
               ARRAY(SELECT DISTINCT w.pid FROM pg_locks AS w
                     WHERE w.locktype = 'relation' AND NOT w.granted
                       AND w.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
                       AND coalesce(pg_partition_root(w.relation), w.relation) = s.relation
                       AND coalesce(s.pid, 0) = ANY (pg_blocking_pids(w.pid))
                     ORDER BY w.pid) AS waiting_pids
        FROM strong AS s
        LEFT JOIN pg_stat_activity AS a ON a.pid = s.pid
        LEFT JOIN LATERAL (SELECT p.gid, p.owner
                           FROM pg_locks AS x JOIN pg_prepared_xacts AS p ON p.transaction = x.transactionid
                           WHERE s.pid IS NULL AND x.pid IS NULL AND x.locktype = 'transactionid'
                             AND x.virtualtransaction = s.virtualtransaction
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
-- rag.lock_holders() lists, with a WARNING naming it, and returns them. A prepared
-- transaction cannot be ended so (ROLLBACK PREPARED cannot run inside a function): a
-- WARNING names it, every pass, for its owner or a superuser to roll back.
CREATE OR REPLACE FUNCTION rag.end_lock_holders()
RETURNS TABLE (pid int, role name, relation regclass, mode text, granted boolean, waiting_pids int[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h record;
    ended int[] := '{}';
BEGIN
    IF NOT rag._may_signal() THEN
        RAISE EXCEPTION 'rag.end_lock_holders: ending other sessions needs a superuser or a member of pg_signal_backend'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    FOR h IN SELECT * FROM rag.lock_holders() LOOP
        IF h.prepared IS NOT NULL THEN
            RAISE WARNING 'rag: prepared transaction % of role % holds % on % (sessions waiting: %)',
                rag._shown(h.prepared), h.role, h.mode, h.relation, h.waiting_pids
                USING HINT = format('ROLLBACK PREPARED %L (as %I or a superuser); keep max_prepared_transactions = 0 '
                                    'unless something of yours prepares transactions', h.prepared, h.role);
        ELSIF h.pid = ANY (ended) THEN
            CONTINUE;   -- (it held several tables)
        -- (a session that ended meanwhile gives false)
        ELSIF pg_terminate_backend(h.pid) THEN
            ended := ended || h.pid;
            RAISE WARNING 'rag: ended session % of role %: it % % on % (sessions waiting: %)',
                h.pid, h.role, CASE WHEN h.granted THEN 'held' ELSE 'queued for' END, h.mode, h.relation,
                h.waiting_pids;
            pid := h.pid; role := h.role; relation := h.relation; mode := h.mode; granted := h.granted;
            waiting_pids := h.waiting_pids;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- rag._lock_guard_pass (internal): one pass of rag.lock_guard; whether another fits in
-- run_for from `started`
CREATE OR REPLACE FUNCTION rag._lock_guard_pass(started timestamptz, run_for interval, every interval)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF run_for IS NULL OR every IS NULL OR every <= interval '0' THEN
        RAISE EXCEPTION 'rag.lock_guard: run_for and every must be intervals, every > 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM rag.end_lock_holders();
    RETURN clock_timestamp() + every <= started + run_for;
END
$$;

-- rag.lock_guard: the guard for `run_for`, one pass (rag.end_lock_holders()) every
-- `every`, each in its own transaction. rag.schedule_lock_guard runs it every minute.
-- (No SET search_path: a procedure with one cannot COMMIT; each name is qualified.)
CREATE OR REPLACE PROCEDURE rag.lock_guard(run_for interval DEFAULT '55 seconds', every interval DEFAULT '1 second')
LANGUAGE plpgsql
AS $$
DECLARE
    started pg_catalog.timestamptz := pg_catalog.clock_timestamp();
BEGIN
    WHILE rag._lock_guard_pass(started, run_for, every) LOOP
        COMMIT;
        PERFORM pg_catalog.pg_sleep(pg_catalog.date_part('epoch', every));
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
BEGIN
    IF NOT rag._may_signal() THEN
        RAISE EXCEPTION 'rag.schedule_lock_guard: the guard ends other sessions: it needs a superuser or a member of '
                        'pg_signal_backend' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN rag._cron_schedule('rag.schedule_lock_guard', 'rag.lock_guard:' || current_database(), '* * * * *',
                              'CALL rag.lock_guard()',
                              'CREATE EXTENSION pg_cron (needs shared_preload_libraries), or run CALL rag.lock_guard() '
                              'from a scheduler of yours');
END
$$;

-- rag.unschedule_lock_guard: remove this database's guard job; true if there was one
CREATE OR REPLACE FUNCTION rag.unschedule_lock_guard()
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rag._cron_unschedule('rag.lock_guard:' || current_database())
$$;
