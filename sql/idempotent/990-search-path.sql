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

-- That schema must be writable by trusted roles only: a function or operator created in
-- it with argument types closer than pg_catalog's polymorphic ones (an array_agg(bigint)
-- beats array_agg(anynonarray)) would be called by rag's functions, with the rights of
-- whoever called them. Checked at every install and upgrade; docs/security.md.
DO $$
DECLARE
    vec_schema text;
    writers text;
BEGIN
    SELECT n.nspname, pg_catalog.string_agg(r.rolname, ', ' ORDER BY r.rolname) INTO vec_schema, writers
    FROM pg_catalog.pg_extension AS e JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace
    LEFT JOIN pg_catalog.pg_roles AS r
           ON NOT r.rolsuper AND r.oid <> n.nspowner AND r.rolname !~ '^pg_'
              AND pg_catalog.has_schema_privilege(r.oid, n.oid, 'CREATE')
    WHERE e.extname = 'vector'
    GROUP BY n.nspname;
    IF writers IS NOT NULL THEN
        RAISE WARNING 'rag: roles % can create objects in schema %, which holds pgvector and is on every rag function''s search_path: such a role can make rag run its code with the rights of whoever calls rag',
            writers, vec_schema
            USING HINT = pg_catalog.format('REVOKE CREATE ON SCHEMA %I FROM those roles, or install vector in a schema of its own '
                                           '(CREATE SCHEMA vector; CREATE EXTENSION vector SCHEMA vector; then CREATE EXTENSION rag)',
                                           vec_schema);
    END IF;
END
$$;
