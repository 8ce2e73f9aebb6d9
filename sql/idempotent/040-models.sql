-- rag._may_use_key (internal): whether the current role was granted this key
CREATE OR REPLACE FUNCTION rag._may_use_key(key_name text)
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
CREATE OR REPLACE FUNCTION rag.add_model(
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
CREATE OR REPLACE FUNCTION rag._model(model_name text, want_kind text)
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
CREATE OR REPLACE FUNCTION rag.use_model(name text)
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
CREATE OR REPLACE FUNCTION rag._write_key_file(name text, secret text)
RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.write_key_file(plpy, name, secret)
$python$;

CREATE OR REPLACE FUNCTION rag.set_api_key(name text, secret text DEFAULT NULL, env_var text DEFAULT NULL)
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
CREATE OR REPLACE FUNCTION rag.grant_api_key(name text, role_name name)
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

CREATE OR REPLACE FUNCTION rag.revoke_api_key(name text, role_name name)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM rag.api_key_grants AS g
               WHERE g.key_name = revoke_api_key.name AND g.role_name = revoke_api_key.role_name RETURNING 1)
    SELECT count(*) > 0 FROM d
$$;

CREATE OR REPLACE FUNCTION rag.drop_api_key(name text)
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

-- rag._models_restored (internal)
-- Row trigger on rag.models: during a restore (rag._restoring), a dumped row of a model
-- that CREATE EXTENSION already registered (a built-in one) updates that row.
CREATE OR REPLACE FUNCTION rag._models_restored()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rag._restoring() AND EXISTS (SELECT 1 FROM rag.models AS m WHERE m.name = NEW.name) THEN
        UPDATE rag.models AS m
        SET kind = NEW.kind, provider = NEW.provider, provider_model = NEW.provider_model, base_url = NEW.base_url,
            dimensions = NEW.dimensions, max_input_tokens = NEW.max_input_tokens,
            price_input_per_1m = NEW.price_input_per_1m, price_output_per_1m = NEW.price_output_per_1m,
            api_key = NEW.api_key, tokenizer = NEW.tokenizer, options = NEW.options, created_at = NEW.created_at
        WHERE m.name = NEW.name;
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER models_restored BEFORE INSERT ON rag.models
    FOR EACH ROW EXECUTE FUNCTION rag._models_restored();
