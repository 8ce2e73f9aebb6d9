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
-- server (OpenAI, Ollama, vLLM, llama.cpp, LM Studio): provider => 'openai', base_url. A
-- reranker (kind 'rerank') is a server answering POST {base_url}/rerank (Cohere, Jina,
-- Voyage, Hugging Face TEI, vLLM, llama.cpp), with the same bearer key.
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
        RAISE EXCEPTION 'rag.add_model: unknown provider %', rag._shown(provider)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'the provider is ''openai'' (any OpenAI-compatible server)';
    ELSIF kind IS NULL OR kind NOT IN ('embed', 'chat', 'rerank') THEN
        RAISE EXCEPTION 'rag.add_model: kind must be ''embed'', ''chat'' or ''rerank'', got %', rag._shown(kind)
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF base_url IS NULL OR base_url !~ '^https?://[^\s]+$' THEN
        RAISE EXCEPTION 'rag.add_model: base_url must be an http(s) URL, got %', rag._shown(base_url)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1';
    ELSIF kind = 'embed' AND (dimensions IS NULL OR dimensions NOT BETWEEN 1 AND 16000) THEN
        RAISE EXCEPTION 'rag.add_model: an embedding model needs dimensions between 1 and 16000, got %',
            coalesce(dimensions::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    ELSIF api_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM rag.api_keys AS k WHERE k.name = add_model.api_key) THEN
        RAISE EXCEPTION 'rag.add_model: API key % does not exist', rag._shown(api_key)
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
        RAISE EXCEPTION 'rag: model % is not registered', rag._shown(model_name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name, kind FROM rag.models lists them; rag.add_model registers one';
    ELSIF m.kind <> want_kind THEN
        RAISE EXCEPTION 'rag: model % is a % model, not a % model', rag._shown(model_name), m.kind, want_kind
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
    ELSIF m.kind = 'rerank' THEN
        RAISE EXCEPTION 'rag.use_model: % is a reranker: name it per call', rag._shown(m.name)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'rag.search(..., rerank => ''name'') or rag.ask(..., rerank => ''name'')';
    END IF;
    RETURN rag.set_embedding_model(m.name);
END
$$;

-- rag.set_api_key (rag_admin)
-- Store a provider API key under a name. Pass the secret as a bind parameter
-- (psycopg: cur.execute("SELECT rag.set_api_key('openai', %s)", [secret])) so that it is
-- not in the query text, or name a server environment variable with env_var.
CREATE OR REPLACE FUNCTION rag._write_key_file(name text, secret text, base_url text)
RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.write_key_file(plpy, name, secret, base_url)
$python$;

-- rag.set_api_key (rag_admin)
-- Store a provider key's secret for use with models at base_url only (the binding is kept
-- with the secret: no SQL role can move it). Changing an existing key needs the role that
-- set it; a key from the server's environment (env_var) needs a superuser.
CREATE OR REPLACE FUNCTION rag.set_api_key(name text, secret text DEFAULT NULL, env_var text DEFAULT NULL,
                                           base_url text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner name := (SELECT k.created_by FROM rag.api_keys AS k WHERE k.name = set_api_key.name);
    url text := rtrim(base_url, '/');
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN
        RAISE EXCEPTION 'rag.set_api_key: invalid key name %', rag._shown(name)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'letters, digits, ".", "_", "-"; at most 64';
    ELSIF (secret IS NULL) = (env_var IS NULL) THEN
        RAISE EXCEPTION 'rag.set_api_key: give exactly one of secret and env_var'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'secret as a bind parameter, or env_var => ''OPENAI_API_KEY'' (set in the server''s environment)';
    ELSIF secret IS NOT NULL AND (length(secret) NOT BETWEEN 1 AND 4096 OR secret ~ '[\r\n]') THEN
        RAISE EXCEPTION 'rag.set_api_key: the secret must be one line of 1 to 4096 characters'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF env_var IS NOT NULL AND env_var !~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$' THEN
        RAISE EXCEPTION 'rag.set_api_key: invalid environment variable name %', rag._shown(env_var)
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF url IS NULL OR url !~ '^https?://[^\s/]+(/[^\s]*)?$' THEN
        RAISE EXCEPTION 'rag.set_api_key: base_url must be the http(s) URL the key is for, got %', rag._shown(base_url)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. base_url => ''https://api.openai.com/v1'': only models at this URL can use the key';
    ELSIF owner IS NOT NULL AND owner <> current_user AND NOT rag._is_superuser() THEN
        RAISE EXCEPTION 'rag.set_api_key: API key % was set by role %; only that role can change it', rag._shown(name), owner
            USING ERRCODE = 'insufficient_privilege', HINT = 'use another key name';
    ELSIF env_var IS NOT NULL AND NOT rag._is_superuser() THEN
        RAISE EXCEPTION 'rag.set_api_key: a key from the server''s environment needs a superuser'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the server''s environment holds more than API keys; store the secret itself: rag.set_api_key(name, $1, base_url => ...)';
    END IF;
    INSERT INTO rag.api_keys AS k (name, source, env_var, base_url)
    VALUES (set_api_key.name, CASE WHEN secret IS NULL THEN 'env' ELSE 'file' END, env_var, url)
    ON CONFLICT ON CONSTRAINT api_keys_pkey DO UPDATE SET source = excluded.source, env_var = excluded.env_var,
        base_url = excluded.base_url, created_by = current_user, created_at = now();
    IF NOT rag._write_key_file(name, secret, url) THEN   -- NULL secret removes the file
        PERFORM rag._raise_python_error();
    END IF;
END
$$;

-- rag._key_binding (internal)
-- Row trigger on rag.api_keys (rag_admin may write the table): a key's binding (base_url)
-- and source change only by its owner or a superuser, and only a superuser names an
-- environment variable. The binding that the server enforces is the one kept with the
-- secret (ragpg/keys.py); this keeps the table telling the truth.
CREATE OR REPLACE FUNCTION rag._key_binding()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rag._is_superuser() OR rag._restoring() THEN
        RETURN NEW;
    ELSIF NEW.source = 'env' AND (TG_OP = 'INSERT' OR OLD.env_var IS DISTINCT FROM NEW.env_var) THEN
        RAISE EXCEPTION 'rag.api_keys: a key from the server''s environment needs a superuser'
            USING ERRCODE = 'insufficient_privilege';
    ELSIF TG_OP = 'UPDATE' AND OLD.created_by <> current_user
          AND (OLD.base_url, OLD.source, OLD.env_var) IS DISTINCT FROM (NEW.base_url, NEW.source, NEW.env_var) THEN
        RAISE EXCEPTION 'rag.api_keys: API key % was set by role %; only that role can change it', rag._shown(OLD.name), OLD.created_by
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER api_keys_binding BEFORE INSERT OR UPDATE ON rag.api_keys
    FOR EACH ROW EXECUTE FUNCTION rag._key_binding();

-- rag._model_key_binding (internal)
-- Row trigger on rag.models: a model that names an API key lives at the key's base_url
-- (the URL itself or under it). rag.add_model and direct writes alike.
CREATE OR REPLACE FUNCTION rag._model_key_binding()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bound text;
BEGIN
    IF NEW.api_key IS NULL OR rag._restoring() THEN
        RETURN NEW;
    END IF;
    SELECT k.base_url INTO bound FROM rag.api_keys AS k WHERE k.name = NEW.api_key;
    IF bound IS NULL OR NOT (NEW.base_url = bound OR starts_with(NEW.base_url, bound || '/')) THEN
        RAISE EXCEPTION 'rag: model % is at %, and API key % may only be sent to %', rag._shown(NEW.name),
            rag._shown(NEW.base_url), rag._shown(NEW.api_key), coalesce(bound, '(no URL: set the key again with base_url)')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'a key goes only to the base URL it was set for: rag.set_api_key(name, $1, base_url => ...) by its owner';
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER models_key_binding BEFORE INSERT OR UPDATE ON rag.models
    FOR EACH ROW EXECUTE FUNCTION rag._model_key_binding();

-- rag._model_identity (internal)
-- Row trigger on rag.models: an embedding model in use (rag._embedding_model_in_use) keeps
-- what makes its vectors, its name, kind, provider, provider_model, dimensions and normalize
-- option, and is not deleted (to be added again as another); otherwise chunks embedded by
-- one model would be compared with queries embedded by another as if alike. Its base URL,
-- prices, key and limits may change. rag.add_model and direct writes alike.
CREATE OR REPLACE FUNCTION rag._model_identity()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.kind = 'embed' AND NOT rag._restoring()
       AND (TG_OP = 'DELETE'
            OR (OLD.name, OLD.kind, OLD.provider, coalesce(OLD.provider_model, OLD.name), OLD.dimensions,
                OLD.options->'normalize')
               IS DISTINCT FROM (NEW.name, NEW.kind, NEW.provider, coalesce(NEW.provider_model, NEW.name),
                                 NEW.dimensions, NEW.options->'normalize'))
       AND rag._embedding_model_in_use(OLD.name) THEN
        RAISE EXCEPTION 'rag: embedding model % is in use; it cannot be deleted, nor its name, kind, provider, '
                        'provider_model, dimensions and normalize option change', rag._shown(OLD.name)
            USING ERRCODE = 'object_in_use',
                  HINT = 'register the new model under another name and switch to it with rag.set_embedding_model, '
                         'which embeds the chunks again';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE OR REPLACE TRIGGER models_identity BEFORE UPDATE OR DELETE ON rag.models
    FOR EACH ROW EXECUTE FUNCTION rag._model_identity();

CREATE OR REPLACE FUNCTION rag.grant_api_key(name text, role_name name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rag.api_keys AS k WHERE k.name = grant_api_key.name) THEN
        RAISE EXCEPTION 'rag.grant_api_key: API key % does not exist', rag._shown(name)
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
    IF NOT rag._write_key_file(name, NULL, NULL) THEN
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
