-- Ingest: documents in, chunks out. Plain INSERT/UPDATE on rag.documents index through
-- statement-level triggers (one call per statement, embeddings batched across rows);
-- rag.ingest upserts by source and does no work for unchanged content.

-- rag._check_content
-- Raise a clear error for content that cannot be indexed (internal).
CREATE OR REPLACE FUNCTION rag._check_content(content text, caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_bytes bigint := rag._setting('max_document_bytes')::bigint;
BEGIN
    IF content IS NULL THEN
        RAISE EXCEPTION '%: content is NULL', caller
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass the document text';
    ELSIF btrim(content, E' \t\r\n\f\v') = '' THEN
        RAISE EXCEPTION '%: content is empty', caller
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass a document with some text';
    ELSIF octet_length(content) > max_bytes THEN
        RAISE EXCEPTION '%: content is % bytes, over the limit of % bytes', caller, octet_length(content), max_bytes
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'split the document, or ask an administrator to raise rag.max_document_bytes: SELECT rag.configure(''max_document_bytes'', ...)';
    END IF;
END
$$;

-- rag._restoring (internal)
-- Whether this session is a restore by pg_restore or a pg_dump script: both set
-- row_security = off and check_function_bodies = off before loading data (an application
-- session has no reason to turn off both), and the role writing can write rag's tables
-- with row-level security off (a superuser, or BYPASSRLS). The triggers then only store
-- rows: chunks, postings and statistics come from the dump, and no model is called.
-- (The role matters: any role may turn both settings off with set_config() inside its own
-- statement, after row-level security has let the statement through at plan time, and
-- the row triggers then saw a restore: rag_admin stored unchecked rows in rag.config and a
-- writer unchecked attachments, hostile review 39.)
CREATE OR REPLACE FUNCTION rag._restoring()
RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN pg_catalog.current_setting('row_security') OPERATOR(pg_catalog.=) 'off'
                 AND pg_catalog.current_setting('check_function_bodies') OPERATOR(pg_catalog.=) 'off'
           THEN coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles AS r
                          WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER), false)
           ELSE false END
$$;

-- rag._documents_before_write
-- Row trigger: validate content and metadata, keep content_hash and updated_at.
CREATE OR REPLACE FUNCTION rag._documents_before_write()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    long_title boolean;
    long_url boolean;
    long_source boolean;
    long_table boolean;
    long_key boolean;
BEGIN
    IF rag._restoring() THEN
        RETURN NEW;  -- as dumped
    END IF;
    PERFORM rag._check_content(NEW.content, 'rag.documents');
    IF NEW.source IS NULL OR btrim(NEW.source) = '' THEN
        RAISE EXCEPTION 'rag.documents: source is empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'source names the document, e.g. a file name or URL';
    END IF;
    -- every reader's hit and citation carries them (a 30 MB title: review 44b); an
    -- attached table's longer ones are cut by rag._apply_rows, not refused. Checked when
    -- written: a row from before 0.9.0 keeps its own, and still updates.
    IF TG_OP = 'UPDATE' THEN
        long_title := NEW.title IS DISTINCT FROM OLD.title AND char_length(NEW.title) > 4096;
        long_url := NEW.url IS DISTINCT FROM OLD.url AND char_length(NEW.url) > 8192;
        long_source := NEW.source IS DISTINCT FROM OLD.source AND char_length(NEW.source) > 4096;
        long_table := NEW.source_table IS DISTINCT FROM OLD.source_table AND char_length(NEW.source_table) > 1024;
        long_key := NEW.source_key IS DISTINCT FROM OLD.source_key AND char_length(NEW.source_key::text) > 65536;
    ELSE
        long_title := char_length(NEW.title) > 4096;
        long_url := char_length(NEW.url) > 8192;
        long_source := char_length(NEW.source) > 4096;
        long_table := char_length(NEW.source_table) > 1024;
        long_key := char_length(NEW.source_key::text) > 65536;
    END IF;
    IF long_title THEN
        RAISE EXCEPTION 'rag.documents: title is % characters, over the limit of 4096', char_length(NEW.title)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'a title names the document: keep the text in content';
    ELSIF long_url THEN
        RAISE EXCEPTION 'rag.documents: url is % characters, over the limit of 8192', char_length(NEW.url)
            USING ERRCODE = 'program_limit_exceeded';
    ELSIF long_table THEN
        -- (every search hit carries them too: 200 MB each, review 46; a table's qualified
        -- name is at most 257 characters; an attached row's key is its table's primary key,
        -- whose JSON text escapes may make 6 times as long: 65,536, review 46b)
        RAISE EXCEPTION 'rag.documents: source_table is % characters, over the limit of 1024',
                        char_length(NEW.source_table)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'source_table is an attached table''s name, set by rag';
    ELSIF long_key THEN
        RAISE EXCEPTION 'rag.documents: source_key is % characters, over the limit of 65536',
                        char_length(NEW.source_key::text)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'source_key is an attached row''s primary key, set by rag';
    ELSIF long_source AND NOT coalesce(NEW.attachment_id IS NOT NULL
                                       AND NEW.source = NEW.source_table || '#' || NEW.source_key::text, false) THEN
        -- (an attached row's source is its table and key, bounded above; review 46: any
        -- attachment_id let a hand-written source past the limit)
        RAISE EXCEPTION 'rag.documents: source is % characters, over the limit of 4096', char_length(NEW.source)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'source names the document, e.g. a file name or URL';
    END IF;
    NEW.content_hash := sha256(convert_to(NEW.content, 'UTF8'));
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- rag._chunks_before_write
-- Row trigger: a chunk is at most 131,072 characters, the longest rag makes (16 a token of
-- the widest window rag.chunk_target_tokens allows), and its heading at most 4,096. A writer may write chunks of its own;
-- every reader of its tenant carries a retrieved chunk's text, and 30 of 30 MB held 900 MB
-- for a search (hostile review 43). Its windows' bounds and lengths describe at most 12
-- windows (lexical.MAX_WINDOW_SPANS), as rag makes them: a writer may write them, and
-- every reader's search read them into Python (40 M entries: +2.3 GB, review 46). Its
-- embedding has its model's registered dimensions (review 48). A restore stores rows as
-- dumped.
CREATE OR REPLACE FUNCTION rag._chunks_before_write()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rag._restoring() THEN
        RETURN NEW;
    ELSIF TG_OP = 'INSERT' AND char_length(NEW.content) > 131072 THEN
        RAISE EXCEPTION 'rag.chunks: a chunk of document % is % characters, over the limit of 131072',
                        NEW.document_id, char_length(NEW.content)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'write the text as a document (rag.ingest, or INSERT INTO rag.documents): rag chunks it';
    ELSIF TG_OP = 'INSERT' AND char_length(NEW.heading) > 4096 THEN
        -- (every reader carries it too; rag's own are at most 3 titles of 200: review 44b)
        RAISE EXCEPTION 'rag.chunks: the heading of a chunk of document % is % characters, over the limit of 4096',
                        NEW.document_id, char_length(NEW.heading)
            USING ERRCODE = 'program_limit_exceeded';
    ELSIF cardinality(NEW.window_bounds) > 13 OR cardinality(NEW.window_lengths) > 12 THEN
        RAISE EXCEPTION 'rag.chunks: a chunk of document % has % window bounds and % window lengths, over the limit of 13 and 12',
                        NEW.document_id, coalesce(cardinality(NEW.window_bounds), 0),
                        coalesce(cardinality(NEW.window_lengths), 0)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'leave them NULL: rag.work fills them in';
    ELSIF array_ndims(NEW.window_bounds) > 1 OR array_ndims(NEW.window_lengths) > 1 THEN
        -- (a reader's search failed on them with a Python TypeError: review 46b)
        RAISE EXCEPTION 'rag.chunks: the window bounds and lengths of a chunk of document % are not lists of numbers',
                        NEW.document_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'leave them NULL: rag.work fills them in';
    ELSIF (TG_OP = 'INSERT' OR NEW.model IS DISTINCT FROM OLD.model
           OR pg_catalog.array_length(NEW.embedding::pg_catalog.float4[], 1) <> pg_catalog.array_length(OLD.embedding::pg_catalog.float4[], 1))
          AND pg_catalog.array_length(NEW.embedding::pg_catalog.float4[], 1) IS DISTINCT FROM
              (SELECT m.dimensions FROM rag.models AS m WHERE m.name = NEW.model AND m.kind = 'embed') THEN
        -- (a writer's chunk of another model's name and dimensions in the shared partition
        -- made the owner's rag.create_model_index of that model fail, for every tenant:
        -- review 48; the dimensions by a cast: a call of vector_dims by name can be made
        -- ambiguous by a plant, review 23)
        RAISE EXCEPTION 'rag.chunks: a chunk of document % has an embedding of % dimensions, which is not one of embedding model %',
                        NEW.document_id, pg_catalog.array_length(NEW.embedding::pg_catalog.float4[], 1), rag._shown(NEW.model)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'an embedding has its registered model''s dimensions (rag.models); rag.ingest makes them';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER chunks_before_write
    BEFORE INSERT OR UPDATE OF window_bounds, window_lengths, model, embedding ON rag.chunks
    FOR EACH ROW EXECUTE FUNCTION rag._chunks_before_write();

-- rag._documents_after_insert / rag._documents_after_update
-- Statement triggers: index every inserted row, and every updated row whose content
-- (or declared format) changed, in one call.
CREATE OR REPLACE FUNCTION rag._documents_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rag._restoring() THEN
        RETURN NULL;  -- the chunks are in the dump
    END IF;
    PERFORM rag._index_documents(ARRAY(SELECT id FROM new_rows ORDER BY id));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rag._documents_after_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rag._restoring() THEN
        RETURN NULL;
    END IF;
    PERFORM rag._index_documents(ARRAY(
        SELECT n.id FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
        WHERE n.content_hash IS DISTINCT FROM o.content_hash
           OR n.metadata->>'format' IS DISTINCT FROM o.metadata->>'format'
        ORDER BY n.id));
    RETURN NULL;
END
$$;

-- rag._documents_after_delete
-- Statement trigger: the deleted documents' chunks go with them, deleted through
-- rag.chunks so that its statement trigger takes their postings and statistics along.
CREATE OR REPLACE FUNCTION rag._documents_after_delete()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM rag.chunks AS c USING old_rows AS o WHERE c.tenant = o.tenant AND c.document_id = o.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER documents_after_delete AFTER DELETE ON rag.documents
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._documents_after_delete();
CREATE OR REPLACE TRIGGER documents_before_write BEFORE INSERT OR UPDATE ON rag.documents
    FOR EACH ROW EXECUTE FUNCTION rag._documents_before_write();
CREATE OR REPLACE TRIGGER documents_after_insert AFTER INSERT ON rag.documents
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._documents_after_insert();
CREATE OR REPLACE TRIGGER documents_after_update AFTER UPDATE ON rag.documents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._documents_after_update();

-- rag.ingest
-- Add or replace the document named `source`; returns its id. Unchanged content does no
-- work; changed content re-chunks and embeds only chunks whose text is new.
-- metadata->>'format' may be 'markdown', 'text' or 'html' (default: detected).
CREATE OR REPLACE FUNCTION rag.ingest(
    content  text,
    source   text,
    title    text DEFAULT NULL,
    url      text DEFAULT NULL,
    metadata jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    doc_id bigint;
BEGIN
    PERFORM rag._check_content(content, 'rag.ingest');
    IF source IS NULL THEN
        RAISE EXCEPTION 'rag.ingest: source is NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'source names the document, e.g. a file name or URL';
    ELSIF btrim(source) = '' THEN
        RAISE EXCEPTION 'rag.ingest: source is empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'source names the document, e.g. a file name or URL';
    ELSIF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'rag.ingest: metadata must be a JSON object, got %', coalesce(jsonb_typeof(metadata), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass e.g. ''{"lang": "en"}''::jsonb';
    ELSIF metadata ? 'format' AND (metadata->>'format') NOT IN ('auto', 'markdown', 'text', 'html') THEN
        RAISE EXCEPTION 'rag.ingest: metadata->>''format'' is %, not one of auto, markdown, text, html',
                        rag._shown(metadata->>'format')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO rag.documents AS d (source, title, url, metadata, content)
    VALUES (ingest.source, ingest.title, ingest.url, ingest.metadata, ingest.content)
    ON CONFLICT ON CONSTRAINT documents_tenant_source_key DO UPDATE
        SET content  = excluded.content,
            title    = coalesce(excluded.title, d.title),
            url      = excluded.url,
            metadata = excluded.metadata
        WHERE (d.content_hash, d.url, d.metadata) IS DISTINCT FROM (excluded.content_hash, excluded.url, excluded.metadata)
           OR (excluded.title IS NOT NULL AND excluded.title IS DISTINCT FROM d.title)
    RETURNING d.id INTO doc_id;

    IF doc_id IS NULL THEN  -- same source, nothing changed
        SELECT d.id INTO doc_id FROM rag.documents AS d
        WHERE d.tenant = rag.current_tenant() AND d.source = ingest.source;
    END IF;
    RETURN doc_id;
END
$$;
