-- Partitions per tenant. rag.chunks and rag.posting_blocks are partitioned BY LIST (tenant);
-- every tenant starts in the DEFAULT partitions. A large tenant gets partitions of its
-- own: its own HNSW (per model) and GIN indexes, sized to its data, and rag.search, which
-- filters every leg on the tenant, prunes to them at executor start-up.

-- rag._make_partition_indexes (internal)
-- The keys and indexes of a tenant's partitions of rag.chunks and rag.posting_blocks: those of
-- rag.chunks_default and rag.posting_blocks_default, under the same names (the partition's name
-- first), and an HNSW index per model of rag.model_indexes. The partitioned tables have
-- none (incremental/0.2.0/020-partition-indexes.sql says why).
CREATE OR REPLACE FUNCTION rag._make_partition_indexes(c name, p name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    model text;
BEGIN
    EXECUTE format('ALTER TABLE rag.%1$I ADD CONSTRAINT %2$I PRIMARY KEY (tenant, id),'
                   ' ADD CONSTRAINT %3$I UNIQUE (tenant, document_id, ord),'
                   ' ADD CONSTRAINT %4$I FOREIGN KEY (tenant, document_id) REFERENCES rag.documents (tenant, id)'
                   ' DEFERRABLE INITIALLY DEFERRED',
                   c, c || '_pkey', c || '_tenant_document_id_ord_key', c || '_document_fkey');
    EXECUTE format('CREATE INDEX %I ON rag.%I USING gin (tsv)', c || '_tsv_idx', c);
    EXECUTE format('CREATE INDEX %I ON rag.%I (tenant, model, content_hash)', c || '_tenant_model_content_hash_idx', c);
    EXECUTE format('CREATE INDEX %I ON rag.%I (id)', c || '_id_idx', c);
    EXECUTE format('CREATE INDEX %I ON rag.%I (document_id)', c || '_document_id_idx', c);
    EXECUTE format('CREATE INDEX %I ON rag.%I (tenant, id) WHERE window_embeddings IS NULL', c || '_windows_todo_idx', c);
    EXECUTE format('CREATE INDEX %I ON rag.%I (tenant, id) WHERE window_bounds IS NULL', c || '_bounds_todo_idx', c);
    PERFORM rag._make_model_index(c, 'all-MiniLM-L6-v2');
    FOR model IN SELECT mi.model FROM rag.model_indexes AS mi ORDER BY 1 LOOP
        PERFORM rag._make_model_index(c, model);
    END LOOP;
    EXECUTE format('ALTER TABLE rag.%I ADD CONSTRAINT %I PRIMARY KEY (tenant, lexeme, first_id)'
                   ' INCLUDE (merged, n, max_tf, min_len)', p, p || '_pkey');
END
$$;

-- rag._lock_tables (internal): LOCK TABLE `tables` IN `lock_mode` MODE, for the owner's
-- DDL, in tries (rag._ddl_in_tries): a request that waits (for a long write transaction,
-- say) would make every later reader and writer of those tables queue behind it. After
-- `patience`, 55P03 naming `caller` and the sessions that held locks on them (hostile
-- review 29: the tries went on for as long as any writer kept a transaction open).
CREATE OR REPLACE FUNCTION rag._lock_tables(caller text, tables regclass[], lock_mode text,
                                            patience interval DEFAULT '30 seconds')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF lock_mode NOT IN ('SHARE', 'SHARE ROW EXCLUSIVE', 'EXCLUSIVE', 'ACCESS EXCLUSIVE') THEN
        RAISE EXCEPTION '%: no lock mode %', caller, rag._shown(lock_mode) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM rag._ddl_in_tries(caller,
        format($q$SELECT format('LOCK TABLE %%s IN %s MODE', string_agg(x::text, ', ')) FROM unnest($1) AS x$q$, lock_mode),
        tables, patience);
END
$$;

-- rag.create_tenant_partition (the extension's owner)
-- Give a tenant its own partitions of rag.chunks and rag.posting_blocks, moving its rows out of
-- the default ones, in one transaction. Readers and writers wait while it runs (the tables
-- are locked); while it waits for the lock, they do not queue behind it. Returns the name of
-- the chunks partition.
CREATE OR REPLACE FUNCTION rag.create_tenant_partition(tenant text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    suffix text := left(md5(tenant), 12);
    c text := 'chunks_' || suffix;
    p text := 'posting_blocks_' || suffix;
BEGIN
    IF tenant IS NULL OR btrim(tenant) = '' THEN
        RAISE EXCEPTION 'rag.create_tenant_partition: tenant is empty' USING ERRCODE = 'invalid_parameter_value';
    ELSIF to_regclass('rag.' || c) IS NOT NULL THEN
        RETURN c;
    ELSIF NOT rag._owns_chunks() THEN
        RAISE EXCEPTION 'rag.create_tenant_partition: only the owner of rag.chunks can create partitions'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('as the extension''s owner: SELECT rag.create_tenant_partition(%L)', tenant);
    ELSIF EXISTS (SELECT 1 FROM rag.embeddings_next AS n WHERE n.tenant = create_tenant_partition.tenant) THEN
        RAISE EXCEPTION 'rag.create_tenant_partition: tenant % is switching its embedding model', rag._shown(tenant)
            USING ERRCODE = 'object_in_use', HINT = 'let rag.work finish the switch (rag.model_status), then retry';
    END IF;
    PERFORM rag._lock_tables('rag.create_tenant_partition', ARRAY['rag.chunks', 'rag.posting_blocks']::regclass[],
                             'ACCESS EXCLUSIVE');
    -- the default partitions are detached while the tenant's rows move out of them, so
    -- that attaching them back proves none is left
    ALTER TABLE rag.chunks DETACH PARTITION rag.chunks_default;
    ALTER TABLE rag.posting_blocks DETACH PARTITION rag.posting_blocks_default;
    EXECUTE format('CREATE TABLE rag.%I PARTITION OF rag.chunks FOR VALUES IN (%L)', c, tenant);
    EXECUTE format('CREATE TABLE rag.%I PARTITION OF rag.posting_blocks FOR VALUES IN (%L)', p, tenant);
    -- straight into the partitions: the parent's statement triggers (BM25 statistics) do
    -- not fire, and need not: the rows only move, ids and all (from Postgres 17 on, a
    -- partition has the parent's identity column: OVERRIDING SYSTEM VALUE keeps the ids);
    -- nor do its row triggers' limits, checked when a row was written (a row from before
    -- them moves as it is)
    EXECUTE format('ALTER TABLE rag.%I DISABLE TRIGGER chunks_before_write', c);
    EXECUTE format('ALTER TABLE rag.%I DISABLE TRIGGER posting_blocks_before_insert', p);
    EXECUTE format('INSERT INTO rag.%I (id, tenant, document_id, ord, content, heading, page, tokens, content_hash, model,'
                   ' embedding, window_embeddings, window_bounds, window_lengths, created_at) OVERRIDING SYSTEM VALUE'
                   ' SELECT id, tenant, document_id, ord, content, heading, page, tokens, content_hash, model, embedding,'
                   ' window_embeddings, window_bounds, window_lengths, created_at'
                   ' FROM rag.chunks_default WHERE tenant = %L', c, tenant);
    EXECUTE format('INSERT INTO rag.%I SELECT * FROM rag.posting_blocks_default WHERE tenant = %L', p, tenant);
    EXECUTE format('ALTER TABLE rag.%I ENABLE TRIGGER chunks_before_write', c);
    EXECUTE format('ALTER TABLE rag.%I ENABLE TRIGGER posting_blocks_before_insert', p);
    DELETE FROM rag.chunks_default AS d WHERE d.tenant = create_tenant_partition.tenant;
    DELETE FROM rag.posting_blocks_default AS d WHERE d.tenant = create_tenant_partition.tenant;
    ALTER TABLE rag.chunks ATTACH PARTITION rag.chunks_default DEFAULT;
    ALTER TABLE rag.posting_blocks ATTACH PARTITION rag.posting_blocks_default DEFAULT;
    PERFORM rag._make_partition_indexes(c, p);
    EXECUTE format('ANALYZE rag.%I, rag.%I', c, p);
    RETURN c;
END
$$;

-- rag._partition_of (internal): whether relation `rel` is the partition of `tenant`: its
-- bound, as pg_get_expr writes it with standard_conforming_strings on (pinned here), is
-- exactly that tenant's literal. (format's %L writes E'a\\b' for a backslash where
-- pg_get_expr writes 'a\b' (hostile review 37), and with the setting off pg_get_expr
-- doubles it, so that tenants 'a\b' and 'a\\b' could match one another (review 37c).)
CREATE OR REPLACE FUNCTION rag._partition_of(rel oid, tenant text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
    SELECT pg_get_expr(c.relpartbound, c.oid) = 'FOR VALUES IN (''' || replace(tenant, '''', '''''') || ''')'
    FROM pg_class AS c WHERE c.oid = rel
$$;

-- rag.tenant_partitions: which tenants have partitions of their own, and their sizes
CREATE OR REPLACE VIEW rag.tenant_partitions WITH (security_invoker = true) AS
    SELECT pg_catalog.pg_get_expr(r.relpartbound, r.oid) AS bound, r.oid::regclass::text AS chunks_partition,
           pg_catalog.pg_total_relation_size(r.oid) AS total_bytes, r.reltuples::bigint AS approx_chunks
    FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS r ON r.oid = i.inhrelid
    WHERE i.inhparent = 'rag.chunks'::regclass
      -- a tenant sees its own partition (and the default one); the owner sees all of them
      AND (rag._owns_chunks() OR r.relpartbound IS NULL
           OR pg_catalog.pg_get_expr(r.relpartbound, r.oid) = 'DEFAULT'
           OR rag._partition_of(r.oid, rag.current_tenant()));
