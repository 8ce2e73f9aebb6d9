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

-- rag.attachments: user tables kept in step with rag.documents (rag.attach, 600-attach.sql)
CREATE TABLE rag.attachments (
    id               bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant           text NOT NULL DEFAULT rag.current_tenant(),
    source_table     regclass NOT NULL,
    key_columns      name[] NOT NULL,         -- the table's primary key
    content_column   name NOT NULL,
    title_column     name,
    url_column       name,
    metadata_columns name[] NOT NULL DEFAULT '{}',
    mode             text NOT NULL CHECK (mode IN ('sync', 'async')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attachments_tenant_table_key UNIQUE (tenant, source_table)
);

CREATE TABLE rag.documents (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant       text NOT NULL DEFAULT rag.current_tenant(),
    source       text NOT NULL,
    title        text,
    url          text,
    metadata     jsonb NOT NULL DEFAULT '{}',
    content      text NOT NULL,
    content_hash bytea NOT NULL,          -- sha256(content), set by the BEFORE trigger
    attachment_id bigint REFERENCES rag.attachments (id) ON DELETE CASCADE,  -- from an attached table
    source_table text,                    -- that table, e.g. 'public.articles'
    source_key   jsonb,                   -- its primary key, e.g. {"id": 42}: JOIN back with it
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT documents_tenant_source_key UNIQUE (tenant, source),
    CONSTRAINT documents_tenant_id_key UNIQUE (tenant, id),
    CONSTRAINT documents_metadata_is_object CHECK (jsonb_typeof(metadata) = 'object')
);
COMMENT ON TABLE rag.documents IS
  'One row per source document. INSERT/UPDATE index the row (chunk + embed) through triggers.';

CREATE TABLE rag.chunks (
    id           bigint GENERATED BY DEFAULT AS IDENTITY,
    tenant       text NOT NULL DEFAULT rag.current_tenant(),  -- always the document's tenant
    document_id  bigint NOT NULL,
    ord          int NOT NULL,            -- position within the document, from 0
    content      text NOT NULL,           -- an exact slice of the document's text
    heading      text,                    -- heading path of its section, e.g. 'Refunds > Timing'
    tokens       int NOT NULL,            -- word pieces of the embedding model
    content_hash bytea NOT NULL,          -- sha256(content): embeddings are reused by (model, hash)
    model        text NOT NULL,           -- embedding model that produced `embedding`
    embedding    vector NOT NULL,         -- of `model`'s dimensions (an HNSW index per model)
    tsv          tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chunks_pkey PRIMARY KEY (tenant, id),
    CONSTRAINT chunks_document_ord_key UNIQUE (tenant, document_id, ord),
    -- the chunk's tenant is its document's tenant, and chunks go with their document
    CONSTRAINT chunks_document_fkey FOREIGN KEY (tenant, document_id)
        REFERENCES rag.documents (tenant, id) ON DELETE CASCADE
) PARTITION BY LIST (tenant);
COMMENT ON TABLE rag.chunks IS 'Chunks of rag.documents with their embeddings; maintained by rag.';
-- Partitioned by tenant: every tenant starts in the default partition;
-- rag.create_tenant_partition gives a large tenant its own (its own HNSW and GIN indexes,
-- and search prunes to it).
CREATE TABLE rag.chunks_default PARTITION OF rag.chunks DEFAULT;

-- one partial HNSW index per embedding model, on the embedding cast to its dimensions,
-- so that models of different sizes live side by side (rag.set_embedding_model)
CREATE INDEX chunks_embedding_hnsw ON rag.chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WITH (m = 16, ef_construction = 64)
    WHERE model = 'all-MiniLM-L6-v2';
CREATE INDEX chunks_tsv_gin ON rag.chunks USING gin (tsv);
CREATE INDEX chunks_model_hash ON rag.chunks (tenant, model, content_hash);
CREATE INDEX chunks_id ON rag.chunks (id);
CREATE INDEX chunks_document ON rag.chunks (document_id);

CREATE INDEX documents_attachment_key ON rag.documents (attachment_id, source_key);

-- user data is dumped by pg_dump (extension tables are not, by default)
SELECT pg_catalog.pg_extension_config_dump('rag.attachments', '');
SELECT pg_catalog.pg_extension_config_dump('rag.documents', '');
SELECT pg_catalog.pg_extension_config_dump('rag.chunks_default', '');

-- ---- 020-settings.sql ----
-- rag.config: per-database values of settings, set with rag.configure (rag_admin).
-- A setting's value is, first found: the Postgres setting rag.x (SET, ALTER ROLE/DATABASE
-- ... SET), this table, the built-in default. The table is transactional, so a change
-- (e.g. the embedding model after a re-embed) is atomic for every session.
CREATE TABLE rag.config (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE rag.config IS 'Per-database values of rag settings (rag.configure); see rag.settings()';
SELECT pg_catalog.pg_extension_config_dump('rag.config', '');

-- rag.tenant_models: each tenant's embedding model, and the model it is switching to
-- (rag.set_embedding_model, 620-model-switch.sql). No row: the database's setting.
CREATE TABLE rag.tenant_models (
    tenant            text PRIMARY KEY DEFAULT rag.current_tenant(),
    embedding_model   text NOT NULL,
    next_model        text,            -- being built in the background by rag.work
    switch_started_at timestamptz,
    switched_at       timestamptz
);
COMMENT ON TABLE rag.tenant_models IS 'Per tenant: its embedding model and the one it is switching to';
SELECT pg_catalog.pg_extension_config_dump('rag.tenant_models', '');

-- rag._setting_defaults (internal): every setting, its default and what it does.
-- A VALUES list that names nothing, without a SET clause, so that the planner inlines it
-- into its callers (a SQL function with SET is planned anew on every call).
CREATE FUNCTION rag._setting_defaults()
RETURNS TABLE (name text, default_value text, description text)
LANGUAGE sql IMMUTABLE
AS $$
    SELECT * FROM (VALUES
        ('embedding_model',       'all-MiniLM-L6-v2', 'local embedding model for new chunks and queries'),
        ('embedding_batch_size',  '1',        'texts per model run; 1 is fastest on CPU and makes a text''s vector independent of its batch'),
        ('index_batch_size',      '64',       'documents per indexing round, and keys per rag.work batch'),
        ('max_attempts',          '5',        'rag.work tries a failing row this often, then moves it to rag.errors'),
        ('retry_base_seconds',    '2',        'rag.work waits base * 2^attempts seconds before retrying a row'),
        ('embedding_threads',     '1',        'onnxruntime intra-op threads per backend'),
        ('chunk_target_tokens',   '254',      'chunks are packed up to this many model tokens (254 fills MiniLM''s window)'),
        ('chunk_overlap_tokens',  '32',       'tokens repeated from the end of the previous chunk'),
        ('max_document_bytes',    '10000000', 'largest document accepted, in bytes of UTF-8'),
        ('max_query_chars',       '4000',     'longest question or search query accepted'),
        ('max_k',                 '1000',     'largest k accepted by rag.search and rag.ask'),
        ('bm25_k1',               '0.9',      'BM25 term-frequency saturation (lexical leg)'),
        ('bm25_b',                '0.4',      'BM25 length normalisation, 0..1 (lexical leg)'),
        ('bm25_term_candidates',  '1000',     'postings read per query lexeme, best first (0: all, exact BM25 at any size)'),
        ('ef_search',             'auto',     'HNSW candidate list size, at least the vector leg''s k; auto: 100, or chunks / 2500 past 250,000 chunks (at most 1000)'),
        ('iterative_scan',        'relaxed_order', 'pgvector 0.8 iterative index scans: off, relaxed_order or strict_order'),
        ('ask_min_similarity',    '0.3',      'rag.ask answers only from sentences at least this similar to the question'),
        ('chat_model',            'extractive', 'model of rag.models that writes answers; extractive: sentences of the chunks, no LLM'),
        ('context_tokens',        '3000',     'most tokens of retrieved chunks put in the LLM prompt (capped by the model''s max_input_tokens)'),
        ('answer_max_tokens',     '400',      'most tokens the LLM may write per answer'),
        ('temperature',           '0.1',      'LLM sampling temperature'),
        ('provider_timeout_seconds', '30',    'timeout of one HTTP request to a model provider'),
        ('provider_max_retries',  '3',        'retries of a provider call after 429, 5xx, timeouts and connection errors'),
        ('provider_retry_base_seconds', '0.5', 'retry n waits a random time up to base * 2^n seconds (exponential backoff, full jitter)'),
        ('provider_batch_size',   '96',       'texts per embedding request to a provider'),
        ('daily_budget',          '',         'most cost per tenant per UTC day (the unit of rag.models prices); empty: no limit'),
        ('store_answers',         'on',       'rag.ask stores every answer in rag.answers (off: not stored)')
    ) AS d (name, default_value, description)
$$;

-- rag._setting_value (internal): one setting's value, first found: the Postgres setting
-- rag.x, the tenant's embedding model (rag.tenant_models), rag.config, the default.
-- Without a SET clause, so that the planner inlines it into its callers (which pin
-- search_path); every name and operator in it is qualified instead.
CREATE FUNCTION rag._setting_value(setting_name text, default_value text, configured text)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(nullif(pg_catalog.current_setting('rag.' OPERATOR(pg_catalog.||) setting_name, true), ''),
                    CASE WHEN setting_name OPERATOR(pg_catalog.=) 'embedding_model' THEN
                        (SELECT tm.embedding_model FROM rag.tenant_models AS tm
                         WHERE tm.tenant OPERATOR(pg_catalog.=) rag.current_tenant()) END,
                    configured, default_value)
$$;

-- rag.settings
-- Every knob of the extension, its current value and default. Values are ordinary
-- Postgres settings: SET rag.x = ... (session), ALTER DATABASE ... SET rag.x = ... (database),
-- or rows of rag.config (rag.configure).
CREATE FUNCTION rag.settings()
RETURNS TABLE (name text, value text, default_value text, description text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.name, rag._setting_value(d.name, d.default_value, c.value), d.default_value, d.description
    FROM rag._setting_defaults() AS d LEFT JOIN rag.config AS c ON c.name = d.name
$$;
COMMENT ON FUNCTION rag.settings() IS 'rag.settings: every rag.* setting with its current value and default';

-- rag._setting: one setting's current value (internal; NULL for an unknown name).
-- plpgsql, so that its query is planned once per session (it is on every hot path).
CREATE FUNCTION rag._setting(setting_name text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dflt text;
BEGIN
    SELECT d.default_value INTO dflt FROM rag._setting_defaults() AS d WHERE d.name = setting_name;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN rag._setting_value(setting_name, dflt, (SELECT c.value FROM rag.config AS c WHERE c.name = setting_name));
END
$$;

-- rag.configure (rag_admin)
-- Set a setting for this database (every session, every role), or reset it with NULL.
-- Returns the value now in effect for this session.
CREATE FUNCTION rag.configure(setting_name text, value text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rag.settings() AS s WHERE s.name = setting_name) THEN
        RAISE EXCEPTION 'rag.configure: unknown setting %', coalesce(quote_literal(setting_name), 'NULL')
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM rag.settings() lists them';
    END IF;
    IF setting_name = 'embedding_model' THEN
        RAISE EXCEPTION 'rag.configure: the embedding model is changed with rag.set_embedding_model'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'it re-embeds the chunks in the background and switches when they are done';
    END IF;
    IF value IS NULL THEN
        DELETE FROM rag.config AS c WHERE c.name = setting_name;
    ELSE
        INSERT INTO rag.config AS c (name, value) VALUES (setting_name, value)
        ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now(), updated_by = current_user;
    END IF;
    RETURN rag._setting(setting_name);
END
$$;

-- ---- 030-models.sql ----
-- Models: the registry of embedding and chat models, and the API keys they use.
-- Database-wide configuration (not tenant data): every rag role reads it, rag_admin
-- changes it. Which model is used: the settings embedding_model and chat_model
-- (rag.use_model sets them for the database), or a per-call argument (rag.ask, rag.embed).

CREATE TABLE rag.models (
    name                text PRIMARY KEY
                        CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$'),
    kind                text NOT NULL CHECK (kind IN ('embed', 'chat')),
    provider            text NOT NULL CHECK (provider IN ('local', 'openai')),
    provider_model      text,          -- the model's id at the provider; NULL: name
    base_url            text,          -- openai provider: the API root, e.g. http://127.0.0.1:8765/v1
    dimensions          int,           -- embedding models: length of their vectors
    max_input_tokens    int NOT NULL CHECK (max_input_tokens > 0),
    price_input_per_1m  numeric NOT NULL DEFAULT 0 CHECK (price_input_per_1m >= 0),
    price_output_per_1m numeric NOT NULL DEFAULT 0 CHECK (price_output_per_1m >= 0),
    api_key             text,          -- name of a key (rag.api_keys); NULL: none sent
    tokenizer           text CHECK (tokenizer IN ('cl100k_base', 'o200k_base')),  -- tiktoken encoding for counting
    options             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
                        -- normalize (embed), context_tokens and answer_max_tokens (chat: caps on the settings)
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT models_dimensions CHECK ((kind = 'embed') = (dimensions IS NOT NULL)
                                        AND coalesce(dimensions BETWEEN 1 AND 16000, true)),
    CONSTRAINT models_base_url CHECK ((provider = 'openai') = (base_url IS NOT NULL)
                                      AND coalesce(base_url ~ '^https?://[^\s]+$', true))
);
COMMENT ON TABLE rag.models IS
  'Embedding and chat models rag can call: rag.add_model adds one, rag.use_model picks one';
SELECT pg_catalog.pg_extension_config_dump('rag.models', $$WHERE name NOT IN ('all-MiniLM-L6-v2', 'extractive', 'smollm2', 'smollm2-embed')$$);

-- Registered by default: the in-process MiniLM (384 dimensions, 256 tokens), the built-in
-- extractive answerer, and SmolLM2-135M served by llama.cpp on loopback (`ragpg llm`),
-- for chat and embeddings on port 8765 (576 dimensions, normalised by rag).
INSERT INTO rag.models (name, kind, provider, provider_model, base_url, dimensions, max_input_tokens, tokenizer, options) VALUES
    ('all-MiniLM-L6-v2', 'embed', 'local', NULL, NULL, 384, 256, NULL, '{}'),
    ('extractive', 'chat', 'local', NULL, NULL, NULL, 1000000, NULL, '{}'),
    ('smollm2', 'chat', 'openai', NULL, 'http://127.0.0.1:8765/v1', NULL, 2048, 'cl100k_base',
     '{"context_tokens": 600, "answer_max_tokens": 160}'),
    ('smollm2-embed', 'embed', 'openai', 'smollm2', 'http://127.0.0.1:8765/v1', 576, 2048, 'cl100k_base',
     '{"normalize": true}');

-- API keys. The secret is never stored in a table or passed back: rag.set_api_key writes
-- it to a file only the server's OS user can read (ragpg_keys/ under the data directory,
-- mode 0600), or records the name of a server environment variable that holds it. The
-- table keeps the name and who may use it; a key is used only for a role granted it.
CREATE TABLE rag.api_keys (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    source      text NOT NULL CHECK (source IN ('file', 'env')),
    env_var     text CHECK ((source = 'env') = (env_var IS NOT NULL)),
    created_by  name NOT NULL DEFAULT current_user,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rag.api_keys IS
  'Names of provider API keys (never the secrets); rag.set_api_key, rag.grant_api_key';

CREATE TABLE rag.api_key_grants (
    key_name   text NOT NULL REFERENCES rag.api_keys (name) ON DELETE CASCADE,
    role_name  name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_name, role_name)
);
COMMENT ON TABLE rag.api_key_grants IS 'Which roles (and their members) may use which API key';
SELECT pg_catalog.pg_extension_config_dump('rag.api_keys', '');
SELECT pg_catalog.pg_extension_config_dump('rag.api_key_grants', '');

ALTER TABLE rag.models ADD CONSTRAINT models_api_key_fkey
    FOREIGN KEY (api_key) REFERENCES rag.api_keys (name) ON DELETE SET NULL;

-- rag._may_use_key (internal): whether the current role was granted this key
CREATE FUNCTION rag._may_use_key(key_name text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM rag.api_key_grants AS g
                   WHERE g.key_name = _may_use_key.key_name AND rag._is_member(g.role_name))
$$;

-- rag.add_model (rag_admin)
-- Register a model, or replace a registered one of the same name. For an OpenAI-compatible
-- server (OpenAI, Ollama, vLLM, llama.cpp, LM Studio): provider => 'openai', base_url.
CREATE FUNCTION rag.add_model(
    name text,
    kind text,
    provider text DEFAULT 'openai',
    base_url text DEFAULT NULL,
    dimensions int DEFAULT NULL,
    max_input_tokens int DEFAULT 8192,
    price_input_per_1m numeric DEFAULT 0,
    price_output_per_1m numeric DEFAULT 0,
    api_key text DEFAULT NULL,
    provider_model text DEFAULT NULL,
    tokenizer text DEFAULT 'cl100k_base',
    options jsonb DEFAULT '{}')
RETURNS rag.models
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m rag.models;
BEGIN
    IF provider = 'local' THEN
        RAISE EXCEPTION 'rag.add_model: local models are installed with the extension, not added'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'for a model behind an OpenAI-compatible server use provider => ''openai'', base_url => ...';
    ELSIF provider IS DISTINCT FROM 'openai' THEN
        RAISE EXCEPTION 'rag.add_model: unknown provider %', coalesce(quote_literal(provider), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'the provider is ''openai'' (any OpenAI-compatible server)';
    ELSIF kind IS NULL OR kind NOT IN ('embed', 'chat') THEN
        RAISE EXCEPTION 'rag.add_model: kind must be ''embed'' or ''chat'', got %', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF base_url IS NULL OR base_url !~ '^https?://[^\s]+$' THEN
        RAISE EXCEPTION 'rag.add_model: base_url must be an http(s) URL, got %', coalesce(quote_literal(base_url), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1';
    ELSIF kind = 'embed' AND (dimensions IS NULL OR dimensions NOT BETWEEN 1 AND 16000) THEN
        RAISE EXCEPTION 'rag.add_model: an embedding model needs dimensions between 1 and 16000, got %',
            coalesce(dimensions::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    ELSIF api_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM rag.api_keys AS k WHERE k.name = add_model.api_key) THEN
        RAISE EXCEPTION 'rag.add_model: API key % does not exist', quote_literal(api_key)
            USING ERRCODE = 'undefined_object', HINT = 'create it first: SELECT rag.set_api_key(name, $1) with the secret as a bind parameter';
    END IF;
    INSERT INTO rag.models AS t (name, kind, provider, provider_model, base_url, dimensions, max_input_tokens,
                                 price_input_per_1m, price_output_per_1m, api_key, tokenizer, options)
    VALUES (add_model.name, kind, provider, provider_model, rtrim(base_url, '/'),
            CASE WHEN kind = 'embed' THEN dimensions END, max_input_tokens,
            price_input_per_1m, price_output_per_1m, api_key, tokenizer, coalesce(options, '{}'))
    ON CONFLICT ON CONSTRAINT models_pkey DO UPDATE SET
        kind = excluded.kind, provider = excluded.provider, provider_model = excluded.provider_model,
        base_url = excluded.base_url, dimensions = excluded.dimensions, max_input_tokens = excluded.max_input_tokens,
        price_input_per_1m = excluded.price_input_per_1m, price_output_per_1m = excluded.price_output_per_1m,
        api_key = excluded.api_key, tokenizer = excluded.tokenizer, options = excluded.options
    RETURNING * INTO m;
    RETURN m;
END
$$;

-- rag._model (internal): a registered model, or a clear error
CREATE FUNCTION rag._model(model_name text, want_kind text)
RETURNS rag.models
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m rag.models;
BEGIN
    SELECT * INTO m FROM rag.models AS t WHERE t.name = model_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rag: model % is not registered', coalesce(quote_literal(model_name), 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name, kind FROM rag.models lists them; rag.add_model registers one';
    ELSIF m.kind <> want_kind THEN
        RAISE EXCEPTION 'rag: model % is a % model, not a % model', quote_literal(model_name), m.kind, want_kind
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN m;
END
$$;

-- rag.use_model (rag_admin)
-- Make a chat model the database's answerer, or an embedding model its embedder (only
-- while no chunk has embeddings of another model: see rag.set_embedding_model).
CREATE FUNCTION rag.use_model(name text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m rag.models;
BEGIN
    SELECT * INTO m FROM rag.models AS t WHERE t.name = use_model.name;
    IF NOT FOUND THEN
        PERFORM rag._model(use_model.name, 'chat');  -- raises the error
    END IF;
    IF m.kind = 'chat' THEN
        RETURN rag.configure('chat_model', m.name);
    END IF;
    RETURN rag.set_embedding_model(m.name);
END
$$;

-- rag.set_api_key (rag_admin)
-- Store a provider API key under a name. Pass the secret as a bind parameter
-- (psycopg: cur.execute("SELECT rag.set_api_key('openai', %s)", [secret])) so that it is
-- not in the query text, or name a server environment variable with env_var.
CREATE FUNCTION rag._write_key_file(name text, secret text)
RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    if "ragpg" not in GD:
        import sys
        for _p in ("/usr/local/lib/ragpg/0.1.0/deps", "/usr/local/lib/ragpg/0.1.0"):
            if _p not in sys.path:
                sys.path.insert(0, _p)
        import ragpg.pg
        import ragpg.ask
        GD["ragpg"] = ragpg
    ragpg = GD["ragpg"]
    return ragpg.pg.write_key_file(plpy, name, secret)
$python$;

CREATE FUNCTION rag.set_api_key(name text, secret text DEFAULT NULL, env_var text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN
        RAISE EXCEPTION 'rag.set_api_key: invalid key name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'letters, digits, ".", "_", "-"; at most 64';
    ELSIF (secret IS NULL) = (env_var IS NULL) THEN
        RAISE EXCEPTION 'rag.set_api_key: give exactly one of secret and env_var'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'secret as a bind parameter, or env_var => ''OPENAI_API_KEY'' (set in the server''s environment)';
    ELSIF secret IS NOT NULL AND (length(secret) NOT BETWEEN 1 AND 4096 OR secret ~ '[\r\n]') THEN
        RAISE EXCEPTION 'rag.set_api_key: the secret must be one line of 1 to 4096 characters'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF env_var IS NOT NULL AND env_var !~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$' THEN
        RAISE EXCEPTION 'rag.set_api_key: invalid environment variable name %', quote_literal(env_var)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO rag.api_keys AS k (name, source, env_var)
    VALUES (set_api_key.name, CASE WHEN secret IS NULL THEN 'env' ELSE 'file' END, env_var)
    ON CONFLICT ON CONSTRAINT api_keys_pkey DO UPDATE SET source = excluded.source, env_var = excluded.env_var,
        created_by = current_user, created_at = now();
    IF NOT rag._write_key_file(name, secret) THEN   -- NULL secret removes the file
        PERFORM rag._raise_python_error();
    END IF;
END
$$;

-- rag.grant_api_key / rag.revoke_api_key / rag.drop_api_key (rag_admin)
CREATE FUNCTION rag.grant_api_key(name text, role_name name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rag.api_keys AS k WHERE k.name = grant_api_key.name) THEN
        RAISE EXCEPTION 'rag.grant_api_key: API key % does not exist', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'undefined_object';
    ELSIF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles AS r WHERE r.rolname = grant_api_key.role_name) THEN
        RAISE EXCEPTION 'rag.grant_api_key: role % does not exist', coalesce(quote_ident(role_name), 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    INSERT INTO rag.api_key_grants AS g (key_name, role_name) VALUES (grant_api_key.name, grant_api_key.role_name)
    ON CONFLICT DO NOTHING;
END
$$;

CREATE FUNCTION rag.revoke_api_key(name text, role_name name)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM rag.api_key_grants AS g
               WHERE g.key_name = revoke_api_key.name AND g.role_name = revoke_api_key.role_name RETURNING 1)
    SELECT count(*) > 0 FROM d
$$;

CREATE FUNCTION rag.drop_api_key(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM rag.api_keys AS k WHERE k.name = drop_api_key.name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF NOT rag._write_key_file(name, NULL) THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN true;
END
$$;

-- ---- 050-usage.sql ----
-- The cost ledger and the answer log: one rag.usage row per model call (embedding or
-- chat, local or remote), one rag.answers row per rag.ask / rag.ask_stream. Both are
-- tenant data (row-level security, 900-security.sql) and are written by the caller's
-- transaction; in a read-only transaction (a hot standby) nothing is written.

CREATE TABLE rag.usage (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant        text NOT NULL DEFAULT rag.current_tenant(),
    at            timestamptz NOT NULL DEFAULT now(),
    role_name     name NOT NULL DEFAULT current_user,
    operation     text NOT NULL,        -- index, search, ask, embed
    model         text NOT NULL,
    provider      text NOT NULL,
    calls         int NOT NULL DEFAULT 1 CHECK (calls >= 1),  -- requests (local: model runs)
    input_tokens  bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cost          numeric NOT NULL DEFAULT 0 CHECK (cost >= 0),  -- in the unit of rag.models prices
    latency_ms    double precision
);
COMMENT ON TABLE rag.usage IS 'One row per model call: tokens in and out and their cost (rag.models prices)';
CREATE INDEX usage_tenant_at ON rag.usage (tenant, at);
SELECT pg_catalog.pg_extension_config_dump('rag.usage', '');

CREATE TABLE rag.answers (
    id                  bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant              text NOT NULL DEFAULT rag.current_tenant(),
    at                  timestamptz NOT NULL DEFAULT now(),
    role_name           name NOT NULL DEFAULT current_user,
    question            text NOT NULL,
    answer              text NOT NULL,
    model               text NOT NULL,
    mode                text NOT NULL,  -- llm or extractive
    cited_chunk_ids     bigint[] NOT NULL DEFAULT '{}',
    retrieved_chunk_ids bigint[] NOT NULL DEFAULT '{}',
    removed_citations   int NOT NULL DEFAULT 0,  -- markers that named no retrieved chunk
    latency_ms          double precision NOT NULL,
    first_token_ms      double precision,
    input_tokens        bigint NOT NULL DEFAULT 0,
    output_tokens       bigint NOT NULL DEFAULT 0,
    finish_reason       text
);
COMMENT ON TABLE rag.answers IS 'Every answer of rag.ask and rag.ask_stream, for audit and BI';
CREATE INDEX answers_tenant_at ON rag.answers (tenant, at);
SELECT pg_catalog.pg_extension_config_dump('rag.answers', '');

-- rag.usage_daily: per UTC day, tenant, model and operation
CREATE VIEW rag.usage_daily WITH (security_invoker = true) AS
SELECT (u.at AT TIME ZONE 'UTC')::date AS day, u.tenant, u.model, u.operation,
       sum(u.calls)::bigint AS calls, sum(u.input_tokens)::bigint AS input_tokens,
       sum(u.output_tokens)::bigint AS output_tokens, sum(u.cost) AS cost
FROM rag.usage AS u
GROUP BY 1, 2, 3, 4;
COMMENT ON VIEW rag.usage_daily IS 'Model calls, tokens and cost per UTC day, tenant, model and operation';

-- rag.cost_by_model: totals per model, with its current prices
CREATE VIEW rag.cost_by_model WITH (security_invoker = true) AS
SELECT u.model, m.provider, m.kind, sum(u.calls)::bigint AS calls,
       sum(u.input_tokens)::bigint AS input_tokens, sum(u.output_tokens)::bigint AS output_tokens,
       sum(u.cost) AS cost, m.price_input_per_1m, m.price_output_per_1m,
       min(u.at) AS first_call, max(u.at) AS last_call
FROM rag.usage AS u LEFT JOIN rag.models AS m ON m.name = u.model
GROUP BY u.model, m.provider, m.kind, m.price_input_per_1m, m.price_output_per_1m;
COMMENT ON VIEW rag.cost_by_model IS 'Model calls, tokens and cost per model (all days)';

-- rag.spent_today: the session tenant's cost so far this UTC day (the budget's measure)
CREATE FUNCTION rag.spent_today()
RETURNS numeric
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(u.cost), 0) FROM rag.usage AS u
    WHERE u.tenant = (SELECT rag.current_tenant())
      AND u.at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
$$;

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
        import ragpg.ask
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

-- rag._embed (internal): the embedding, or NULL with a pending error. real[], not vector:
-- PL/Python fills an array in C, where a vector literal is 384 floats printed and parsed.
CREATE FUNCTION rag._embed(input text, model text)
RETURNS real[]
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    if "ragpg" not in GD:
        import sys
        for _p in ("/usr/local/lib/ragpg/0.1.0/deps", "/usr/local/lib/ragpg/0.1.0"):
            if _p not in sys.path:
                sys.path.insert(0, _p)
        import ragpg.pg
        import ragpg.ask
        GD["ragpg"] = ragpg
    ragpg = GD["ragpg"]
    return ragpg.pg.embed_query(plpy, input, model)
$python$;

-- rag.embed
-- The embedding of a text with the current embedding model (rag.embedding_model), or
-- with `model` of rag.models. Useful to compare texts: SELECT rag.embed('a') <=> rag.embed('b').
CREATE FUNCTION rag.embed(input text, model text DEFAULT NULL)
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
    v := rag._embed(input, model)::vector;
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
        import ragpg.ask
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
        import ragpg.ask
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

-- rag._ef_search (internal)
-- The HNSW candidate list for a tenant's search: the setting rag.ef_search, or with
-- 'auto' one that grows with the corpus. Measured (make bench-full): on 1M chunks,
-- recall@10 is 0.78 at 100 and 0.96 at 400 (2.3 ms); on 100k, 0.97 at 100.
CREATE FUNCTION rag._ef_search(tenant text)
RETURNS int
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := rag._setting('ef_search');
    n bigint;
BEGIN
    IF v = 'auto' THEN
        SELECT coalesce(sum(c.chunks), 0) INTO n FROM rag.corpus_stats AS c WHERE c.tenant = _ef_search.tenant;
        RETURN least(1000, greatest(100, n / 2500))::int;
    ELSIF v !~ '^\s*\d{1,4}\s*$' OR v::int NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'rag.search: setting rag.ef_search must be auto or between 1 and 1000, got %', quote_literal(v)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'RESET rag.ef_search';
    END IF;
    RETURN v::int;
END
$$;

-- rag.search
-- Hybrid search: the vector leg (HNSW, cosine) and the lexical leg (BM25 over any query
-- term, or ts_rank) each give their top candidates, fused with weighted Reciprocal Rank
-- Fusion: score = vector_weight / (rrf_c + vector_rank) + lexical_weight / (rrf_c + lexical_rank).
--   mode     'hybrid' (default), 'vector' or 'lexical'
--   filter   JSON object on documents: {"source": ...} and/or metadata keys (see above);
--            HNSW iterative scans keep returning k rows when the filter is selective
-- HNSW knobs come from the settings rag.ef_search (rag._ef_search) and rag.iterative_scan.
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
    lexical_rank int,
    source_table text,      -- for documents of an attached table: the table ...
    source_key   jsonb)     -- ... and the row's primary key, to JOIN back to it
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_k int := rag._setting('max_k')::int;
    pred  text := rag._filter_predicate(filter);
    my_tenant text := rag.current_tenant();
    qvec  vector;
    vec_ids bigint[];   -- each leg's chunk ids, best first
    lex_ids bigint[];
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

    -- each leg gives its chunk ids best first; the legs that depend on the model or the
    -- filter are built as text (EXECUTE: planned per call, small), the fusion is static
    -- SQL, planned once per session
    IF mode IN ('hybrid', 'vector') THEN
        qvec := rag.embed(query);
        ef := greatest(rag._ef_search(my_tenant), vector_k);
        PERFORM set_config('hnsw.ef_search', ef::text, true);
        PERFORM set_config('hnsw.iterative_scan', rag._setting('iterative_scan'), true);
        -- the chunks of the tenant's embedding model, through that model's partial index
        -- (on a small table the planner may prefer an exact scan and sort: also right)
        EXECUTE format($q$
            SELECT array_agg(v.id ORDER BY v.dist, v.id)
            FROM (SELECT c.id, c.embedding::vector(%2$s) <=> $1 AS dist
                  FROM rag.chunks AS c %1$s
                  WHERE c.tenant = $3 AND c.model = %3$L
                  ORDER BY c.embedding::vector(%2$s) <=> $1
                  LIMIT $2) AS v $q$,
            CASE WHEN pred IS NULL THEN ''
                 ELSE 'JOIN rag.documents AS d ON d.id = c.document_id AND ' || pred END,
            vector_dims(qvec), rag._setting('embedding_model'))
        INTO vec_ids USING qvec, vector_k, my_tenant;
    END IF;
    IF mode IN ('hybrid', 'lexical') AND lexical_ranking = 'bm25' THEN
        lex_ids := ARRAY(SELECT b.chunk_id FROM rag.bm25(query, lexical_k, NULL, NULL, filter) AS b
                         ORDER BY b.score DESC, b.chunk_id);
    ELSIF mode IN ('hybrid', 'lexical') THEN
        EXECUTE format($q$
            SELECT array_agg(l.id ORDER BY l.rank DESC, l.id)
            FROM (SELECT c.id, ts_rank(c.tsv, $1) AS rank
                  FROM rag.chunks AS c %s
                  WHERE c.tsv @@ $1 AND c.tenant = $3
                  ORDER BY rank DESC, c.id
                  LIMIT $2) AS l $q$,
            CASE WHEN pred IS NULL THEN ''
                 ELSE 'JOIN rag.documents AS d ON d.id = c.document_id AND ' || pred END)
        INTO lex_ids USING rag.any_terms_tsquery(query), lexical_k, my_tenant;
    END IF;

    -- Reciprocal Rank Fusion: rank r in a leg adds weight / (rrf_c + r)
    RETURN QUERY
    WITH vec AS (SELECT u.id, u.r FROM unnest(vec_ids) WITH ORDINALITY AS u (id, r)),
         lex AS (SELECT u.id, u.r FROM unnest(lex_ids) WITH ORDINALITY AS u (id, r)),
         fused AS (
            SELECT coalesce(vec.id, lex.id) AS id, vec.r AS vr, lex.r AS lr,
                   coalesce(vector_weight / (rrf_c + vec.r), 0) + coalesce(lexical_weight / (rrf_c + lex.r), 0) AS rrf
            FROM vec FULL JOIN lex ON lex.id = vec.id)
    SELECT c.id, c.document_id, c.ord, c.content, f.rrf::float8, f.vr::int, f.lr::int,
           d.source_table, d.source_key
    FROM fused AS f
    JOIN rag.chunks AS c ON c.id = f.id AND c.tenant = my_tenant
    JOIN rag.documents AS d ON d.id = c.document_id
    ORDER BY f.rrf DESC, f.vr NULLS LAST, f.lr NULLS LAST, c.id
    LIMIT k;
END
$$;

-- ---- 310-lexical.sql ----
-- The lexical leg: Okapi BM25 computed in SQL over an inverted index that the ingest
-- path keeps up to date (no C extension). Per tenant:
--   rag.postings      (tenant, lexeme, chunk_id, tf, len, impact): one row per lexeme of a
--                     chunk, with its term frequency, the chunk's length in lexemes and its
--                     BM25 term weight at the default k1/b (the order in which a query
--                     reads a lexeme's postings: best first, so it can stop early)
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
                                -- (by primary key: no index on chunk_id, so plans keep to the key)
    tf       int NOT NULL,      -- occurrences of the lexeme in the chunk
    len      int NOT NULL,      -- the chunk's length in lexeme occurrences
    impact   real NOT NULL,     -- tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen)) at
                                -- k1 = 0.9, b = 0.4 and the tenant's avglen when written
    -- covering, so that scoring a candidate is one index-only probe per query lexeme
    PRIMARY KEY (tenant, lexeme, chunk_id) INCLUDE (tf, len)
) PARTITION BY LIST (tenant);   -- as rag.chunks (rag.create_tenant_partition)
CREATE TABLE rag.postings_default PARTITION OF rag.postings DEFAULT;
-- a lexeme's postings best first, read without visiting the table (rag.bm25)
CREATE INDEX postings_impact ON rag.postings (tenant, lexeme, impact DESC) INCLUDE (chunk_id, tf, len);

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
    ), lens AS (     -- the length of each chunk of the statement (none: no lexemes)
        SELECT DISTINCT p.chunk_id, p.len FROM p
    ), avglen AS (   -- per tenant, with this statement's chunks
        SELECT n.tenant, (coalesce(sum(l.len), 0) + coalesce(max(s.total_len), 0))::float8
                         / greatest(count(*) + coalesce(max(s.chunks), 0), 1) AS v
        FROM new_rows AS n
        LEFT JOIN lens AS l ON l.chunk_id = n.id
        LEFT JOIN (SELECT c.tenant, sum(c.chunks) AS chunks, sum(c.total_len) AS total_len
                   FROM rag.corpus_stats AS c
                   WHERE c.tenant IN (SELECT DISTINCT n2.tenant FROM new_rows AS n2)
                   GROUP BY c.tenant) AS s ON s.tenant = n.tenant
        GROUP BY n.tenant
    ), postings AS (
        INSERT INTO rag.postings (tenant, lexeme, chunk_id, tf, len, impact)
        SELECT p.tenant, p.lexeme, p.chunk_id, p.tf, p.len,
               p.tf * 1.9 / (p.tf + 0.9 * (0.6 + 0.4 * p.len / greatest(a.v, 1)))
        FROM p JOIN avglen AS a ON a.tenant = p.tenant
    ), df AS (
        INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
        SELECT p.tenant, p.lexeme, count(*) FROM p GROUP BY 1, 2
    )
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT n.tenant, count(*), coalesce(sum(l.len), 0)
    FROM new_rows AS n LEFT JOIN lens AS l ON l.chunk_id = n.id
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
    -- by primary key: a chunk's postings are the lexemes of its tsv
    DELETE FROM rag.postings AS po
    USING (SELECT o.tenant, o.id, u.lexeme FROM old_rows AS o, unnest(o.tsv) AS u) AS k
    WHERE po.tenant = k.tenant AND po.lexeme = k.lexeme AND po.chunk_id = k.id;
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
-- and b default to the settings rag.bm25_k1 and rag.bm25_b.
-- Candidates: the best rag.bm25_term_candidates (at least n) postings of each query lexeme (by their
-- stored impact, one index range each), so a query costs about the same at 10k and 1M
-- chunks; the best 10n of them by the lexemes that found them are then scored exactly
-- over every query lexeme. While no query lexeme has more postings than that, this is
-- exact BM25; past it, it is top-k retrieval with a recall measured by `make bench`
-- (against exact BM25 at 100k and 1M chunks). bm25_term_candidates = 0, or a `filter`
-- (rag.search's), reads every posting of every query lexeme: exact at any size, slower.
CREATE FUNCTION rag.bm25(query text, n int DEFAULT 30, k1 float8 DEFAULT NULL, b float8 DEFAULT NULL,
                         filter jsonb DEFAULT NULL)
RETURNS TABLE (chunk_id bigint, score float8)
LANGUAGE plpgsql STABLE ROWS 30
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    my_tenant text := rag.current_tenant();
    pred text := rag._filter_predicate(filter);
    per_term int := rag._setting('bm25_term_candidates')::int;
    n_chunks float8;
    total_len float8;
    avglen float8;
    lexemes text[];
    idfs float8[];
    whole boolean[];   -- the lexemes with at most per_term postings: read whole
BEGIN
    k1 := coalesce(k1, rag._setting('bm25_k1')::float8);
    b := coalesce(b, rag._setting('bm25_b')::float8);
    IF k1 < 0 OR b < 0 OR b > 1 THEN
        RAISE EXCEPTION 'rag.bm25: k1 must be >= 0 and b between 0 and 1, got % and %', k1, b
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF per_term < 0 THEN
        RAISE EXCEPTION 'rag.bm25: rag.bm25_term_candidates must be >= 0, got %', per_term
            USING ERRCODE = 'invalid_parameter_value', HINT = 'RESET rag.bm25_term_candidates';
    END IF;
    SELECT sum(c.chunks), sum(c.total_len) INTO n_chunks, total_len
    FROM rag.corpus_stats AS c WHERE c.tenant = my_tenant;
    IF coalesce(n_chunks, 0) <= 0 OR query IS NULL OR n IS NULL OR n < 1 THEN
        RETURN;
    END IF;
    avglen := greatest(total_len / n_chunks, 1);
    IF pred IS NULL AND per_term > 0 THEN
        per_term := greatest(per_term, n);   -- a one-lexeme query still gets its n results
        SELECT array_agg(i.lexeme), array_agg(i.idf), array_agg(i.df <= per_term) INTO lexemes, idfs, whole
        FROM (SELECT s.lexeme, sum(s.df) AS df,
                     ln(1 + (n_chunks - sum(s.df)::float8 + 0.5) / (sum(s.df)::float8 + 0.5)) AS idf
              FROM rag.lexeme_stats AS s
              WHERE s.tenant = my_tenant AND s.lexeme = ANY (rag.query_lexemes(query))
              GROUP BY s.lexeme
              HAVING sum(s.df) > 0) AS i;
        RETURN QUERY
        WITH cand AS (         -- the best 10n by the lexemes that found them ...
            SELECT h.chunk_id,
                   sum(h.w) FILTER (WHERE q.whole) AS known   -- exact for the lexemes read whole
            FROM unnest(lexemes, idfs, whole) AS q (lexeme, idf, whole)
            CROSS JOIN LATERAL (  -- ... each lexeme's best postings, from the impact index
                SELECT po.chunk_id, q.idf * po.tf * (k1 + 1) / (po.tf + k1 * (1 - b + b * po.len / avglen)) AS w
                FROM rag.postings AS po
                WHERE po.tenant = my_tenant AND po.lexeme = q.lexeme
                ORDER BY po.impact DESC
                LIMIT per_term) AS h
            GROUP BY h.chunk_id
            ORDER BY sum(h.w) DESC
            LIMIT 10 * n
        )
        SELECT cand.chunk_id, coalesce(cand.known, 0) + coalesce(e.rest, 0)
        FROM cand CROSS JOIN LATERAL (   -- ... scored exactly: the lexemes read in part are
            SELECT sum(q.idf * po.tf * (k1 + 1) / (po.tf + k1 * (1 - b + b * po.len / avglen))) AS rest
            FROM unnest(lexemes, idfs, whole) AS q (lexeme, idf, whole)   -- looked up by key
            JOIN rag.postings AS po ON po.tenant = my_tenant AND po.lexeme = q.lexeme AND po.chunk_id = cand.chunk_id
            WHERE NOT q.whole) AS e
        ORDER BY 2 DESC, 1
        LIMIT n;
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
             ELSE 'JOIN rag.chunks AS c ON c.id = po.chunk_id AND c.tenant = po.tenant JOIN rag.documents AS d ON d.id = c.document_id AND ' || pred END)
    USING my_tenant, rag.query_lexemes(query), k1, b, n_chunks, avglen, n;
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

SELECT pg_catalog.pg_extension_config_dump('rag.postings_default', '');
SELECT pg_catalog.pg_extension_config_dump('rag.lexeme_stats', '');
SELECT pg_catalog.pg_extension_config_dump('rag.corpus_stats', '');

-- ---- 400-ask.sql ----
-- Answers: retrieve, then answer from the retrieved chunks with [n] citations
-- (plpy/ragpg/ask.py). The chat model is rag.chat_model or the call's `model`.

-- rag.ask
-- Answer a question from the documents. Returns jsonb
-- {answer, citations: [{index, chunk_id, document_id, source, title, url, snippet}], model,
--  mode (llm or extractive), removed_citations, usage {input_tokens, output_tokens, cost},
--  latency_ms, first_token_ms, finish_reason, answer_id (its row in rag.answers)}.
CREATE FUNCTION rag.ask(question text, k int DEFAULT 8, model text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out jsonb;
BEGIN
    PERFORM rag._check_query(question, k, 'rag.ask');
    out := rag._ask(question, k, model);
    IF out IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN out;
END
$$;

-- rag._ask (internal): the answer, or NULL with a pending error
CREATE FUNCTION rag._ask(question text, k int, model text)
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
        import ragpg.ask
        GD["ragpg"] = ragpg
    ragpg = GD["ragpg"]
    return ragpg.ask.ask(plpy, question, k, model)
$python$;

-- rag.ask_stream
-- The answer in pieces as they are generated, one row each, then a last row with the
-- citations (jsonb array) and the answer's id in rag.answers (piece NULL). To get rows
-- while the model is still writing, read it through a cursor with the function in the
-- select list (a function in FROM is run to the end before the first row is returned):
--   BEGIN;
--   DECLARE a NO SCROLL CURSOR FOR SELECT (s).* FROM (SELECT rag.ask_stream('question') AS s) AS q;
--   FETCH 1 FROM a; ...
-- Bad input, retrieval and the model's first response (including retries) fail before
-- the first row; an error during the stream ends it with the provider's SQLSTATE.
CREATE FUNCTION rag._ask_stream_open_py(question text, k int, model text)
RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    if "ragpg" not in GD:
        import sys
        for _p in ("/usr/local/lib/ragpg/0.1.0/deps", "/usr/local/lib/ragpg/0.1.0"):
            if _p not in sys.path:
                sys.path.insert(0, _p)
        import ragpg.pg
        import ragpg.ask
        GD["ragpg"] = ragpg
    ragpg = GD["ragpg"]
    return ragpg.ask.ask_stream_open(plpy, question, k, model)
$python$;

CREATE FUNCTION rag._ask_stream_open(question text, k int, model text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    handle bigint;
BEGIN
    PERFORM rag._check_query(question, k, 'rag.ask_stream');
    handle := rag._ask_stream_open_py(question, k, model);
    IF handle IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN handle;
END
$$;

CREATE FUNCTION rag._ask_stream_read(handle bigint)
RETURNS TABLE (seq int, piece text, citations jsonb, answer_id bigint)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    if "ragpg" not in GD:
        import sys
        for _p in ("/usr/local/lib/ragpg/0.1.0/deps", "/usr/local/lib/ragpg/0.1.0"):
            if _p not in sys.path:
                sys.path.insert(0, _p)
        import ragpg.pg
        import ragpg.ask
        GD["ragpg"] = ragpg
    ragpg = GD["ragpg"]
    return ragpg.ask.ask_stream_read(plpy, handle)
$python$;

CREATE FUNCTION rag.ask_stream(question text, k int DEFAULT 8, model text DEFAULT NULL)
RETURNS TABLE (seq int, piece text, citations jsonb, answer_id bigint)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (rag._ask_stream_read(rag._ask_stream_open(question, k, model))).*
$$;

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

-- ---- 600-attach.sql ----
-- Auto-indexing of users' own tables: rag.attach(table, content column, ...) keeps
-- rag.documents (and so rag.chunks) in step with every INSERT, UPDATE and DELETE, through
-- statement-level triggers with transition tables (one call per statement, not per row).
--   mode 'sync'   the trigger indexes the changed rows in the same transaction
--   mode 'async'  the trigger only enqueues their keys in rag.queue (cheap, never calls a
--                 model); CALL rag.work() drains the queue in batches, several workers at a
--                 time (FOR UPDATE SKIP LOCKED), retrying failures with exponential backoff;
--                 a row that keeps failing goes to rag.errors (rag.retry_errors() requeues).
-- Documents of an attached table have source '<table>#<primary key as json>' and carry
-- source_table and source_key, so search results JOIN back to the business rows.

CREATE TABLE rag.queue (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant          text NOT NULL DEFAULT rag.current_tenant(),
    attachment_id   bigint NOT NULL REFERENCES rag.attachments (id) ON DELETE CASCADE,
    source_key      jsonb NOT NULL,
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
CREATE INDEX queue_due ON rag.queue (tenant, next_attempt_at, id);

CREATE TABLE rag.errors (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant        text NOT NULL DEFAULT rag.current_tenant(),
    attachment_id bigint NOT NULL REFERENCES rag.attachments (id) ON DELETE CASCADE,
    source_key    jsonb NOT NULL,
    attempts      int NOT NULL,
    last_error    text NOT NULL,
    enqueued_at   timestamptz NOT NULL,
    failed_at     timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('rag.queue', '');
SELECT pg_catalog.pg_extension_config_dump('rag.errors', '');

-- rag._object_expr / rag._key_expr / rag._meta_expr / rag._text_expr / rag._indexed_expr (internal)
-- SQL expressions over alias t of an attached table: columns as a jsonb object (its key,
-- its metadata), a column as text, and its indexed columns (content, title, url, metadata)
-- as one jsonb array, to compare old and new rows.
CREATE FUNCTION rag._object_expr(cols name[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'jsonb_build_object(' || string_agg(format('%L, t.%I', c, c), ', ' ORDER BY o) || ')'
    FROM unnest(cols) WITH ORDINALITY AS k (c, o)
$$;

CREATE FUNCTION rag._key_expr(a rag.attachments)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT rag._object_expr(a.key_columns) $$;

CREATE FUNCTION rag._meta_expr(a rag.attachments)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(rag._object_expr(a.metadata_columns), '''{}''::jsonb') $$;

CREATE FUNCTION rag._text_expr(col name)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN col IS NULL THEN 'NULL::text' ELSE format('t.%I::text', col) END $$;

CREATE FUNCTION rag._indexed_expr(a rag.attachments)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('jsonb_build_array(t.%I::text, %s, %s, %s)', a.content_column,
                  rag._text_expr(a.title_column), rag._text_expr(a.url_column), rag._meta_expr(a))
$$;

-- rag._attachment (internal): the attachment, visible to the caller, or a clear error
CREATE FUNCTION rag._attachment(attachment_id bigint)
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
                  HINT = 'write to an attached table as a role that may act for the tenant that attached it';
    END IF;
    RETURN a;
END
$$;

-- rag._apply_rows (internal)
-- Bring the documents of these keys of an attached table in line with the table's current
-- rows: upsert rows that exist and have content, delete the documents of the others.
-- Unchanged rows change nothing (and embed nothing).
CREATE FUNCTION rag._apply_rows(attachment_id bigint, keys jsonb[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a rag.attachments := rag._attachment(attachment_id);
    join_on text;
BEGIN
    IF keys IS NULL OR cardinality(keys) = 0 THEN
        RETURN;
    END IF;
    SELECT string_agg(format('t.%I = r.%I', c, c), ' AND ') INTO join_on FROM unnest(a.key_columns) AS c;
    EXECUTE format($q$
        WITH current_rows AS (
            SELECT k.key, t.%1$I::text AS content, %2$s AS title, %3$s AS url, %4$s AS meta
            FROM unnest($2::jsonb[]) AS k (key)
            CROSS JOIN LATERAL jsonb_populate_record(NULL::%5$s, k.key) AS r
            LEFT JOIN %5$s AS t ON %6$s
        ), gone AS (
            DELETE FROM rag.documents AS d USING current_rows AS c
            WHERE d.attachment_id = $1 AND d.source_key = c.key
              AND (c.content IS NULL OR btrim(c.content, E' \t\r\n\f\v') = '')
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
        rag._text_expr(a.title_column),
        rag._text_expr(a.url_column),
        rag._meta_expr(a),
        a.source_table, join_on)
    USING a.id, keys, a.source_table::text;
END
$$;

-- rag._attached_changed (internal)
-- The statement trigger on attached tables: the keys whose indexed columns changed (an
-- update of other columns is no change), then apply them (sync) or enqueue them (async).
CREATE FUNCTION rag._attached_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a rag.attachments := rag._attachment(TG_ARGV[0]::bigint);
    changed jsonb[];
    new_set text := format('SELECT %s AS key, %s AS val FROM new_rows AS t', rag._key_expr(a), rag._indexed_expr(a));
    old_set text := format('SELECT %s AS key, %s AS val FROM old_rows AS t', rag._key_expr(a), rag._indexed_expr(a));
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('SELECT array_agg(key) FROM (%s) AS n', new_set) INTO changed;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('SELECT array_agg(key) FROM (%s) AS o', old_set) INTO changed;
    ELSE  -- new or changed (key, indexed values), and keys that an update removed
        EXECUTE format('SELECT array_agg(key) FROM ((SELECT key FROM ((%1$s) EXCEPT (%2$s)) AS c)
                        UNION (SELECT key FROM (%2$s) AS o EXCEPT SELECT key FROM (%1$s) AS n)) AS k',
                       new_set, old_set) INTO changed;
    END IF;
    IF changed IS NULL THEN
        RETURN NULL;
    ELSIF a.mode = 'sync' THEN
        PERFORM rag._apply_rows(a.id, changed);
    ELSE
        INSERT INTO rag.queue (tenant, attachment_id, source_key)
        SELECT a.tenant, a.id, k FROM unnest(changed) AS k;
    END IF;
    RETURN NULL;
END
$$;

-- rag.attach
-- Keep rag.documents in step with a table of yours: existing rows are indexed now (sync)
-- or enqueued (async), and every later INSERT, UPDATE and DELETE is reflected. Returns the
-- attachment id. The table needs a primary key; the content column is any type castable to text.
CREATE FUNCTION rag.attach(
    source_table     regclass,
    content_column   name,
    title_column     name DEFAULT NULL,
    url_column       name DEFAULT NULL,
    metadata_columns name[] DEFAULT '{}',
    mode             text DEFAULT 'sync')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys name[];
    missing name;
    a rag.attachments;
    trig text := 'rag_index_' || md5(source_table::oid::text)::text;
BEGIN
    IF source_table IS NULL OR content_column IS NULL THEN
        RAISE EXCEPTION 'rag.attach: source_table and content_column are required' USING ERRCODE = 'null_value_not_allowed';
    ELSIF mode IS NULL OR mode NOT IN ('sync', 'async') THEN
        RAISE EXCEPTION 'rag.attach: mode must be sync or async, got %', coalesce(quote_literal(mode), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(att.attname ORDER BY k.o) INTO keys
    FROM pg_index AS i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k (attnum, o)
    JOIN pg_attribute AS att ON att.attrelid = i.indrelid AND att.attnum = k.attnum
    WHERE i.indrelid = source_table AND i.indisprimary;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'rag.attach: table % has no primary key', source_table
            USING ERRCODE = 'invalid_parameter_value', HINT = 'add one: the key is how a document finds its row';
    END IF;
    SELECT c INTO missing FROM unnest(ARRAY[content_column, title_column, url_column] || metadata_columns) AS c
    WHERE c IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute AS att
        WHERE att.attrelid = source_table AND att.attname = c AND att.attnum > 0 AND NOT att.attisdropped)
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'rag.attach: table % has no column %', source_table, quote_ident(missing)
            USING ERRCODE = 'undefined_column';
    END IF;
    IF EXISTS (SELECT 1 FROM rag.attachments AS x
               WHERE x.source_table = attach.source_table AND x.tenant = rag.current_tenant()) THEN
        RAISE EXCEPTION 'rag.attach: table % is already attached', source_table
            USING ERRCODE = 'duplicate_object', HINT = 'to change its columns or mode: SELECT rag.detach(...), then attach again';
    END IF;
    INSERT INTO rag.attachments (source_table, key_columns, content_column, title_column, url_column,
                                 metadata_columns, mode)
    VALUES (source_table, keys, content_column, title_column, url_column, coalesce(metadata_columns, '{}'), mode)
    RETURNING * INTO a;

    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION rag._attached_changed(%L)', trig || '_ins', source_table, a.id);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION rag._attached_changed(%L)', trig || '_upd', source_table, a.id);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION rag._attached_changed(%L)', trig || '_del', source_table, a.id);

    -- backfill: every existing row, in batches
    IF mode = 'async' THEN
        EXECUTE format('INSERT INTO rag.queue (tenant, attachment_id, source_key) SELECT %L, %s, %s FROM %s AS t',
                       a.tenant, a.id, rag._key_expr(a), source_table);
    ELSE
        PERFORM rag._backfill(a);
    END IF;
    RETURN a.id;
END
$$;

-- rag._backfill (internal): index every row of an attached table, rag.index_batch_size at a time
CREATE FUNCTION rag._backfill(a rag.attachments)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    batch int := rag._setting('index_batch_size')::int;
    keys jsonb[];
BEGIN
    FOR keys IN EXECUTE format('SELECT array_agg(key) FROM (SELECT %s AS key, row_number() OVER () - 1 AS n FROM %s AS t) AS x
                                GROUP BY n / %s', rag._key_expr(a), a.source_table, batch) LOOP
        PERFORM rag._apply_rows(a.id, keys);
    END LOOP;
END
$$;

-- rag.detach
-- Stop indexing a table: drop its triggers and remove its documents, chunks and queue entries.
CREATE FUNCTION rag.detach(source_table regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trig text := 'rag_index_' || md5(source_table::oid::text)::text;
    n int;
BEGIN
    DELETE FROM rag.attachments AS x WHERE x.source_table = detach.source_table AND x.tenant = rag.current_tenant();
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', trig || '_ins', source_table);
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', trig || '_upd', source_table);
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', trig || '_del', source_table);
    RETURN true;
END
$$;

-- rag.work
-- Drain the queue: batches of rag.index_batch_size keys, each in its own transaction,
-- locked with FOR UPDATE SKIP LOCKED so concurrent workers never take the same rows.
-- A failed batch is retried key by key; a failing key is retried after
-- rag.retry_base_seconds * 2^attempts, and after rag.max_attempts it moves to rag.errors.
-- A worker killed mid-batch leaves its rows queued (its transaction never committed).
-- A procedure (it commits per batch), so it cannot pin search_path: every name is qualified.
CREATE PROCEDURE rag.work(max_batches int DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    batch int;
    max_attempts int;
    base float8;
    done int := 0;
    ids bigint[];
    embedded int;
    r record;
    msg text;
BEGIN
    LOOP
        EXIT WHEN max_batches IS NOT NULL AND done >= max_batches;
        batch := rag._setting('index_batch_size')::int;
        max_attempts := rag._setting('max_attempts')::int;
        base := rag._setting('retry_base_seconds')::float8;
        SELECT pg_catalog.array_agg(q.id) INTO ids FROM (
            SELECT x.id FROM rag.queue AS x
            WHERE x.tenant = rag.current_tenant() AND x.next_attempt_at <= pg_catalog.now()
            ORDER BY x.id LIMIT batch FOR UPDATE SKIP LOCKED) AS q;
        EXIT WHEN ids IS NULL;
        BEGIN
            FOR r IN SELECT x.attachment_id, pg_catalog.array_agg(x.source_key) AS keys FROM rag.queue AS x
                     WHERE x.id = ANY (ids) GROUP BY x.attachment_id LOOP
                PERFORM rag._apply_rows(r.attachment_id, r.keys);
            END LOOP;
            DELETE FROM rag.queue AS x WHERE x.id = ANY (ids);
        EXCEPTION WHEN OTHERS THEN
            -- one bad row must not hold the others: retry the batch key by key
            FOR r IN SELECT x.* FROM rag.queue AS x WHERE x.id = ANY (ids) ORDER BY x.id LOOP
                BEGIN
                    PERFORM rag._apply_rows(r.attachment_id, ARRAY[r.source_key]);
                    DELETE FROM rag.queue AS x WHERE x.id = r.id;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
                    IF r.attempts + 1 >= max_attempts THEN
                        INSERT INTO rag.errors (tenant, attachment_id, source_key, attempts, last_error, enqueued_at)
                        VALUES (r.tenant, r.attachment_id, r.source_key, r.attempts + 1, msg, r.enqueued_at);
                        DELETE FROM rag.queue AS x WHERE x.id = r.id;
                    ELSE
                        UPDATE rag.queue AS x
                        SET attempts = x.attempts + 1, last_error = msg,
                            next_attempt_at = pg_catalog.now()
                                + pg_catalog.make_interval(secs => base * pg_catalog.power(2, x.attempts))
                        WHERE x.id = r.id;
                    END IF;
                END;
            END LOOP;
        END;
        COMMIT;
        done := done + 1;
    END LOOP;
    -- then a model switch in progress (rag.set_embedding_model): re-embed in batches, and
    -- switch when the last chunk is done
    LOOP
        EXIT WHEN max_batches IS NOT NULL AND done >= max_batches;
        batch := rag._setting('index_batch_size')::int;
        embedded := rag._reembed_batch(batch);
        EXIT WHEN embedded < 0;
        IF NOT EXISTS (SELECT 1 FROM rag.chunks AS c WHERE c.tenant = rag.current_tenant()
                       AND NOT EXISTS (SELECT 1 FROM rag.embeddings_next AS x WHERE x.chunk_id = c.id)) THEN
            PERFORM rag._finish_switch();
            COMMIT;
            EXIT;
        END IF;
        COMMIT;
        done := done + 1;
        EXIT WHEN embedded = 0;  -- what is left is locked by another worker
    END LOOP;
END
$$;

-- rag.retry_errors
-- Put the rows that failed for good back on the queue; returns how many.
CREATE FUNCTION rag.retry_errors()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH e AS (DELETE FROM rag.errors AS x WHERE x.tenant = rag.current_tenant() RETURNING x.*),
         q AS (INSERT INTO rag.queue (tenant, attachment_id, source_key) SELECT tenant, attachment_id, source_key FROM e
               RETURNING 1)
    SELECT count(*) FROM q
$$;

-- rag._queue_in_progress (internal): queue rows a worker holds right now. Row locks are
-- not in pg_locks; pgrowlocks reads them from the heap without taking them.
CREATE FUNCTION rag._queue_in_progress()
RETURNS SETOF tid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY EXECUTE format('SELECT locked_row FROM %I.pgrowlocks(%L)',
        (SELECT n.nspname FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
         WHERE e.extname = 'pgrowlocks'), 'rag.queue');
END
$$;

-- rag.queue_status: per attached table, what waits, what a worker is doing now, what is
-- being retried, what failed, and the age of the oldest row.
CREATE VIEW rag.queue_status WITH (security_invoker = true) AS
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
CREATE VIEW rag.document_status WITH (security_invoker = true) AS
    SELECT d.id AS document_id, d.source, d.source_table, d.source_key,
           count(c.id) AS chunks, count(c.embedding) AS embedded,
           string_agg(DISTINCT c.model, ', ') AS model, d.updated_at
    FROM rag.documents AS d LEFT JOIN rag.chunks AS c ON c.document_id = d.id
    GROUP BY d.id;

-- ---- 610-cron.sql ----
-- Workers on a schedule, where pg_cron is installed (Debian: postgresql-15-cron, with
-- shared_preload_libraries = 'pg_cron' and this database as cron.database_name).
-- Called through dynamic SQL, so rag itself does not depend on pg_cron.

-- rag.schedule_worker
-- A pg_cron job that runs CALL rag.work(max_batches) on `schedule` (cron syntax) as the
-- current role, in its default tenant. Returns the job id. Without pg_cron, use
-- `ragpg worker --dsn ...` instead.
CREATE FUNCTION rag.schedule_worker(schedule text DEFAULT '* * * * *', max_batches int DEFAULT 10)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'rag.schedule_worker: pg_cron is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'CREATE EXTENSION pg_cron (needs shared_preload_libraries), or run: ragpg worker --dsn ...';
    ELSIF max_batches IS NULL OR max_batches < 1 THEN
        RAISE EXCEPTION 'rag.schedule_worker: max_batches must be >= 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE 'SELECT cron.schedule($1, $2, $3)'
        INTO job
        USING 'rag.work:' || current_database() || ':' || current_user, schedule,
              format('CALL rag.work(max_batches => %s)', max_batches);
    RETURN job;
END
$$;

-- rag.unschedule_worker: remove the current role's worker job; true if there was one.
CREATE FUNCTION rag.unschedule_worker()
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        EXECUTE 'SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = $1'
            INTO done USING 'rag.work:' || current_database() || ':' || current_user;
    END IF;
    RETURN coalesce(done, false);
END
$$;

-- ---- 620-model-switch.sql ----
-- Switching the embedding model without downtime ("dimension drift").
--
-- rag.set_embedding_model(name) records the tenant's next model. rag.work (CALL it, or
-- a pg_cron job, or `ragpg worker`) then embeds every chunk again with that model in
-- batches, into rag.embeddings_next, while search keeps using the current model. When
-- no chunk is left, one transaction moves the new embeddings into rag.chunks and makes
-- the new model current: search switches atomically, and is never blocked (it reads the
-- old rows until that commit). Each model has its own partial HNSW index on rag.chunks
-- (rag.create_model_index), so models of any dimensions live side by side.

ALTER TABLE rag.tenant_models
    ADD CONSTRAINT tenant_models_embedding_model_fkey FOREIGN KEY (embedding_model) REFERENCES rag.models (name),
    ADD CONSTRAINT tenant_models_next_model_fkey FOREIGN KEY (next_model) REFERENCES rag.models (name);

CREATE TABLE rag.embeddings_next (
    chunk_id     bigint PRIMARY KEY,
    tenant       text NOT NULL DEFAULT rag.current_tenant(),
    model        text NOT NULL,
    content_hash bytea NOT NULL,      -- the chunk's, so identical chunks are embedded once
    embedding    vector NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT embeddings_next_chunk_fkey FOREIGN KEY (tenant, chunk_id)
        REFERENCES rag.chunks (tenant, id) ON DELETE CASCADE
);
COMMENT ON TABLE rag.embeddings_next IS 'Embeddings by the next model, built by rag.work during a model switch';
CREATE INDEX embeddings_next_tenant_hash ON rag.embeddings_next (tenant, model, content_hash);

-- rag._owns_chunks (internal): whether the current role may run DDL on rag.chunks (its
-- owner, or a member of the owner's role): the indexes and partitions per model and tenant
CREATE FUNCTION rag._owns_chunks()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class AS c WHERE c.oid = 'rag.chunks'::regclass
$$;

-- rag.create_model_index
-- The partial HNSW index for one embedding model (needs the owner of rag.chunks). Without
-- it, search with that model is exact (a scan): right, but slow on a large corpus.
CREATE FUNCTION rag.create_model_index(model_name text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m rag.models := rag._model(model_name, 'embed');
    idx text := CASE WHEN m.name = 'all-MiniLM-L6-v2' THEN 'chunks_embedding_hnsw'
                     ELSE 'chunks_hnsw_' || left(md5(m.name), 12) END;
BEGIN
    IF to_regclass('rag.' || idx) IS NOT NULL THEN
        RETURN idx;
    ELSIF NOT rag._owns_chunks() THEN
        RAISE EXCEPTION 'rag.create_model_index: only the owner of rag.chunks can create the index for %', quote_literal(m.name)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('as the extension''s owner: SELECT rag.create_model_index(%L)', m.name);
    END IF;
    EXECUTE format('CREATE INDEX %I ON rag.chunks USING hnsw ((embedding::vector(%s)) vector_cosine_ops)'
                   ' WITH (m = 16, ef_construction = 64) WHERE model = %L', idx, m.dimensions, m.name);
    RETURN idx;
END
$$;

-- rag.set_embedding_model (rag_admin)
-- Switch the session tenant's embedding model. With no chunks yet it is immediate
-- ('active'); otherwise the re-embedding is queued ('building') and rag.work does it.
-- Setting the current model again cancels a switch in progress.
CREATE FUNCTION rag.set_embedding_model(name text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m rag.models := rag._model(name, 'embed');
    t text := rag.current_tenant();
    cur text;
BEGIN
    IF nullif(current_setting('rag.embedding_model', true), '') IS NOT NULL THEN
        RAISE EXCEPTION 'rag.set_embedding_model: rag.embedding_model is set for this session or role (%)',
            current_setting('rag.embedding_model')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'RESET rag.embedding_model first';
    END IF;
    cur := rag._setting('embedding_model');
    BEGIN
        PERFORM rag.create_model_index(m.name);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'rag.set_embedding_model: no HNSW index for %: search will scan until the extension''s owner runs SELECT rag.create_model_index(%)',
            quote_literal(m.name), quote_literal(m.name);
    END;
    DELETE FROM rag.embeddings_next AS n WHERE n.tenant = t;  -- an earlier, unfinished switch
    IF cur = m.name OR NOT EXISTS (SELECT 1 FROM rag.chunks AS c WHERE c.tenant = t) THEN
        INSERT INTO rag.tenant_models AS tm (tenant, embedding_model, switched_at) VALUES (t, m.name, now())
        ON CONFLICT (tenant) DO UPDATE SET embedding_model = excluded.embedding_model, next_model = NULL,
            switch_started_at = NULL, switched_at = CASE WHEN tm.embedding_model = excluded.embedding_model
                                                         THEN tm.switched_at ELSE now() END;
        RETURN 'active';
    END IF;
    INSERT INTO rag.tenant_models AS tm (tenant, embedding_model, next_model, switch_started_at)
    VALUES (t, cur, m.name, now())
    ON CONFLICT (tenant) DO UPDATE SET next_model = excluded.next_model, switch_started_at = now();
    RETURN 'building';
END
$$;

-- rag._reembed_batch (internal): embed up to n chunks of the tenant with its next model;
-- returns how many, or -1 when no switch is in progress
CREATE FUNCTION rag._reembed_batch_py(n int)
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
        import ragpg.ask
        GD["ragpg"] = ragpg
    ragpg = GD["ragpg"]
    return ragpg.pg.reembed_batch(plpy, n)
$python$;

CREATE FUNCTION rag._reembed_batch(n int)
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done int := rag._reembed_batch_py(n);
BEGIN
    IF done IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN done;
END
$$;

-- rag._finish_switch (internal): when every chunk has its next embedding, make the next
-- model current, in one transaction. Writers to rag.chunks wait for it (the lock keeps
-- new chunks from slipping through); readers do not.
CREATE FUNCTION rag._finish_switch()
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text := rag.current_tenant();
    tm rag.tenant_models;
    left_over int;
BEGIN
    SELECT * INTO tm FROM rag.tenant_models AS x WHERE x.tenant = t AND x.next_model IS NOT NULL FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    LOCK TABLE rag.chunks IN SHARE ROW EXCLUSIVE MODE;
    LOOP  -- chunks written since the last batch
        left_over := rag._reembed_batch(256);
        EXIT WHEN left_over <= 0;
    END LOOP;
    UPDATE rag.chunks AS c SET model = n.model, embedding = n.embedding
    FROM rag.embeddings_next AS n
    WHERE n.chunk_id = c.id AND c.tenant = t AND n.tenant = t AND n.model = tm.next_model;
    DELETE FROM rag.embeddings_next AS n WHERE n.tenant = t;
    UPDATE rag.tenant_models AS x SET embedding_model = tm.next_model, next_model = NULL, switched_at = now()
    WHERE x.tenant = t;
    RETURN true;
END
$$;

-- rag.model_status: per tenant, its embedding model and the progress of a switch
CREATE VIEW rag.model_status WITH (security_invoker = true) AS
    SELECT t.tenant,
           coalesce(tm.embedding_model, (SELECT s.value FROM rag.settings() AS s WHERE s.name = 'embedding_model'))
               AS embedding_model,
           tm.next_model,
           (SELECT count(*) FROM rag.chunks AS c WHERE c.tenant = t.tenant) AS chunks,
           (SELECT count(*) FROM rag.embeddings_next AS n WHERE n.tenant = t.tenant AND n.model = tm.next_model)
               AS next_embedded,
           CASE WHEN tm.next_model IS NULL THEN 'active' ELSE 'building' END AS state,
           tm.switch_started_at, tm.switched_at
    FROM (SELECT rag.current_tenant() AS tenant) AS t
    LEFT JOIN rag.tenant_models AS tm ON tm.tenant = t.tenant;

-- ---- 630-partitions.sql ----
-- Partitions per tenant. rag.chunks and rag.postings are partitioned BY LIST (tenant);
-- every tenant starts in the DEFAULT partitions. A large tenant gets partitions of its
-- own: its own HNSW (per model) and GIN indexes, sized to its data, and rag.search, which
-- filters every leg on the tenant, prunes to them at executor start-up.

-- rag.create_tenant_partition (the extension's owner)
-- Give a tenant its own partitions of rag.chunks and rag.postings, moving its rows out of
-- the default ones, in one transaction. Writers wait while it runs (the tables are
-- locked), readers too for the moment the partitions are attached. Returns the name of
-- the chunks partition.
CREATE FUNCTION rag.create_tenant_partition(tenant text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    suffix text := left(md5(tenant), 12);
    c text := 'chunks_' || suffix;
    p text := 'postings_' || suffix;
BEGIN
    IF tenant IS NULL OR btrim(tenant) = '' THEN
        RAISE EXCEPTION 'rag.create_tenant_partition: tenant is empty' USING ERRCODE = 'invalid_parameter_value';
    ELSIF to_regclass('rag.' || c) IS NOT NULL THEN
        RETURN c;
    ELSIF NOT rag._owns_chunks() THEN
        RAISE EXCEPTION 'rag.create_tenant_partition: only the owner of rag.chunks can create partitions'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('as the extension''s owner: SELECT rag.create_tenant_partition(%L)', tenant);
    ELSIF EXISTS (SELECT 1 FROM rag.embeddings_next AS n WHERE n.tenant = create_tenant_partition.tenant) THEN
        RAISE EXCEPTION 'rag.create_tenant_partition: tenant % is switching its embedding model', quote_literal(tenant)
            USING ERRCODE = 'object_in_use', HINT = 'let rag.work finish the switch (rag.model_status), then retry';
    END IF;
    LOCK TABLE rag.chunks, rag.postings IN ACCESS EXCLUSIVE MODE;
    -- the default partitions are detached while the tenant's rows move out of them, so
    -- that attaching them back proves none is left
    ALTER TABLE rag.chunks DETACH PARTITION rag.chunks_default;
    ALTER TABLE rag.postings DETACH PARTITION rag.postings_default;
    EXECUTE format('CREATE TABLE rag.%I PARTITION OF rag.chunks FOR VALUES IN (%L)', c, tenant);
    EXECUTE format('CREATE TABLE rag.%I PARTITION OF rag.postings FOR VALUES IN (%L)', p, tenant);
    -- straight into the partitions: the parent's statement triggers (BM25 statistics) do
    -- not fire, and need not: the rows only move
    EXECUTE format('INSERT INTO rag.%I (id, tenant, document_id, ord, content, heading, tokens, content_hash, model,'
                   ' embedding, created_at) SELECT id, tenant, document_id, ord, content, heading, tokens,'
                   ' content_hash, model, embedding, created_at FROM rag.chunks_default WHERE tenant = %L', c, tenant);
    EXECUTE format('INSERT INTO rag.%I SELECT * FROM rag.postings_default WHERE tenant = %L', p, tenant);
    DELETE FROM rag.chunks_default AS d WHERE d.tenant = create_tenant_partition.tenant;
    DELETE FROM rag.postings_default AS d WHERE d.tenant = create_tenant_partition.tenant;
    ALTER TABLE rag.chunks ATTACH PARTITION rag.chunks_default DEFAULT;
    ALTER TABLE rag.postings ATTACH PARTITION rag.postings_default DEFAULT;
    EXECUTE format('ANALYZE rag.%I, rag.%I', c, p);
    RETURN c;
END
$$;

-- rag.tenant_partitions: which tenants have partitions of their own, and their sizes
CREATE VIEW rag.tenant_partitions WITH (security_invoker = true) AS
    SELECT pg_catalog.pg_get_expr(r.relpartbound, r.oid) AS bound, r.oid::regclass::text AS chunks_partition,
           pg_catalog.pg_total_relation_size(r.oid) AS total_bytes, r.reltuples::bigint AS approx_chunks
    FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS r ON r.oid = i.inhrelid
    WHERE i.inhparent = 'rag.chunks'::regclass;

-- ---- 900-security.sql ----
-- Row-level security: a session sees and writes only its tenant's rows
-- (rag.current_tenant(), evaluated once per statement as an init plan).
-- FORCE makes the policies apply to the tables' owner too; superusers and roles with
-- BYPASSRLS still see everything, as everywhere in Postgres.

-- Tenant tables: documents, chunks, the lexical leg's index and statistics (document
-- frequencies would leak another tenant's vocabulary), attachments, queue, errors, the usage
-- ledger and the answer log. One policy, the same on each.
-- A table added later with a tenant column joins this list.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['documents', 'chunks', 'postings', 'lexeme_stats', 'corpus_stats',
                             'attachments', 'queue', 'errors', 'usage', 'answers',
                             'tenant_models', 'embeddings_next'] LOOP
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

-- configuration: every rag role reads the model registry and the database's settings;
-- rag_admin changes them
ALTER TABLE rag.models ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.models FORCE ROW LEVEL SECURITY;
CREATE POLICY read_all ON rag.models FOR SELECT USING (true);
CREATE POLICY admin_all ON rag.models TO rag_admin USING (true) WITH CHECK (true);
ALTER TABLE rag.config ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.config FORCE ROW LEVEL SECURITY;
CREATE POLICY read_all ON rag.config FOR SELECT USING (true);
CREATE POLICY admin_all ON rag.config TO rag_admin USING (true) WITH CHECK (true);

-- API keys (names only; the secrets are not in tables): a role sees the keys it was
-- granted and its own grants; rag_admin sees and manages all
ALTER TABLE rag.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY granted ON rag.api_keys FOR SELECT USING (rag._may_use_key(name));
CREATE POLICY admin_all ON rag.api_keys TO rag_admin USING (true) WITH CHECK (true);
ALTER TABLE rag.api_key_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.api_key_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY own_grants ON rag.api_key_grants FOR SELECT USING (rag._is_member(role_name));
CREATE POLICY admin_all ON rag.api_key_grants TO rag_admin USING (true) WITH CHECK (true);

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
              JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
              WHERE e.extname = 'rag' AND d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
                AND p.prokind <> 'p'  -- a procedure with SET cannot COMMIT (rag.work)
                -- inlined into its callers, which are pinned: every name in it is qualified
                AND p.oid <> ALL (ARRAY['rag._setting_value(text, text, text)'::pg_catalog.regprocedure,
                                        'rag._setting_defaults()'::pg_catalog.regprocedure]) LOOP
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
                rag.eval_run, rag.eval_run_query, rag.eval_runs, rag.eval_compare,
                rag.attachments, rag.queue, rag.errors, rag.queue_status, rag.document_status,
                rag.models, rag.config, rag.api_keys, rag.api_key_grants, rag.usage, rag.answers,
                rag.usage_daily, rag.cost_by_model, rag.tenant_models, rag.embeddings_next,
                rag.model_status, rag.tenant_partitions TO rag_reader;
-- every model call is logged by the caller's transaction (search and ask too)
GRANT INSERT ON rag.usage, rag.answers TO rag_reader;
GRANT EXECUTE ON FUNCTION
    rag.current_tenant(),
    rag._is_member(name),
    rag._may_act_for(text),
    rag.settings(),
    rag._setting(text),
    rag._setting_defaults(),
    rag._setting_value(text, text, text),
    rag.embed(text, text),
    rag._embed(text, text),
    rag._model(text, text),
    rag._may_use_key(text),
    rag._queue_in_progress(),
    rag.spent_today(),
    rag._python_error(),
    rag._raise_python_error(),
    rag._ask(text, int, text),
    rag._ask_stream_open_py(text, int, text),
    rag._ask_stream_open(text, int, text),
    rag._ask_stream_read(bigint),
    rag.ask_stream(text, int, text),
    rag.any_terms_tsquery(text),
    rag._check_query(text, int, text),
    rag._filter_predicate(jsonb),
    rag._ef_search(text),
    rag.query_lexemes(text),
    rag.bm25(text, int, float8, float8, jsonb),
    rag.search(text, int, text, jsonb, int, int, int, float8, float8, text),
    rag.ask(text, int, text),
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
GRANT INSERT, DELETE ON rag.attachments TO rag_writer;
GRANT INSERT, UPDATE, DELETE ON rag.queue, rag.errors TO rag_writer;
GRANT EXECUTE ON FUNCTION
    rag.attach(regclass, name, name, name, name[], text),
    rag.detach(regclass),
    rag._attachment(bigint),
    rag._object_expr(name[]),
    rag._key_expr(rag.attachments),
    rag._meta_expr(rag.attachments),
    rag._indexed_expr(rag.attachments),
    rag._text_expr(name),
    rag._apply_rows(bigint, jsonb[]),
    rag._backfill(rag.attachments),
    rag.retry_errors(),
    rag.schedule_worker(text, int),
    rag.unschedule_worker()
TO rag_writer;
GRANT EXECUTE ON PROCEDURE rag.work(int) TO rag_writer;
-- a model switch: rag.work re-embeds and finishes it
GRANT UPDATE (model, embedding) ON rag.chunks TO rag_writer;
GRANT INSERT, DELETE ON rag.embeddings_next TO rag_writer;
GRANT UPDATE ON rag.tenant_models TO rag_writer;
GRANT EXECUTE ON FUNCTION
    rag._reembed_batch_py(int),
    rag._reembed_batch(int),
    rag._finish_switch()
TO rag_writer;
-- eval sets are loaded and run by writers, into tenants they may act for (RLS checks)
GRANT INSERT, UPDATE, DELETE ON rag.eval_sets, rag.eval_queries, rag.eval_qrels, rag.eval_run,
                                rag.eval_run_query TO rag_writer;

-- rag_admin: tenants, models, settings, API keys
GRANT INSERT, DELETE ON rag.tenant_roles TO rag_admin;
GRANT INSERT, UPDATE, DELETE ON rag.models, rag.config, rag.api_keys, rag.api_key_grants TO rag_admin;
GRANT INSERT ON rag.tenant_models TO rag_admin;
GRANT EXECUTE ON FUNCTION
    rag.grant_tenant(name, text),
    rag.revoke_tenant(name, text),
    rag.configure(text, text),
    rag.add_model(text, text, text, text, int, int, numeric, numeric, text, text, text, jsonb),
    rag.use_model(text),
    rag.set_embedding_model(text),
    rag.create_model_index(text),
    rag._owns_chunks(),
    rag.create_tenant_partition(text),
    rag.set_api_key(text, text, text),
    rag._write_key_file(text, text),
    rag.grant_api_key(text, name),
    rag.revoke_api_key(text, name),
    rag.drop_api_key(text)
TO rag_admin;
