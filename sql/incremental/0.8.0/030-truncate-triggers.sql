-- An attached table's TRUNCATE deletes its documents (hostile review 40b: they stayed
-- searchable since 0.1.0). rag.attach creates the fourth trigger from 0.8.0; the tables
-- attached before get theirs here, named as rag.attach names it, on every attachment whose
-- table exists and has none (each CREATE TRIGGER takes the table's SHARE ROW EXCLUSIVE
-- lock: the upgrade waits for the writers of attached tables in flight). Documents of a
-- table truncated before the upgrade: SELECT * FROM rag.check() shows them, rag.resync
-- deletes them.
DO $$
DECLARE
    a record;
BEGIN
    IF pg_catalog.to_regprocedure('rag._attached_changed()') IS NULL THEN
        RETURN;   -- (a new install: nothing attached yet, the function comes after)
    END IF;
    FOR a IN
        SELECT x.id, x.source_table FROM rag.attachments AS x
        WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c WHERE c.oid = x.source_table)
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t
                          WHERE t.tgrelid = x.source_table
                            AND t.tgfoid = pg_catalog.to_regprocedure('rag._attached_changed()')
                            AND t.tgargs = pg_catalog.convert_to(x.id::text, 'UTF8') || pg_catalog.decode('00', 'hex')
                            AND t.tgtype::int & 32 <> 0)
        ORDER BY x.id
    LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS g
                   WHERE g.tgrelid = a.source_table AND g.tgname OPERATOR(pg_catalog.=) ('rag_attachment_' || a.id || '_trunc')) THEN
            -- (a trigger of the owner's own under rag's name: not replaced, and the upgrade
            -- goes on, hostile review 41; rag.check reports the table)
            RAISE WARNING 'rag: table % already has a trigger named %, not rag''s: left, and its TRUNCATE is not watched',
                          a.source_table, 'rag_attachment_' || a.id || '_trunc'
                USING HINT = 'rename that trigger, then SELECT rag.detach(...) and rag.attach it again';
            CONTINUE;
        END IF;
        EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION rag._attached_changed(%L)',
                                  'rag_attachment_' || a.id || '_trunc', a.source_table, a.id);
    END LOOP;
END
$$;
