-- Checking what rag derived against what it derives from, and bringing it back in step.
-- rag's triggers keep chunks, the lexical index and attached tables' documents in step
-- with every write; what they did not see stays out of step silently: a session with
-- session_replication_role = replica (a logical replication apply worker, a data-only
-- restore with --disable-triggers), a table owner's ALTER TABLE ... DISABLE TRIGGER, rows
-- written by hand into rag's own tables. rag.check finds it; rag.reindex and rag.resync
-- repair it. All three run as their caller: a tenant checks and repairs what it sees.

-- rag._documents_to_reindex (internal): the visible documents whose chunks are not those
-- of their text: the text changed with rag's triggers off (content_hash is not its hash),
-- no chunks at all (a document always has at least one: one without text is refused), or
-- chunks of a model other than the tenant's (its vector search would not read them).
-- Reads every visible document and chunk once.
CREATE OR REPLACE FUNCTION rag._documents_to_reindex()
RETURNS TABLE (tenant text, id bigint, source text, reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH m AS MATERIALIZED (
        SELECT t.tenant, rag._tenant_embedding_model(t.tenant) AS model
        FROM (SELECT DISTINCT d.tenant FROM rag.documents AS d) AS t
    ), c AS (
        SELECT c.tenant, c.document_id, bool_or(c.model <> m.model) AS other_model
        FROM rag.chunks AS c JOIN m ON m.tenant = c.tenant
        GROUP BY c.tenant, c.document_id
    )
    SELECT d.tenant, d.id, d.source,
           CASE WHEN h.stale THEN 'text changed without being chunked again'
                WHEN c.document_id IS NULL THEN 'no chunks'
                ELSE 'chunks of another embedding model than the tenant''s' END
    FROM rag.documents AS d
    -- (each text hashed once: OFFSET 0 keeps the planner from copying the expression into
    -- both the reason and the filter)
    CROSS JOIN LATERAL (SELECT d.content_hash IS DISTINCT FROM sha256(convert_to(d.content, 'UTF8')) AS stale
                        OFFSET 0) AS h
    LEFT JOIN c ON c.tenant = d.tenant AND c.document_id = d.id
    WHERE h.stale OR c.document_id IS NULL OR c.other_model
$$;

-- rag.check (any role): one row per problem and tenant, for the tenants the caller can see
-- (row-level security; a superuser sees every tenant): how many rows it concerns, one of
-- them, and what to run. No rows: nothing found. Linear in what it reads: every visible
-- document and chunk once, the lexical statistics, and each attached table the caller owns
-- in a session of its own (another role's table is not read, nor one read after SET ROLE:
-- that would run its owner's code with the caller's rights, or the session's; a row says
-- so). Takes no lock beyond reads.
CREATE OR REPLACE FUNCTION rag.check()
RETURNS TABLE (tenant text, problem text, affected bigint, example text, fix text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET DateStyle = 'ISO, MDY' SET bytea_output = 'hex' SET lc_monetary = 'C'
SET extra_float_digits = 1   -- (an attached table's keys as rag._apply_rows makes them)
AS $$
#variable_conflict use_column
DECLARE
    a rag.attachments;
    owner name;
    r record;
    unwatched text[];
    disabled text[];
    n_parts bigint;
    covering regclass;
BEGIN
    -- documents whose chunks are not those of their text
    RETURN QUERY
    SELECT s.tenant, 'document not indexed: ' || s.reason, count(*), rag._shown(min(s.source)),
           format('SELECT rag.reindex();   -- in tenant %L', s.tenant)
    FROM rag._documents_to_reindex() AS s GROUP BY s.tenant, s.reason ORDER BY 1, 2;

    -- the lexical index's statistics against the chunks they count; blocks whose byte
    -- strings do not hold their postings (rag.bm25 would fail on them with XX001); and
    -- well-formed blocks written before 0.9.0 past its limits, which rag.bm25 reads whole:
    -- more than 8,192 postings, or bytes compressed more than 16 to 1 (a writer's blocks of
    -- one repeated id compressed 450 to 1: 5 MB on disk took a reader 2.2 GB). rag's own
    -- blocks compress little; 0.9.0 stores them uncompressed. Sizes come from the values'
    -- headers: nothing is decompressed, and rag.posting_blocks is read once for both.
    RETURN QUERY
    WITH actual AS (
        SELECT c.tenant, count(*) AS chunks, coalesce(sum(length(c.tsv)), 0) AS pairs,
               coalesce(sum((SELECT sum(cardinality(u.positions)) FROM unnest(c.tsv) AS u)), 0) AS total_len
        FROM rag.chunks AS c GROUP BY c.tenant
    ), corpus AS (
        SELECT s.tenant, sum(s.chunks) AS chunks, sum(s.total_len) AS total_len FROM rag.corpus_stats AS s GROUP BY s.tenant
    ), lexemes AS (
        SELECT s.tenant, sum(s.df) AS pairs FROM rag.lexeme_stats AS s GROUP BY s.tenant
    ), judged AS (
        SELECT b.tenant, b.lexeme,
               b.n < 0 OR octet_length(b.ids) <> 8::bigint * b.n OR octet_length(b.tfs) <> 2::bigint * b.n
               OR octet_length(b.lens) <> 4::bigint * b.n AS corrupt,
               b.n > 8192 OR 14::bigint * b.n > 16::bigint * (pg_column_size(b.ids) + pg_column_size(b.tfs)
                                                              + pg_column_size(b.lens)) AS past_limits
        FROM rag.posting_blocks AS b
    ), blocks AS (
        SELECT j.tenant,
               count(*) FILTER (WHERE j.corrupt) AS corrupt, min(j.lexeme) FILTER (WHERE j.corrupt) AS corrupt_lexeme,
               count(*) FILTER (WHERE NOT j.corrupt AND j.past_limits) AS past_limits,
               min(j.lexeme) FILTER (WHERE NOT j.corrupt AND j.past_limits) AS past_limits_lexeme
        FROM judged AS j WHERE j.corrupt OR j.past_limits
        GROUP BY j.tenant
    ), corrupt AS (
        SELECT k.tenant, k.corrupt AS blocks, k.corrupt_lexeme AS lexeme FROM blocks AS k WHERE k.corrupt > 0
    ), t AS (
        SELECT x.tenant FROM actual AS x UNION SELECT x.tenant FROM corpus AS x
        UNION SELECT x.tenant FROM lexemes AS x UNION SELECT x.tenant FROM corrupt AS x
    )
    SELECT q.tenant, q.problem, q.affected, q.example, q.fix
    FROM (SELECT 1 AS kind, t.tenant,
                 CASE WHEN k.blocks IS NOT NULL THEN 'lexical index: posting blocks corrupt'
                      ELSE 'lexical index: statistics do not count the chunks' END AS problem,
                 coalesce(k.blocks, coalesce(x.chunks, 0)) AS affected,
                 CASE WHEN k.blocks IS NOT NULL THEN format('lexeme %s', rag._shown(k.lexeme))
                      ELSE format('%s chunks holding %s lexeme occurrences, %s (chunk, lexeme) pairs; the statistics count %s, %s, %s',
                                  coalesce(x.chunks, 0), coalesce(x.total_len, 0), coalesce(x.pairs, 0),
                                  coalesce(s.chunks, 0), coalesce(s.total_len, 0), coalesce(l.pairs, 0)) END AS example,
                 format('SELECT rag.rebuild_lexical_index();   -- in tenant %L', t.tenant) AS fix
          FROM t
          LEFT JOIN actual AS x ON x.tenant = t.tenant
          LEFT JOIN corpus AS s ON s.tenant = t.tenant
          LEFT JOIN lexemes AS l ON l.tenant = t.tenant
          LEFT JOIN corrupt AS k ON k.tenant = t.tenant
          WHERE k.blocks IS NOT NULL
             OR (coalesce(x.chunks, 0), coalesce(x.total_len, 0), coalesce(x.pairs, 0))
                IS DISTINCT FROM (coalesce(s.chunks, 0), coalesce(s.total_len, 0), coalesce(l.pairs, 0))
          UNION ALL
          SELECT 2, k.tenant, 'lexical index: posting blocks past the limits of 0.9.0 (written before it)', k.past_limits,
                 format('lexeme %s', rag._shown(k.past_limits_lexeme)),
                 format('SELECT rag.rebuild_lexical_index();   -- in tenant %L', k.tenant)
          FROM blocks AS k WHERE k.past_limits > 0) AS q
    ORDER BY q.kind, q.tenant;

    -- an embedding model's HNSW index that search cannot use: left invalid by a CREATE
    -- INDEX CONCURRENTLY (rag.model_index_statements) that failed or was cancelled (or is
    -- still running, where the caller may not see another role's progress), or not of the
    -- model's definition (tenant NULL: the index serves every tenant of its partition).
    -- Or an HNSW index of rag's naming whose model is not registered (its statements run
    -- after the model was deleted): no search reads it, every insert into the partition
    -- writes it (review 50, left in 0.11.0).
    -- From the indexes there are to the models by name (a hash join): a model per partition
    -- cost every caller 3.9 s with 20,000 models registered by an admin (review 50, F3).
    RETURN QUERY
    WITH ix AS (
        SELECT p.relname AS part, ic.relname AS index_name, substr(ic.relname, length(p.relname) + 1) AS suffix,
               am.amname
        FROM rag._chunks_partitions() AS p
        JOIN pg_index AS i ON i.indrelid = p.relid
        JOIN pg_class AS ic ON ic.oid = i.indexrelid
        JOIN pg_am AS am ON am.oid = ic.relam
        WHERE left(ic.relname, length(p.relname)) = p.relname
    ), named AS (
        SELECT m.name, rag._model_index(''::name, m.name)::text AS suffix FROM rag.models AS m WHERE m.kind = 'embed'
    ), found AS (
        SELECT ix.index_name, named.name,
               CASE WHEN named.name IS NULL THEN 'unregistered' ELSE rag._model_index_state(ix.part, named.name) END AS state
        FROM ix LEFT JOIN named ON named.suffix = ix.suffix
        WHERE named.name IS NOT NULL OR (ix.amname = 'hnsw' AND ix.suffix ~ '^_hnsw_[0-9a-f]{12}$')
    )
    SELECT NULL::text,
           CASE WHEN f.state = 'unregistered'
                THEN 'HNSW index of no registered embedding model: no search reads it, every insert into its partition writes it'
                ELSE format('HNSW index of model %s %s: search with it scans', rag._shown(f.name),
                            CASE f.state WHEN 'other' THEN 'not of the model''s definition'
                                         ELSE 'invalid (a CREATE INDEX CONCURRENTLY that failed, or one still running)' END)
           END,
           1::bigint, format('rag.%I', f.index_name),
           CASE WHEN f.state = 'unregistered'
                THEN format('as the owner, in psql: DROP INDEX CONCURRENTLY rag.%I;', f.index_name)
                ELSE format('once no build of it runs, as the owner, in psql: SELECT rag.model_index_statements(%L) \gexec', f.name)
           END
    FROM found AS f
    WHERE f.state IN ('invalid', 'other', 'unregistered')
    ORDER BY 2, 4;

    -- attached tables: rag's four triggers in place and enabled, and their rows in step
    FOR a IN SELECT * FROM rag.attachments AS x ORDER BY x.tenant, x.id LOOP
        owner := rag._table_owner(a.source_table);
        IF owner IS NULL THEN
            RETURN QUERY SELECT a.tenant, 'attached table dropped', 1::bigint, a.source_table::oid::text,
                                format('SELECT rag.detach(%s);   -- in tenant %L', a.source_table::oid, a.tenant);
            CONTINUE;
        END IF;
        -- (tgenabled: O and A fire in ordinary sessions; D never, R only in replica sessions)
        SELECT array_agg(e.event ORDER BY e.flag) FILTER (WHERE NOT e.on_),
               array_agg(DISTINCT e.disabled) FILTER (WHERE e.disabled IS NOT NULL)
        INTO unwatched, disabled
        FROM (SELECT v.event, v.flag,
                     bool_or(t.tgenabled IN ('O', 'A')) IS TRUE AS on_,
                     min(t.tgname) FILTER (WHERE t.tgenabled NOT IN ('O', 'A')) AS disabled
              FROM (VALUES ('INSERT', 4), ('UPDATE', 16), ('DELETE', 8), ('TRUNCATE', 32)) AS v (event, flag)
              LEFT JOIN pg_catalog.pg_trigger AS t
                     ON t.tgrelid = a.source_table
                    AND t.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
                    AND t.tgargs = convert_to(a.id::text, 'UTF8') || decode('00', 'hex')
                    AND t.tgtype::int & v.flag <> 0
              GROUP BY v.event, v.flag) AS e;
        IF unwatched IS NOT NULL THEN
            RETURN QUERY SELECT a.tenant, 'attached table not watched: ' || array_to_string(unwatched, ', ') || ' not indexed',
                                cardinality(unwatched)::bigint, a.source_table::text,
                                CASE WHEN disabled IS NOT NULL
                                     THEN format('ALTER TABLE %s ENABLE TRIGGER %s; then SELECT rag.resync(%L);   -- in tenant %L',
                                                 a.source_table, array_to_string(ARRAY(SELECT quote_ident(d) FROM unnest(disabled) AS d), ', ENABLE TRIGGER '),
                                                 a.source_table::text, a.tenant)
                                     ELSE format('SELECT rag.detach(%L), then rag.attach it again;   -- in tenant %L',
                                                 a.source_table::text, a.tenant) END;
        END IF;
        -- a partition attached on its own (before 0.8.0, which refuses it): writes through
        -- its parent fire the parent's triggers, not its own
        IF (SELECT c.relispartition FROM pg_catalog.pg_class AS c WHERE c.oid = a.source_table) THEN
            covering := (SELECT x.source_table FROM pg_catalog.pg_inherits AS i
                         CROSS JOIN LATERAL rag._attachments_above(ARRAY[i.inhparent]) AS x
                         WHERE i.inhrelid = a.source_table ORDER BY x.attachment_id LIMIT 1);
            IF covering IS NULL THEN
                RETURN QUERY SELECT a.tenant, 'attached table is a partition: writes through its partitioned table are not indexed',
                                    1::bigint, a.source_table::text,
                                    format('SELECT rag.detach(%L), then rag.attach(%L, ...);   -- in tenant %L',
                                           a.source_table::text, pg_partition_root(a.source_table)::text, a.tenant);
            ELSE
                RETURN QUERY SELECT a.tenant, 'attached table is a partition of another attached table: its rows are indexed twice',
                                    1::bigint, a.source_table::text,
                                    format('SELECT rag.detach(%L);   -- in tenant %L; attached table %s indexes its rows',
                                           a.source_table::text, a.tenant, covering);
            END IF;
        END IF;
        -- table inheritance (before 0.8.0, which refuses it): writes that name another table
        -- of the tree fire that table's triggers only
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_inherits AS i WHERE i.inhrelid = a.source_table OR i.inhparent = a.source_table)
           AND (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = a.source_table) <> 'p'
           AND NOT (SELECT c.relispartition FROM pg_catalog.pg_class AS c WHERE c.oid = a.source_table) THEN
            RETURN QUERY SELECT a.tenant, 'attached table is in an inheritance tree: writes that name its parent or children are not indexed',
                                1::bigint, a.source_table::text,
                                format('SELECT rag.detach(%L);   -- in tenant %L; then NO INHERIT, or a partitioned table, and attach again',
                                       a.source_table::text, a.tenant);
        END IF;
        -- its partitions: a statement that names one fires the partition's triggers only
        SELECT count(*) INTO n_parts
        FROM pg_partition_tree(a.source_table) AS p
        WHERE p.relid <> a.source_table
          AND (SELECT count(DISTINCT v.flag)
               FROM (VALUES (4), (16), (8), (32)) AS v (flag)
               JOIN pg_catalog.pg_trigger AS t
                 ON t.tgrelid = p.relid
                AND t.tgfoid = 'rag._attached_changed()'::pg_catalog.regprocedure
                AND t.tgargs = convert_to(a.id::text, 'UTF8') || decode('00', 'hex')
                AND t.tgtype::int & v.flag <> 0
                AND t.tgenabled IN ('O', 'A')) < 4;
        IF n_parts > 0 THEN
            RETURN QUERY SELECT a.tenant, 'attached table not watched: writes that name a partition of it are not indexed',
                                n_parts, a.source_table::text,
                                format('log in as role %I and run SELECT rag.resync(%L);   -- in tenant %L',
                                       owner, a.source_table::text, a.tenant);
        END IF;
        -- an async table whose owner cannot log in: rag.work takes its queued rows only in
        -- the owner's own login session, so they wait for ever (its ownership changed after
        -- rag.attach, which refuses such a table, or the role lost LOGIN)
        IF a.mode = 'async' AND NOT (SELECT r.rolcanlogin FROM pg_roles AS r WHERE r.rolname = owner) THEN
            RETURN QUERY SELECT a.tenant, 'attached table (async) owned by a role that cannot log in: its queued rows are never indexed',
                                (SELECT count(*) FROM rag.queue AS q WHERE q.tenant = a.tenant AND q.attachment_id = a.id),
                                a.source_table::text,
                                format('ALTER ROLE %I LOGIN, then run rag.work logged in as it; or SELECT rag.detach(%L), then rag.attach it with mode => ''sync'';   -- in tenant %L',
                                       owner, a.source_table::text, a.tenant);
        END IF;
        -- another role's table is not read: reading it runs its owner's code (casts, types,
        -- policies) with the caller's rights, and after SET ROLE that code may reset the
        -- role to the session's (hostile review 39b: a superuser's SET ROLE to the owner, as
        -- the first version's fix said, made the owner a superuser)
        IF NOT rag._own_session(owner) THEN
            RETURN QUERY SELECT a.tenant, 'attached table not read: its rows are checked by its owner', 0::bigint,
                                a.source_table::text,
                                CASE WHEN (SELECT r.rolcanlogin FROM pg_roles AS r WHERE r.rolname = owner)
                                     THEN format('log in as role %I (not SET ROLE or SET SESSION AUTHORIZATION) and run SELECT * FROM rag.check();', owner)
                                     ELSE format('role %I cannot log in: ALTER ROLE %I LOGIN, then log in as it and run SELECT * FROM rag.check();', owner, owner) END;
            CONTINUE;
        ELSIF rag._rows_hidden(a.source_table) THEN
            RETURN QUERY SELECT a.tenant, 'attached table not read: row-level security applies to its owner here, so it may not see every row',
                                0::bigint, a.source_table::text,
                                format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY while it is checked', a.source_table);
            CONTINUE;
        END IF;
        -- rows whose document is missing or holds other values, documents whose row is
        -- gone; keys waiting in rag.queue or failed in rag.errors are the worker's. A row's
        -- values as rag._apply_rows stores them: a text's hash, title, url and metadata; a
        -- file's hash (in its document's metadata), url and metadata columns (its text and
        -- title are known once extracted, so a file row without a document is not counted:
        -- an empty or blank file has none). A table its owner changed so that the query
        -- fails (a column renamed) is reported, and the check goes on.
        BEGIN
            EXECUTE format($q$
                WITH r AS MATERIALIZED (
                    SELECT %1$s AS key, %3$s AS val, %4$s AS want FROM %2$s AS t
                ), d AS MATERIALIZED (
                    SELECT x.source_key AS key, %5$s AS val FROM rag.documents AS x
                    WHERE x.attachment_id = $1 AND x.tenant = $2
                ), w AS MATERIALIZED (
                    SELECT q.source_key AS key FROM rag.queue AS q WHERE q.tenant = $2 AND q.attachment_id = $1
                    UNION SELECT e.source_key FROM rag.errors AS e WHERE e.tenant = $2 AND e.attachment_id = $1
                ), stale AS (
                    SELECT r.key FROM r LEFT JOIN d ON d.key = r.key
                    WHERE CASE WHEN d.key IS NULL THEN r.want ELSE r.val IS DISTINCT FROM d.val END
                    UNION ALL
                    SELECT d.key FROM d WHERE NOT EXISTS (SELECT 1 FROM r WHERE r.key = d.key)
                )
                SELECT count(*) AS n, min(stale.key::text) AS example FROM stale
                WHERE NOT EXISTS (SELECT 1 FROM w WHERE w.key = stale.key) $q$,
                rag._key_expr(a), a.source_table,
                CASE WHEN a.content_is_file
                     THEN format('jsonb_build_array(encode(sha256(t.%I), ''hex''), %s, %s - ''file'' - ''format'')',
                                 a.content_column, rag._url_expr(a.url_column), rag._meta_expr(a))
                     ELSE format('jsonb_build_array(encode(sha256(convert_to(t.%I::text, ''UTF8'')), ''hex''), %s, %s, %s)',
                                 a.content_column, rag._title_expr(a.title_column), rag._url_expr(a.url_column),
                                 rag._meta_expr(a)) END,
                CASE WHEN a.content_is_file THEN 'false'
                     ELSE format('coalesce(btrim(t.%I::text, E'' \t\r\n\f\v'') <> '''', false)', a.content_column) END,
                CASE WHEN a.content_is_file
                     THEN 'jsonb_build_array(x.metadata->''file''->>''sha256'', x.url, x.metadata - ''file'' - ''format'')'
                     ELSE 'jsonb_build_array(encode(x.content_hash, ''hex''), x.title, x.url, x.metadata)' END)
            INTO r USING a.id, a.tenant;
        EXCEPTION WHEN undefined_column OR undefined_table OR undefined_function OR datatype_mismatch
                       OR cannot_coerce OR wrong_object_type THEN
            -- (the attachment no longer matches its table; anything else, a lock timeout
            -- say, is the check's own error, not a reason to attach the table again)
            RETURN QUERY SELECT a.tenant, 'attached table not readable as attached: ' || rag._shown(SQLERRM), 0::bigint,
                                a.source_table::text,
                                format('SELECT rag.detach(%L), then rag.attach it again;   -- in tenant %L',
                                       a.source_table::text, a.tenant);
            CONTINUE;
        END;
        IF r.n > 0 THEN
            RETURN QUERY SELECT a.tenant, 'attached rows out of step (no document, a document of other values, or a document whose row is gone)',
                                r.n, format('%s key %s', a.source_table, rag._shown(r.example)),
                                format('SELECT rag.resync(%L);   -- in tenant %L', a.source_table::text, a.tenant);
        END IF;
    END LOOP;
END
$$;

-- rag.reindex (writer): chunk and embed these documents again (default: those rag.check
-- finds not indexed, rag._documents_to_reindex) from their stored text; chunks whose text
-- is unchanged keep their embeddings (reused by hash). Returns how many documents. A
-- document the caller cannot see is 42704, as one that does not exist.
CREATE OR REPLACE FUNCTION rag.reindex(document_ids bigint[] DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids bigint[];
    missing bigint;
    changed bigint[];
BEGIN
    IF document_ids IS NULL THEN
        ids := ARRAY(SELECT s.id FROM rag._documents_to_reindex() AS s ORDER BY s.id);
    ELSE
        ids := ARRAY(SELECT DISTINCT i FROM unnest(document_ids) AS i WHERE i IS NOT NULL ORDER BY i);
        SELECT i INTO missing FROM unnest(ids) AS i
        WHERE NOT EXISTS (SELECT 1 FROM rag.documents AS d WHERE d.id = i) LIMIT 1;
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'rag.reindex: no document % in your tenants', missing
                USING ERRCODE = 'undefined_object', HINT = 'SELECT id, source FROM rag.documents';
        END IF;
    END IF;
    -- a text changed behind rag's back: the update sets its hash, and its trigger chunks it
    changed := ARRAY(SELECT d.id FROM rag.documents AS d WHERE d.id = ANY (ids)
                     AND d.content_hash IS DISTINCT FROM sha256(convert_to(d.content, 'UTF8')));
    UPDATE rag.documents AS d SET content = d.content WHERE d.id = ANY (changed);
    PERFORM rag._index_documents(ARRAY(SELECT i FROM unnest(ids) AS i WHERE i <> ALL (changed) ORDER BY i));
    RETURN cardinality(ids);
END
$$;

-- rag.resync (writer): bring the documents of an attached table (of the session's tenant)
-- in step with its rows, as if every row had just been written: each row applied (sync)
-- or queued (async; a key already waiting is not queued again), and the documents whose
-- key is no row's deleted. Unchanged rows embed nothing. Reads the table with the
-- caller's rights: its owner runs it, logged in as itself (or force => true, as
-- rag.attach). Returns the keys applied or queued, and the documents deleted.
CREATE OR REPLACE FUNCTION rag.resync(source_table regclass, force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET DateStyle = 'ISO, MDY' SET bytea_output = 'hex' SET lc_monetary = 'C'
SET extra_float_digits = 1   -- (an attached table's keys as rag._apply_rows makes them)
AS $$
DECLARE
    a rag.attachments;
    owner name := rag._table_owner(source_table);
    gone bigint;
BEGIN
    IF source_table IS NULL THEN
        RAISE EXCEPTION 'rag.resync: source_table is required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO a FROM rag.attachments AS x
    WHERE x.source_table = resync.source_table AND x.tenant = rag.current_tenant();
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'rag.resync: table % is not attached in tenant %', source_table, rag._shown(rag.current_tenant())
            USING ERRCODE = 'undefined_object', HINT = 'SELECT tenant, source_table FROM rag.attachments';
    ELSIF owner IS NULL THEN
        RAISE EXCEPTION 'rag.resync: attached table with OID % no longer exists', source_table::oid
            USING ERRCODE = 'undefined_table',
                  HINT = format('SELECT rag.detach(%s) removes its attachment and documents', source_table::oid);
    ELSIF NOT rag._own_session(owner) AND NOT coalesce(force, false) THEN
        -- (after SET ROLE or SET SESSION AUTHORIZATION, the owner's code read with the
        -- table may switch back to the session's or the login's role: reviews 39b, 39c)
        RAISE EXCEPTION 'rag.resync: table % belongs to role %, and this session is not that role''s own', source_table, owner
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('log in as role %I (not SET ROLE or SET SESSION AUTHORIZATION), or pass force => true if you trust that role''s code to run with your rights', owner);
    ELSIF rag._rows_hidden(source_table) THEN
        -- (a row the caller cannot see is not a row that is gone: its document would go)
        RAISE EXCEPTION 'rag.resync: row-level security applies to this session on table %, so it may not see every row', source_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY while it runs (its owner then sees every row), or run it as a superuser with force => true', source_table);
    END IF;
    -- rag's triggers on every partition, and none left on a former one (this scan reads
    -- every row, the rows of a partition attached or detached too)
    PERFORM rag._watch_partitions(a, false);
    -- the documents whose key is no row's: deleted here (applying their key would find the
    -- row again under another spelling of the same key, and keep them)
    EXECUTE format($q$
        WITH gone AS (
            DELETE FROM rag.documents AS d
            WHERE d.attachment_id = $1 AND d.tenant = $2
              AND NOT EXISTS (SELECT 1 FROM (SELECT %1$s AS key FROM %2$s AS t) AS r WHERE r.key = d.source_key)
            RETURNING 1)
        SELECT count(*) FROM gone $q$, rag._key_expr(a), a.source_table) INTO gone USING a.id, a.tenant;
    RETURN rag._index_rows(a, a.source_table) + gone;   -- every row applied (sync) or queued (async)
END
$$;
