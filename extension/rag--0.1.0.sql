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

-- rag._may_act_for
-- Whether the current role may act for a tenant: its own name, a tenant granted to it
-- (or to a role it is a member of) in rag.tenant_roles, or any tenant for a superuser.
CREATE FUNCTION rag._may_act_for(tenant text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tenant = current_user::text
        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)
        OR EXISTS (SELECT 1 FROM rag.tenant_roles AS t
                   WHERE t.tenant = _may_act_for.tenant AND rag._is_member(t.role_name))
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
    ELSIF rag._may_act_for(wanted) THEN
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
        ('chunk_target_tokens',   '254',      'chunks are packed up to this many model tokens (254 fills MiniLM''s window)'),
        ('chunk_overlap_tokens',  '32',       'tokens repeated from the end of the previous chunk'),
        ('max_document_bytes',    '10000000', 'largest document accepted, in bytes of UTF-8'),
        ('max_query_chars',       '4000',     'longest question or search query accepted'),
        ('max_k',                 '1000',     'largest k accepted by rag.search and rag.ask'),
        ('bm25_k1',               '0.9',      'BM25 term-frequency saturation (lexical leg)'),
        ('bm25_b',                '0.4',      'BM25 length normalisation, 0..1 (lexical leg)'),
        ('ef_search',             '100',      'HNSW candidate list size (at least the vector leg''s k)'),
        ('iterative_scan',        'relaxed_order', 'pgvector 0.8 iterative index scans: off, relaxed_order or strict_order'),
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

-- Errors: a PL/Python function that fails returns NULL and leaves its error pending; the
-- plpgsql function that called it raises it with rag._raise_python_error(), so users see
-- 'rag.x: message' with its SQLSTATE, not PL/Python's 'plpy.Error: ...'.

-- rag._python_error / rag._raise_python_error (internal)
CREATE FUNCTION rag._python_error()
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
    return ragpg.pg.take_error()
$python$;

CREATE FUNCTION rag._raise_python_error()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err jsonb := rag._python_error();
BEGIN
    IF err IS NULL THEN
        RAISE EXCEPTION 'rag: internal error: a Python function returned NULL without an error'
            USING ERRCODE = 'internal_error';
    END IF;
    RAISE EXCEPTION USING
        MESSAGE = coalesce(err->>'message', 'rag: unknown error'),
        ERRCODE = coalesce(err->>'sqlstate', 'XX000'),
        DETAIL = coalesce(err->>'detail', ''),
        HINT = coalesce(err->>'hint', '');
END
$$;

-- rag._embed (internal): the embedding, or NULL with a pending error
CREATE FUNCTION rag._embed(input text)
RETURNS vector
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
    return ragpg.pg.embed_query(plpy, input)
$python$;

-- rag.embed
-- The embedding of a text with the current embedding model (rag.embedding_model).
-- Useful to compare texts in SQL: SELECT rag.embed('a') <=> rag.embed('b').
CREATE FUNCTION rag.embed(input text)
RETURNS vector
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v vector;
BEGIN
    IF input IS NULL OR btrim(input, E' \t\r\n\f\v') = '' THEN
        RAISE EXCEPTION 'rag.embed: input is empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass the text to embed';
    END IF;
    v := rag._embed(input);
    IF v IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN v;
END
$$;

-- rag._index_documents_py / rag._index_documents (internal)
-- Chunk and embed these documents and replace their chunks (called by the triggers).
CREATE FUNCTION rag._index_documents_py(document_ids bigint[])
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

CREATE FUNCTION rag._index_documents(document_ids bigint[])
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int := rag._index_documents_py(document_ids);
BEGIN
    IF n IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN n;
END
$$;

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

-- rag._filter_predicate
-- SQL predicate on documents alias d for a search filter (internal). A filter is a JSON
-- object: "source" matches the document's source (a string, or an array of strings);
-- every other key must match the document's metadata (jsonb containment, @>).
CREATE FUNCTION rag._filter_predicate(filter jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[] := ARRAY['true'];
    src jsonb := filter->'source';
BEGIN
    IF filter IS NULL THEN
        RETURN NULL;
    ELSIF jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION 'rag.search: filter must be a JSON object, got %', jsonb_typeof(filter)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. ''{"source": "handbook.md"}'' or ''{"team": "support"}'' (matched against metadata)';
    END IF;
    IF src IS NOT NULL THEN
        IF jsonb_typeof(src) = 'string' THEN
            parts := parts || format('d.source = %L', src->>0);
        ELSIF jsonb_typeof(src) = 'array' AND NOT EXISTS (
                SELECT 1 FROM jsonb_array_elements(src) AS e WHERE jsonb_typeof(e) <> 'string') THEN
            parts := parts || format('d.source = ANY (%L::text[])',
                                     ARRAY(SELECT jsonb_array_elements_text(src)));
        ELSE
            RAISE EXCEPTION 'rag.search: filter->''source'' must be a string or an array of strings, got %',
                            jsonb_typeof(src) USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF (filter - 'source') <> '{}'::jsonb THEN
        parts := parts || format('d.metadata @> %L::jsonb', (filter - 'source')::text);
    END IF;
    RETURN array_to_string(parts, ' AND ');
END
$$;

-- rag.search
-- Hybrid search: the vector leg (HNSW, cosine) and the lexical leg (BM25 over any query
-- term, or ts_rank) each give their top candidates, fused with weighted Reciprocal Rank
-- Fusion: score = vector_weight / (rrf_c + vector_rank) + lexical_weight / (rrf_c + lexical_rank).
--   mode     'hybrid' (default), 'vector' or 'lexical'
--   filter   JSON object on documents: {"source": ...} and/or metadata keys (see above);
--            HNSW iterative scans keep returning k rows when the filter is selective
-- HNSW knobs come from the settings rag.ef_search and rag.iterative_scan.
-- Results always come from the current tenant, also for roles that bypass row-level security.
CREATE FUNCTION rag.search(
    query           text,
    k               int DEFAULT 8,
    mode            text DEFAULT 'hybrid',
    filter          jsonb DEFAULT NULL,
    vector_k        int DEFAULT 30,
    lexical_k       int DEFAULT 30,
    rrf_c           int DEFAULT 60,
    vector_weight   float8 DEFAULT 1,
    lexical_weight  float8 DEFAULT 1,
    lexical_ranking text DEFAULT 'bm25')
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
AS $$
DECLARE
    max_k int := rag._setting('max_k')::int;
    pred  text := rag._filter_predicate(filter);
    qvec  vector;
    tsq   tsquery;
    vec_sql text := 'SELECT NULL::bigint AS id, NULL::bigint AS r WHERE false';
    lex_sql text := 'SELECT NULL::bigint AS id, NULL::bigint AS r WHERE false';
    ef int;
BEGIN
    PERFORM rag._check_query(query, k, 'rag.search');
    IF mode IS NULL OR mode NOT IN ('hybrid', 'vector', 'lexical') THEN
        RAISE EXCEPTION 'rag.search: mode must be hybrid, vector or lexical, got %', coalesce(quote_literal(mode), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF lexical_ranking IS NULL OR lexical_ranking NOT IN ('bm25', 'ts_rank') THEN
        RAISE EXCEPTION 'rag.search: lexical_ranking must be bm25 or ts_rank, got %',
                        coalesce(quote_literal(lexical_ranking), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    ELSIF vector_k IS NULL OR lexical_k IS NULL OR least(vector_k, lexical_k) < 1 OR greatest(vector_k, lexical_k) > max_k THEN
        RAISE EXCEPTION 'rag.search: vector_k and lexical_k must be between 1 and %, got % and %',
                        max_k, coalesce(vector_k::text, 'NULL'), coalesce(lexical_k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF rrf_c IS NULL OR rrf_c < 0 THEN
        RAISE EXCEPTION 'rag.search: rrf_c must be >= 0, got %', coalesce(rrf_c::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF vector_weight IS NULL OR lexical_weight IS NULL OR least(vector_weight, lexical_weight) < 0
          OR vector_weight + lexical_weight = 0 OR 'NaN' IN (vector_weight, lexical_weight) THEN
        RAISE EXCEPTION 'rag.search: weights must be >= 0 and not both 0, got % and %',
                        coalesce(vector_weight::text, 'NULL'), coalesce(lexical_weight::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF mode IN ('hybrid', 'vector') THEN
        qvec := rag.embed(query);
        ef := greatest(rag._setting('ef_search')::int, vector_k);
        PERFORM set_config('hnsw.ef_search', ef::text, true);
        PERFORM set_config('hnsw.iterative_scan', rag._setting('iterative_scan'), true);
        vec_sql := format($q$
            SELECT v.id, row_number() OVER (ORDER BY v.dist, v.id) AS r
            FROM (SELECT c.id, c.embedding <=> $1 AS dist
                  FROM rag.chunks AS c %s
                  WHERE c.tenant = $10
                  ORDER BY c.embedding <=> $1
                  LIMIT $2) AS v $q$,
            CASE WHEN pred IS NULL THEN ''
                 ELSE 'JOIN rag.documents AS d ON d.id = c.document_id AND ' || pred END);
    END IF;
    IF mode IN ('hybrid', 'lexical') AND lexical_ranking = 'bm25' THEN
        lex_sql := $q$
            SELECT b.chunk_id AS id, row_number() OVER (ORDER BY b.score DESC, b.chunk_id) AS r
            FROM rag.bm25($3, $4, NULL, NULL, $11) AS b $q$;
    ELSIF mode IN ('hybrid', 'lexical') THEN
        tsq := rag.any_terms_tsquery(query);
        lex_sql := format($q$
            SELECT l.id, row_number() OVER (ORDER BY l.rank DESC, l.id) AS r
            FROM (SELECT c.id, ts_rank(c.tsv, $5) AS rank
                  FROM rag.chunks AS c %s
                  WHERE c.tsv @@ $5 AND c.tenant = $10
                  ORDER BY rank DESC, c.id
                  LIMIT $4) AS l $q$,
            CASE WHEN pred IS NULL THEN ''
                 ELSE 'JOIN rag.documents AS d ON d.id = c.document_id AND ' || pred END);
    END IF;

    RETURN QUERY EXECUTE format($q$
        WITH vec AS (%s), lex AS (%s), fused AS (
            SELECT coalesce(vec.id, lex.id) AS id, vec.r AS vr, lex.r AS lr,
                   coalesce($6 / ($8 + vec.r), 0) + coalesce($7 / ($8 + lex.r), 0) AS rrf
            FROM vec FULL JOIN lex ON lex.id = vec.id)
        SELECT c.id, c.document_id, c.ord, c.content, f.rrf::float8, f.vr::int, f.lr::int
        FROM fused AS f JOIN rag.chunks AS c ON c.id = f.id
        ORDER BY f.rrf DESC, f.vr NULLS LAST, f.lr NULLS LAST, c.id
        LIMIT $9 $q$, vec_sql, lex_sql)
    USING qvec, vector_k, query, lexical_k, tsq, vector_weight, lexical_weight, rrf_c::float8, k,
          rag.current_tenant(), filter;
END
$$;

-- ---- 310-lexical.sql ----
-- The lexical leg: Okapi BM25 computed in SQL over an inverted index that the ingest
-- path keeps up to date (no C extension). Per tenant:
--   rag.postings      (tenant, lexeme, chunk_id, tf, len): one row per lexeme of a chunk,
--                     with its term frequency and the chunk's length in lexemes
--   rag.lexeme_stats  document frequency per lexeme, as insert-only deltas (+n / -n), so
--                     concurrent writers never wait on each other; rag.compact_lexical_stats
--                     folds them (called by the triggers now and then)
--   rag.corpus_stats  chunk count and total length, as deltas too (one row per statement)
-- The statement triggers on rag.chunks maintain all three. to_tsvector('english') is the
-- tokenizer (stemming, stop words), the same as the tsv column and the GIN index.

CREATE TABLE rag.postings (
    tenant   text NOT NULL,
    lexeme   text NOT NULL,
    chunk_id bigint NOT NULL,   -- rag.chunks.id; removed with the chunk by its delete trigger
    tf       int NOT NULL,      -- occurrences of the lexeme in the chunk
    len      int NOT NULL,      -- the chunk's length in lexeme occurrences
    PRIMARY KEY (tenant, lexeme, chunk_id)
);
CREATE INDEX postings_chunk ON rag.postings (chunk_id);

CREATE TABLE rag.lexeme_stats (
    tenant text NOT NULL,
    lexeme text NOT NULL,
    df     bigint NOT NULL       -- a delta: sum(df) per (tenant, lexeme) is the document frequency
);
CREATE INDEX lexeme_stats_key ON rag.lexeme_stats (tenant, lexeme) INCLUDE (df);

CREATE TABLE rag.corpus_stats (
    tenant    text NOT NULL,
    chunks    bigint NOT NULL,   -- deltas, summed per tenant: one row per writing statement
    total_len bigint NOT NULL
);
CREATE INDEX corpus_stats_tenant ON rag.corpus_stats (tenant) INCLUDE (chunks, total_len);

-- rag._chunks_lexical_insert / rag._chunks_lexical_delete
-- Statement triggers on rag.chunks: postings and +/- deltas for the rows of the statement.
CREATE FUNCTION rag._chunks_lexical_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH p AS (
        SELECT n.tenant, u.lexeme, n.id AS chunk_id, cardinality(u.positions) AS tf,
               sum(cardinality(u.positions)) OVER (PARTITION BY n.id) AS len
        FROM new_rows AS n, unnest(n.tsv) AS u
    ), postings AS (
        INSERT INTO rag.postings (tenant, lexeme, chunk_id, tf, len)
        SELECT p.tenant, p.lexeme, p.chunk_id, p.tf, p.len FROM p
    ), df AS (
        INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
        SELECT p.tenant, p.lexeme, count(*) FROM p GROUP BY 1, 2
    )
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT n.tenant, count(*), coalesce(sum(l.len), 0)
    FROM new_rows AS n LEFT JOIN (SELECT DISTINCT p.chunk_id, p.len FROM p) AS l ON l.chunk_id = n.id
    GROUP BY n.tenant;
    PERFORM rag.compact_lexical_stats(t.tenant, 32) FROM (SELECT DISTINCT n.tenant FROM new_rows AS n) AS t;
    RETURN NULL;
END
$$;

CREATE FUNCTION rag._chunks_lexical_delete()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM rag.postings AS po USING old_rows AS o WHERE po.chunk_id = o.id;
    INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
    SELECT o.tenant, u.lexeme, -count(*) FROM old_rows AS o, unnest(o.tsv) AS u GROUP BY 1, 2;
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT o.tenant, -count(*),
           -coalesce(sum((SELECT sum(cardinality(u.positions)) FROM unnest(o.tsv) AS u)), 0)
    FROM old_rows AS o GROUP BY o.tenant;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_lexical_insert AFTER INSERT ON rag.chunks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._chunks_lexical_insert();
CREATE TRIGGER chunks_lexical_delete AFTER DELETE ON rag.chunks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._chunks_lexical_delete();

-- rag.compact_lexical_stats
-- Fold a tenant's statistics deltas into one row per lexeme, once more than
-- `min_statements` writing statements have added deltas since the last time (the
-- triggers call it with 32, so a query sums at most ~33 rows per lexeme). Safe with
-- concurrent writers: DELETE ... RETURNING never hands the same delta to two
-- compactions, and deltas added meanwhile are left for the next one.
CREATE FUNCTION rag.compact_lexical_stats(tenant text DEFAULT rag.current_tenant(), min_statements int DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM (SELECT 1 FROM rag.corpus_stats AS s
                                 WHERE s.tenant = compact_lexical_stats.tenant
                                 LIMIT greatest(min_statements, 0) + 1) AS x;
    IF n <= min_statements OR NOT pg_try_advisory_xact_lock(hashtext('rag.compact_lexical_stats:' || tenant)) THEN
        RETURN 0;
    END IF;
    WITH d AS (DELETE FROM rag.lexeme_stats AS s WHERE s.tenant = compact_lexical_stats.tenant
               RETURNING s.lexeme, s.df)
    INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
    SELECT compact_lexical_stats.tenant, d.lexeme, sum(d.df) FROM d GROUP BY d.lexeme HAVING sum(d.df) <> 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    WITH d AS (DELETE FROM rag.corpus_stats AS s WHERE s.tenant = compact_lexical_stats.tenant
               RETURNING s.chunks, s.total_len)
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT compact_lexical_stats.tenant, sum(d.chunks), sum(d.total_len) FROM d HAVING count(*) > 0;
    RETURN n;
END
$$;

-- rag.query_lexemes
-- The distinct lexemes of a query, as the lexical leg sees them (english stemming).
CREATE FUNCTION rag.query_lexemes(query text)
RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tsvector_to_array(to_tsvector('english'::regconfig, query)) $$;

-- rag.bm25
-- Okapi BM25 over the current tenant's chunks, best first (the lexical leg of rag.search):
--   score = sum over query lexemes t in the chunk of
--           idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))
--   idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
-- N (chunks), df and avglen (lexemes per chunk) are the tenant's corpus statistics; k1
-- and b default to the settings rag.bm25_k1 and rag.bm25_b. Candidates are the postings
-- of the query's lexemes (an index lookup per lexeme); `filter` is rag.search's filter.
CREATE FUNCTION rag.bm25(query text, n int DEFAULT 30, k1 float8 DEFAULT NULL, b float8 DEFAULT NULL,
                         filter jsonb DEFAULT NULL)
RETURNS TABLE (chunk_id bigint, score float8)
LANGUAGE plpgsql STABLE ROWS 30
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    my_tenant text := rag.current_tenant();
    pred text := rag._filter_predicate(filter);
    n_chunks float8;
    total_len float8;
BEGIN
    k1 := coalesce(k1, rag._setting('bm25_k1')::float8);
    b := coalesce(b, rag._setting('bm25_b')::float8);
    IF k1 < 0 OR b < 0 OR b > 1 THEN
        RAISE EXCEPTION 'rag.bm25: k1 must be >= 0 and b between 0 and 1, got % and %', k1, b
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT sum(c.chunks), sum(c.total_len) INTO n_chunks, total_len
    FROM rag.corpus_stats AS c WHERE c.tenant = my_tenant;
    IF coalesce(n_chunks, 0) <= 0 OR query IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT po.chunk_id,
               sum(i.idf * po.tf * ($3 + 1) / (po.tf + $3 * (1 - $4 + $4 * po.len / $6))) AS score
        FROM (SELECT s.lexeme, ln(1 + ($5 - sum(s.df) + 0.5) / (sum(s.df) + 0.5)) AS idf
              FROM rag.lexeme_stats AS s
              WHERE s.tenant = $1 AND s.lexeme = ANY ($2)
              GROUP BY s.lexeme
              HAVING sum(s.df) > 0) AS i
        JOIN rag.postings AS po ON po.tenant = $1 AND po.lexeme = i.lexeme %s
        GROUP BY po.chunk_id
        ORDER BY score DESC, po.chunk_id
        LIMIT $7 $q$,
        CASE WHEN pred IS NULL THEN ''
             ELSE 'JOIN rag.chunks AS c ON c.id = po.chunk_id JOIN rag.documents AS d ON d.id = c.document_id AND ' || pred END)
    USING my_tenant, rag.query_lexemes(query), k1, b, n_chunks, greatest(total_len / n_chunks, 1), n;
END
$$;

-- rag.lexical_stats
-- The current tenant's lexical statistics, for inspection and BI: one row per lexeme.
CREATE VIEW rag.lexical_stats WITH (security_invoker = true) AS
    SELECT s.lexeme, sum(s.df)::bigint AS document_frequency
    FROM rag.lexeme_stats AS s
    WHERE s.tenant = rag.current_tenant()
    GROUP BY s.lexeme
    HAVING sum(s.df) > 0;

SELECT pg_catalog.pg_extension_config_dump('rag.postings', '');
SELECT pg_catalog.pg_extension_config_dump('rag.lexeme_stats', '');
SELECT pg_catalog.pg_extension_config_dump('rag.corpus_stats', '');

-- ---- 400-ask.sql ----
-- Answers: retrieve, then answer from the retrieved chunks with [n] citations.

-- rag.ask
-- Answer a question from the documents. Returns jsonb
-- {answer, citations: [{index, chunk_id, document_id, source, title, url, snippet}], mode, model}.
-- Without an LLM configured the answer is extractive (sentences of the retrieved chunks).
CREATE FUNCTION rag.ask(question text, k int DEFAULT 8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out jsonb;
BEGIN
    PERFORM rag._check_query(question, k, 'rag.ask');
    out := rag._ask(question, k);
    IF out IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN out;
END
$$;

-- rag._ask (internal): the answer, or NULL with a pending error
CREATE FUNCTION rag._ask(question text, k int)
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
    return ragpg.pg.ask(plpy, question, k)
$python$;

-- ---- 500-eval.sql ----
-- Retrieval evaluation in SQL: eval sets (a corpus ingested into a tenant of its own, so
-- its BM25 statistics are its own), queries, graded judgments, and runs with nDCG@10,
-- recall@10, recall@100 and MRR@10, per query and overall. Load sets with
-- `ragpg eval load` (BEIR layout); run with rag.evaluate; read rag.eval_runs and
-- rag.eval_compare from any BI tool.

CREATE TABLE rag.eval_sets (
    name       text PRIMARY KEY,
    tenant     text NOT NULL,           -- the tenant holding the set's documents, 'eval:<name>'
    source     text,                    -- where it was loaded from
    documents  int NOT NULL DEFAULT 0,
    loaded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rag.eval_queries (
    set_name text NOT NULL REFERENCES rag.eval_sets (name) ON DELETE CASCADE,
    query_id text NOT NULL,
    query    text NOT NULL,
    PRIMARY KEY (set_name, query_id)
);

-- a judgment names a document (by its source in the set's tenant) or a chunk
CREATE TABLE rag.eval_qrels (
    set_name   text NOT NULL,
    query_id   text NOT NULL,
    doc_source text,
    chunk_id   bigint,
    grade      int NOT NULL CHECK (grade > 0),
    FOREIGN KEY (set_name, query_id) REFERENCES rag.eval_queries (set_name, query_id) ON DELETE CASCADE,
    CHECK ((doc_source IS NULL) <> (chunk_id IS NULL))
);
CREATE INDEX eval_qrels_query ON rag.eval_qrels (set_name, query_id);

CREATE TABLE rag.eval_run (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    set_name    text NOT NULL REFERENCES rag.eval_sets (name) ON DELETE CASCADE,
    mode        text NOT NULL,
    k           int NOT NULL,
    params      jsonb NOT NULL DEFAULT '{}',   -- the search parameters and settings used
    queries     int,
    ndcg_10     float8,
    recall_10   float8,
    recall_100  float8,
    mrr_10      float8,
    seconds     float8,
    created_at  timestamptz NOT NULL DEFAULT now(),
    run_by      name NOT NULL DEFAULT current_user
);

CREATE TABLE rag.eval_run_query (
    run_id     bigint NOT NULL REFERENCES rag.eval_run (id) ON DELETE CASCADE,
    query_id   text NOT NULL,
    ndcg_10    float8 NOT NULL,
    recall_10  float8 NOT NULL,
    recall_100 float8 NOT NULL,
    mrr_10     float8 NOT NULL,
    PRIMARY KEY (run_id, query_id)
);

-- rag._eval_tenant
-- The tenant of an eval set, checked: the caller must be allowed to act for it (internal).
CREATE FUNCTION rag._eval_tenant(set_name text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text;
BEGIN
    SELECT s.tenant INTO t FROM rag.eval_sets AS s WHERE s.name = set_name;
    IF t IS NULL THEN
        RAISE EXCEPTION 'rag.evaluate: no eval set %', coalesce(quote_literal(set_name), 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'load one: ragpg eval load --dsn ... --set NAME --dir DIR (BEIR layout)';
    END IF;
    RETURN t;
END
$$;

-- rag.evaluate
-- Run every query of an eval set through rag.search(mode, k results) in the set's tenant,
-- store per-query and overall nDCG@10 (linear gain), recall@10, recall@100 and MRR@10,
-- and return the run id. Document judgments are scored on chunk results by each
-- document's best chunk rank. Extra rag.search parameters can be passed in `params`
-- (e.g. '{"rrf_c": 20, "lexical_ranking": "ts_rank"}').
CREATE FUNCTION rag.evaluate(set_name text, mode text DEFAULT 'hybrid', k int DEFAULT 100, params jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant text := rag._eval_tenant(set_name);
    run bigint;
    q record;
    t0 timestamptz := clock_timestamp();
    cand int := greatest(30, k);
BEGIN
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'rag.evaluate: params must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('rag.tenant', tenant, true);
    PERFORM rag.current_tenant();  -- 42501 unless the caller may act for the set's tenant
    params := jsonb_build_object('vector_k', cand, 'lexical_k', cand, 'rrf_c', 60, 'vector_weight', 1,
                                 'lexical_weight', 1, 'lexical_ranking', 'bm25')
              || params
              || jsonb_build_object('settings', (SELECT jsonb_object_agg(s.name, s.value) FROM rag.settings() AS s));
    INSERT INTO rag.eval_run (set_name, mode, k, params) VALUES (evaluate.set_name, evaluate.mode, evaluate.k, params)
    RETURNING id INTO run;

    FOR q IN SELECT eq.query_id, eq.query FROM rag.eval_queries AS eq
             WHERE eq.set_name = evaluate.set_name ORDER BY eq.query_id LOOP
        INSERT INTO rag.eval_run_query (run_id, query_id, ndcg_10, recall_10, recall_100, mrr_10)
        WITH hits AS (
            SELECT s.chunk_id, s.document_id,
                   row_number() OVER (ORDER BY s.score DESC, s.vector_rank NULLS LAST, s.chunk_id) AS rn
            FROM rag.search(q.query, evaluate.k, evaluate.mode, NULL,
                            (params->>'vector_k')::int, (params->>'lexical_k')::int, (params->>'rrf_c')::int,
                            (params->>'vector_weight')::float8, (params->>'lexical_weight')::float8,
                            params->>'lexical_ranking') AS s
        ), rel AS (
            SELECT r.doc_source, r.chunk_id, r.grade FROM rag.eval_qrels AS r
            WHERE r.set_name = evaluate.set_name AND r.query_id = q.query_id
        ), by_doc AS (   -- each document at its best chunk's rank
            SELECT d.source, row_number() OVER (ORDER BY min(h.rn)) AS rank
            FROM hits AS h JOIN rag.documents AS d ON d.id = h.document_id
            GROUP BY d.source
        ), ranked AS (   -- judged items with the rank they got (NULL: not retrieved)
            SELECT rel.grade,
                   CASE WHEN rel.chunk_id IS NOT NULL THEN (SELECT h.rn FROM hits AS h WHERE h.chunk_id = rel.chunk_id)
                        ELSE (SELECT b.rank FROM by_doc AS b WHERE b.source = rel.doc_source) END AS rank
            FROM rel
        ), ideal AS (
            SELECT grade, row_number() OVER (ORDER BY grade DESC) AS pos FROM rel
        )
        SELECT run, q.query_id,
               coalesce((SELECT sum(grade / log(2, rank + 1)) FROM ranked WHERE rank <= 10), 0)
                 / nullif((SELECT sum(grade / log(2, pos + 1)) FROM ideal WHERE pos <= 10), 0),
               coalesce((SELECT count(*) FROM ranked WHERE rank <= 10)::float8 / nullif((SELECT count(*) FROM rel), 0), 0),
               coalesce((SELECT count(*) FROM ranked WHERE rank <= 100)::float8 / nullif((SELECT count(*) FROM rel), 0), 0),
               coalesce((SELECT 1.0 / min(rank) FROM ranked WHERE rank <= 10), 0);
    END LOOP;

    UPDATE rag.eval_run AS r
    SET queries = a.n, ndcg_10 = a.ndcg, recall_10 = a.r10, recall_100 = a.r100, mrr_10 = a.mrr,
        seconds = extract(epoch FROM clock_timestamp() - t0)
    FROM (SELECT count(*) AS n, avg(x.ndcg_10) AS ndcg, avg(x.recall_10) AS r10,
                 avg(x.recall_100) AS r100, avg(x.mrr_10) AS mrr
          FROM rag.eval_run_query AS x WHERE x.run_id = run) AS a
    WHERE r.id = run;
    RETURN run;
END
$$;

-- rag.eval_runs: every run with its overall metrics, newest first.
CREATE VIEW rag.eval_runs WITH (security_invoker = true) AS
    SELECT r.id AS run_id, r.set_name, r.mode, r.k, r.queries,
           round(r.ndcg_10::numeric, 4) AS ndcg_10, round(r.recall_10::numeric, 4) AS recall_10,
           round(r.recall_100::numeric, 4) AS recall_100, round(r.mrr_10::numeric, 4) AS mrr_10,
           round(r.seconds::numeric, 1) AS seconds, r.params, r.created_at, r.run_by
    FROM rag.eval_run AS r
    ORDER BY r.id DESC;

-- rag.eval_compare: any two runs of the same set side by side (filter on run_a, run_b).
CREATE VIEW rag.eval_compare WITH (security_invoker = true) AS
    SELECT a.set_name, a.id AS run_a, b.id AS run_b, a.mode AS mode_a, b.mode AS mode_b,
           round(a.ndcg_10::numeric, 4) AS ndcg_10_a, round(b.ndcg_10::numeric, 4) AS ndcg_10_b,
           round((b.ndcg_10 - a.ndcg_10)::numeric, 4) AS ndcg_10_delta,
           round(a.recall_10::numeric, 4) AS recall_10_a, round(b.recall_10::numeric, 4) AS recall_10_b,
           round(a.recall_100::numeric, 4) AS recall_100_a, round(b.recall_100::numeric, 4) AS recall_100_b,
           round(a.mrr_10::numeric, 4) AS mrr_10_a, round(b.mrr_10::numeric, 4) AS mrr_10_b,
           (SELECT count(*) FROM rag.eval_run_query AS qa JOIN rag.eval_run_query AS qb USING (query_id)
            WHERE qa.run_id = a.id AND qb.run_id = b.id AND qb.ndcg_10 > qa.ndcg_10) AS queries_better,
           (SELECT count(*) FROM rag.eval_run_query AS qa JOIN rag.eval_run_query AS qb USING (query_id)
            WHERE qa.run_id = a.id AND qb.run_id = b.id AND qb.ndcg_10 < qa.ndcg_10) AS queries_worse
    FROM rag.eval_run AS a JOIN rag.eval_run AS b ON b.set_name = a.set_name AND b.id <> a.id;

SELECT pg_catalog.pg_extension_config_dump('rag.eval_sets', '');
SELECT pg_catalog.pg_extension_config_dump('rag.eval_queries', '');
SELECT pg_catalog.pg_extension_config_dump('rag.eval_qrels', '');
SELECT pg_catalog.pg_extension_config_dump('rag.eval_run', '');
SELECT pg_catalog.pg_extension_config_dump('rag.eval_run_query', '');

-- ---- 900-security.sql ----
-- Row-level security: a session sees and writes only its tenant's rows
-- (rag.current_tenant(), evaluated once per statement as an init plan).
-- FORCE makes the policies apply to the tables' owner too; superusers and roles with
-- BYPASSRLS still see everything, as everywhere in Postgres.

-- Tenant tables: documents, chunks, and the lexical leg's index and statistics (document
-- frequencies would leak another tenant's vocabulary). One policy, the same on each.
-- A table added later with a tenant column joins this list.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['documents', 'chunks', 'postings', 'lexeme_stats', 'corpus_stats'] LOOP
        EXECUTE format('ALTER TABLE rag.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE rag.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON rag.%I'
                       ' USING (tenant = (SELECT rag.current_tenant()))'
                       ' WITH CHECK (tenant = (SELECT rag.current_tenant()))', t);
    END LOOP;
END
$$;

-- eval sets, their queries, judgments and runs: visible to whoever may act for the
-- set's tenant (not only while acting for it, so a BI role granted the tenant sees runs)
ALTER TABLE rag.eval_sets ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_sets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_access ON rag.eval_sets
    USING (rag._may_act_for(tenant)) WITH CHECK (rag._may_act_for(tenant));
ALTER TABLE rag.eval_queries ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_queries FORCE ROW LEVEL SECURITY;
CREATE POLICY via_set ON rag.eval_queries
    USING (EXISTS (SELECT 1 FROM rag.eval_sets AS s WHERE s.name = set_name));
ALTER TABLE rag.eval_qrels ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_qrels FORCE ROW LEVEL SECURITY;
CREATE POLICY via_set ON rag.eval_qrels
    USING (EXISTS (SELECT 1 FROM rag.eval_sets AS s WHERE s.name = set_name));
ALTER TABLE rag.eval_run ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_run FORCE ROW LEVEL SECURITY;
CREATE POLICY via_set ON rag.eval_run
    USING (EXISTS (SELECT 1 FROM rag.eval_sets AS s WHERE s.name = set_name));
ALTER TABLE rag.eval_run_query ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_run_query FORCE ROW LEVEL SECURITY;
CREATE POLICY via_run ON rag.eval_run_query
    USING (EXISTS (SELECT 1 FROM rag.eval_run AS r WHERE r.id = run_id));

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
GRANT SELECT ON rag.documents, rag.chunks, rag.tenant_roles, rag.postings, rag.lexeme_stats,
                rag.corpus_stats, rag.lexical_stats, rag.eval_sets, rag.eval_queries, rag.eval_qrels,
                rag.eval_run, rag.eval_run_query, rag.eval_runs, rag.eval_compare TO rag_reader;
GRANT EXECUTE ON FUNCTION
    rag.current_tenant(),
    rag._is_member(name),
    rag._may_act_for(text),
    rag.settings(),
    rag._setting(text),
    rag.embed(text),
    rag._embed(text),
    rag._python_error(),
    rag._raise_python_error(),
    rag._ask(text, int),
    rag.any_terms_tsquery(text),
    rag._check_query(text, int, text),
    rag._filter_predicate(jsonb),
    rag.query_lexemes(text),
    rag.bm25(text, int, float8, float8, jsonb),
    rag.search(text, int, text, jsonb, int, int, int, float8, float8, text),
    rag.ask(text, int),
    rag.backend_stats()
TO rag_reader;

-- rag_writer: ingest (documents in, chunks written by the triggers as the caller)
GRANT INSERT, UPDATE, DELETE ON rag.documents TO rag_writer;
GRANT INSERT, DELETE ON rag.chunks, rag.postings, rag.lexeme_stats, rag.corpus_stats TO rag_writer;
GRANT EXECUTE ON FUNCTION
    rag.ingest(text, text, text, text, jsonb),
    rag._check_content(text, text),
    rag._index_documents(bigint[]),
    rag._index_documents_py(bigint[]),
    rag.compact_lexical_stats(text, int),
    rag._eval_tenant(text),
    rag.evaluate(text, text, int, jsonb)
TO rag_writer;
-- eval sets are loaded and run by writers, into tenants they may act for (RLS checks)
GRANT INSERT, UPDATE, DELETE ON rag.eval_sets, rag.eval_queries, rag.eval_qrels, rag.eval_run,
                                rag.eval_run_query TO rag_writer;

-- rag_admin: tenants (later: models, keys)
GRANT INSERT, DELETE ON rag.tenant_roles TO rag_admin;
GRANT EXECUTE ON FUNCTION
    rag.grant_tenant(name, text),
    rag.revoke_tenant(name, text)
TO rag_admin;
