-- 0.2.0: the keys and indexes of rag.chunks and rag.postings belong to their partitions;
-- the partitioned tables have none.
--
-- Why: a tenant's own partition (rag.create_tenant_partition) is a table pg_dump restores
-- like a user's: CREATE TABLE and ATTACH before the data, its keys and indexes after it.
-- With keys and indexes on the partitioned table, ATTACH made them on the partition first,
-- and the restore then failed on each ("already exists"). And an index added later to an
-- extension's table (an HNSW index per embedding model) is not in a dump at all: such
-- indexes are now made per partition, and recorded in rag.model_indexes, so a restore
-- makes them again (its trigger) on rag.chunks_default, the extension's own partition.
--
-- Detaching a partition keeps its keys and indexes as its own, so no index is rebuilt:
-- detach every partition, drop the partitioned tables' keys and indexes, attach back.

-- rag.embeddings_next referenced the key of rag.chunks; its rows now go with their chunk
-- through rag.chunks' delete trigger (rag._chunks_lexical_delete)
ALTER TABLE rag.embeddings_next DROP CONSTRAINT embeddings_next_chunk_fkey;

CREATE TABLE rag.model_indexes (
    model      text PRIMARY KEY REFERENCES rag.models (name),
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('rag.model_indexes', '');
-- the models that have an index of their own on rag.chunks (rag.create_model_index in 0.1.0)
INSERT INTO rag.model_indexes (model)
SELECT m.name FROM rag.models AS m
WHERE m.kind = 'embed' AND pg_catalog.to_regclass('rag.chunks_hnsw_' || pg_catalog.left(pg_catalog.md5(m.name), 12)) IS NOT NULL;

-- a model's index of 0.1.0 (chunks_hnsw_<md5> on rag.chunks) stays on every partition,
-- under the name rag._model_index gives it, so that rag.create_model_index finds it
-- instead of building it again
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT ci.relname AS child, t.relname AS part, pg_catalog.substr(pi.relname, 13) AS h
             FROM pg_catalog.pg_inherits AS ih
             JOIN pg_catalog.pg_class AS pi ON pi.oid = ih.inhparent
             JOIN pg_catalog.pg_class AS ci ON ci.oid = ih.inhrelid
             JOIN pg_catalog.pg_index AS x ON x.indexrelid = ci.oid
             JOIN pg_catalog.pg_class AS t ON t.oid = x.indrelid
             WHERE pi.relnamespace = 'rag'::regnamespace AND pi.relkind = 'I'
               AND pi.relname LIKE 'chunks\_hnsw\_%' LOOP
        EXECUTE pg_catalog.format('ALTER INDEX rag.%I RENAME TO %I', r.child, r.part || '_hnsw_' || r.h);
    END LOOP;
END
$$;

DO $$
DECLARE
    parent regclass;
    parts name[];
    bounds text[];
    i int;
    obj text;
BEGIN
    FOREACH parent IN ARRAY ARRAY['rag.chunks'::regclass, 'rag.postings'::regclass] LOOP
        -- list partitions first: attaching the default one back checks it against their bounds
        SELECT pg_catalog.array_agg(c.relname ORDER BY c.relispartition, pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', c.relname),
               pg_catalog.array_agg(pg_catalog.pg_get_expr(c.relpartbound, c.oid) ORDER BY c.relispartition, pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', c.relname)
        INTO parts, bounds
        FROM pg_catalog.pg_inherits AS h JOIN pg_catalog.pg_class AS c ON c.oid = h.inhrelid
        WHERE h.inhparent = parent;
        FOR i IN 1 .. coalesce(pg_catalog.cardinality(parts), 0) LOOP
            EXECUTE pg_catalog.format('ALTER TABLE %s DETACH PARTITION rag.%I', parent, parts[i]);
        END LOOP;
        FOR obj IN SELECT x.indexrelid::regclass::text FROM pg_catalog.pg_index AS x
                   WHERE x.indrelid = parent
                     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS k WHERE k.conindid = x.indexrelid) LOOP
            EXECUTE pg_catalog.format('DROP INDEX %s', obj);
        END LOOP;
        FOR obj IN SELECT k.conname FROM pg_catalog.pg_constraint AS k
                   WHERE k.conrelid = parent AND k.contype IN ('p', 'u') LOOP
            EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', parent, obj);
        END LOOP;
        FOR i IN 1 .. coalesce(pg_catalog.cardinality(parts), 0) LOOP
            EXECUTE pg_catalog.format('ALTER TABLE %s ATTACH PARTITION rag.%I %s', parent, parts[i], bounds[i]);
        END LOOP;
    END LOOP;
END
$$;
