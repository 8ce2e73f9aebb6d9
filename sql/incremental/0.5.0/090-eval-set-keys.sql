-- Eval sets are keyed by (tenant, name), not by name alone: a name taken in one tenant no
-- longer keeps another tenant from using it, and a failed load no longer tells a tenant
-- that a set of that name exists somewhere else. Every table below a set carries the
-- set's tenant (filled in here from the set), and references the set by both. A row
-- inserted without one gets its set's (a trigger, idempotent/500-eval.sql).
ALTER TABLE rag.eval_queries ADD COLUMN tenant text;
ALTER TABLE rag.eval_qrels ADD COLUMN tenant text;
ALTER TABLE rag.eval_answers ADD COLUMN tenant text;
ALTER TABLE rag.eval_run ADD COLUMN tenant text;
ALTER TABLE rag.eval_answer_run ADD COLUMN tenant text;

UPDATE rag.eval_queries AS x SET tenant = s.tenant FROM rag.eval_sets AS s WHERE s.name OPERATOR(pg_catalog.=) x.set_name;
UPDATE rag.eval_qrels AS x SET tenant = s.tenant FROM rag.eval_sets AS s WHERE s.name OPERATOR(pg_catalog.=) x.set_name;
UPDATE rag.eval_answers AS x SET tenant = s.tenant FROM rag.eval_sets AS s WHERE s.name OPERATOR(pg_catalog.=) x.set_name;
UPDATE rag.eval_run AS x SET tenant = s.tenant FROM rag.eval_sets AS s WHERE s.name OPERATOR(pg_catalog.=) x.set_name;
UPDATE rag.eval_answer_run AS x SET tenant = s.tenant FROM rag.eval_sets AS s WHERE s.name OPERATOR(pg_catalog.=) x.set_name;

-- rag's foreign keys on the name alone (their names as Postgres made them, whatever they
-- are). A foreign key of a table of yours on rag.eval_sets (name) or rag.eval_queries
-- stops the upgrade, named, rather than being dropped with them.
DO $$
DECLARE
    r record;
    ours pg_catalog.regclass[] := ARRAY['rag.eval_queries'::pg_catalog.regclass, 'rag.eval_qrels'::pg_catalog.regclass,
                                        'rag.eval_answers'::pg_catalog.regclass, 'rag.eval_run'::pg_catalog.regclass,
                                        'rag.eval_answer_run'::pg_catalog.regclass];
BEGIN
    FOR r IN SELECT c.conrelid::pg_catalog.regclass AS tbl, c.conname,
                    c.conrelid OPERATOR(pg_catalog.=) ANY (ours) AS rags
             FROM pg_catalog.pg_constraint AS c
             WHERE c.contype OPERATOR(pg_catalog.=) 'f'
               AND c.confrelid OPERATOR(pg_catalog.=) ANY (ARRAY['rag.eval_sets'::pg_catalog.regclass,
                                                                  'rag.eval_queries'::pg_catalog.regclass])
             ORDER BY 3, 1, 2 LOOP
        IF NOT r.rags THEN
            RAISE EXCEPTION 'rag 0.5.0: foreign key % of table % references an eval table by set name alone',
                pg_catalog.quote_ident(r.conname), r.tbl
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = 'eval sets are keyed by (tenant, name) from 0.5.0: drop that foreign key, run '
                             'ALTER EXTENSION rag UPDATE, then reference (tenant, name)';
        END IF;
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
    END LOOP;
END
$$;

ALTER TABLE rag.eval_sets DROP CONSTRAINT eval_sets_pkey;
ALTER TABLE rag.eval_sets ADD CONSTRAINT eval_sets_pkey PRIMARY KEY (tenant, name);
ALTER TABLE rag.eval_queries DROP CONSTRAINT eval_queries_pkey;
ALTER TABLE rag.eval_queries
    ALTER COLUMN tenant SET NOT NULL,
    ADD CONSTRAINT eval_queries_pkey PRIMARY KEY (tenant, set_name, query_id),
    ADD CONSTRAINT eval_queries_set_fkey FOREIGN KEY (tenant, set_name)
        REFERENCES rag.eval_sets (tenant, name) ON DELETE CASCADE;
ALTER TABLE rag.eval_qrels
    ALTER COLUMN tenant SET NOT NULL,
    ADD CONSTRAINT eval_qrels_query_fkey FOREIGN KEY (tenant, set_name, query_id)
        REFERENCES rag.eval_queries (tenant, set_name, query_id) ON DELETE CASCADE;
ALTER TABLE rag.eval_answers
    ALTER COLUMN tenant SET NOT NULL,
    ADD CONSTRAINT eval_answers_query_fkey FOREIGN KEY (tenant, set_name, query_id)
        REFERENCES rag.eval_queries (tenant, set_name, query_id) ON DELETE CASCADE;
ALTER TABLE rag.eval_run
    ALTER COLUMN tenant SET NOT NULL,
    ADD CONSTRAINT eval_run_set_fkey FOREIGN KEY (tenant, set_name)
        REFERENCES rag.eval_sets (tenant, name) ON DELETE CASCADE;
ALTER TABLE rag.eval_answer_run
    ALTER COLUMN tenant SET NOT NULL,
    ADD CONSTRAINT eval_answer_run_set_fkey FOREIGN KEY (tenant, set_name)
        REFERENCES rag.eval_sets (tenant, name) ON DELETE CASCADE;

DROP INDEX rag.eval_qrels_query;
CREATE INDEX eval_qrels_query ON rag.eval_qrels (tenant, set_name, query_id);
DROP INDEX rag.eval_answers_query;
CREATE INDEX eval_answers_query ON rag.eval_answers (tenant, set_name, query_id);
CREATE INDEX eval_sets_name ON rag.eval_sets (name);   -- a name's sets, whatever their tenant
CREATE INDEX eval_run_set ON rag.eval_run (tenant, set_name);
CREATE INDEX eval_answer_run_set ON rag.eval_answer_run (tenant, set_name);
