-- An attached partitioned table's partitions get rag's triggers: a statement that names a
-- partition fires that partition's triggers only, so its writes were never indexed (since
-- 0.1.0). rag.attach watches every partition from 0.8.0, and an event trigger the ones
-- created, attached or detached later; the tables attached before get theirs here, named
-- as rag._watch names them, on each partition (any depth) of each attached table that
-- exists (each CREATE TRIGGER takes the partition's SHARE ROW EXCLUSIVE lock for a moment).
-- Rows written through a partition before the upgrade: SELECT * FROM rag.check() shows
-- them, rag.resync indexes them. rag._backfill is replaced by rag._index_rows (internal).
DROP FUNCTION IF EXISTS rag._backfill(rag.attachments);

DO $$
DECLARE
    p record;
    -- (a lock on each partition given triggers, all held to the end of the upgrade: the
    -- tables whose partitions would fill half the lock table are left to their owner's
    -- rag.resync, so that a writer's 14,000 partitions cannot fail the upgrade with 53200,
    -- hostile review 42; counted from pg_inherits, which locks nothing)
    budget bigint := pg_catalog.current_setting('max_locks_per_transaction')::bigint
                     * pg_catalog.current_setting('max_connections')::bigint / 2;
    used bigint := 0;
    allowed bigint[] := '{}';
BEGIN
    IF pg_catalog.to_regprocedure('rag._attached_changed()') IS NULL THEN
        RETURN;   -- (a new install: nothing attached yet, the function comes after)
    END IF;
    FOR p IN
        SELECT x.id, x.source_table,
               (WITH RECURSIVE tree AS (SELECT i.inhrelid FROM pg_catalog.pg_inherits AS i WHERE i.inhparent = x.source_table
                                        UNION ALL
                                        SELECT i.inhrelid FROM pg_catalog.pg_inherits AS i JOIN tree ON i.inhparent = tree.inhrelid)
                SELECT pg_catalog.count(*) FROM tree) AS n
        FROM rag.attachments AS x
        JOIN pg_catalog.pg_class AS c ON c.oid = x.source_table AND c.relkind = 'p'
        ORDER BY x.id
    LOOP
        IF used + p.n > budget THEN
            RAISE WARNING 'rag: the % partitions of attached table % are left without rag''s triggers: giving them theirs locks each one until the upgrade ends, and this many could fill the lock table',
                          p.n, p.source_table
                USING HINT = pg_catalog.format('after the upgrade, the table''s owner runs SELECT rag.resync(%L); (rag.check reports its partitions until then)', p.source_table::text);
            CONTINUE;
        END IF;
        used := used + p.n;
        allowed := allowed || p.id;
    END LOOP;
    FOR p IN
        SELECT x.id, t.relid, c.relkind, e.suffix, e.flag, e.clause
        FROM rag.attachments AS x
        CROSS JOIN LATERAL pg_catalog.pg_partition_tree(x.source_table) AS t
        JOIN pg_catalog.pg_class AS c ON c.oid = t.relid
        CROSS JOIN (VALUES ('_ins', 4, 'INSERT ON %s REFERENCING NEW TABLE AS new_rows'),
                           ('_upd', 16, 'UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'),
                           ('_del', 8, 'DELETE ON %s REFERENCING OLD TABLE AS old_rows'),
                           ('_trunc', 32, 'TRUNCATE ON %s')) AS e (suffix, flag, clause)
        WHERE x.id = ANY (allowed)
          AND t.relid OPERATOR(pg_catalog.<>) x.source_table
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS g
                          WHERE g.tgrelid = t.relid
                            AND g.tgfoid = pg_catalog.to_regprocedure('rag._attached_changed()')
                            AND g.tgargs = pg_catalog.convert_to(x.id::text, 'UTF8') || pg_catalog.decode('00', 'hex')
                            AND g.tgtype::int & e.flag <> 0)
        ORDER BY x.id, t.level, t.relid, e.flag
    LOOP
        IF p.relkind = 'f' THEN
            -- (a foreign table can have no trigger with transition tables: left, and the
            -- upgrade goes on, review 42; rag.check reports the partition)
            IF p.flag = 4 THEN
                RAISE WARNING 'rag: partition % is a foreign table, which rag''s triggers cannot watch: writes that name it are not indexed', p.relid::regclass;
            END IF;
            CONTINUE;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS g
                   WHERE g.tgrelid = p.relid AND g.tgname OPERATOR(pg_catalog.=) ('rag_attachment_' || p.id || p.suffix)) THEN
            -- (a trigger of the owner's own under rag's name: not replaced, and the upgrade
            -- goes on, hostile review 41; rag.check reports the partition)
            RAISE WARNING 'rag: partition % already has a trigger named %, not rag''s: left, and the partition is not watched for it',
                          p.relid::regclass, 'rag_attachment_' || p.id || p.suffix
                USING HINT = 'rename that trigger, then run rag.resync on the attached table as its owner';
            CONTINUE;
        END IF;
        EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER ' || p.clause
                                  || ' FOR EACH STATEMENT EXECUTE FUNCTION rag._attached_changed(%L)',
                                  'rag_attachment_' || p.id || p.suffix, p.relid, p.id);
    END LOOP;
END
$$;
