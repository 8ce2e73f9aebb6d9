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

-- rag.erase_tenant (superuser): remove every row rag holds for `tenant`, the ledger's
-- (rag.usage, rag.usage_history) only if keep_usage is false. First it waits, as a model
-- switch does, for the tenant's writers in flight (its rag.tenant_models row, up to
-- `patience`, then 55P03), so that a document being written is erased too; writers that
-- come after wait for the commit and start a new tenant of the same name. Its other waits
-- (a table it attached, to drop rag's triggers; a row a transaction of the tenant holds)
-- take what is left of `patience`, then 55P03. Sessions of the roles that may act for the
-- tenant with a transaction open (an eval set loading, an answer logged) are named in a
-- WARNING: what they commit after it is not erased. Returns one row
-- per table: the rows removed and the rows of the tenant left (0 but the kept ledger).
-- A tenant's own partitions (rag.create_tenant_partition) are left, empty: a NOTICE names
-- them (dropping one locks its parent, which is the owner's call to make).
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
    deadline timestamptz := clock_timestamp() + patience;
    held_timeout text := current_setting('lock_timeout');
    open_pids int[];
BEGIN
    IF NOT rag._is_superuser() THEN
        RAISE EXCEPTION 'rag.erase_tenant: needs a superuser (it removes ledger rows and triggers on other roles'' tables)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF t IS NULL OR btrim(t) = '' THEN
        RAISE EXCEPTION 'rag.erase_tenant: tenant must name a tenant, got %', coalesce(rag._shown(t), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF keep_usage IS NULL OR patience IS NULL OR patience < interval '0' THEN
        RAISE EXCEPTION 'rag.erase_tenant: keep_usage must be true or false and patience an interval >= 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- (after it waited for the tenant's writers it must see the rows they wrote)
        RAISE EXCEPTION 'rag.erase_tenant: runs only in READ COMMITTED (this transaction is %)',
                        current_setting('transaction_isolation')
            USING ERRCODE = 'active_sql_transaction';
    END IF;
    -- the tenant's writers in flight end first; later ones wait for this transaction. (The
    -- claim makes the tenant's row if it had none, to lock: that one is not counted.)
    made := NOT EXISTS (SELECT 1 FROM rag.tenant_models AS x WHERE x.tenant = t);
    PERFORM rag._claim_tenant_models(ARRAY[t], true, patience);

    FOR tbl IN SELECT * FROM rag._tenant_tables() LOOP
        EXECUTE format('SELECT count(*) FROM %s AS x WHERE x.tenant = $1', tbl) INTO n USING t;
        before := before || jsonb_build_object(tbl::text,
                                               n - CASE WHEN made AND tbl = 'rag.tenant_models'::regclass THEN 1 ELSE 0 END);
    END LOOP;
    -- sessions of roles that may act for the tenant with a transaction open: the tenant's
    -- document writers are done (the claim), but one loading an eval set, attaching a
    -- table or logging an answer may still commit rows after this (a WARNING names them)
    SELECT array_agg(s.pid ORDER BY s.pid) INTO open_pids
    FROM pg_catalog.pg_stat_activity AS s
    WHERE s.pid <> pg_backend_pid() AND s.xact_start IS NOT NULL AND s.usesysid IS NOT NULL
      AND (s.usename::text = t
           OR EXISTS (SELECT 1 FROM rag.tenant_roles AS g JOIN pg_catalog.pg_roles AS r ON r.rolname = g.role_name
                      WHERE g.tenant = t AND pg_catalog.pg_has_role(s.usesysid, r.oid, 'MEMBER')));
    -- rag's triggers on the tables the tenant attached (the tables and their rows stay): a
    -- table is locked, in tries, only if it holds such a trigger of the tenant's attachment
    FOR a IN SELECT x.id, x.source_table FROM rag.attachments AS x
             JOIN pg_catalog.pg_class AS c ON c.oid = x.source_table
             WHERE x.tenant = t ORDER BY x.id LOOP
        PERFORM rag._drop_attachment_triggers('rag.erase_tenant', a.source_table, a.id,
                                              greatest(deadline - clock_timestamp(), interval '0'));
    END LOOP;
    -- each wait for a row another transaction holds (a writer updating its document) up to
    -- what is left of the patience, or the session's lock_timeout if shorter
    BEGIN
        FOR tbl IN SELECT * FROM rag._tenant_tables() LOOP
            CONTINUE WHEN keep_usage AND tbl IN ('rag.usage'::regclass, 'rag.usage_history'::regclass);
            PERFORM set_config('lock_timeout',
                               greatest(1, ceil(least(extract(epoch FROM deadline - clock_timestamp()),
                                                      nullif(extract(epoch FROM held_timeout::interval), 0))
                                                * 1000))::text,
                               true);
            EXECUTE format('DELETE FROM %s AS x WHERE x.tenant = $1', tbl) USING t;
        END LOOP;
        PERFORM set_config('lock_timeout', held_timeout, true);
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'rag.erase_tenant: rows of tenant % in % stayed locked by another transaction past the patience (%)',
                        rag._shown(t), tbl, patience
            USING ERRCODE = 'lock_not_available',
                  HINT = 'a transaction of the tenant holds them: let it end (pg_stat_activity) and retry; nothing was erased';
    END;

    -- (by name, as rag.create_tenant_partition makes them: a bound's text depends on quoting)
    SELECT array_agg(c.oid::regclass::text ORDER BY c.relname) INTO parts
    FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent IN ('rag.chunks'::regclass, 'rag.posting_blocks'::regclass)
      AND c.relname IN ('chunks_' || left(md5(t), 12), 'posting_blocks_' || left(md5(t), 12));
    IF parts IS NOT NULL THEN
        RAISE NOTICE 'rag.erase_tenant: the partitions of tenant % are left, empty: %', rag._shown(t),
                     array_to_string(parts, ', ')
            USING HINT = 'DROP TABLE them when a lock on rag.chunks and rag.posting_blocks may be taken';
    END IF;
    IF open_pids IS NOT NULL THEN
        RAISE WARNING 'rag.erase_tenant: sessions of roles that may act for tenant % had transactions open (pids %): rows they write after this commits are not erased',
                      rag._shown(t), open_pids
            USING HINT = 'end them (pg_terminate_backend) and erase again, or revoke the tenant''s grants first';
    END IF;

    FOR tbl IN SELECT * FROM rag._tenant_tables() LOOP
        EXECUTE format('SELECT count(*) FROM %s AS x WHERE x.tenant = $1', tbl) INTO n USING t;
        table_name := tbl::text;
        kept := n;
        removed := (before ->> tbl::text)::bigint - n;
        RETURN NEXT;
    END LOOP;
END
$$;
