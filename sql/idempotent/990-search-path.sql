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

-- Nothing of rag's (a view, a check, a default, a policy, an index, a trigger, a function
-- body bound at creation) may call a function or operator outside pg_catalog, rag and the
-- extensions rag requires (its pg_depend entries, i.e. the control file's requires; an
-- extension an older release required and this one does not is not trusted): one created
-- where roles may create objects would run with the rights of whoever touches rag. Every
-- script runs with search_path = pg_catalog, pg_temp (scripts/build_sql.py), so nothing
-- binds to such an object now; a database installed by an older release while such an
-- object existed fails here, naming what to make again.
DO $$
DECLARE
    bound text;
BEGIN
    WITH d AS (
        SELECT d.classid, d.objid, d.objsubid, d.refclassid, d.refobjid,
               coalesce((SELECT r.relnamespace FROM pg_catalog.pg_class AS r WHERE r.oid = CASE d.classid
                            WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass
                                THEN (SELECT c.conrelid FROM pg_catalog.pg_constraint AS c WHERE c.oid = d.objid)
                            WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                                THEN (SELECT w.ev_class FROM pg_catalog.pg_rewrite AS w WHERE w.oid = d.objid)
                            WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass
                                THEN (SELECT a.adrelid FROM pg_catalog.pg_attrdef AS a WHERE a.oid = d.objid)
                            WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass
                                THEN (SELECT p.polrelid FROM pg_catalog.pg_policy AS p WHERE p.oid = d.objid)
                            WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass
                                THEN (SELECT t.tgrelid FROM pg_catalog.pg_trigger AS t WHERE t.oid = d.objid)
                            WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN d.objid END),
                        (SELECT p.pronamespace FROM pg_catalog.pg_proc AS p
                         WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = d.objid)) AS nsp,
               coalesce((SELECT p.pronamespace FROM pg_catalog.pg_proc AS p
                         WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = d.refobjid),
                        (SELECT o.oprnamespace FROM pg_catalog.pg_operator AS o
                         WHERE d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND o.oid = d.refobjid)) AS refnsp
        FROM pg_catalog.pg_depend AS d
        WHERE d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass))
    SELECT pg_catalog.string_agg(pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) || ' calls '
                                 || pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0), '; ')
    INTO bound
    FROM d
    WHERE d.nsp = 'rag'::pg_catalog.regnamespace
      AND d.refnsp NOT IN ('pg_catalog'::pg_catalog.regnamespace, 'rag'::pg_catalog.regnamespace)
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend AS x
                      WHERE x.classid = d.refclassid AND x.objid = d.refobjid AND x.deptype = 'e'
                        AND x.refobjid IN (SELECT r.refobjid FROM pg_catalog.pg_depend AS r
                                           WHERE r.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                                             AND r.objid = (SELECT e.oid FROM pg_catalog.pg_extension AS e
                                                            WHERE e.extname = 'rag')
                                             AND r.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                                             AND r.deptype = 'n'));
    IF bound IS NOT NULL THEN
        RAISE EXCEPTION 'rag: objects of rag call functions or operators outside pg_catalog, rag and the extensions '
                        'rag requires: %', bound
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'an older release''s install bound them to objects created where the required extensions live, '
                         'or they use an extension rag no longer requires (docs/security.md): drop those objects, then '
                         'make these again (or dump, reinstall and restore)';
    END IF;
END
$$;
