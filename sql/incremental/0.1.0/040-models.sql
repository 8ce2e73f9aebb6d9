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

CREATE TABLE rag.api_key_grants (
    key_name   text NOT NULL REFERENCES rag.api_keys (name) ON DELETE CASCADE,
    role_name  name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_name, role_name)
);
SELECT pg_catalog.pg_extension_config_dump('rag.api_keys', '');
SELECT pg_catalog.pg_extension_config_dump('rag.api_key_grants', '');

ALTER TABLE rag.models ADD CONSTRAINT models_api_key_fkey
    FOREIGN KEY (api_key) REFERENCES rag.api_keys (name) ON DELETE SET NULL;
