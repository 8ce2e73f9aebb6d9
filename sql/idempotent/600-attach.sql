-- rag._object_expr / rag._key_expr / rag._meta_expr / rag._text_expr / rag._title_expr / rag._url_expr /
-- rag._indexed_expr (internal)
-- SQL expressions over alias t of an attached table: columns as a jsonb object (its key,
-- its metadata), a column as text, and its indexed columns (content, title, url, metadata)
-- as one jsonb array, to compare old and new rows.
CREATE OR REPLACE FUNCTION rag._object_expr(cols name[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'jsonb_build_object(' || string_agg(format('%L, t.%I', c, c), ', ' ORDER BY o) || ')'
    FROM unnest(cols) WITH ORDINALITY AS k (c, o)
$$;

CREATE OR REPLACE FUNCTION rag._key_expr(a rag.attachments)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT rag._object_expr(a.key_columns) $$;

CREATE OR REPLACE FUNCTION rag._meta_expr(a rag.attachments)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(rag._object_expr(a.metadata_columns), '''{}''::jsonb') $$;

CREATE OR REPLACE FUNCTION rag._text_expr(col name)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN col IS NULL THEN 'NULL::text' ELSE format('t.%I::text', col) END $$;

-- a title and url as rag.documents stores them (at most 4,096 and 8,192 characters): a
-- longer title is cut, a longer url left out (rag._apply_rows, rag.check)
CREATE OR REPLACE FUNCTION rag._title_expr(col name)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN col IS NULL THEN 'NULL::text' ELSE format('left(t.%I::text, 4096)', col) END $$;

CREATE OR REPLACE FUNCTION rag._url_expr(col name)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN col IS NULL THEN 'NULL::text'
           ELSE format('CASE WHEN char_length(t.%1$I::text) <= 8192 THEN t.%1$I::text END', col) END
$$;

CREATE OR REPLACE FUNCTION rag._indexed_expr(a rag.attachments)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN a.content_is_file  -- a file by its hash (its text is only known once extracted)
           THEN format('jsonb_build_array(encode(sha256(t.%I), ''hex''), %s, %s, %s, %s)', a.content_column,
                       rag._text_expr(a.title_column), rag._text_expr(a.url_column), rag._meta_expr(a),
                       rag._text_expr(a.filename_column))
           ELSE format('jsonb_build_array(t.%I::text, %s, %s, %s)', a.content_column,
                       rag._text_expr(a.title_column), rag._text_expr(a.url_column), rag._meta_expr(a)) END
$$;

-- rag._file_name (internal): a name the file-format detection can use, from a file name
-- or a content type (MIME) as an attached table may keep either; NULL stays NULL.
CREATE OR REPLACE FUNCTION rag._file_name(name_or_type text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN name_or_type !~* '^[a-z]+/[-+.a-z0-9]+(\s*;.*)?$' THEN name_or_type
        WHEN name_or_type ~* '^application/pdf' THEN 'file.pdf'
        WHEN name_or_type ~* '^application/vnd\.openxmlformats-officedocument\.wordprocessingml\.document' THEN 'file.docx'
        WHEN name_or_type ~* '^(text/html|application/xhtml\+xml)' THEN 'file.html'
        WHEN name_or_type ~* '^text/(markdown|x-markdown)' THEN 'file.md'
        WHEN name_or_type ~* '^text/' THEN 'file.txt'
        ELSE 'file' END
$$;

-- rag._attachment (internal): the attachment, visible to the caller, or a clear error
CREATE OR REPLACE FUNCTION rag._attachment(attachment_id bigint)
RETURNS rag.attachments
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a rag.attachments;
BEGIN
    SELECT * INTO a FROM rag.attachments AS x WHERE x.id = attachment_id AND x.tenant = rag.current_tenant();
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'rag: attachment % is not one of tenant %''s', attachment_id, rag.current_tenant()
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'write to an attached table as a role that may act for the tenant that attached it (a table that is no partition of an attached table any more keeps rag''s triggers until its owner drops them)';
    END IF;
    RETURN a;
END
$$;

-- rag._table_owner (internal): the role that owns a table (NULL for a dropped one)
CREATE OR REPLACE FUNCTION rag._table_owner(source_table regclass)
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class AS c WHERE c.oid = source_table
$$;

-- rag._apply_rows (internal)
-- Bring the documents of these keys of an attached table in line with the table's current
-- rows: upsert rows that exist and have content, delete the documents of the others.
-- Unchanged rows change nothing (and embed nothing). A row is the key's when pg_catalog's
-- equality holds and the row makes the same key (an interval of 1 day is equal to one of
-- 24 hours, but its document is another; rag.attach refuses a key type with no equality
-- there, review 40). Where row-level security filters the caller's read, a key whose row
-- is not found may be hidden rather than gone: unless the caller's statement deleted it
-- (`deleted`), it is queued for the owner's worker, which sees the table whole (hostile
-- reviews 40, 40b).
CREATE OR REPLACE FUNCTION rag._apply_rows(attachment_id bigint, keys jsonb[], deleted jsonb[] DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET DateStyle = 'ISO, MDY' SET bytea_output = 'hex' SET lc_monetary = 'C'
SET extra_float_digits = 1   -- (keys and metadata are JSON of values whose text is the session's otherwise)
AS $$
DECLARE
    a rag.attachments := rag._attachment(attachment_id);
    join_on text;
    key_cols text;
    usable boolean;
    missing name;
    hidden boolean;
BEGIN
    IF keys IS NULL OR cardinality(keys) = 0 THEN
        RETURN;
    END IF;
    PERFORM rag._truncated_moot();   -- (documents made)
    IF NOT EXISTS (SELECT 1 FROM pg_class AS c WHERE c.oid = a.source_table) THEN
        RAISE EXCEPTION 'rag: attached table with OID % no longer exists', a.source_table::oid
            USING ERRCODE = 'undefined_table',
                  HINT = format('SELECT rag.detach(%s) removes its attachment and documents', a.source_table::oid);
    END IF;
    -- the key's columns only, with their types: a record of the whole table would run
    -- every other column's domain checks on NULL (a NOT NULL domain failed every row,
    -- hostile review 39d). Naming a type needs USAGE on its schema, which writing the
    -- table does not (review 40): without it, the whole table's record, as before 0.8.0.
    SELECT string_agg(format('%I %s', c.col, format_type(att.atttypid, att.atttypmod)), ', ' ORDER BY c.o),
           min(c.col) FILTER (WHERE att.attname IS NULL),
           bool_and(has_schema_privilege(ty.typnamespace, 'USAGE')
                    AND (ty.typcategory <> 'A' OR has_schema_privilege(
                             (SELECT e.typnamespace FROM pg_type AS e WHERE e.oid = ty.typelem), 'USAGE'))),
           -- (pg_catalog's equality only: an operator named by another schema would be
           -- one a writer with CREATE there could add for a domain key, review 40b)
           string_agg(format('t.%I OPERATOR(pg_catalog.=) r.%I', c.col, c.col), ' AND ' ORDER BY c.o)
    INTO key_cols, missing, usable, join_on
    FROM unnest(a.key_columns) WITH ORDINALITY AS c (col, o)
    LEFT JOIN pg_attribute AS att ON att.attrelid = a.source_table AND att.attname = c.col
                                 AND att.attnum > 0 AND NOT att.attisdropped
    LEFT JOIN pg_type AS ty ON ty.oid = att.atttypid;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'rag: attached table % has no key column %', a.source_table, quote_ident(missing)
            USING ERRCODE = 'undefined_column',
                  HINT = format('SELECT rag.detach(%L), then attach it again with its key', a.source_table::text);
    END IF;
    hidden := rag._rows_hidden(a.source_table);
    EXECUTE format($q$
        WITH table_rows AS (
            SELECT k.key, t.%1$I AS content, %2$s AS title, %3$s AS url, %4$s AS meta, %7$s AS filename,
                   t.%11$I IS NULL AS not_found   -- (a primary key column: NULL only when no row)
            FROM unnest($2::jsonb[]) AS k (key)
            CROSS JOIN LATERAL %9$s
            LEFT JOIN %5$s AS t ON %6$s AND %10$s = k.key
        ), current_rows AS (%8$s), gone AS (
            DELETE FROM rag.documents AS d USING current_rows AS c
            WHERE d.attachment_id = $1 AND d.source_key = c.key
              AND (c.content IS NULL OR btrim(c.content, E' \t\r\n\f\v') = '')
              AND NOT (c.not_found AND $4 AND c.key <> ALL ($5))
        ), held AS (
            INSERT INTO rag.queue (tenant, attachment_id, source_key)
            SELECT $6, $1, c.key FROM current_rows AS c
            WHERE c.not_found AND $4 AND c.key <> ALL ($5)
        )
        INSERT INTO rag.documents AS d (source, title, url, metadata, content, attachment_id, source_table, source_key)
        SELECT DISTINCT ON (c.key) $3 || '#' || c.key::text, c.title, c.url, c.meta, c.content, $1, $3, c.key
        FROM current_rows AS c
        WHERE c.content IS NOT NULL AND btrim(c.content, E' \t\r\n\f\v') <> ''
        ON CONFLICT ON CONSTRAINT documents_tenant_source_key DO UPDATE
            SET content = excluded.content, title = excluded.title, url = excluded.url, metadata = excluded.metadata
            WHERE (d.content_hash, d.title, d.url, d.metadata)
                  IS DISTINCT FROM (excluded.content_hash, excluded.title, excluded.url, excluded.metadata) $q$,
        a.content_column,
        rag._title_expr(a.title_column),
        rag._url_expr(a.url_column),
        rag._meta_expr(a),
        a.source_table, join_on,
        rag._text_expr(a.filename_column),
        CASE WHEN a.content_is_file
             -- a file's text, found row by row (a bad file fails the statement, naming it);
             -- its name: the filename column's, or the row's key
             THEN 'SELECT r.key, x.content, coalesce(r.title, x.title) AS title, r.url, r.meta || x.metadata AS meta, r.not_found
                   FROM table_rows AS r
                   LEFT JOIN LATERAL rag._extract_file(r.content, coalesce(rag._file_name(r.filename), r.key::text)) AS x
                        ON true'
             ELSE 'SELECT r.key, r.content::text AS content, r.title, r.url, r.meta, r.not_found FROM table_rows AS r' END,
        CASE WHEN usable THEN format('jsonb_to_record(k.key) AS r (%s)', key_cols)
             ELSE format('jsonb_populate_record(NULL::%s, k.key) AS r', a.source_table) END,
        rag._key_expr(a), a.key_columns[1])
    USING a.id, keys, a.source_table::text, hidden, coalesce(deleted, '{}'), a.tenant;
END
$$;

-- rag._attached_changed (internal)
-- The statement trigger on attached tables: the keys whose indexed columns changed (an
-- update of other columns is no change), then apply them (sync) or enqueue them (async).
CREATE OR REPLACE FUNCTION rag._attached_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET DateStyle = 'ISO, MDY' SET bytea_output = 'hex' SET lc_monetary = 'C'
SET extra_float_digits = 1   -- (keys and metadata are JSON of values whose text is the session's otherwise)
AS $$
DECLARE
    a rag.attachments := rag._attachment(TG_ARGV[0]::bigint);
    changed jsonb[];
    gone jsonb[];
    new_set text := format('SELECT %s AS key, %s AS val FROM new_rows AS t', rag._key_expr(a), rag._indexed_expr(a));
    old_set text := format('SELECT %s AS key, %s AS val FROM old_rows AS t', rag._key_expr(a), rag._indexed_expr(a));
BEGIN
    IF rag._restoring() THEN
        RETURN NULL;  -- a data-only restore: rag's own rows are in the dump
    END IF;
    IF TG_OP = 'TRUNCATE' AND TG_RELID = a.source_table THEN
        -- every row is gone (since 0.8.0; before, the documents of a truncated table
        -- stayed searchable: hostile review 40b), and so are the keys queued until now
        DELETE FROM rag.documents AS d WHERE d.attachment_id = a.id;
        DELETE FROM rag.queue AS q WHERE q.tenant = a.tenant AND q.attachment_id = a.id;
        RETURN NULL;
    ELSIF TG_OP = 'TRUNCATE' THEN
        -- a partition's rows are gone, which ones is no longer known: the documents whose
        -- row the table has no more (a TRUNCATE of the table fired its own trigger first)
        PERFORM rag._truncated(a, TG_RELID);
        RETURN NULL;
    END IF;
    PERFORM rag._truncated_moot();   -- (a row may have come into a partition rag._truncated found empty)
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('SELECT array_agg(key) FROM (%s) AS n', new_set) INTO changed;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('SELECT array_agg(key) FROM (%s) AS o', old_set) INTO gone;
    ELSE  -- new or changed (key, indexed values), and keys that an update removed
        EXECUTE format('SELECT array_agg(k.key) FILTER (WHERE k.changed), array_agg(k.key) FILTER (WHERE NOT k.changed)
                        FROM ((SELECT c.key, true AS changed FROM ((%1$s) EXCEPT (%2$s)) AS c)
                              UNION ALL (SELECT g.key, false FROM (SELECT key FROM (%2$s) AS o
                                                                   EXCEPT SELECT key FROM (%1$s) AS n) AS g)) AS k',
                       new_set, old_set) INTO changed, gone;
    END IF;
    IF changed IS NULL AND gone IS NULL THEN
        RETURN NULL;
    ELSIF a.mode = 'sync' THEN
        -- the rows this statement deleted are gone unless the table has them again (the
        -- same statement or a trigger may insert them back, review 40b): rag._apply_rows
        -- looks, and does not take them for rows hidden from the writer (review 40)
        PERFORM rag._apply_rows(a.id, coalesce(changed, '{}') || coalesce(gone, '{}'), gone);
    ELSE
        INSERT INTO rag.queue (tenant, attachment_id, source_key)
        SELECT a.tenant, a.id, k FROM unnest(coalesce(changed, '{}') || coalesce(gone, '{}')) AS k;
    END IF;
    RETURN NULL;
END
$$;

-- rag.attach
-- Keep rag.documents in step with a table of yours: existing rows are indexed now (sync)
-- or enqueued (async), and every later INSERT, UPDATE, DELETE and TRUNCATE is reflected. Returns the
-- attachment id. The table needs a primary key; the content column is any type castable to
-- text, or bytea: files (PDF, DOCX, ...), read as rag.ingest_file does, named by
-- filename_column (a file name or a content type) or by the row's key.
CREATE OR REPLACE FUNCTION rag.attach(
    source_table     regclass,
    content_column   name,
    title_column     name DEFAULT NULL,
    url_column       name DEFAULT NULL,
    metadata_columns name[] DEFAULT '{}',
    mode             text DEFAULT 'sync',
    force            boolean DEFAULT false,
    filename_column  name DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET DateStyle = 'ISO, MDY' SET bytea_output = 'hex' SET lc_monetary = 'C'
SET extra_float_digits = 1   -- (keys and metadata are JSON of values whose text is the session's otherwise)
AS $$
DECLARE
    keys name[];
    missing name;
    is_file boolean;
    a rag.attachments;
    owner name := rag._table_owner(source_table);
BEGIN
    IF source_table IS NULL OR content_column IS NULL THEN
        RAISE EXCEPTION 'rag.attach: source_table and content_column are required' USING ERRCODE = 'null_value_not_allowed';
    ELSIF owner <> current_user AND NOT coalesce(force, false) THEN
        -- attaching reads the table and evaluates its expressions (key casts, domain checks,
        -- defaults of the rows it writes) with the caller's rights: the owner's code would
        -- run as the caller, as in any maintenance of an untrusted table
        RAISE EXCEPTION 'rag.attach: table % belongs to role %, not to %', source_table, owner, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('attach it as its owner, connected as role %I (after SET ROLE, its code may reset the role), or pass force => true if you trust that role''s code to run with your rights', owner);
    ELSIF mode IS NULL OR mode NOT IN ('sync', 'async') THEN
        RAISE EXCEPTION 'rag.attach: mode must be sync or async, got %', rag._shown(mode)
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF mode = 'async' AND NOT (SELECT r.rolcanlogin FROM pg_roles AS r WHERE r.rolname = owner) THEN
        -- rag.work takes a table's queued rows only in its owner's own login session
        -- (rag._own_session): a role that cannot log in would never see them indexed
        RAISE EXCEPTION 'rag.attach: table % belongs to role %, which cannot log in, and its queued rows are indexed only in a session logged in as its owner',
                        source_table, owner
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('attach it with mode => ''sync'' (each write indexes its rows), or ALTER ROLE %I LOGIN and run rag.work logged in as it', owner);
    ELSIF mode = 'async' AND EXISTS (
            SELECT 1 FROM pg_class AS c JOIN pg_roles AS r ON r.oid = c.relowner
            WHERE c.oid = source_table AND c.relrowsecurity AND c.relforcerowsecurity
              AND NOT r.rolsuper AND NOT r.rolbypassrls) THEN
        -- rag.work reads the queued rows as the owner: a row its policy hides would be
        -- taken for a deleted one (rag._worker_takes leaves such a table's rows queued)
        RAISE EXCEPTION 'rag.attach: row-level security of table % is forced on its owner, and rag.work reads its queued rows as the owner', source_table
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('attach it with mode => ''sync'' (each write indexes the rows its writer sees), or ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', source_table);
    ELSIF (SELECT c.relispartition FROM pg_class AS c WHERE c.oid = source_table) THEN
        -- a write through the partitioned table fires its triggers, not the partition's: the
        -- rows written that way would never be indexed
        RAISE EXCEPTION 'rag.attach: table % is a partition of %, and writes through it would not be seen',
                        source_table, (SELECT i.inhparent::regclass FROM pg_inherits AS i WHERE i.inhrelid = source_table)
            USING ERRCODE = 'wrong_object_type',
                  HINT = format('attach the partitioned table %s (rag watches every partition of it)',
                                pg_partition_root(source_table));
    ELSIF EXISTS (SELECT 1 FROM pg_inherits AS i WHERE i.inhrelid = source_table OR i.inhparent = source_table)
          AND (SELECT c.relkind FROM pg_class AS c WHERE c.oid = source_table) <> 'p' THEN
        -- (table inheritance: an UPDATE, DELETE or TRUNCATE that names the parent changes
        -- the children's rows and fires the parent's triggers only; a parent's rows read
        -- without ONLY are its children's too: review 42)
        RAISE EXCEPTION 'rag.attach: table % inherits from or is inherited by %, and writes that name another table of its inheritance tree would not be seen',
                        source_table, (SELECT string_agg(x::regclass::text, ', ' ORDER BY x::regclass::text)
                                       FROM (SELECT i.inhparent AS x FROM pg_inherits AS i WHERE i.inhrelid = source_table
                                             UNION SELECT i.inhrelid FROM pg_inherits AS i WHERE i.inhparent = source_table) AS t)
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'rag watches partitioned tables whole (CREATE TABLE ... PARTITION BY), not table inheritance (INHERITS)';
    ELSIF array_position(metadata_columns, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'rag.attach: metadata_columns holds a NULL (element %)', array_position(metadata_columns, NULL)
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT array_agg(att.attname ORDER BY k.o) INTO keys
    FROM pg_index AS i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k (attnum, o)
    JOIN pg_attribute AS att ON att.attrelid = i.indrelid AND att.attnum = k.attnum
    WHERE i.indrelid = source_table AND i.indisprimary;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'rag.attach: table % has no primary key', source_table
            USING ERRCODE = 'invalid_parameter_value', HINT = 'add one: the key is how a document finds its row';
    END IF;
    -- a document finds its row by pg_catalog's equality of the key's type (rag._apply_rows):
    -- a type without one (an extension's: isbn13, ltree, cube) would fail every later write
    -- with 42883 (hostile review 40)
    BEGIN
        EXECUTE format('SELECT %s FROM %s AS t WHERE false',
                       (SELECT string_agg(format('t.%I OPERATOR(pg_catalog.=) t.%I', k, k), ', ') FROM unnest(keys) AS k),
                       source_table);
    EXCEPTION WHEN undefined_function THEN
        RAISE EXCEPTION 'rag.attach: the primary key of table % cannot be compared with pg_catalog''s equality: %', source_table, SQLERRM
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'give the table a primary key of a built-in type (bigint, uuid, text, ...), keeping the other as a unique column';
    END;
    SELECT c INTO missing FROM unnest(ARRAY[content_column, title_column, url_column, filename_column] || metadata_columns) AS c
    WHERE c IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute AS att
        WHERE att.attrelid = source_table AND att.attname = c AND att.attnum > 0 AND NOT att.attisdropped)
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'rag.attach: table % has no column %', source_table, quote_ident(missing)
            USING ERRCODE = 'undefined_column';
    END IF;
    is_file := (SELECT att.atttypid = 'bytea'::regtype FROM pg_attribute AS att
                WHERE att.attrelid = source_table AND att.attname = content_column);
    IF filename_column IS NOT NULL AND NOT is_file THEN
        RAISE EXCEPTION 'rag.attach: filename_column is for a bytea content column (files), and %.% is %',
                        source_table, quote_ident(content_column),
                        (SELECT format_type(att.atttypid, att.atttypmod) FROM pg_attribute AS att
                         WHERE att.attrelid = source_table AND att.attname = content_column)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'leave filename_column out for a text column';
    END IF;
    IF EXISTS (SELECT 1 FROM rag.attachments AS x
               WHERE x.source_table = attach.source_table AND x.tenant = rag.current_tenant()) THEN
        RAISE EXCEPTION 'rag.attach: table % is already attached', source_table
            USING ERRCODE = 'duplicate_object', HINT = 'to change its columns or mode: SELECT rag.detach(...), then attach again';
    END IF;
    INSERT INTO rag.attachments (source_table, key_columns, content_column, title_column, url_column,
                                 metadata_columns, mode, content_is_file, filename_column)
    VALUES (source_table, keys, content_column, title_column, url_column, coalesce(metadata_columns, '{}'), mode,
            is_file, filename_column)
    RETURNING * INTO a;

    -- rag's triggers on the table and on each of its partitions (a statement fires the
    -- triggers of the table it names), then every existing row, in batches (sync) or queued
    PERFORM rag._watch(a.id, source_table);
    PERFORM rag._watch_partitions(a, false);
    PERFORM rag._index_rows(a, source_table);
    RETURN a.id;
END
$$;

-- rag.detach
-- Stop indexing a table: drop its triggers and remove its documents, chunks and queue entries.
CREATE OR REPLACE FUNCTION rag.detach(source_table regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone bigint;
    owner name;
    part regclass;
    part_owner name;
BEGIN
    SELECT x.id INTO gone FROM rag.attachments AS x
    WHERE x.source_table = detach.source_table AND x.tenant = rag.current_tenant();
    IF gone IS NULL THEN
        RETURN false;
    END IF;
    -- (rag.attach with force => true needs only the right to create triggers; dropping
    -- them needs the table's owner)
    owner := rag._table_owner(source_table);
    IF owner IS NOT NULL AND NOT rag._is_superuser() AND NOT pg_has_role(owner, 'MEMBER') THEN
        RAISE EXCEPTION 'rag.detach: table % belongs to role %, and dropping rag''s triggers on it needs its owner',
                        source_table, owner
            USING ERRCODE = 'insufficient_privilege', HINT = format('detach it as its owner (SET ROLE %I) or a superuser', owner);
    END IF;
    -- a partition another role owns (a DBA may hand one over): its triggers are its owner's to drop
    SELECT w, rag._table_owner(w) INTO part, part_owner FROM rag._watched_relations(gone, source_table) AS w
    WHERE NOT rag._is_superuser() AND NOT pg_has_role(rag._table_owner(w), 'MEMBER') LIMIT 1;
    IF part IS NOT NULL THEN
        RAISE EXCEPTION 'rag.detach: partition % of table % belongs to role %, and dropping rag''s triggers on it needs its owner',
                        part, source_table, part_owner
            USING ERRCODE = 'insufficient_privilege', HINT = format('detach it as a superuser, or ALTER TABLE %s OWNER TO %I first', part, owner);
    END IF;
    -- its triggers first (on the table and its partitions), then its row: a writer of the
    -- table waits for the table's lock and no longer for the row its trigger reads (no
    -- deadlock hidden by the lock tries)
    PERFORM rag._drop_attachment_triggers('rag.detach', w, gone) FROM rag._watched_relations(gone, source_table) AS w;
    DELETE FROM rag.attachments AS x WHERE x.id = gone;
    RETURN true;
END
$$;

-- rag._lock_wait (internal): a lock_timeout for one wait, in ms as set_config takes it: what
-- is left until `deadline`, at most `most` and the session's own lock_timeout if that is
-- shorter, at least 1 ms (0 would mean no bound) and at most what the setting takes.
CREATE OR REPLACE FUNCTION rag._lock_wait(deadline timestamptz, most interval DEFAULT NULL)
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT greatest(1, least(ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000),
                             extract(epoch FROM most) * 1000,
                             nullif(extract(epoch FROM current_setting('lock_timeout')::interval) * 1000, 0),
                             2147483647))::bigint::text
$$;

-- rag._relation_lock_holders (internal): the sessions other than this one that hold a lock
-- on one of `rels` or on a relation of its partition tree (0 for a prepared transaction):
-- what rag._ddl_in_tries names when it gives up and what rag._end_waiting_holders looks in.
CREATE OR REPLACE FUNCTION rag._relation_lock_holders(rels regclass[])
RETURNS SETOF int
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT coalesce(l.pid, 0) FROM pg_catalog.pg_locks AS l
    WHERE l.locktype = 'relation' AND l.granted AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
      AND coalesce(pg_catalog.pg_partition_root(l.relation), l.relation)
          IN (SELECT coalesce(pg_catalog.pg_partition_root(x), x) FROM unnest(rels) AS x)
$$;

-- rag._ddl_in_tries (internal): run the DDL statements on `relations` that the query
-- `statements` returns (given `relations` as $1; asked again at each try, so that names
-- are read when used: a table or trigger renamed between tries is still found), in one
-- subtransaction, each lock asked for in tries of at most 100 ms (shorter if the session's
-- lock_timeout is), 200 ms apart, up to `patience`: a DDL request that waits (behind a long
-- reader or writer) makes every later reader and writer of the table queue behind it
-- (hostile reviews 29, 37). With `until_none`, the query is asked again after its
-- statements ran, and they are run again until it returns none (at most three rounds,
-- else the try is undone and counted as a renamed one): Postgres looks a name up again
-- once it has a lock, so a holder that, meanwhile, renamed the objects and gave their
-- names to others of its own had those dropped, not these (hostile review 38); the second
-- round reads the names under the lock. After `patience`, 55P03 naming `caller`, the
-- relations and the sessions that held locks on them (on the whole partition tree).
-- Nothing of a failed try stays. It runs as its caller. The one home of this loop:
-- rag._lock_tables (the owner's partition and index DDL) and rag._drop_attachment_triggers
-- (rag.detach, rag.erase_tenant).
CREATE OR REPLACE FUNCTION rag._ddl_in_tries(caller text, statements text, relations regclass[],
                                             patience interval DEFAULT '30 seconds',
                                             until_none boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + patience;
    saved text := current_setting('lock_timeout');
    stmt text;
    holders int[];
    renamed int := 0;
    ran int;
BEGIN
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', rag._lock_wait(deadline + interval '1 ms', interval '100 ms'), true);
            FOR turn IN 1..3 LOOP
                ran := 0;
                FOR stmt IN EXECUTE statements USING relations LOOP
                    EXECUTE stmt;
                    ran := ran + 1;
                END LOOP;
                EXIT WHEN NOT until_none OR ran = 0;
            END LOOP;
            IF until_none AND ran > 0 THEN
                RAISE EXCEPTION '%: % changed under its lock three times', caller,
                    (SELECT string_agg(x::text, ', ') FROM unnest(relations) AS x)
                    USING ERRCODE = 'undefined_object';
            END IF;
            PERFORM set_config('lock_timeout', saved, true);
            RETURN;
        EXCEPTION
        WHEN undefined_table OR undefined_object THEN
            -- a name read for this try was changed by the holder it waited for (Postgres
            -- looks a name up again once it has the lock): the next try reads it anew; a
            -- name that stays wrong is the error it is
            renamed := renamed + 1;
            IF renamed >= 10 OR clock_timestamp() >= deadline THEN
                RAISE;
            END IF;
        WHEN lock_not_available THEN   -- (the subtransaction's lock_timeout is undone)
            IF clock_timestamp() >= deadline THEN
                holders := ARRAY(SELECT h FROM rag._relation_lock_holders(relations) AS h ORDER BY h);
                RAISE EXCEPTION '%: % stayed locked by other transactions for % s (pids %)', caller,
                    (SELECT string_agg(x::text, ', ') FROM unnest(relations) AS x),
                    round(extract(epoch FROM patience), 1), holders
                    USING ERRCODE = 'lock_not_available', HINT = 'retry once they end';
            END IF;
            PERFORM pg_sleep(0.2);
        END;
    END LOOP;
END
$$;

-- rag._drop_attachment_triggers (internal): drop rag's triggers of attachment `id` on its
-- table, found by function and argument (the attachment's id): names differ between
-- releases, and older ones held the table's OID, which a restore changes. DROP TRIGGER
-- takes the table ACCESS EXCLUSIVE: in tries (rag._ddl_in_tries), so that a long reader of
-- the table does not make every later reader and writer queue behind the drop (hostile
-- review 37), until none of rag's is left: an owner who, holding the table, gave rag's
-- trigger names to triggers of its own had those dropped and rag's left (hostile review
-- 38); its own go too then. No LOCK TABLE: it resolves the table's name once it has the
-- lock, and a name the owner meanwhile gave to a view over other roles' tables made it
-- lock those (hostile reviews 37b, 38b); DROP TRIGGER locks the one relation it names, and
-- a name redirected to another relation of the owner's drops nothing of rag's (the next
-- round finds rag's triggers by the table's OID). A relation without such a trigger is
-- not touched. The caller must own it (rag.detach) or be a superuser (rag.erase_tenant).
CREATE OR REPLACE FUNCTION rag._drop_attachment_triggers(caller text, source_table regclass, id bigint,
                                                         patience interval DEFAULT '30 seconds')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM rag._ddl_in_tries(caller, format(
        $q$SELECT format('DROP TRIGGER %%I ON %%s', t.tgname, t.tgrelid::regclass)
           FROM pg_catalog.pg_trigger AS t
           WHERE t.tgrelid = ($1)[1]
             AND t.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
             AND t.tgargs = pg_catalog.convert_to(%L, 'UTF8') || pg_catalog.decode('00', 'hex')
           ORDER BY t.tgname$q$, id::text), ARRAY[source_table], patience, until_none => true);
END
$$;

-- rag._attachments_guard (internal): a row of rag.attachments names a table its writer may
-- attach: an ordinary or partitioned table outside rag's and the system's schemas, on which
-- the role may create triggers (rag.attach does). Writers insert the rows themselves
-- (rag.attach runs as its caller), and a row planted by hand naming rag.chunks, a
-- sequence or pg_authid made a superuser's rag.erase_tenant lock that (hostile review 37).
CREATE OR REPLACE FUNCTION rag._attachments_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind "char";
    nsp name;
BEGIN
    IF rag._restoring() OR rag._is_superuser() THEN
        RETURN NEW;
    END IF;
    SELECT c.relkind, n.nspname INTO kind, nsp
    FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = NEW.source_table;
    IF kind IS NULL OR kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'rag: an attachment names a table, and % is not one', NEW.source_table
            USING ERRCODE = 'wrong_object_type';
    ELSIF nsp IN ('rag', 'pg_catalog', 'information_schema', 'pg_toast')
          OR NOT has_table_privilege(NEW.source_table, 'TRIGGER') THEN
        RAISE EXCEPTION 'rag: table % cannot be attached by role %', NEW.source_table, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'attach a table of your own (or one you may create triggers on) with rag.attach';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER attachments_guard BEFORE INSERT ON rag.attachments
    FOR EACH ROW EXECUTE FUNCTION rag._attachments_guard();

-- rag._worker_takes (internal): whether rag.work, in this session of role `me` (NULL: a
-- session that is no role's own, rag._own_session), takes the queued rows of this table:
-- a dropped table's (they fail, to rag.errors), and its own tables' that it sees whole.
-- Indexing a row runs its table's code (key casts, domain checks) with the worker's
-- rights, so another role's table is its owner's to index (review 39c); and a row that
-- row-level security hides from the worker would be taken for a deleted one, its document
-- deleted (rag._rows_hidden).
CREATE OR REPLACE FUNCTION rag._worker_takes(source_table regclass, me name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN o.owner IS NULL THEN true
                WHEN o.owner = me THEN NOT rag._rows_hidden(source_table)
                ELSE false END
    FROM (SELECT rag._table_owner(source_table) AS owner) AS o
$$;

-- rag.work
-- Drain the queue: batches of rag.index_batch_size keys, each in its own transaction,
-- locked with FOR UPDATE SKIP LOCKED so concurrent workers never take the same rows.
-- A failed batch is retried key by key; a failing key is retried after
-- rag.retry_base_seconds * 2^attempts, and after rag.max_attempts it moves to rag.errors.
-- A worker killed mid-batch leaves its rows queued (its transaction never committed).
-- A procedure (it commits per batch), so it cannot pin search_path: every name and operator is qualified.
CREATE OR REPLACE PROCEDURE rag.work(max_batches int DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    batch int;
    max_attempts int;
    base pg_catalog.float8;
    done int := 0;
    ids bigint[];
    embedded int;
    r record;
    msg pg_catalog.text;
    -- the role whose tables this worker indexes: its own, in a session of its own
    -- (rag._own_session; after SET ROLE, the owner's code could switch back: review 39c)
    me pg_catalog.name := CASE WHEN rag._own_session(current_user) THEN current_user END;
BEGIN
    LOOP
        EXIT WHEN max_batches IS NOT NULL AND done OPERATOR(pg_catalog.>=) max_batches;
        batch := rag._setting('index_batch_size')::int;
        max_attempts := rag._setting('max_attempts')::int;
        base := rag._setting('retry_base_seconds')::pg_catalog.float8;
        -- only rows of tables the current role owns and sees whole (rag._worker_takes)
        SELECT pg_catalog.array_agg(q.id) INTO ids FROM (
            SELECT x.id FROM rag.queue AS x JOIN rag.attachments AS a ON a.id OPERATOR(pg_catalog.=) x.attachment_id
            WHERE x.tenant OPERATOR(pg_catalog.=) rag.current_tenant() AND x.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()
              AND rag._worker_takes(a.source_table, me)
            ORDER BY x.id LIMIT batch FOR UPDATE OF x SKIP LOCKED) AS q;
        EXIT WHEN ids IS NULL;
        BEGIN
            FOR r IN SELECT x.attachment_id, pg_catalog.array_agg(x.source_key) AS keys FROM rag.queue AS x
                     WHERE x.id OPERATOR(pg_catalog.=) ANY (ids) GROUP BY x.attachment_id LOOP
                PERFORM rag._apply_rows(r.attachment_id, r.keys);
            END LOOP;
            DELETE FROM rag.queue AS x WHERE x.id OPERATOR(pg_catalog.=) ANY (ids);
        EXCEPTION WHEN OTHERS THEN
            -- one bad row must not hold the others: retry the batch key by key
            FOR r IN SELECT x.* FROM rag.queue AS x WHERE x.id OPERATOR(pg_catalog.=) ANY (ids) ORDER BY x.id LOOP
                BEGIN
                    PERFORM rag._apply_rows(r.attachment_id, ARRAY[r.source_key]);
                    DELETE FROM rag.queue AS x WHERE x.id OPERATOR(pg_catalog.=) r.id;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
                    IF (r.attempts OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.>=) max_attempts THEN
                        INSERT INTO rag.errors (tenant, attachment_id, source_key, attempts, last_error, enqueued_at)
                        VALUES (r.tenant, r.attachment_id, r.source_key, r.attempts OPERATOR(pg_catalog.+) 1, msg, r.enqueued_at);
                        DELETE FROM rag.queue AS x WHERE x.id OPERATOR(pg_catalog.=) r.id;
                    ELSE
                        UPDATE rag.queue AS x
                        SET attempts = x.attempts OPERATOR(pg_catalog.+) 1, last_error = msg,
                            next_attempt_at = pg_catalog.now()
                                OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => base OPERATOR(pg_catalog.*) pg_catalog.power(2, x.attempts))
                        WHERE x.id OPERATOR(pg_catalog.=) r.id;
                    END IF;
                END;
            END LOOP;
        END;
        COMMIT;
        done := done OPERATOR(pg_catalog.+) 1;
    END LOOP;
    FOR r IN SELECT a.source_table, rag._table_owner(a.source_table) AS owner, pg_catalog.count(*) AS n,
                    (SELECT ro.rolcanlogin FROM pg_catalog.pg_roles AS ro
                     WHERE ro.rolname OPERATOR(pg_catalog.=) rag._table_owner(a.source_table)) AS can_login
             FROM rag.queue AS x JOIN rag.attachments AS a ON a.id OPERATOR(pg_catalog.=) x.attachment_id
             WHERE x.tenant OPERATOR(pg_catalog.=) rag.current_tenant()
               AND NOT rag._worker_takes(a.source_table, me)
             GROUP BY a.source_table LOOP
        IF r.owner OPERATOR(pg_catalog.=) me THEN
            RAISE WARNING 'rag.work: % queued rows of table % are left: row-level security applies to its owner here, and a row it hides would be taken for a deleted one', r.n, r.source_table
                USING HINT = pg_catalog.format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY (its policies still bind other roles), '
                                               'or SELECT rag.detach(%L) and attach it again with mode => ''sync''', r.source_table, r.source_table::pg_catalog.text);
            CONTINUE;
        END IF;
        RAISE WARNING 'rag.work: % queued rows of table % are left for its owner, role %', r.n, r.source_table, r.owner
            USING HINT = CASE WHEN r.can_login
                              THEN pg_catalog.format('indexing runs the table''s own code (key casts, domain checks) with the worker''s '
                                                     'rights: log in as %I (not SET ROLE or SET SESSION AUTHORIZATION) and run CALL rag.work(), or schedule it as that role', r.owner)
                              ELSE pg_catalog.format('role %I cannot log in: ALTER ROLE %I LOGIN and run CALL rag.work() logged in as it, '
                                                     'or SELECT rag.detach(%L) and attach it again with mode => ''sync''', r.owner, r.owner, r.source_table::pg_catalog.text) END;
    END LOOP;
    -- then a model switch in progress (rag.set_embedding_model): re-embed in batches, and
    -- switch when the last chunk is done
    LOOP
        EXIT WHEN max_batches IS NOT NULL AND done OPERATOR(pg_catalog.>=) max_batches;
        batch := rag._setting('index_batch_size')::int;
        embedded := rag._reembed_batch(batch);
        EXIT WHEN embedded OPERATOR(pg_catalog.<) 0;
        -- (a full batch is not the last: whether every chunk is done, a pass over the
        -- tenant's chunks, is asked once the batches run short, not after each: review 48, F5)
        -- (rag.finish_switches off: the last step waits for an admin's
        -- rag.finish_embedding_switch, and the batches stop once none is left)
        IF embedded OPERATOR(pg_catalog.<) batch AND rag._bool_setting('finish_switches')
           AND rag._switch_embedded(rag.current_tenant()) THEN
            -- the batch's locks on chunks go first: a writer of the tenant that deletes
            -- one of them would wait for this transaction while the last step waits for
            -- the writer (hostile review 31)
            COMMIT;
            PERFORM rag._finish_switch();
            COMMIT;
            EXIT;
        END IF;
        COMMIT;
        done := done OPERATOR(pg_catalog.+) 1;
        EXIT WHEN embedded OPERATOR(pg_catalog.=) 0;  -- what is left is locked by another worker
    END LOOP;
    -- then the chunks without window embeddings (indexed before 0.5.0, or re-embedded by
    -- a model switch) or without their windows' bounds (indexed before 0.5.0), in
    -- batches, unless a switch is still in progress
    LOOP
        EXIT WHEN max_batches IS NOT NULL AND done OPERATOR(pg_catalog.>=) max_batches;
        EXIT WHEN EXISTS (SELECT 1 FROM rag.tenant_models AS tm
                          WHERE tm.tenant OPERATOR(pg_catalog.=) rag.current_tenant() AND tm.next_model IS NOT NULL);
        embedded := rag._window_batch(rag._setting('index_batch_size')::int);
        COMMIT;
        EXIT WHEN embedded OPERATOR(pg_catalog.=) 0;
        done := done OPERATOR(pg_catalog.+) 1;
    END LOOP;
END
$$;

-- rag.retry_errors
-- Put the rows that failed for good back on the queue; returns how many.
CREATE OR REPLACE FUNCTION rag.retry_errors()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH e AS (DELETE FROM rag.errors AS x WHERE x.tenant = rag.current_tenant() RETURNING x.*),
         q AS (INSERT INTO rag.queue (tenant, attachment_id, source_key) SELECT tenant, attachment_id, source_key FROM e
               RETURNING 1)
    SELECT count(*) FROM q
$$;

-- rag._pgrowlocks (internal): pgrowlocks' own C function (contrib/pgrowlocks 1.2, the same
-- result columns), declared in rag's schema. pgrowlocks' SQL function lives where roles may
-- create functions (public, often): an overload with a defaulted extra argument made a call
-- by name ambiguous, so that rag.queue_status, and with a body bound at creation every
-- install and upgrade, failed (hostile reviews 22 and 23).
CREATE OR REPLACE FUNCTION rag._pgrowlocks(relname text, OUT locked_row tid, OUT locker xid, OUT multi boolean,
                                           OUT xids xid[], OUT modes text[], OUT pids int[])
RETURNS SETOF record
LANGUAGE c STRICT
AS '$libdir/pgrowlocks', 'pgrowlocks';

-- rag._queue_in_progress (internal): queue rows a worker holds right now. Row locks are
-- not in pg_locks; pgrowlocks reads them from the heap without taking them.
CREATE OR REPLACE FUNCTION rag._queue_in_progress()
RETURNS SETOF tid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT p.locked_row FROM rag._pgrowlocks('rag.queue') AS p $$;

-- rag.queue_status: per attached table, what waits, what a worker is doing now, what is
-- being retried, what failed, and the age of the oldest row.
CREATE OR REPLACE VIEW rag.queue_status WITH (security_invoker = true) AS
    WITH busy AS MATERIALIZED (SELECT rag._queue_in_progress() AS ctid)
    SELECT a.id AS attachment_id, a.source_table::text AS source_table, a.mode,
           (SELECT count(*) FROM rag.queue AS q WHERE q.attachment_id = a.id AND q.attempts = 0
                AND q.ctid NOT IN (SELECT b.ctid FROM busy AS b)) AS pending,
           (SELECT count(*) FROM rag.queue AS q WHERE q.attachment_id = a.id
                AND q.ctid IN (SELECT b.ctid FROM busy AS b)) AS in_progress,
           (SELECT count(*) FROM rag.queue AS q WHERE q.attachment_id = a.id AND q.attempts > 0
                AND q.ctid NOT IN (SELECT b.ctid FROM busy AS b)) AS retrying,
           (SELECT count(*) FROM rag.errors AS e WHERE e.attachment_id = a.id) AS failed,
           (SELECT now() - min(q.enqueued_at) FROM rag.queue AS q WHERE q.attachment_id = a.id) AS oldest_age
    FROM rag.attachments AS a;

-- rag.document_status: per document, its chunks, how many are embedded, with which model.
CREATE OR REPLACE VIEW rag.document_status WITH (security_invoker = true) AS
    SELECT d.id AS document_id, d.source, d.source_table, d.source_key,
           count(c.id) AS chunks, count(c.embedding) AS embedded,
           string_agg(DISTINCT c.model, ', ') AS model, d.updated_at
    FROM rag.documents AS d LEFT JOIN rag.chunks AS c ON c.document_id = d.id
    GROUP BY d.id;
