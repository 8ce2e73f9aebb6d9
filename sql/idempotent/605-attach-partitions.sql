-- Attached partitioned tables: rag's triggers on every partition, and partitions that come
-- and go. A statement trigger fires for the table a statement names: an INSERT, UPDATE,
-- DELETE or TRUNCATE that names a partition fires the partition's triggers, not the
-- root's, and ATTACH, DETACH or DROP of a partition moves rows in or out of the table with
-- no write at all (unseen since 0.1.0). rag.attach watches every partition; an event
-- trigger watches the partitions created or attached later, indexes the rows a partition
-- brings and deletes the documents of the rows one takes away.

-- rag._watch (internal): rag's four statement triggers of attachment `attachment_id` on
-- relation `rel` (the attached table or one of its partitions), for each event no enabled
-- trigger of the attachment covers yet. Named after the attachment, which a dump keeps
-- (not the table's OID, which a restore changes); rag.detach finds them by function and
-- argument, whatever their names. Creating a trigger runs none of the table's code.
CREATE OR REPLACE FUNCTION rag._watch(attachment_id bigint, rel regclass)
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e record;
    made int := 0;
BEGIN
    FOR e IN
        SELECT v.suffix, v.clause
        FROM (VALUES ('_ins', 4, 'INSERT ON %s REFERENCING NEW TABLE AS new_rows'),
                     ('_upd', 16, 'UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'),
                     ('_del', 8, 'DELETE ON %s REFERENCING OLD TABLE AS old_rows'),
                     ('_trunc', 32, 'TRUNCATE ON %s')) AS v (suffix, flag, clause)
        WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t
                          WHERE t.tgrelid = rel
                            AND t.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
                            AND t.tgargs = convert_to(attachment_id::text, 'UTF8') || decode('00', 'hex')
                            AND t.tgtype::int & v.flag <> 0
                            AND t.tgenabled IN ('O', 'A'))
        ORDER BY v.flag
    LOOP
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER ' || e.clause
                       || ' FOR EACH STATEMENT EXECUTE FUNCTION rag._attached_changed(%L)',
                       'rag_attachment_' || attachment_id || e.suffix, rel, attachment_id);
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;

-- rag._watched_relations (internal): the relations that hold rag's triggers of attachment
-- `attachment_id`: its table first, then its partitions with such a trigger (whoever owns
-- them: a partition may be another role's), then the table owner's other relations with
-- one (former partitions not yet unwatched). Another role's relation outside the tree is
-- never one: a trigger planted there with the attachment's id names nothing rag reads or
-- drops (rag._watch_partitions only warns about one that may be a former partition).
CREATE OR REPLACE FUNCTION rag._watched_relations(attachment_id bigint, source_table regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT source_table
    UNION ALL
    (SELECT DISTINCT g.tgrelid::regclass
     FROM pg_catalog.pg_trigger AS g JOIN pg_catalog.pg_class AS c ON c.oid = g.tgrelid
     WHERE g.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
       AND g.tgargs = convert_to(attachment_id::text, 'UTF8') || decode('00', 'hex')
       AND g.tgrelid <> source_table
       AND (g.tgrelid IN (SELECT t.relid FROM pg_partition_tree(source_table) AS t)
            OR c.relowner = (SELECT r.relowner FROM pg_catalog.pg_class AS r WHERE r.oid = source_table))
     ORDER BY 1)
$$;

-- rag._index_rows (internal): bring the documents of the keys of `rel`'s rows in line with
-- the attached table: the table's own rows when it is attached, a partition's when one
-- joins it (their documents are made). Sync: rag._apply_rows,
-- rag.index_batch_size keys at a time; async: the keys are queued for the owner's worker
-- (a key already queued is not queued again). Returns the keys applied or queued; rag.attach,
-- rag.resync and ATTACH PARTITION call it.
CREATE OR REPLACE FUNCTION rag._index_rows(a rag.attachments, rel regclass)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET DateStyle = 'ISO, MDY' SET bytea_output = 'hex' SET lc_monetary = 'C'
SET extra_float_digits = 1   -- (keys and metadata are JSON of values whose text is the session's otherwise)
AS $$
DECLARE
    batch int := rag._setting('index_batch_size')::int;
    keys jsonb[];
    n bigint := 0;
BEGIN
    IF a.mode = 'async' THEN   -- one statement; a key already waiting is not queued again
        EXECUTE format($q$
            INSERT INTO rag.queue (tenant, attachment_id, source_key)
            SELECT $1, $2, k.key FROM (SELECT %1$s AS key FROM %2$s AS t
                                      EXCEPT SELECT q.source_key FROM rag.queue AS q
                                      WHERE q.tenant = $1 AND q.attachment_id = $2) AS k $q$,
            rag._key_expr(a), rel) USING a.tenant, a.id;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
    END IF;
    FOR keys IN EXECUTE format('SELECT array_agg(key) FROM (SELECT %s AS key, row_number() OVER () - 1 AS n FROM %s AS t) AS x
                                GROUP BY n / %s', rag._key_expr(a), rel, batch) LOOP
        PERFORM rag._apply_rows(a.id, keys);
        n := n + cardinality(keys);
    END LOOP;
    RETURN n;
END
$$;

-- rag._apply_gone (internal): the documents of an attached table whose row is no longer in
-- it (a partition detached, truncated or dropped): their keys are applied at once (sync;
-- each finds no row, so nothing is embedded: one statement deletes them all, as a DELETE
-- of those rows would; a row that row-level security hides from the caller is queued for
-- the owner's worker, not taken for a deleted one) or queued (async). Linear in the table
-- and its documents (one anti-join).
CREATE OR REPLACE FUNCTION rag._apply_gone(a rag.attachments)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET DateStyle = 'ISO, MDY' SET bytea_output = 'hex' SET lc_monetary = 'C'
SET extra_float_digits = 1   -- (keys and metadata are JSON of values whose text is the session's otherwise)
AS $$
DECLARE
    keys jsonb[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rag.documents AS d WHERE d.tenant = a.tenant AND d.attachment_id = a.id) THEN
        RETURN;   -- (a TRUNCATE of the whole table fires its partitions' triggers after its own)
    END IF;
    EXECUTE format($q$
        SELECT array_agg(d.source_key) FROM rag.documents AS d
        WHERE d.tenant = $1 AND d.attachment_id = $2
          AND NOT EXISTS (SELECT 1 FROM (SELECT %1$s AS key FROM %2$s AS t) AS r WHERE r.key = d.source_key) $q$,
        rag._key_expr(a), a.source_table) INTO keys USING a.tenant, a.id;
    IF a.mode = 'async' THEN
        INSERT INTO rag.queue (tenant, attachment_id, source_key) SELECT a.tenant, a.id, k FROM unnest(keys) AS k;
    ELSE
        PERFORM rag._apply_rows(a.id, keys);
    END IF;
END
$$;

-- rag._truncated (internal): the documents of the rows a TRUNCATE of a partition of
-- attached table `a` took away. A TRUNCATE of an intermediate partitioned table, or of
-- several partitions in one statement, fires the trigger of every relation it truncated,
-- each after all of them are empty: each ran the anti-join over the whole table, O(partitions
-- x rows) (hostile review 41 #4). Now the first deletes the documents whose row is gone
-- (rag._apply_gone) and marks, for this transaction, the table's leaf partitions that are
-- empty then (no block: pg_relation_size, which reads no row and needs no right on them);
-- a firing whose relation's leaves are all marked has nothing left to delete. Any write
-- through the table's triggers, and any document applied, clears the mark (a row may have
-- come into a marked partition: rag._truncated_moot). The mark names the transaction
-- (rag._xact_mark): one set by hand in a session marks nothing of another.
CREATE OR REPLACE FUNCTION rag._truncated(a rag.attachments, rel regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mark text := a.id::text || ':' || rag._xact_mark() || ':';
    marked text := coalesce(current_setting('rag.truncated_empty', true), '');
BEGIN
    IF starts_with(marked, mark)
       AND NOT EXISTS (SELECT 1 FROM pg_partition_tree(rel) AS t
                       WHERE t.isleaf
                         AND t.relid::oid <> ALL (string_to_array(substr(marked, length(mark) + 1), ',')::oid[])) THEN
        RETURN;
    END IF;
    PERFORM rag._apply_gone(a);
    PERFORM set_config('rag.truncated_empty',
                       mark || coalesce((SELECT string_agg(t.relid::oid::text, ',')
                                         FROM pg_partition_tree(a.source_table) AS t
                                         JOIN pg_catalog.pg_class AS c ON c.oid = t.relid
                                         WHERE t.isleaf AND c.relkind = 'r' AND pg_relation_size(t.relid) = 0), ''),
                       true);
END
$$;

-- rag._truncated_moot (internal): rag._truncated's mark of empty partitions no longer
-- holds: a row may have come into one (a write through rag's triggers, a document applied).
CREATE OR REPLACE FUNCTION rag._truncated_moot()
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT set_config('rag.truncated_empty', '', true) WHERE current_setting('rag.truncated_empty', true) <> ''
$$;

-- rag._watch_partitions (internal): make the partitions watched by attachment `a` those of
-- its table now: rag's triggers on each partition that lacks one (at any depth: a write
-- may name an intermediate partitioned table), none left on a relation that is no longer
-- one. With `index_rows`, the rows of a leaf partition that was not watched are indexed
-- (ATTACH PARTITION brings rows without a write), and after a former one the documents
-- whose row is gone are deleted (DETACH PARTITION takes rows away). Returns the relations changed.
CREATE OR REPLACE FUNCTION rag._watch_partitions(a rag.attachments, index_rows boolean)
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    changed int := 0;
    gone boolean := false;
BEGIN
    FOR p IN
        SELECT t.relid, t.isleaf, c.relkind,
               NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS g
                           WHERE g.tgrelid = t.relid
                             AND g.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
                             AND g.tgargs = convert_to(a.id::text, 'UTF8') || decode('00', 'hex')) AS unwatched
        FROM pg_partition_tree(a.source_table) AS t
        JOIN pg_catalog.pg_class AS c ON c.oid = t.relid
        WHERE t.relid <> a.source_table
        ORDER BY t.level, t.relid
    LOOP
        IF p.relkind = 'f' THEN
            -- (a foreign table can have no trigger with transition tables, review 42: its
            -- rows are read through the table by rag.resync; rag.check reports it)
            RAISE WARNING 'rag: partition % of attached table % is a foreign table, which rag''s triggers cannot watch: writes that name it are not indexed',
                          p.relid::regclass, a.source_table
                USING HINT = 'rag.resync, run by the table''s owner after writes to it, indexes its rows (rag.check reports the partition)';
        ELSIF rag._watch(a.id, p.relid) > 0 THEN
            changed := changed + 1;
            IF index_rows AND p.isleaf AND p.unwatched THEN
                PERFORM rag._index_rows(a, p.relid);
            END IF;
        END IF;
    END LOOP;
    FOR p IN
        SELECT w AS relid, c.relkind
        FROM rag._watched_relations(a.id, a.source_table) AS w JOIN pg_catalog.pg_class AS c ON c.oid = w
        WHERE w <> a.source_table   -- (a table that is not partitioned has no tree)
          AND w NOT IN (SELECT t.relid FROM pg_partition_tree(a.source_table) AS t)
    LOOP
        gone := gone OR index_rows;   -- (its rows are found in the table no more: their documents go)
        IF pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class AS c WHERE c.oid = p.relid), 'USAGE')
           OR rag._is_superuser() THEN
            PERFORM rag._drop_attachment_triggers('rag', p.relid, a.id);
            changed := changed + 1;
        ELSE   -- (the table's owner's, detached by another role that owned its parent)
            RAISE WARNING 'rag: table % is no partition of attached table % any more, and rag''s triggers on it are left for its owner to drop',
                          p.relid, a.source_table
                USING HINT = format('its owner runs SELECT rag.resync(%L);', a.source_table::text);
        END IF;
    END LOOP;
    -- another role's relation with the attachment's triggers, outside the tree: a former
    -- partition of its (a DBA may hand a partition to another role), or one planted with the
    -- attachment's id. Its triggers are not dropped (they are its owner's to drop). A former
    -- partition is never read (another role's code would run with this session's rights):
    -- the documents whose row the table no longer has are found from the table
    -- (rag._apply_gone, one anti-join, and one statement deletes them)
    FOR p IN
        SELECT g.tgrelid::regclass AS relid, pg_get_userbyid(min(c.relowner)) AS owner
        FROM pg_catalog.pg_trigger AS g JOIN pg_catalog.pg_class AS c ON c.oid = g.tgrelid
        WHERE g.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
          AND g.tgargs = convert_to(a.id::text, 'UTF8') || decode('00', 'hex')
          AND g.tgrelid NOT IN (SELECT w FROM rag._watched_relations(a.id, a.source_table) AS w)
        GROUP BY g.tgrelid ORDER BY 1
    LOOP
        gone := index_rows;
        RAISE WARNING 'rag: table % of role % holds rag''s triggers of attached table % and is no partition of it: they are left',
                      p.relid, p.owner, a.source_table
            USING HINT = format('role %I drops them (DROP TRIGGER ... ON %s for each trigger of rag._attached_changed(%s))',
                                p.owner, p.relid, a.id);
    END LOOP;
    IF gone THEN
        PERFORM rag._apply_gone(a);
    END IF;
    RETURN changed;
END
$$;

-- rag._attachments_above (internal): the attachments whose triggers are on these
-- relations or on a table they are partitions of, found from pg_trigger (readable by every
-- role, whatever tenant attached the table), with the attached table: the highest such
-- relation.
CREATE OR REPLACE FUNCTION rag._attachments_above(rels oid[])
RETURNS TABLE (attachment_id bigint, source_table regclass)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT ON (w.id) w.id, w.relid
    FROM (SELECT split_part(encode(g.tgargs, 'escape'), '\', 1)::bigint AS id, an.relid, an.depth
          FROM unnest(rels) AS r (oid)
          CROSS JOIN LATERAL (SELECT x.relid, row_number() OVER () AS depth
                              FROM pg_partition_ancestors(r.oid) AS x) AS an
          JOIN pg_catalog.pg_trigger AS g ON g.tgrelid = an.relid
          WHERE g.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
            AND g.tgnargs = 1 AND encode(g.tgargs, 'escape') ~ '^\d{1,18}\\000$') AS w   -- (a planted 'x' is no id, review 41)
    ORDER BY w.id, w.depth DESC
$$;

-- rag._may_index (internal): the attachment, when this session may index its rows for a
-- DDL statement: acting for its tenant, in the table's owner's own login session
-- (rag._own_session: indexing runs the table's code, a key domain's check, with the
-- session's rights, and after a superuser's SET ROLE that code may reset the role to the
-- superuser's, hostile review 41; Postgres' own ATTACH, DETACH and DROP run none of it);
-- NULL otherwise, after a WARNING that names what was left and its fix.
CREATE OR REPLACE FUNCTION rag._may_index(attachment_id bigint, source_table regclass, what text)
RETURNS rag.attachments
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a rag.attachments;
    owner name := rag._table_owner(source_table);
BEGIN
    BEGIN
        SELECT * INTO a FROM rag.attachments AS x WHERE x.id = attachment_id AND x.tenant = rag.current_tenant();
    EXCEPTION WHEN insufficient_privilege THEN
        a := NULL;   -- (a session that acts for no tenant: a group role, a tenant not its own)
    END;
    IF a.id IS NOT NULL THEN
        source_table := a.source_table;
        owner := rag._table_owner(source_table);
    END IF;
    IF a.id IS NOT NULL AND rag._own_session(owner) THEN
        RETURN a;
    END IF;
    RAISE WARNING 'rag: % of attached table % not indexed: this session is not its owner %''s own login acting for the tenant that attached it',
                  what, source_table, owner
        USING HINT = format('log in as role %I and run SELECT rag.resync(%L); in the tenant that attached it', owner, source_table::text);
    RETURN NULL;
END
$$;

-- rag._partitions_changed (internal): the event trigger after CREATE TABLE and ALTER TABLE.
-- A partition created in or attached to an attached table (at any depth) gets rag's
-- triggers and has its rows indexed; a partition detached has its triggers dropped and
-- its rows' documents deleted. Runs as the role of the statement (the table's owner, for
-- these statements), and costs one catalog read for a table that is no partition.
CREATE OR REPLACE FUNCTION rag._partitions_changed()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rels oid[];   -- (no variable of rag's types: a role without rag's schema could not run this)
BEGIN
    rels := ARRAY(SELECT DISTINCT c.objid FROM pg_event_trigger_ddl_commands() AS c
                  JOIN pg_catalog.pg_class AS r ON r.oid = c.objid
                  WHERE c.classid = 'pg_catalog.pg_class'::regclass AND (r.relispartition OR r.relkind = 'p'));
    IF cardinality(rels) = 0 OR NOT has_schema_privilege('rag', 'USAGE') THEN
        RETURN;   -- (not a partitioned table's; or a role without rag's schema, whose tables are not attached)
    END IF;
    PERFORM rag._follow_partitions(rels);
END
$$;

-- rag._follow_partitions (internal): what rag._partitions_changed does for these relations
-- (created or altered, partitions or partitioned) once the role is known to use rag.
CREATE OR REPLACE FUNCTION rag._follow_partitions(rels oid[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w record;
    a rag.attachments;
    new_member boolean;
    rows_in boolean;
    rows_out boolean;
BEGIN
    IF rag._restoring() THEN
        RETURN;   -- (a restore brings the triggers and documents of the dump)
    END IF;
    -- an attached table made a partition (ATTACH PARTITION; the relations of the statement
    -- and their direct partitions: from pg_inherits, which locks none of a tree's members,
    -- review 42): of a table that is not attached, whose writes fire its own triggers only;
    -- or of an attached tree, whose attachment indexes its rows a second time
    FOR w IN SELECT DISTINCT m.relid::regclass AS source_table, i.inhparent::regclass AS parent,
                    (SELECT x.source_table FROM rag._attachments_above(ARRAY[i.inhparent]) AS x
                     ORDER BY x.attachment_id LIMIT 1) AS covering
             FROM (SELECT r.oid AS relid FROM unnest(rels) AS r (oid)
                   UNION SELECT c.inhrelid FROM pg_catalog.pg_inherits AS c WHERE c.inhparent = ANY (rels)) AS m
             JOIN pg_catalog.pg_class AS k ON k.oid = m.relid AND k.relispartition
             JOIN pg_catalog.pg_inherits AS i ON i.inhrelid = m.relid
             JOIN pg_catalog.pg_trigger AS g ON g.tgrelid = m.relid
             WHERE g.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS p
                               WHERE p.tgrelid = i.inhparent AND p.tgfoid = g.tgfoid AND p.tgargs = g.tgargs)
             ORDER BY 1 LOOP
        IF w.covering IS NULL THEN
            RAISE WARNING 'rag: attached table % is a partition of % now, and writes through % are not indexed', w.source_table, w.parent, w.parent
                USING HINT = format('attach the partitioned table instead: SELECT rag.detach(%L); then SELECT rag.attach(%L, ...);',
                                    w.source_table::text, pg_partition_root(w.source_table)::text);
        ELSE
            RAISE WARNING 'rag: attached table % is a partition of % now, in attached table %: its rows are indexed by both attachments', w.source_table, w.parent, w.covering
                USING HINT = format('SELECT rag.detach(%L);   -- attached table %s indexes its rows', w.source_table::text, w.covering);
        END IF;
    END LOOP;
    IF NOT has_function_privilege('rag._watch_partitions(rag.attachments, boolean)', 'EXECUTE') THEN
        -- (a role that may not create rag's triggers: rag.check reports the partition)
        FOR w IN SELECT * FROM rag._attachments_above(rels) ORDER BY 1 LOOP
            RAISE WARNING 'rag: the partitions of attached table % are not all watched: role % is not a rag_writer', w.source_table, current_user
                USING HINT = format('the table''s owner, as a rag_writer, runs SELECT rag.resync(%L);', w.source_table::text);
        END LOOP;
        RETURN;
    END IF;
    FOR w IN SELECT * FROM rag._attachments_above(rels) ORDER BY 1 LOOP
        -- a relation of the tree without the attachment's triggers, and whether rows came
        -- in (a leaf that was not watched) or went out (a watched relation left the tree)
        SELECT bool_or(u.unwatched), bool_or(u.unwatched AND u.isleaf)
        INTO new_member, rows_in
        FROM (SELECT t.isleaf, NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS g
                                           WHERE g.tgrelid = t.relid
                                             AND g.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
                                             AND g.tgargs = convert_to(w.attachment_id::text, 'UTF8') || decode('00', 'hex')) AS unwatched
              FROM pg_partition_tree(w.source_table) AS t
              WHERE t.relid <> w.source_table) AS u;
        rows_out := EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS g
                            WHERE g.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
                              AND g.tgargs = convert_to(w.attachment_id::text, 'UTF8') || decode('00', 'hex')
                              AND g.tgrelid <> w.source_table
                              AND g.tgrelid NOT IN (SELECT t.relid FROM pg_partition_tree(w.source_table) AS t));
        IF rows_in OR rows_out THEN
            -- rows are indexed when this session may (rag._may_index; else a WARNING), the
            -- triggers made in any case (a later write naming the partition is seen)
            a := rag._may_index(w.attachment_id, w.source_table, 'the rows of a partition attached or detached');
        END IF;
        IF a.id IS NOT NULL THEN
            PERFORM rag._watch_partitions(a, true);
        ELSIF new_member OR rows_out THEN
            a.id := w.attachment_id;
            a.source_table := w.source_table;
            PERFORM rag._watch_partitions(a, false);
        END IF;
        a := NULL;
    END LOOP;
END
$$;

-- rag._partitions_dropped (internal): the event trigger after DROP TABLE. A partition of an
-- attached table that is dropped takes its rows away: the documents whose row is gone are
-- deleted (rag._apply_gone), found by the names of the partition's rag triggers in the
-- dropped objects.
CREATE OR REPLACE FUNCTION rag._partitions_dropped()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids bigint[];   -- (no variable of rag's types: a role without rag's schema could not run this)
BEGIN
    ids := ARRAY(SELECT DISTINCT (regexp_match(o.object_identity, '^rag_attachment_(\d{1,18})_trunc on '))[1]::bigint
                 FROM pg_event_trigger_dropped_objects() AS o
                 WHERE o.object_type = 'trigger' AND NOT o.original
                   AND o.object_identity ~ '^rag_attachment_\d{1,18}_trunc on ');   -- (a longer one is no id: review 41)
    IF cardinality(ids) = 0 OR NOT has_schema_privilege('rag', 'USAGE') THEN
        RETURN;
    END IF;
    PERFORM rag._follow_dropped(ids);
END
$$;

-- rag._follow_dropped (internal): what rag._partitions_dropped does for the attachments
-- whose triggers went with a dropped table.
CREATE OR REPLACE FUNCTION rag._follow_dropped(ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    x record;
    a rag.attachments;
BEGIN
    IF rag._restoring() THEN
        RETURN;
    ELSIF NOT has_function_privilege('rag._apply_gone(rag.attachments)', 'EXECUTE') THEN
        RAISE WARNING 'rag: the documents of a dropped partition''s rows are left: role % is not a rag_writer', current_user
            USING HINT = 'the attached table''s owner, as a rag_writer, runs SELECT rag.resync(...) on it';
        RETURN;
    END IF;
    FOR x IN
        -- the attachments whose table is still there (its root dropped: rag.check reports it)
        SELECT g.id, g.source_table
        FROM (SELECT DISTINCT ON (i.id) i.id, t.tgrelid::regclass AS source_table
              FROM unnest(ids) AS i (id)
              JOIN pg_catalog.pg_trigger AS t
                ON t.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
               AND t.tgargs = convert_to(i.id::text, 'UTF8') || decode('00', 'hex')
              JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid
              ORDER BY i.id, c.relispartition, t.tgrelid) AS g
        ORDER BY g.id
    LOOP
        a := rag._may_index(x.id, x.source_table, 'the documents of a dropped partition''s rows');
        IF a.id IS NOT NULL THEN
            PERFORM rag._apply_gone(a);
        END IF;
    END LOOP;
END
$$;

-- the event triggers, made again when a release changes the statements they follow
DO $$
DECLARE
    want record;
BEGIN
    FOR want IN SELECT * FROM (VALUES
            ('rag_partitions_changed', 'ddl_command_end', ARRAY['CREATE TABLE', 'ALTER TABLE'], 'rag._partitions_changed()'),
            ('rag_partitions_dropped', 'sql_drop', ARRAY['DROP TABLE', 'DROP SCHEMA', 'DROP OWNED'], 'rag._partitions_dropped()'))
            AS w (name, event, tags, fn) LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger AS e
                   WHERE e.evtname = want.name AND (e.evtevent <> want.event OR e.evttags IS DISTINCT FROM want.tags)) THEN
            EXECUTE format('DROP EVENT TRIGGER %I', want.name);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger AS e WHERE e.evtname = want.name) THEN
            EXECUTE format('CREATE EVENT TRIGGER %I ON %I WHEN TAG IN (%s) EXECUTE FUNCTION %s', want.name, want.event,
                           (SELECT string_agg(quote_literal(t), ', ') FROM unnest(want.tags) AS t), want.fn);
        END IF;
    END LOOP;
END
$$;
