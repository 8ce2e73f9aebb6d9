-- rag.usage_daily: per UTC day, tenant, model and operation
CREATE OR REPLACE VIEW rag.usage_daily WITH (security_invoker = true) AS
SELECT (u.at AT TIME ZONE 'UTC')::date AS day, u.tenant, u.model, u.operation,
       sum(u.calls)::bigint AS calls, sum(u.input_tokens)::bigint AS input_tokens,
       sum(u.output_tokens)::bigint AS output_tokens, sum(u.cost) AS cost
FROM rag.usage AS u
GROUP BY 1, 2, 3, 4;

-- rag.cost_by_model: totals per model, with its current prices
CREATE OR REPLACE VIEW rag.cost_by_model WITH (security_invoker = true) AS
SELECT u.model, m.provider, m.kind, sum(u.calls)::bigint AS calls,
       sum(u.input_tokens)::bigint AS input_tokens, sum(u.output_tokens)::bigint AS output_tokens,
       sum(u.cost) AS cost, m.price_input_per_1m, m.price_output_per_1m,
       min(u.at) AS first_call, max(u.at) AS last_call
FROM rag.usage AS u LEFT JOIN rag.models AS m ON m.name = u.model
GROUP BY u.model, m.provider, m.kind, m.price_input_per_1m, m.price_output_per_1m;

-- rag.spent_today: the session tenant's cost so far this UTC day (the budget's measure)
CREATE OR REPLACE FUNCTION rag.spent_today()
RETURNS numeric
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(u.cost), 0) FROM rag.usage AS u
    WHERE u.tenant = (SELECT rag.current_tenant())
      AND u.at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
$$;
