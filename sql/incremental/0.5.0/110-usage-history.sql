-- rag.usage_history: the calls of rag.usage that rag.purge_ledger removed, summed per UTC
-- day, tenant, model, provider and operation, so that rag.usage_daily and
-- rag.cost_by_model keep their totals after a purge (rag.usage_retention).
CREATE TABLE rag.usage_history (
    tenant        text NOT NULL,
    day           date NOT NULL,      -- the UTC day of the calls
    model         text NOT NULL,
    provider      text NOT NULL,
    operation     text NOT NULL,
    calls         bigint NOT NULL CHECK (calls >= 0),
    input_tokens  bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens bigint NOT NULL CHECK (output_tokens >= 0),
    cost          numeric NOT NULL CHECK (cost >= 0),
    PRIMARY KEY (tenant, day, model, provider, operation)
);
SELECT pg_catalog.pg_extension_config_dump('rag.usage_history', '');
