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
    #@ragpg-prologue
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
