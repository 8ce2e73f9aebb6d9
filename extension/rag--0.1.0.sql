-- rag 0.1.0: built from sql/ by scripts/build_sql.py; do not edit.
\echo Use "CREATE EXTENSION rag CASCADE" to load this file. \quit

-- ---- 000-tenancy.sql ----
-- Tenancy: every row of tenant data carries a tenant, and row-level security (see
-- 900-security.sql) shows each session only its own tenant's rows.
--
-- The tenant of a session is never taken from a function argument:
--   * SET rag.tenant = 'acme' is honoured only if the current role may act for 'acme'
--     (a row in rag.tenant_roles for the role or a role it is a member of);
--   * unset, it is the role's only tenant in rag.tenant_roles, or else the role's own name
--     (a superuser, a member of every role, always gets its own name).

CREATE TABLE rag.tenant_roles (
    tenant     text NOT NULL CHECK (btrim(tenant) <> ''),
    role_name  name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_name, tenant)
);
COMMENT ON TABLE rag.tenant_roles IS
  'Which roles (or members of which roles) may act for which tenant; managed with rag.grant_tenant.';
SELECT pg_catalog.pg_extension_config_dump('rag.tenant_roles', '');

-- rag._is_member
-- Whether the current role is (a member of) this role; false for a dropped role.
CREATE FUNCTION rag._is_member(role_name name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles AS r
                   WHERE r.rolname = role_name AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))
$$;

-- rag.current_tenant
-- The tenant this session acts for (see above). Raises 42501 if rag.tenant names a
-- tenant the current role may not act for.
CREATE FUNCTION rag.current_tenant()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted text := nullif(btrim(current_setting('rag.tenant', true)), '');
    only_one text;
BEGIN
    IF wanted IS NULL THEN
        IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user) THEN
            SELECT min(t.tenant) INTO only_one FROM rag.tenant_roles AS t
            WHERE rag._is_member(t.role_name)
            HAVING count(DISTINCT t.tenant) = 1;
        END IF;
        RETURN coalesce(only_one, current_user::text);
    ELSIF wanted = current_user::text OR EXISTS (
            SELECT 1 FROM rag.tenant_roles AS t
            WHERE t.tenant = wanted AND rag._is_member(t.role_name)) THEN
        RETURN wanted;
    END IF;
    RAISE EXCEPTION 'rag: role % may not act for tenant %', current_user, quote_literal(wanted)
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'RESET rag.tenant, or ask an administrator: SELECT rag.grant_tenant(role, tenant)';
END
$$;

-- rag.grant_tenant / rag.revoke_tenant (rag_admin)
-- Allow a role (and its members) to act for a tenant with SET rag.tenant, or stop it.
CREATE FUNCTION rag.grant_tenant(role_name name, tenant text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF role_name IS NULL OR NOT EXISTS (SELECT 1 FROM pg_roles AS r WHERE r.rolname = grant_tenant.role_name) THEN
        RAISE EXCEPTION 'rag.grant_tenant: role % does not exist', coalesce(quote_ident(role_name), 'NULL')
            USING ERRCODE = 'undefined_object';
    ELSIF tenant IS NULL OR btrim(tenant) = '' THEN
        RAISE EXCEPTION 'rag.grant_tenant: tenant is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO rag.tenant_roles AS t (role_name, tenant) VALUES (grant_tenant.role_name, grant_tenant.tenant)
    ON CONFLICT DO NOTHING;
END
$$;

CREATE FUNCTION rag.revoke_tenant(role_name name, tenant text)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM rag.tenant_roles AS t
               WHERE t.role_name = revoke_tenant.role_name AND t.tenant = revoke_tenant.tenant RETURNING 1)
    SELECT count(*) > 0 FROM d
$$;

-- ---- 005-roles.sql ----
-- The three roles of rag (cluster-wide, created once, kept across DROP EXTENSION):
--   rag_reader  search and ask
--   rag_writer  rag_reader + ingest, insert/update/delete documents, attach tables
--   rag_admin   rag_writer + tenants, models, keys, settings
-- Grant them to login roles: GRANT rag_writer TO app_user. Privileges: 999-privileges.sql.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rag_reader') THEN
        CREATE ROLE rag_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rag_writer') THEN
        CREATE ROLE rag_writer NOLOGIN IN ROLE rag_reader;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rag_admin') THEN
        CREATE ROLE rag_admin NOLOGIN IN ROLE rag_writer;
    END IF;
END
$$;

-- ---- 010-schema.sql ----
-- rag.documents, rag.chunks: what is stored (document -> chunk -> embedding).
-- Every row has a tenant (000-tenancy.sql); row-level security is in 900-security.sql.
-- Unique keys start with the tenant, so a layout sharded by tenant (Citus) keeps them.

CREATE TABLE rag.documents (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant       text NOT NULL DEFAULT rag.current_tenant(),
    source       text NOT NULL,
    title        text,
    url          text,
    metadata     jsonb NOT NULL DEFAULT '{}',
    content      text NOT NULL,
    content_hash bytea NOT NULL,          -- sha256(content), set by the BEFORE trigger
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT documents_tenant_source_key UNIQUE (tenant, source),
    CONSTRAINT documents_tenant_id_key UNIQUE (tenant, id),
    CONSTRAINT documents_metadata_is_object CHECK (jsonb_typeof(metadata) = 'object')
);
COMMENT ON TABLE rag.documents IS
  'One row per source document. INSERT/UPDATE index the row (chunk + embed) through triggers.';

CREATE TABLE rag.chunks (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant       text NOT NULL DEFAULT rag.current_tenant(),  -- always the document's tenant
    document_id  bigint NOT NULL,
    ord          int NOT NULL,            -- position within the document, from 0
    content      text NOT NULL,           -- an exact slice of the document's text
    heading      text,                    -- heading path of its section, e.g. 'Refunds > Timing'
    tokens       int NOT NULL,            -- word pieces of the embedding model
    content_hash bytea NOT NULL,          -- sha256(content): embeddings are reused by (model, hash)
    model        text NOT NULL,           -- embedding model that produced `embedding`
    embedding    vector(384) NOT NULL,
    tsv          tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chunks_document_ord_key UNIQUE (document_id, ord),  -- also the btree on document_id
    -- the chunk's tenant is its document's tenant, and chunks go with their document
    CONSTRAINT chunks_document_fkey FOREIGN KEY (tenant, document_id)
        REFERENCES rag.documents (tenant, id) ON DELETE CASCADE
);
COMMENT ON TABLE rag.chunks IS 'Chunks of rag.documents with their embeddings; maintained by rag.';

CREATE INDEX chunks_embedding_hnsw ON rag.chunks
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX chunks_tsv_gin ON rag.chunks USING gin (tsv);
CREATE INDEX chunks_model_hash ON rag.chunks (tenant, model, content_hash);
CREATE INDEX chunks_tenant ON rag.chunks (tenant);

-- user data is dumped by pg_dump (extension tables are not, by default)
SELECT pg_catalog.pg_extension_config_dump('rag.documents', '');
SELECT pg_catalog.pg_extension_config_dump('rag.chunks', '');

-- ---- 020-settings.sql ----
-- rag.settings
-- Every knob of the extension, its current value and default. Values are ordinary
-- Postgres settings: SET rag.x = ... (session), ALTER DATABASE ... SET rag.x = ... (database).
CREATE FUNCTION rag.settings()
RETURNS TABLE (name text, value text, default_value text, description text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.name,
           coalesce(nullif(current_setting('rag.' || d.name, true), ''), d.default_value),
           d.default_value, d.description
    FROM (VALUES
        ('embedding_model',       'all-MiniLM-L6-v2', 'local embedding model for new chunks and queries'),
        ('embedding_batch_size',  '1',        'texts per model run; 1 is fastest on CPU and makes a text''s vector independent of its batch'),
        ('embedding_threads',     '1',        'onnxruntime intra-op threads per backend'),
        ('chunk_target_tokens',   '200',      'chunks are packed up to this many model tokens'),
        ('chunk_overlap_tokens',  '32',       'tokens repeated from the end of the previous chunk'),
        ('max_document_bytes',    '10000000', 'largest document accepted, in bytes of UTF-8'),
        ('max_query_chars',       '4000',     'longest question or search query accepted'),
        ('max_k',                 '1000',     'largest k accepted by rag.search and rag.ask'),
        ('ask_min_similarity',    '0.3',      'rag.ask answers only from sentences at least this similar to the question')
    ) AS d (name, default_value, description)
$$;
COMMENT ON FUNCTION rag.settings() IS 'rag.settings: every rag.* setting with its current value and default';

-- rag._setting: one setting's current value (internal)
CREATE FUNCTION rag._setting(setting_name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT value FROM rag.settings() WHERE name = setting_name $$;

-- ---- 100-python.sql ----
-- PL/Python entry points. Each body is a few lines: the prologue (expanded at build time
-- from sql/python-prologue.py) puts the extension's own versioned package directory on
-- sys.path once per session, then the body calls into plpy/ragpg/pg.py.

-- rag.embed
-- The embedding of a text with the current embedding model (rag.embedding_model).
-- Useful to compare texts in SQL: SELECT rag.embed('a') <=> rag.embed('b').
CREATE FUNCTION rag.embed(input text)
RETURNS vector
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
    if "ragpg" not in GD:
        import sys
        for _p in ("/usr/local/lib/ragpg/0.1.0/deps", "/usr/local/lib/ragpg/0.1.0"):
            if _p not in sys.path:
                sys.path.insert(0, _p)
        import ragpg.pg
        GD["ragpg"] = ragpg
    ragpg = GD["ragpg"]
    if input is None or not input.strip():
        plpy.error("rag.embed: input is empty", sqlstate="22023",
                   hint="pass the text to embed")
    return ragpg.pg.embed_query(plpy, input)
$python$;

-- rag._index_documents
-- Chunk and embed these documents and replace their chunks (called by the triggers).
CREATE FUNCTION rag._index_documents(document_ids bigint[])
RETURNS int
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    if "ragpg" not in GD:
        import sys
        for _p in ("/usr/local/lib/ragpg/0.1.0/deps", "/usr/local/lib/ragpg/0.1.0"):
            if _p not in sys.path:
                sys.path.insert(0, _p)
        import ragpg.pg
        GD["ragpg"] = ragpg
    ragpg = GD["ragpg"]
    return ragpg.pg.index_documents(plpy, document_ids or [])
$python$;

-- rag.backend_stats
-- Counters of this backend: model calls, texts embedded, chunks reused, time per stage.
CREATE FUNCTION rag.backend_stats()
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    if "ragpg" not in GD:
        import sys
        for _p in ("/usr/local/lib/ragpg/0.1.0/deps", "/usr/local/lib/ragpg/0.1.0"):
            if _p not in sys.path:
                sys.path.insert(0, _p)
        import ragpg.pg
        GD["ragpg"] = ragpg
    ragpg = GD["ragpg"]
    return ragpg.pg.backend_stats()
$python$;

-- ---- 200-documents.sql ----
-- Ingest: documents in, chunks out. Plain INSERT/UPDATE on rag.documents index through
-- statement-level triggers (one call per statement, embeddings batched across rows);
-- rag.ingest upserts by source and does no work for unchanged content.

-- rag._check_content
-- Raise a clear error for content that cannot be indexed (internal).
CREATE FUNCTION rag._check_content(content text, caller text)
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
                  HINT = 'split the document, or raise the limit: SET rag.max_document_bytes = ...';
    END IF;
END
$$;

-- rag._documents_before_write
-- Row trigger: validate content and metadata, keep content_hash and updated_at.
CREATE FUNCTION rag._documents_before_write()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM rag._check_content(NEW.content, 'rag.documents');
    IF NEW.source IS NULL OR btrim(NEW.source) = '' THEN
        RAISE EXCEPTION 'rag.documents: source is empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'source names the document, e.g. a file name or URL';
    END IF;
    NEW.content_hash := sha256(convert_to(NEW.content, 'UTF8'));
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- rag._documents_after_insert / rag._documents_after_update
-- Statement triggers: index every inserted row, and every updated row whose content
-- (or declared format) changed, in one call.
CREATE FUNCTION rag._documents_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM rag._index_documents(ARRAY(SELECT id FROM new_rows ORDER BY id));
    RETURN NULL;
END
$$;

CREATE FUNCTION rag._documents_after_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM rag._index_documents(ARRAY(
        SELECT n.id FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
        WHERE n.content_hash IS DISTINCT FROM o.content_hash
           OR n.metadata->>'format' IS DISTINCT FROM o.metadata->>'format'
        ORDER BY n.id));
    RETURN NULL;
END
$$;

CREATE TRIGGER documents_before_write BEFORE INSERT OR UPDATE ON rag.documents
    FOR EACH ROW EXECUTE FUNCTION rag._documents_before_write();
CREATE TRIGGER documents_after_insert AFTER INSERT ON rag.documents
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._documents_after_insert();
CREATE TRIGGER documents_after_update AFTER UPDATE ON rag.documents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._documents_after_update();

-- rag.ingest
-- Add or replace the document named `source`; returns its id. Unchanged content does no
-- work; changed content re-chunks and embeds only chunks whose text is new.
-- metadata->>'format' may be 'markdown', 'text' or 'html' (default: detected).
CREATE FUNCTION rag.ingest(
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
                        quote_literal(metadata->>'format')
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

-- ---- 300-search.sql ----
-- Retrieval: vector leg (HNSW, cosine) + lexical leg (full text, any query term),
-- fused with Reciprocal Rank Fusion. One call, one round trip.

-- rag._check_query
-- Validate a question or search query and k (internal).
CREATE FUNCTION rag._check_query(query text, k int, caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_chars int := rag._setting('max_query_chars')::int;
    max_k int := rag._setting('max_k')::int;
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION '%: query is NULL', caller USING ERRCODE = 'null_value_not_allowed';
    ELSIF btrim(query, E' \t\r\n\f\v') = '' THEN
        RAISE EXCEPTION '%: query is empty', caller
            USING ERRCODE = 'invalid_parameter_value', HINT = 'ask a question with some words in it';
    ELSIF length(query) > max_chars THEN
        RAISE EXCEPTION '%: query is % characters, over the limit of %', caller, length(query), max_chars
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'shorten the query, or raise the limit: SET rag.max_query_chars = ...';
    ELSIF k IS NULL OR k < 1 OR k > max_k THEN
        RAISE EXCEPTION '%: k must be between 1 and %, got %', caller, max_k, coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- rag.any_terms_tsquery
-- A tsquery matching any of the query's terms (english stemming, stop words dropped).
-- websearch_to_tsquery requires every term, and natural questions then match nothing.
CREATE FUNCTION rag.any_terms_tsquery(query text)
RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery
    FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, query))) AS lexeme
$$;

-- rag.search
-- Hybrid search: top 30 by cosine (HNSW, ef_search 100) and top 30 by full-text rank,
-- fused with RRF (c = 60). Returns k chunks, best first, with each leg's rank.
CREATE FUNCTION rag.search(query text, k int DEFAULT 8)
RETURNS TABLE (
    chunk_id     bigint,
    document_id  bigint,
    ord          int,
    content      text,
    score        double precision,
    vector_rank  int,
    lexical_rank int)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET hnsw.ef_search = 100
AS $$
DECLARE
    qvec vector;
    tsq  tsquery;
BEGIN
    PERFORM rag._check_query(query, k, 'rag.search');
    qvec := rag.embed(query);
    tsq := rag.any_terms_tsquery(query);
    RETURN QUERY
    WITH vec AS (
        SELECT v.id, row_number() OVER (ORDER BY v.dist, v.id) AS r
        FROM (SELECT c.id, c.embedding <=> qvec AS dist
              FROM rag.chunks AS c
              ORDER BY c.embedding <=> qvec
              LIMIT 30) AS v
    ), lex AS (
        SELECT l.id, row_number() OVER (ORDER BY l.rank DESC, l.id) AS r
        FROM (SELECT c.id, ts_rank(c.tsv, tsq) AS rank
              FROM rag.chunks AS c
              WHERE c.tsv @@ tsq
              ORDER BY rank DESC, c.id
              LIMIT 30) AS l
    ), fused AS (
        SELECT coalesce(vec.id, lex.id) AS id, vec.r AS vr, lex.r AS lr,
               coalesce(1.0 / (60 + vec.r), 0) + coalesce(1.0 / (60 + lex.r), 0) AS rrf
        FROM vec FULL JOIN lex ON lex.id = vec.id
    )
    SELECT c.id, c.document_id, c.ord, c.content, f.rrf::double precision, f.vr::int, f.lr::int
    FROM fused AS f JOIN rag.chunks AS c ON c.id = f.id
    ORDER BY f.rrf DESC, f.vr NULLS LAST, c.id
    LIMIT k;
END
$$;

-- ---- 400-ask.sql ----
-- Answers: retrieve, then answer from the retrieved chunks with [n] citations.

-- rag.ask
-- Answer a question from the documents. Returns jsonb
-- {answer, citations: [{index, chunk_id, document_id, source, title, url, snippet}], mode, model}.
-- Without an LLM configured the answer is extractive (sentences of the retrieved chunks).
CREATE FUNCTION rag.ask(question text, k int DEFAULT 8)
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    if "ragpg" not in GD:
        import sys
        for _p in ("/usr/local/lib/ragpg/0.1.0/deps", "/usr/local/lib/ragpg/0.1.0"):
            if _p not in sys.path:
                sys.path.insert(0, _p)
        import ragpg.pg
        GD["ragpg"] = ragpg
    ragpg = GD["ragpg"]
    plpy.execute(plpy.prepare("SELECT rag._check_query($1, $2, 'rag.ask')", ["text", "int"]), [question, k])
    return ragpg.pg.ask(plpy, question, k)
$python$;

-- ---- 900-security.sql ----
-- Row-level security: a session sees and writes only its tenant's rows
-- (rag.current_tenant(), evaluated once per statement as an init plan).
-- FORCE makes the policies apply to the tables' owner too; superusers and roles with
-- BYPASSRLS still see everything, as everywhere in Postgres.

ALTER TABLE rag.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.documents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rag.documents
    USING (tenant = (SELECT rag.current_tenant()))
    WITH CHECK (tenant = (SELECT rag.current_tenant()));

ALTER TABLE rag.chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rag.chunks
    USING (tenant = (SELECT rag.current_tenant()))
    WITH CHECK (tenant = (SELECT rag.current_tenant()));

-- a role sees only the tenant grants that apply to it; rag_admin manages all of them
ALTER TABLE rag.tenant_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.tenant_roles FORCE ROW LEVEL SECURITY;
CREATE POLICY own_grants ON rag.tenant_roles FOR SELECT
    USING (rag._is_member(role_name));
CREATE POLICY admin_all ON rag.tenant_roles TO rag_admin USING (true) WITH CHECK (true);

-- ---- 990-search-path.sql ----
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
              WHERE e.extname = 'rag' AND d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e' LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', fn, vec_schema);
    END LOOP;
END
$$;

-- ---- 999-privileges.sql ----
-- Privileges, all in one place. Nothing in schema rag is usable by PUBLIC; the three
-- roles of 005-roles.sql get what their job needs. Functions run as the caller
-- (security invoker), so row-level security applies inside them too; internal helpers
-- that public functions call are granted with them.

REVOKE ALL ON SCHEMA rag FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA rag FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA rag FROM PUBLIC;

-- rag_reader: search and ask
GRANT USAGE ON SCHEMA rag TO rag_reader;
GRANT SELECT ON rag.documents, rag.chunks, rag.tenant_roles TO rag_reader;
GRANT EXECUTE ON FUNCTION
    rag.current_tenant(),
    rag._is_member(name),
    rag.settings(),
    rag._setting(text),
    rag.embed(text),
    rag.any_terms_tsquery(text),
    rag._check_query(text, int, text),
    rag.search(text, int),
    rag.ask(text, int),
    rag.backend_stats()
TO rag_reader;

-- rag_writer: ingest (documents in, chunks written by the triggers as the caller)
GRANT INSERT, UPDATE, DELETE ON rag.documents TO rag_writer;
GRANT INSERT, DELETE ON rag.chunks TO rag_writer;
GRANT EXECUTE ON FUNCTION
    rag.ingest(text, text, text, text, jsonb),
    rag._check_content(text, text),
    rag._index_documents(bigint[])
TO rag_writer;

-- rag_admin: tenants (later: models, keys)
GRANT INSERT, DELETE ON rag.tenant_roles TO rag_admin;
GRANT EXECUTE ON FUNCTION
    rag.grant_tenant(name, text),
    rag.revoke_tenant(name, text)
TO rag_admin;
