-- Erasing a tenant: every row rag holds for it, in one transaction (a customer who left, a
-- request to be forgotten, a test tenant). What it holds is every table of schema rag with
-- a `tenant` column (the catalog says which); the tables' own ON DELETE CASCADE and
-- statement triggers take along what hangs off a row (chunks with their documents, an eval
-- set's queries and runs). Tables a role attached stay as they are: their rows are the
-- role's data; only rag's triggers on them go.

-- rag._tenant_tables (internal): the tables of schema rag that hold rows per tenant (a
-- `tenant` column; partitions through their parent), in the order rag.erase_tenant empties
-- them: attached tables' registrations first (their queue, errors and documents cascade),
-- then documents (their chunks go through rag.chunks' triggers), then what is left; a
-- table this list does not name comes last, in name order, so that a table added later
-- is erased too
CREATE OR REPLACE FUNCTION rag._tenant_tables()
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'tenant' AND NOT a.attisdropped
    WHERE c.relnamespace = 'rag'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
    ORDER BY coalesce(array_position(ARRAY['attachments', 'documents', 'chunks', 'queue', 'errors', 'eval_sets']::name[], c.relname), 100),
             c.relname
$$;

-- rag._end_waiting_holders (internal): cancel the statements of the sessions that hold a lock
-- on one of `rels` (or a partition of it) and wait for this one: each is in a deadlock with
-- this session's tries, which are too short for Postgres to see it (it looks after
-- deadlock_timeout, in the session that waits that long). Returns their pids. Needs the
-- right to signal them (rag.erase_tenant: a superuser).
CREATE OR REPLACE FUNCTION rag._end_waiting_holders(rels regclass[])
RETURNS int[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(w.pid ORDER BY w.pid) FILTER (WHERE pg_cancel_backend(w.pid)), '{}')
    FROM rag._relation_lock_holders(rels) AS w (pid)
    WHERE w.pid <> 0 AND pg_backend_pid() = ANY (pg_blocking_pids(w.pid))
$$;

-- rag.erase_tenant (superuser): remove every row rag holds for `tenant`, the ledger's
-- (rag.usage, rag.usage_history) only if keep_usage is false. Every wait is within
-- `patience` (then 55P03, nothing erased): first for the tables the tenant attached (DROP
-- TRIGGER, in tries); then, as a model switch does, for the tenant's document writers in
-- flight (its rag.tenant_models row), so that a document being written is erased too
-- (writers that come after wait for the commit and start a new tenant of the same name);
-- then for rows a transaction of the tenant holds: each table's delete is tried with waits
-- of at most 10 ms, and again every 200 ms until the patience is spent, so that holders
-- letting go one after the other cannot stretch it (hostile review 37b). A session that
-- holds what the erase needs and waits for the erase is cancelled (a deadlock, named in a
-- WARNING). Sessions of the roles that may act for the tenant with a transaction open at
-- the end (an eval set loading, an answer logged: they hold no row of the tenant's) are
-- named in a WARNING: what they commit after it is not erased. Returns one row per table:
-- the rows removed and the rows of the tenant left (0 but the kept ledger). A tenant's own
-- partitions (rag.create_tenant_partition) are left, empty: a NOTICE names them (dropping
-- one locks its parent, which is the owner's call to make).
CREATE OR REPLACE FUNCTION rag.erase_tenant(tenant text, keep_usage boolean DEFAULT true,
                                            patience interval DEFAULT '30 seconds')
RETURNS TABLE (table_name text, removed bigint, kept bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    t text := erase_tenant.tenant;
    tbl regclass;
    before jsonb := '{}';
    a record;
    n bigint;
    parts text[];
    made boolean;
    deadline timestamptz;
    held_timeout text := current_setting('lock_timeout');
    acting oid[];
    open_pids int[];
    attached regclass[] := '{}';
    cancelled int[] := '{}';
BEGIN
    IF NOT rag._is_superuser() THEN
        RAISE EXCEPTION 'rag.erase_tenant: needs a superuser (it removes ledger rows and triggers on other roles'' tables)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF t IS NULL OR btrim(t) = '' THEN
        RAISE EXCEPTION 'rag.erase_tenant: tenant must name a tenant, got %', coalesce(rag._shown(t), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF keep_usage IS NULL OR patience IS NULL OR patience < interval '0' OR patience > interval '1 day' THEN
        RAISE EXCEPTION 'rag.erase_tenant: keep_usage must be true or false and patience an interval from 0 to 1 day'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- (after it waited for the tenant's writers it must see the rows they wrote)
        RAISE EXCEPTION 'rag.erase_tenant: runs only in READ COMMITTED (this transaction is %)',
                        current_setting('transaction_isolation')
            USING ERRCODE = 'active_sql_transaction';
    END IF;
    deadline := clock_timestamp() + patience;
    -- any wait of its own (a lock another role holds on a table it reads) within the patience
    PERFORM set_config('lock_timeout', rag._lock_wait(deadline), true);
    -- the roles that may act for the tenant: its own name's, and those granted it
    acting := ARRAY(SELECT r.oid FROM pg_catalog.pg_roles AS r
                    WHERE (r.rolname = t AND r.rolname NOT IN ('rag_reader', 'rag_writer', 'rag_admin'))
                       OR r.rolname IN (SELECT g.role_name FROM rag.tenant_roles AS g WHERE g.tenant = t));
    -- rag's triggers on the relations the tenant attached (the tables and their rows stay):
    -- only a relation that holds such a trigger of the tenant's attachment is touched. First,
    -- while the erase holds nothing its writers wait for (review 37c: a writer of the table
    -- waiting for the model row the erase held, and the erase trying for the table in waits
    -- too short for Postgres to see the deadlock, failed the erase at its patience)
    FOR a IN SELECT x.id, x.source_table FROM rag.attachments AS x
             JOIN pg_catalog.pg_class AS c ON c.oid = x.source_table
             WHERE x.tenant = t ORDER BY x.id LOOP
        PERFORM rag._drop_attachment_triggers('rag.erase_tenant', w, a.id,
                                              greatest(deadline - clock_timestamp(), interval '0'))
        FROM rag._watched_relations(a.id, a.source_table) AS w;
        attached := attached || a.source_table;
    END LOOP;
    -- the tenant's writers in flight end first; later ones wait for this transaction. (The
    -- claim makes the tenant's row if it had none, to lock: that one is not counted.) A
    -- writer in flight that then waits for a table the erase holds is in a deadlock with it
    -- that the claim's short tries hide from Postgres: it is cancelled, as Postgres would
    made := NOT EXISTS (SELECT 1 FROM rag.tenant_models AS x WHERE x.tenant = t);
    LOOP
        BEGIN
            PERFORM rag._claim_tenant_models(ARRAY[t], true,
                                             least(greatest(deadline - clock_timestamp(), interval '0'), interval '1 second'));
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            IF clock_timestamp() >= deadline THEN
                RAISE EXCEPTION 'rag.erase_tenant: the writers of tenant % held it past the patience (%)', rag._shown(t), patience
                    USING ERRCODE = 'lock_not_available',
                          HINT = 'a writer of the tenant keeps a transaction open: let it end (pg_stat_activity) and retry; nothing was erased';
            END IF;
            cancelled := cancelled || rag._end_waiting_holders(attached || 'rag.tenant_models'::regclass);
        END;
    END LOOP;

    FOR tbl IN SELECT * FROM rag._tenant_tables() LOOP
        EXECUTE format('SELECT count(*) FROM %s AS x WHERE x.tenant = $1', tbl) INTO n USING t;
        before := before || jsonb_build_object(tbl::text,
                                               n - CASE WHEN made AND tbl = 'rag.tenant_models'::regclass THEN 1 ELSE 0 END);
    END LOOP;
    -- the deletes, a table at a time, each tried again until the patience: a row another
    -- transaction holds fails a try within 10 ms (holders letting go one after another
    -- cannot stretch the patience, review 37b), and only that table's delete is tried again
    -- (review 37c: a held row in the last table made each try redo them all)
    FOR tbl IN SELECT * FROM rag._tenant_tables() LOOP
        CONTINUE WHEN keep_usage AND tbl IN ('rag.usage'::regclass, 'rag.usage_history'::regclass);
        LOOP
            BEGIN
                PERFORM set_config('lock_timeout', rag._lock_wait(deadline + interval '1 ms', interval '10 ms'), true);
                EXECUTE format('DELETE FROM %s AS x WHERE x.tenant = $1', tbl) USING t;
                EXIT;
            EXCEPTION WHEN lock_not_available THEN   -- (this try's delete is undone)
                IF clock_timestamp() >= deadline THEN
                    RAISE EXCEPTION 'rag.erase_tenant: rows of tenant % in % stayed locked by another transaction past the patience (%)',
                                    rag._shown(t), tbl, patience
                        USING ERRCODE = 'lock_not_available',
                              HINT = 'a transaction of the tenant holds them: let it end (pg_stat_activity) and retry; nothing was erased';
                END IF;
                -- (one that holds rows here and waits for the erase: a deadlock)
                cancelled := cancelled || rag._end_waiting_holders(ARRAY[tbl]);
                PERFORM pg_sleep(0.2);
            END;
        END LOOP;
    END LOOP;
    PERFORM set_config('lock_timeout', held_timeout, true);
    IF cardinality(cancelled) > 0 THEN
        RAISE WARNING 'rag.erase_tenant: cancelled the statements of pids % (each held what the erase needed while it waited for the erase: a deadlock)',
                      cancelled;
    END IF;

    SELECT array_agg(c.oid::regclass::text ORDER BY c.relname) INTO parts
    FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent IN ('rag.chunks'::regclass, 'rag.posting_blocks'::regclass) AND rag._partition_of(c.oid, t);
    IF parts IS NOT NULL THEN
        RAISE NOTICE 'rag.erase_tenant: the partitions of tenant % are left, empty: %', rag._shown(t),
                     array_to_string(parts, ', ')
            USING HINT = 'DROP TABLE them when a lock on rag.chunks and rag.posting_blocks may be taken';
    END IF;

    FOR tbl IN SELECT * FROM rag._tenant_tables() LOOP
        EXECUTE format('SELECT count(*) FROM %s AS x WHERE x.tenant = $1', tbl) INTO n USING t;
        table_name := tbl::text;
        kept := n;
        removed := (before ->> tbl::text)::bigint - n;
        RETURN NEXT;
    END LOOP;
    -- (at the end: a transaction begun while it waited is open now, or its rows are kept above)
    SELECT array_agg(s.pid ORDER BY s.pid) INTO open_pids
    FROM pg_catalog.pg_stat_activity AS s JOIN pg_catalog.pg_roles AS u ON u.oid = s.usesysid
    WHERE s.pid <> pg_backend_pid() AND s.xact_start IS NOT NULL AND NOT u.rolsuper
      AND EXISTS (SELECT 1 FROM unnest(acting) AS r (oid) WHERE pg_catalog.pg_has_role(s.usesysid, r.oid, 'MEMBER'));
    IF open_pids IS NOT NULL THEN
        RAISE WARNING 'rag.erase_tenant: sessions of roles that may act for tenant % have transactions open (pids %): rows they write after this commits are not erased',
                      rag._shown(t), open_pids
            USING HINT = 'end them (pg_terminate_backend) and erase again, or revoke the tenant''s grants first';
    END IF;
END
$$;
