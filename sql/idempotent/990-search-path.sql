-- Pin every rag function's search_path to pg_catalog, the schema holding pgvector
-- (wherever CREATE EXTENSION ... CASCADE put it), and pg_temp. Postgres 15 has no
-- @extschema:vector@, so the schema is looked up here, once, at install time.
DO $$
DECLARE
    vec_schema text;
    fn regprocedure;
BEGIN
    SELECT n.nspname INTO STRICT vec_schema
    FROM pg_catalog.pg_extension AS e JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace
    WHERE e.extname = 'vector';
    FOR fn IN SELECT d.objid::regprocedure
              FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid
              JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
              WHERE e.extname = 'rag' AND d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
                AND p.prokind <> 'p'  -- a procedure with SET cannot COMMIT (rag.work)
                -- a VALUES list inlined into its callers, which are pinned: it names nothing
                AND p.oid <> 'rag._setting_defaults()'::pg_catalog.regprocedure LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', fn, vec_schema);
    END LOOP;
END
$$;
