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
SELECT pg_catalog.pg_extension_config_dump('rag.tenant_models', '');
