-- rag._owns_chunks (internal): whether the current role may run DDL on rag.chunks (its
-- owner, or a member of the owner's role): the indexes and partitions per model and tenant
CREATE OR REPLACE FUNCTION rag._owns_chunks()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class AS c WHERE c.oid = 'rag.chunks'::regclass
$$;

-- rag._chunks_partitions (internal): the partitions of rag.chunks (the default one and each
-- tenant's), by name: from pg_inherits, which locks none of them. One home for the list
-- every function that makes, checks or counts a model's indexes walks.
CREATE OR REPLACE FUNCTION rag._chunks_partitions()
RETURNS TABLE (relid oid, relname name)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid, c.relname FROM pg_inherits AS h JOIN pg_class AS c ON c.oid = h.inhrelid
    WHERE h.inhparent = 'rag.chunks'::regclass ORDER BY c.relname
$$;

-- rag._model_index (internal): the name of one embedding model's HNSW index on one
-- partition of rag.chunks (MiniLM's, made with every partition, keeps the name 0.1.0 gave it)
CREATE OR REPLACE FUNCTION rag._model_index(part name, model text)
RETURNS name
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (CASE WHEN model = 'all-MiniLM-L6-v2' THEN part || '_embedding_idx'
                 ELSE part || '_hnsw_' || left(md5(model), 12) END)::name
$$;

-- rag._embedding_model_used (internal): whether any tenant uses an embedding model:
-- rag.config's model (the database's), a tenant's model or the one it is being switched to,
-- a model with HNSW indexes of its own (rag.model_indexes), or a chunk of it in any tenant
-- (a session's rag.embedding_model, a role's, writes some that no row names: review 49b).
-- SECURITY DEFINER, rag's second (review 48, F1): the tables are per tenant, and an admin
-- of one tenant, whose row-level security let it see its own tenant's rows only, could
-- change what makes the vectors of a model only another tenant used (its dimensions: that
-- tenant's search failed; its provider model: its queries were embedded by another model).
-- It answers yes or no for one name (the foreign keys on rag.models tell an admin as much
-- of the models rag.tenant_models names); EXECUTE for rag_admin only, fixed statements, no
-- caller's text in them but the name compared. The chunks are asked per tenant (every
-- tenant that wrote one has its rag.tenant_models row: rag._claim_tenant_models), each
-- through the (tenant, model, content_hash) index: linear in tenants, not in chunks (a scan
-- of every chunk per changed model: review 49); the planner is held to that.
CREATE OR REPLACE FUNCTION rag._embedding_model_used(model_name text)
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET enable_material = off
AS $$
    SELECT model_name IS NOT NULL
       AND (EXISTS (SELECT 1 FROM rag.config AS c WHERE c.name = 'embedding_model' AND c.value = model_name)
            OR EXISTS (SELECT 1 FROM rag.tenant_models AS t WHERE t.embedding_model = model_name OR t.next_model = model_name)
            OR EXISTS (SELECT 1 FROM rag.model_indexes AS mi WHERE mi.model = model_name)
            -- (built with rag.model_index_statements, not yet recorded: review 50, F1)
            OR EXISTS (SELECT 1 FROM rag._chunks_partitions() AS p
                       WHERE to_regclass(format('rag.%I', rag._model_index(p.relname, model_name))) IS NOT NULL)
            OR EXISTS (SELECT 1 FROM rag.tenant_models AS t
                       WHERE EXISTS (SELECT 1 FROM rag.chunks AS ch WHERE ch.tenant = t.tenant AND ch.model = model_name)))
$$;
REVOKE ALL ON FUNCTION rag._embedding_model_used(text) FROM PUBLIC;

-- rag._embedding_model_in_use (internal): whether an embedding model may have vectors in
-- rag.chunks: the session's model (its rag.embedding_model, or its tenant's), or one any
-- tenant uses (rag._embedding_model_used).
CREATE OR REPLACE FUNCTION rag._embedding_model_in_use(model_name text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rag._setting('embedding_model') = model_name OR rag._embedding_model_used(model_name)
$$;

-- rag._model_index_ddl (internal): the CREATE INDEX statement of one model's partial HNSW
-- index on one partition of rag.chunks (plain for rag._make_model_index, CONCURRENTLY for
-- rag.model_index_statements): one text for both, so the index a DBA builds is the one rag
-- would have built. Every name in it carries its schema: psql's \gexec runs it on the
-- owner's search_path (an `=` planted in a schema before pg_catalog ran as the owner, and on
-- every insert into the partition: review 50, F2)
CREATE OR REPLACE FUNCTION rag._model_index_ddl(part name, model text, concurrent boolean)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('CREATE INDEX %sIF NOT EXISTS %I ON rag.%I USING hnsw ((embedding::%s.vector(%s)) %s.vector_cosine_ops)'
                  ' WITH (m = 16, ef_construction = 64) WHERE model OPERATOR(pg_catalog.=) %L::pg_catalog.text',
                  CASE WHEN concurrent THEN 'CONCURRENTLY ' ELSE '' END,
                  rag._model_index(part, m.name), part, rag._vector_schema(), m.dimensions, rag._vector_schema(), m.name)
    FROM rag._model(model, 'embed') AS m
$$;

-- rag._model_index_state (internal): one model's index on one partition, by its name:
-- 'missing'; 'building' (a CREATE INDEX CONCURRENTLY of it is running: progress a caller
-- may see, its own or, for a superuser or pg_read_all_stats, anyone's); 'invalid' (such a
-- build failed or was cancelled: it is never used); 'other' (not the index of the model as
-- registered now: its access method, operator class, dimensions or predicate differ, e.g.
-- a model registered again with other dimensions between a DBA's build and its record:
-- every insert of the model's vectors there failed, review 50, F1); 'valid'
CREATE OR REPLACE FUNCTION rag._model_index_state(part name, model text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_stat_progress_create_index AS p WHERE p.index_relid = i.indexrelid)
                     THEN 'building'
                     WHEN NOT i.indisvalid THEN 'invalid'
                     WHEN am.amname = 'hnsw' AND i.indnatts = 1 AND oc.opcname = 'vector_cosine_ops'
                          AND att.atttypmod = m.dimensions
                          AND pg_get_expr(i.indpred, i.indrelid) = format('(model = %L::text)', m.name)
                     THEN 'valid'
                     ELSE 'other' END
         FROM pg_index AS i
         JOIN pg_class AS ic ON ic.oid = i.indexrelid
         JOIN pg_am AS am ON am.oid = ic.relam
         JOIN pg_attribute AS att ON att.attrelid = i.indexrelid AND att.attnum = 1
         LEFT JOIN pg_opclass AS oc ON oc.oid = i.indclass[0]
         LEFT JOIN rag.models AS m ON m.name = model AND m.kind = 'embed'
         WHERE i.indexrelid = to_regclass(format('rag.%I', rag._model_index(part, model)))),
        'missing')
$$;

-- rag._make_model_index (internal): one model's partial HNSW index on one partition of
-- rag.chunks, unless it exists; an invalid one of that name (a failed CREATE INDEX
-- CONCURRENTLY) is named, not taken for an index (55000: search with the model scanned)
CREATE OR REPLACE FUNCTION rag._make_model_index(part name, model text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m rag.models := rag._model(model, 'embed');
    state text := rag._model_index_state(part, m.name);
BEGIN
    IF state = 'valid' THEN
        RETURN;
    ELSIF state = 'building' THEN
        RAISE EXCEPTION 'rag: the HNSW index rag.% of % is being built (a CREATE INDEX CONCURRENTLY is running)',
            quote_ident(rag._model_index(part, m.name)), rag._shown(m.name)
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'run this again once it has finished';
    ELSIF state <> 'missing' THEN
        RAISE EXCEPTION 'rag: the HNSW index rag.% is not one search with % can use: %', quote_ident(rag._model_index(part, m.name)),
            rag._shown(m.name),
            CASE state WHEN 'invalid' THEN 'it is invalid (a CREATE INDEX CONCURRENTLY failed or was cancelled)'
                       ELSE format('its definition is not the model''s (%s dimensions)', m.dimensions) END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('as the owner, in psql: SELECT rag.model_index_statements(%L) \gexec (it drops and builds it)', m.name);
    END IF;
    -- (CREATE INDEX's SHARE lock, in tries: see rag._lock_tables)
    PERFORM rag._lock_tables('rag.create_model_index', ARRAY[format('rag.%I', part)::regclass], 'SHARE');
    EXECUTE rag._model_index_ddl(part, m.name, false);
END
$$;

-- rag._check_hnsw_dimensions (internal): a model whose vectors pgvector's HNSW cannot
-- index (over 2,000 dimensions) is refused naming the model and the caller (pgvector's own
-- refusal names no model, and failed a switch: review 48)
CREATE OR REPLACE FUNCTION rag._check_hnsw_dimensions(m rag.models, caller text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF m.dimensions > 2000 THEN
        RAISE EXCEPTION '%: % has % dimensions; pgvector''s HNSW indexes vectors of at most 2,000',
                        caller, rag._shown(m.name), m.dimensions
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'search with this model scans (exact, slower on a large corpus); a model whose API shortens '
                         'its vectors can be registered with dimensions => 2000 or fewer';
    END IF;
END
$$;

-- rag.create_model_index
-- The partial HNSW index for one embedding model on every partition of rag.chunks (needs
-- the owner of rag.chunks), recorded in rag.model_indexes so that partitions made later
-- and restores get it too. Without it, search with that model is exact (a scan): right,
-- but slow on a large corpus. Returns the index's name on rag.chunks_default.
CREATE OR REPLACE FUNCTION rag.create_model_index(model_name text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m rag.models := rag._model(model_name, 'embed');
    part name;
    built boolean;   -- every partition has the model's index, valid
BEGIN
    PERFORM rag._check_hnsw_dimensions(m, 'rag.create_model_index');
    -- (indexes a DBA built with rag.model_index_statements are taken as they are, and
    -- recorded here: before, all being there, the model was not recorded, and a partition
    -- made later or a restore lacked its index)
    built := NOT EXISTS (SELECT 1 FROM rag._chunks_partitions() AS p
                         WHERE rag._model_index_state(p.relname, m.name) <> 'valid');
    IF built AND (m.name = 'all-MiniLM-L6-v2' OR EXISTS (SELECT 1 FROM rag.model_indexes AS mi WHERE mi.model = m.name)) THEN
        RETURN rag._model_index('chunks_default', m.name);
    ELSIF NOT rag._owns_chunks() THEN
        IF built THEN
            -- (built with rag.model_index_statements, not yet recorded: search uses them)
            RAISE EXCEPTION 'rag.create_model_index: the HNSW indexes of % are built but not recorded in rag.model_indexes, which only the owner of rag.chunks can do',
                rag._shown(m.name)
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('as the extension''s owner: SELECT rag.create_model_index(%L)', m.name);
        END IF;
        RAISE EXCEPTION 'rag.create_model_index: only the owner of rag.chunks can create the index for %', rag._shown(m.name)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('as the extension''s owner: SELECT rag.create_model_index(%L)', m.name);
    END IF;
    IF m.name <> 'all-MiniLM-L6-v2' THEN
        INSERT INTO rag.model_indexes AS mi (model) VALUES (m.name) ON CONFLICT DO NOTHING;
    END IF;
    FOR part IN SELECT p.relname FROM rag._chunks_partitions() AS p LOOP
        PERFORM rag._make_model_index(part, m.name);
    END LOOP;
    RETURN rag._model_index('chunks_default', m.name);
END
$$;

-- rag.model_index_statements
-- The statements that build one embedding model's HNSW indexes without holding anyone's
-- ingest: CREATE INDEX CONCURRENTLY, one per partition of rag.chunks that lacks a valid
-- index (preceded by a DROP INDEX CONCURRENTLY of an invalid one). rag.create_model_index
-- (and so the owner's rag.set_embedding_model) builds them in its transaction, holding
-- SHARE on each partition, so every tenant's ingest into it waits for the build (minutes on
-- a large shared partition); these run outside a transaction, in psql:
--     SELECT rag.model_index_statements('model') \gexec
--     SELECT rag.create_model_index('model');   -- finds them built, and records the model
-- Only the owner of rag.chunks can run them. Nothing when every partition has its index.
CREATE OR REPLACE FUNCTION rag.model_index_statements(model_name text)
RETURNS SETOF text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m rag.models := rag._model(model_name, 'embed');
    part name;
    state text;
BEGIN
    PERFORM rag._check_hnsw_dimensions(m, 'rag.model_index_statements');
    FOR part IN SELECT p.relname FROM rag._chunks_partitions() AS p LOOP
        state := rag._model_index_state(part, m.name);
        IF state = 'building' THEN   -- (a DROP would end that build's work: review 50, F5)
            RAISE NOTICE 'rag.model_index_statements: rag.% is being built now: left to that build',
                quote_ident(rag._model_index(part, m.name));
            CONTINUE;
        END IF;
        CONTINUE WHEN state = 'valid';
        IF state IN ('invalid', 'other') THEN
            RETURN NEXT format('DROP INDEX CONCURRENTLY IF EXISTS rag.%I', rag._model_index(part, m.name));
        END IF;
        RETURN NEXT rag._model_index_ddl(part, m.name, true);
    END LOOP;
END
$$;

-- rag._model_indexes_restored (internal)
-- Row trigger on rag.model_indexes: during a restore (rag._restoring), make the model's
-- index on rag.chunks_default, which pg_dump does not dump (it belongs to the extension's
-- table); a tenant's own partition comes with its indexes in the dump.
CREATE OR REPLACE FUNCTION rag._model_indexes_restored()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rag._restoring() THEN
        PERFORM rag._make_model_index('chunks_default', NEW.model);
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER model_indexes_restored AFTER INSERT ON rag.model_indexes
    FOR EACH ROW EXECUTE FUNCTION rag._model_indexes_restored();

-- rag._tenant_embedding_model (internal): the embedding model a tenant's chunks are
-- written with, first found: the Postgres setting rag.embedding_model, the tenant's
-- rag.tenant_models row, rag.config, the default. rag._setting('embedding_model') is this
-- for the session's tenant; a superuser's statement may write several tenants' documents.
-- plpgsql, as rag._setting: its plans are kept for the session.
CREATE OR REPLACE FUNCTION rag._tenant_embedding_model(for_tenant text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m text := nullif(current_setting('rag.embedding_model', true), '');
BEGIN
    IF m IS NULL THEN
        SELECT tm.embedding_model INTO m FROM rag.tenant_models AS tm WHERE tm.tenant = for_tenant;
    END IF;
    IF m IS NULL THEN
        SELECT coalesce(c.value, d.default_value) INTO m
        FROM rag._setting_defaults() AS d LEFT JOIN rag.config AS c ON c.name = d.name
        WHERE d.name = 'embedding_model';
    END IF;
    RETURN m;
END
$$;

-- rag._lock_tenant_model_row (internal): lock a tenant's rag.tenant_models row FOR UPDATE,
-- asking in 100 ms tries until `until`: true once locked, false if the tenant has no row,
-- NULL if others still hold it at `until`. A try that gets the lock commits into the
-- caller's (sub)transaction, which holds it.
CREATE OR REPLACE FUNCTION rag._lock_tenant_model_row(for_tenant text, until timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    LOOP
        BEGIN
            PERFORM 1 FROM rag.tenant_models AS x WHERE x.tenant = for_tenant FOR UPDATE NOWAIT;
            RETURN FOUND;
        EXCEPTION WHEN lock_not_available THEN
            IF clock_timestamp() > until THEN
                RETURN NULL;
            END IF;
            PERFORM pg_sleep(0.1);
        END;
    END LOOP;
END
$$;

-- rag._claim_tenant_models (internal): make sure each tenant has its rag.tenant_models row
-- (embedding_model NULL: the database's model, a choice nobody made), then hold it for a
-- writer (ingest, before it reads the model) or for a switch; returns each tenant with the
-- model its chunks are written with. The row must exist before either reads the model, or
-- a first document being embedded kept the old model (seen in session 29). INSERT ... ON
-- CONFLICT waits for a concurrent insert of the row; the hot path inserts nothing. Tenants
-- in order, so that two callers lock their rows in the same order.
--   A writer holds the row FOR KEY SHARE until it ends. Before that, once per transaction
-- and tenant, it locks the row FOR SHARE and lets go at once (a subtransaction rolled
-- back): the turnstile, which waits while a switch is waiting for the tenant's writers.
--   A switch asks for FOR UPDATE, which waits for every writer that read the old model. A
-- new writer's FOR KEY SHARE alone would pass a waiting FOR UPDATE (Postgres queues no
-- share locker behind it), so writers that overlapped without a pause kept the switch out
-- for good (hostile review 30). So for its first 5 s (at most its patience) the switch
-- holds the row FOR NO KEY UPDATE while it asks, which the writers' FOR KEY SHARE allows
-- and the turnstile's FOR SHARE does not: the tenant's new writers wait. Then it lets go
-- of that (a subtransaction rolled back) and asks on its own until `patience`, so that one
-- long writer (a bulk load) holds up the tenant's other writers 5 s per try, not the
-- whole patience (hostile review 31). All in 100 ms tries, so that an idle writer or
-- another switch does not hold it for good, and no cycle of waits goes unbroken: 55P03
-- after `patience`.
CREATE OR REPLACE FUNCTION rag._claim_tenant_models(tenants text[], for_update boolean DEFAULT false,
                                                    patience interval DEFAULT '30 seconds')
RETURNS TABLE (for_tenant text, model text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + patience;
    gate_until timestamptz;
    inserted boolean;
    missing boolean;
    got boolean;
    mark text;
    held_timeout text := current_setting('lock_timeout');
BEGIN
    FOR for_tenant IN SELECT DISTINCT u.t FROM unnest(tenants) AS u (t) WHERE u.t IS NOT NULL ORDER BY 1 LOOP
        inserted := false;
        LOOP
            got := false;
            IF for_update THEN
                -- with the gate until gate_until: FOR NO KEY UPDATE, then FOR UPDATE. The gate
                -- is taken by this block's own subtransaction, not a nested one: a writer
                -- waiting for a subtransaction that committed into its parent waits for the
                -- whole transaction, so rolling the block back would not let it go on
                missing := false;
                gate_until := least(deadline, clock_timestamp() + interval '5 seconds');
                BEGIN
                    -- (what is left of the gate's time, or the session's lock_timeout if shorter)
                    PERFORM set_config('lock_timeout',
                                       greatest(1, ceil(least(extract(epoch FROM gate_until - clock_timestamp()),
                                                              nullif(extract(epoch FROM held_timeout::interval), 0))
                                                        * 1000))::text,
                                       true);
                    PERFORM 1 FROM rag.tenant_models AS x WHERE x.tenant = for_tenant FOR NO KEY UPDATE;
                    missing := NOT FOUND;
                    PERFORM set_config('lock_timeout', held_timeout, true);
                    IF NOT missing THEN
                        got := rag._lock_tenant_model_row(for_tenant, gate_until);
                        IF got IS NULL THEN
                            RAISE SQLSTATE 'RGT02';                   -- let go of the gate
                        END IF;
                    END IF;
                EXCEPTION WHEN SQLSTATE 'RGT02' OR lock_not_available THEN
                    got := false;                                     -- (lock_timeout: restored)
                END;
                -- then on its own until the deadline
                IF NOT missing AND NOT got THEN
                    got := rag._lock_tenant_model_row(for_tenant, deadline);
                    IF got IS NULL THEN
                        RAISE EXCEPTION 'rag: the writers of tenant % held its embedding model (its rag.tenant_models row) for %',
                            rag._shown(for_tenant), patience
                            USING ERRCODE = 'lock_not_available',
                                  HINT = 'a model switch waits for the tenant''s writers that read the model: retry once they end';
                    END IF;
                END IF;
            ELSE
                -- (the mark names the transaction: rag._xact_mark)
                mark := md5(for_tenant) || ':' || rag._xact_mark() || ' ';
                -- (marked: this transaction holds the row already. Locking it again would
                -- take a subtransaction id when called from PL/Python, one per ingest)
                got := strpos(coalesce(current_setting('rag.claimed_tenant_models', true), ''), mark) > 0;
                IF NOT got THEN
                    BEGIN
                        PERFORM 1 FROM rag.tenant_models AS x WHERE x.tenant = for_tenant FOR SHARE;
                        RAISE SQLSTATE 'RGT01';     -- let go of it: the turnstile only waits
                    EXCEPTION WHEN SQLSTATE 'RGT01' THEN
                        NULL;
                    END;
                    PERFORM 1 FROM rag.tenant_models AS x WHERE x.tenant = for_tenant FOR KEY SHARE;
                    got := FOUND;
                    IF got THEN
                        PERFORM set_config('rag.claimed_tenant_models',
                                           coalesce(current_setting('rag.claimed_tenant_models', true), '') || mark, true);
                    END IF;
                END IF;
            END IF;
            EXIT WHEN got;
            IF inserted THEN   -- (not reached: the row is ours, or another's that we waited for)
                RAISE EXCEPTION 'rag: the rag.tenant_models row of tenant % cannot be read', rag._shown(for_tenant)
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            INSERT INTO rag.tenant_models AS tm (tenant, embedding_model) VALUES (for_tenant, NULL)
            ON CONFLICT (tenant) DO NOTHING;
            inserted := true;
        END LOOP;
        model := rag._tenant_embedding_model(for_tenant);
        RETURN NEXT;
    END LOOP;
END
$$;

-- rag.set_embedding_model (rag_admin)
-- Switch the session tenant's embedding model. With no chunks yet it is immediate
-- ('active'); otherwise the re-embedding is queued ('building') and rag.work does it.
-- Setting the current model again cancels a switch in progress.
CREATE OR REPLACE FUNCTION rag.set_embedding_model(name text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m rag.models;
    t text := rag.current_tenant();
    cur text;
BEGIN
    IF name IS NULL THEN   -- (was "model NULL is not registered", 42704: review 48)
        RAISE EXCEPTION 'rag.set_embedding_model: name is NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'name a registered embedding model: SELECT name FROM rag.models WHERE kind = ''embed''';
    END IF;
    m := rag._model(name, 'embed');
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- (after it waited for the tenant's writers, it must see the chunks they wrote:
        -- in REPEATABLE READ it switched at once over chunks of the old model, review 31)
        RAISE EXCEPTION 'rag.set_embedding_model: a model switch starts in a READ COMMITTED transaction, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF nullif(current_setting('rag.embedding_model', true), '') IS NOT NULL THEN
        RAISE EXCEPTION 'rag.set_embedding_model: rag.embedding_model is set for this session or role (%)',
            rag._shown(current_setting('rag.embedding_model'))
            USING ERRCODE = 'invalid_parameter_value', HINT = 'RESET rag.embedding_model first';
    END IF;
    -- the tenant's writers that read its model have ended, and later ones wait for this
    -- transaction (rag._claim_tenant_models): what the chunks hold now is what they will
    -- hold. Before the index: CREATE INDEX's SHARE lock on rag.chunks, held until commit,
    -- must not wait for anyone (every tenant's ingest would wait behind it: hostile review 30)
    PERFORM rag._claim_tenant_models(ARRAY[t], for_update => true);
    BEGIN
        PERFORM rag.create_model_index(m.name);
    EXCEPTION WHEN insufficient_privilege THEN
        IF SQLERRM LIKE '%built but not recorded%' THEN   -- (review 50, F4: search uses them)
            RAISE WARNING 'rag.set_embedding_model: the HNSW indexes of % are built but not recorded: a tenant partition made later, or a restore, lacks them until the extension''s owner runs SELECT rag.create_model_index(%)',
                quote_literal(m.name), quote_literal(m.name);
        ELSE
            RAISE WARNING 'rag.set_embedding_model: no HNSW index for %: search will scan until the extension''s owner runs SELECT rag.create_model_index(%)',
                quote_literal(m.name), quote_literal(m.name);
        END IF;
    WHEN program_limit_exceeded THEN
        RAISE WARNING 'rag.set_embedding_model: no HNSW index for %: its % dimensions are over the 2,000 pgvector''s HNSW indexes, so search with it scans',
            quote_literal(m.name), m.dimensions;
    END;
    cur := rag._setting('embedding_model');
    DELETE FROM rag.embeddings_next AS n WHERE n.tenant = t;  -- an earlier, unfinished switch
    IF cur = m.name OR NOT EXISTS (SELECT 1 FROM rag.chunks AS c WHERE c.tenant = t) THEN
        UPDATE rag.tenant_models AS tm
        SET embedding_model = m.name, next_model = NULL, switch_started_at = NULL,
            switched_at = CASE WHEN tm.embedding_model = m.name THEN tm.switched_at ELSE now() END
        WHERE tm.tenant = t;
        RETURN 'active';
    END IF;
    UPDATE rag.tenant_models AS tm SET embedding_model = cur, next_model = m.name, switch_started_at = now()
    WHERE tm.tenant = t;
    RETURN 'building';
END
$$;

-- rag._reembed_batch (internal): embed up to n chunks of the tenant with its next model;
-- returns how many, or -1 when no switch is in progress. Its reads go through indexes
-- (ragpg.pg.reembed_batch: a batch reads its own chunks, not the ones done before it). A
-- switch starts with rag.embeddings_next empty and its chunks perhaps not analysed: plans
-- made then (and kept for the session) read every row done so far in each batch, or every
-- chunk left, then sorted them (seen in its test); the pass over the chunks left compared
-- each with every row done, materialised (8,000 chunks: 0.9 s, 16,000: 3.2 s; review 49).
CREATE OR REPLACE FUNCTION rag._reembed_batch_py(n int)
RETURNS int
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_material = off
AS $python$
    #@ragpg-prologue
    return ragpg.pg.reembed_batch(plpy, n)
$python$;

CREATE OR REPLACE FUNCTION rag._reembed_batch(n int)
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done int := rag._reembed_batch_py(n);
BEGIN
    IF done IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN done;
END
$$;

-- rag._window_batch (internal): embed the windows of up to n chunks of the tenant that
-- have none (ragpg.pg.window_batch); returns how many, 0 when none is left
CREATE OR REPLACE FUNCTION rag._window_batch_py(n int)
RETURNS int
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.window_batch(plpy, n)
$python$;

CREATE OR REPLACE FUNCTION rag._window_batch(n int)
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done int := rag._window_batch_py(n);
BEGIN
    IF done IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN done;
END
$$;

-- rag._switch_left (internal): how many chunks of the tenant still lack their embedding by
-- the tenant's next model, counted up to `most` (all of them when no switch is in progress)
-- (planned on tables a switch leaves unanalysed, it compared each chunk with every row
-- done, materialised: quadratic, twice while the last step holds the tenant's writers;
-- review 49)
CREATE OR REPLACE FUNCTION rag._switch_left(t text, most bigint)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_material = off
AS $$
    SELECT count(*)
    FROM (SELECT 1 FROM rag.chunks AS c
          WHERE c.tenant = t
            AND NOT EXISTS (SELECT 1 FROM rag.embeddings_next AS n JOIN rag.tenant_models AS tm
                                 ON tm.tenant = n.tenant AND tm.next_model = n.model
                            WHERE n.chunk_id = c.id AND n.tenant = t)
          LIMIT most) AS l
$$;

-- rag._switch_embedded (internal): whether every chunk of the tenant has its embedding by
-- the tenant's next model (false when no switch is in progress and it has chunks)
CREATE OR REPLACE FUNCTION rag._switch_embedded(t text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rag._switch_left(t, 1) = 0
$$;

-- rag._finish_switch (internal): when every chunk has its next embedding, make the next
-- model current, in one transaction. So that no chunk of the old model slips in, it holds
-- the tenant's rag.tenant_models row FOR UPDATE, which the tenant's writers lock
-- before they read its model (they wait for it; other tenants' writers and all readers go
-- on). It asks for the row in 100 ms tries (rag._claim_tenant_models), so nobody queues
-- behind it, and other tenants' writers do not delay it. False if there is no switch or a
-- chunk still lacks its next embedding (another worker holds it), and with a WARNING if
-- the tenant's writers held the row for `patience`: the next rag.work tries again.
DROP FUNCTION IF EXISTS rag._finish_switch();   -- (0.4.0's, without patience)
CREATE OR REPLACE FUNCTION rag._finish_switch(patience interval DEFAULT '30 seconds')
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text := rag.current_tenant();
    tm rag.tenant_models;
    left_over int;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- (its statements must see the chunks written by the transactions it waited for)
        RAISE EXCEPTION 'rag: a model switch finishes in a READ COMMITTED transaction, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    ELSIF NOT EXISTS (SELECT 1 FROM rag.tenant_models AS x WHERE x.tenant = t AND x.next_model IS NOT NULL) THEN
        RETURN false;
    ELSIF NOT rag._bool_setting('finish_switches') AND NOT rag._is_member('rag_admin') THEN
        RETURN false;   -- an admin's rag.finish_embedding_switch runs it (a writer's call of this too)
    END IF;
    BEGIN
        PERFORM rag._claim_tenant_models(ARRAY[t], for_update => true, patience => patience);
    EXCEPTION WHEN lock_not_available THEN
        RAISE WARNING 'rag: the embedding model switch of tenant % waits for its writers (they held its rag.tenant_models row for %)',
            rag._shown(t), patience
            USING HINT = CASE WHEN rag._bool_setting('finish_switches') THEN 'the next rag.work tries again'
                              ELSE 'rag.finish_switches is off: run SELECT rag.finish_embedding_switch() again' END;
        RETURN false;
    END;
    SELECT * INTO tm FROM rag.tenant_models AS x WHERE x.tenant = t AND x.next_model IS NOT NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    LOOP  -- chunks written since the last batch
        left_over := rag._reembed_batch(256);
        EXIT WHEN left_over <= 0;
    END LOOP;
    IF NOT rag._switch_embedded(t) THEN
        RETURN false;   -- another worker is embedding some (SKIP LOCKED passed them over)
    END IF;
    -- the windows were embedded by the old model: rag.work embeds them again
    UPDATE rag.chunks AS c SET model = n.model, embedding = n.embedding, window_embeddings = NULL
    FROM rag.embeddings_next AS n
    WHERE n.chunk_id = c.id AND c.tenant = t AND n.tenant = t AND n.model = tm.next_model;
    DELETE FROM rag.embeddings_next AS n WHERE n.tenant = t;
    UPDATE rag.tenant_models AS x SET embedding_model = tm.next_model, next_model = NULL, switched_at = now()
    WHERE x.tenant = t;
    RETURN true;
END
$$;

-- rag.finish_embedding_switch
-- The last step of the session tenant's model switch, now: what rag.work does once every
-- chunk is embedded again, unless rag.finish_switches is off (then it waits for this). The
-- step holds the tenant's writers while it moves every vector (one HNSW insert a chunk,
-- ~1 ms), so an admin may choose the hour. 'active' when the switch is done; 'building'
-- (with a NOTICE) when more than 64 chunks (or rag.index_batch_size, if lower) are still
-- to embed, which rag.work does (this step embeds the few written since its last batch,
-- holding the writers), or
-- when the tenant's writers held their row for patience (a WARNING); 'none' with no switch.
CREATE OR REPLACE FUNCTION rag.finish_embedding_switch(patience interval DEFAULT '30 seconds')
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text := rag.current_tenant();
    -- (what is left is embedded holding the tenant's writers: a few chunks, as when
    -- rag.work's last step embeds those written since its last batch; review 50b)
    batch int := least(rag._setting('index_batch_size')::int, 64);
BEGIN
    IF patience IS NULL THEN
        RAISE EXCEPTION 'rag.finish_embedding_switch: patience is NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF patience < interval '0' THEN
        RAISE EXCEPTION 'rag.finish_embedding_switch: patience must not be negative, got %', patience
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF NOT EXISTS (SELECT 1 FROM rag.tenant_models AS x WHERE x.tenant = t AND x.next_model IS NOT NULL) THEN
        RETURN 'none';
    END IF;
    IF rag._switch_left(t, batch + 1) > batch THEN
        RAISE NOTICE 'rag.finish_embedding_switch: more than % chunks of tenant % are still to embed with the next model',
            batch, rag._shown(t) USING HINT = 'CALL rag.work() embeds them; then run this again';
        RETURN 'building';
    END IF;
    IF rag._finish_switch(patience) THEN
        RETURN 'active';
    END IF;
    RAISE NOTICE 'rag.finish_embedding_switch: the switch of tenant % is not finished: another worker is embedding some of its chunks, or its writers held its row',
        rag._shown(t) USING HINT = 'run it again';
    RETURN 'building';
END
$$;

-- rag._tenant_model_guard (internal)
-- Row trigger on rag.tenant_models: a writer's rag.work finishes a switch (the embedding
-- model becomes the next one), so writers may update the table, and a writer's first
-- ingest makes the tenant's row (rag._claim_tenant_models), so writers may insert; choosing
-- a model is rag_admin's (rag.set_embedding_model). A role that is not rag_admin may only
-- insert the row that chooses nothing (every column NULL but the tenant) and finish the
-- switch an admin started; otherwise a writer could point its tenant at another, perhaps
-- priced, model whose vectors no chunk has.
CREATE OR REPLACE FUNCTION rag._tenant_model_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rag._restoring() THEN
        RETURN NEW;
    ELSIF TG_OP = 'INSERT' THEN
        IF rag._is_member('rag_admin') OR (NEW.embedding_model IS NULL AND NEW.next_model IS NULL
                                           AND NEW.switch_started_at IS NULL AND NEW.switched_at IS NULL) THEN
            RETURN NEW;
        END IF;
    ELSIF NEW.embedding_model IS NOT DISTINCT FROM OLD.embedding_model AND NEW.next_model IS NOT DISTINCT FROM OLD.next_model THEN
        RETURN NEW;
    ELSIF rag._is_member('rag_admin') OR (OLD.next_model IS NOT NULL AND NEW.embedding_model = OLD.next_model
                                          AND NEW.next_model IS NULL) THEN
        -- the tenant's writers hold the row FOR KEY SHARE (rag._claim_tenant_models), which
        -- this update's own lock allows: a model changes only once they have ended (a
        -- no-op after rag.set_embedding_model's or rag._finish_switch's claim)
        PERFORM 1 FROM rag.tenant_models AS x WHERE x.tenant = OLD.tenant FOR UPDATE;
        -- a writer finishes a switch whose vectors are in place (rag._finish_switch moves
        -- them first); by hand, it could mark it done with none, and its tenant's vector
        -- search found nothing (review 48, F7). One pass over the tenant's chunks, once a switch.
        IF NOT rag._is_member('rag_admin') AND NOT rag._bool_setting('finish_switches') THEN
            -- (review 50b: by hand, a writer finished it while the database left it to an admin)
            RAISE EXCEPTION 'rag.tenant_models: the switch of tenant % to % waits for an admin (rag.finish_switches is off)',
                rag._shown(OLD.tenant), rag._shown(OLD.next_model)
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'a member of rag_admin runs SELECT rag.finish_embedding_switch()';
        ELSIF NOT rag._is_member('rag_admin')
           AND EXISTS (SELECT 1 FROM rag.chunks AS c WHERE c.tenant = OLD.tenant AND c.model <> OLD.next_model) THEN
            RAISE EXCEPTION 'rag.tenant_models: the switch of tenant % to % is not done: some of its chunks are of another model',
                rag._shown(OLD.tenant), rag._shown(OLD.next_model)
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'CALL rag.work() embeds them and finishes the switch';
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'rag.tenant_models: only rag_admin chooses a tenant''s embedding model'
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'rag.set_embedding_model(model) as a member of rag_admin; rag.work finishes the switch';
END
$$;
CREATE OR REPLACE TRIGGER tenant_models_guard BEFORE INSERT OR UPDATE ON rag.tenant_models
    FOR EACH ROW EXECUTE FUNCTION rag._tenant_model_guard();

-- rag.model_status: per tenant, its embedding model and the progress of a switch
CREATE OR REPLACE VIEW rag.model_status WITH (security_invoker = true) AS
    SELECT t.tenant,
           coalesce(tm.embedding_model, (SELECT s.value FROM rag.settings() AS s WHERE s.name = 'embedding_model'))
               AS embedding_model,
           tm.next_model,
           (SELECT count(*) FROM rag.chunks AS c WHERE c.tenant = t.tenant) AS chunks,
           (SELECT count(*) FROM rag.embeddings_next AS n WHERE n.tenant = t.tenant AND n.model = tm.next_model)
               AS next_embedded,
           CASE WHEN tm.next_model IS NULL THEN 'active' ELSE 'building' END AS state,
           tm.switch_started_at, tm.switched_at,
           -- chunks of the current model whose window embeddings rag.work has yet to make (0.5.0)
           (SELECT count(*) FROM rag.chunks AS c WHERE c.tenant = t.tenant AND c.window_embeddings IS NULL
                AND c.model = coalesce(tm.embedding_model,
                                       (SELECT s.value FROM rag.settings() AS s WHERE s.name = 'embedding_model')))
               AS windows_pending
    FROM (SELECT rag.current_tenant() AS tenant) AS t
    LEFT JOIN rag.tenant_models AS tm ON tm.tenant = t.tenant;
