-- rag.usage_daily: per UTC day, tenant, model and operation (the calls rag.purge_ledger
-- summed into rag.usage_history included)
CREATE OR REPLACE VIEW rag.usage_daily WITH (security_invoker = true) AS
SELECT d.day, d.tenant, d.model, d.operation,
       sum(d.calls)::bigint AS calls, sum(d.input_tokens)::bigint AS input_tokens,
       sum(d.output_tokens)::bigint AS output_tokens, sum(d.cost) AS cost
FROM (SELECT (u.at AT TIME ZONE 'UTC')::date AS day, u.tenant, u.model, u.operation,
             u.calls::bigint AS calls, u.input_tokens, u.output_tokens, u.cost
      FROM rag.usage AS u
      UNION ALL
      SELECT h.day, h.tenant, h.model, h.operation, h.calls, h.input_tokens, h.output_tokens, h.cost
      FROM rag.usage_history AS h) AS d
GROUP BY 1, 2, 3, 4;

-- rag.cost_by_model: totals per model, with its current prices (rag.usage_history
-- included: a purged call counts from the start of its UTC day in first_call and last_call)
CREATE OR REPLACE VIEW rag.cost_by_model WITH (security_invoker = true) AS
SELECT d.model, m.provider, m.kind, sum(d.calls)::bigint AS calls,
       sum(d.input_tokens)::bigint AS input_tokens, sum(d.output_tokens)::bigint AS output_tokens,
       sum(d.cost) AS cost, m.price_input_per_1m, m.price_output_per_1m,
       min(d.first_at) AS first_call, max(d.last_at) AS last_call
FROM (SELECT u.model, u.calls::bigint AS calls, u.input_tokens, u.output_tokens, u.cost,
             u.at AS first_at, u.at AS last_at
      FROM rag.usage AS u
      UNION ALL
      SELECT h.model, h.calls, h.input_tokens, h.output_tokens, h.cost,
             h.day::timestamp AT TIME ZONE 'UTC', h.day::timestamp AT TIME ZONE 'UTC'
      FROM rag.usage_history AS h) AS d
LEFT JOIN rag.models AS m ON m.name = d.model
GROUP BY d.model, m.provider, m.kind, m.price_input_per_1m, m.price_output_per_1m;

-- rag._recorded_today (internal): the session tenant's cost this UTC day in the ledger
-- (this transaction's rows included)
CREATE OR REPLACE FUNCTION rag._recorded_today()
RETURNS numeric
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(u.cost), 0) FROM rag.usage AS u
    WHERE u.tenant = (SELECT rag.current_tenant())
      AND u.at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
$$;

-- rag._counted_today (internal): the session tenant's cost this UTC day as the server
-- counted it, outside any transaction: calls whose transaction rolled back included
-- (plpy/ragpg/spend.py)
CREATE OR REPLACE FUNCTION rag._counted_today()
RETURNS numeric
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.counted_today(plpy)
$python$;

-- rag.spent_today: the session tenant's cost so far this UTC day (the budget's measure):
-- the ledger's, or the server's count if greater (a rolled-back call leaves no ledger row)
CREATE OR REPLACE FUNCTION rag.spent_today()
RETURNS numeric
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT greatest(rag._recorded_today(), rag._counted_today())
$$;

-- rag.budget_today: the session tenant's budget and what counts against it today; a
-- count above the ledger is calls whose transaction rolled back (or is still open)
CREATE OR REPLACE FUNCTION rag.budget_today(OUT budget numeric, OUT recorded numeric, OUT counted numeric,
                                            OUT spent numeric, OUT remaining numeric)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT b.v, r.v, c.v, greatest(r.v, c.v), CASE WHEN b.v IS NOT NULL THEN greatest(b.v - greatest(r.v, c.v), 0) END
    FROM (SELECT nullif(rag._setting('daily_budget'), '')::numeric AS v) AS b,
         (SELECT rag._recorded_today() AS v) AS r, (SELECT rag._counted_today() AS v) AS c
$$;

-- rag._usage_rows (internal): rag.usage rows from calls as the Python side records them
-- (a jsonb array of {op, model, calls, tin, tout, ms}), priced from the registry's
-- current prices: the one place a call's cost is computed
CREATE OR REPLACE FUNCTION rag._usage_rows(usage jsonb)
RETURNS TABLE (operation text, model text, provider text, calls int, input_tokens bigint, output_tokens bigint,
               cost numeric, latency_ms float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT u.op, m.name, m.provider, u.calls, u.tin, u.tout,
           (u.tin * m.price_input_per_1m + u.tout * m.price_output_per_1m) / 1000000, u.ms
    FROM jsonb_to_recordset(_usage_rows.usage) AS u (op text, model text, calls int, tin bigint, tout bigint, ms float8)
    JOIN rag.models AS m ON m.name = u.model
$$;

-- rag._log_usage (internal): writes them. Called from plpgsql (rag.search, rag.embed,
-- rag._store_answer) it runs in the caller's transaction: PL/Python runs each of its
-- statements as a subtransaction, and one that writes takes a subtransaction id.
CREATE OR REPLACE FUNCTION rag._log_usage(usage jsonb)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO rag.usage (operation, model, provider, calls, input_tokens, output_tokens, cost, latency_ms)
    SELECT * FROM rag._usage_rows(_log_usage.usage)
$$;
