-- Every rag function runs with search_path = pg_catalog, pg_temp, whatever its definition
-- says or a release before 0.5.0 set (which added pgvector's schema, and with it whatever
-- a role that can create objects there planted: an array_agg(bigint) beats
-- pg_catalog's array_agg(anynonarray), and rag would call it with its caller's rights).
-- pgvector's types, operators and functions are named with their schema instead
-- (rag._vector_schema; ragpg.pg.VECTOR in Python). A procedure cannot have a SET clause
-- (it could not COMMIT): rag.work names everything with its schema.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT d.objid::regprocedure
              FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid
              JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
              WHERE e.extname = 'rag' AND d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
                AND p.prokind <> 'p'
                -- a VALUES list inlined into its callers, which are pinned: it names nothing
                AND p.oid <> 'rag._setting_defaults()'::pg_catalog.regprocedure
                AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false) LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', fn);
    END LOOP;
END
$$;
