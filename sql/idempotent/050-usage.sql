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
-- (plpy/ragpg/spend.py); rag._counted_today_py reads it (as text; NULL with a pending error)
CREATE OR REPLACE FUNCTION rag._counted_today_py()
RETURNS text
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.counted_today(plpy)
$python$;

CREATE OR REPLACE FUNCTION rag._counted_today()
RETURNS numeric
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    counted text := rag._counted_today_py();
BEGIN
    IF counted IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN counted::numeric;
END
$$;

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

-- rag._priced_calls (internal): the session tenant's priced calls of a UTC day (today or
-- yesterday, as YYYY-MM-DD) as this server journaled them, outside any transaction, one
-- object per call, then one per role for the calls past the journal's cap (NULL with a
-- pending error)
CREATE OR REPLACE FUNCTION rag._priced_calls(day text)
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.priced_calls(plpy, day)
$python$;

-- rag.priced_calls: those calls, each with whether the ledger holds it (recorded: a
-- rag.usage row of the same call, role, operation, model and tokens, and at least its
-- cost: the journal's, or the registry's for those tokens if lower, as the ledger rounds
-- it); one the ledger does not hold was rolled back, is still open, or ran on a hot standby
CREATE OR REPLACE FUNCTION rag.priced_calls(day date DEFAULT (now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (at timestamptz, role_name name, operation text, model text, requests int, answered int,
               counted numeric, cost numeric, input_tokens bigint, output_tokens bigint, recorded boolean,
               pid int, call_id text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    journal jsonb := rag._priced_calls(pg_catalog.to_char(priced_calls.day, 'YYYY-MM-DD'));
BEGIN
    IF journal IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    -- (one pass over the tenant's ledger rows of the two days, hashed: not one per call)
    RETURN QUERY
    SELECT c.at, c.role_name, c.operation, c.model, c.requests, c.answered, c.counted, c.cost,
           c.input_tokens, c.output_tokens,
           CASE WHEN c.call_id IS NOT NULL
                THEN l.cost IS NOT NULL
                     AND l.cost >= least(c.cost, rag._call_cost(c.input_tokens, c.output_tokens, m.price_input_per_1m,
                                                                 m.price_output_per_1m)) END,
           c.pid, c.call_id
    FROM jsonb_to_recordset(journal) AS c (call_id text, at timestamptz, role_name name, operation text, model text,
                                          pid int, requests int, answered int, counted numeric, cost numeric,
                                          input_tokens bigint, output_tokens bigint)
    LEFT JOIN (SELECT u.call_id, u.role_name, u.operation, u.model, u.input_tokens, u.output_tokens,
                      max(u.cost) AS cost
               FROM rag.usage AS u
               WHERE u.tenant = (SELECT rag.current_tenant()) AND u.call_id IS NOT NULL
                 AND u.at >= (priced_calls.day::timestamp AT TIME ZONE 'UTC') - interval '1 day'
               GROUP BY 1, 2, 3, 4, 5, 6) AS l
           ON l.call_id = c.call_id AND l.role_name = c.role_name AND l.operation = c.operation
          AND l.model = c.model AND l.input_tokens = c.input_tokens AND l.output_tokens = c.output_tokens
    LEFT JOIN rag.models AS m ON m.name = l.model
    ORDER BY c.call_id IS NULL, c.at, c.call_id, c.role_name;
END
$$;

-- rag._call_cost (internal): a call's cost at a model's prices, in numeric: the one place it
-- is computed (rag._usage_rows prices the ledger's rows with it, rag.priced_calls checks them)
CREATE OR REPLACE FUNCTION rag._call_cost(input_tokens bigint, output_tokens bigint, price_input_per_1m numeric,
                                          price_output_per_1m numeric)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (_call_cost.input_tokens * _call_cost.price_input_per_1m
            + _call_cost.output_tokens * _call_cost.price_output_per_1m) / 1000000
$$;

-- rag._usage_rows (internal): rag.usage rows from calls as the Python side records them
-- (a jsonb array of {op, model, calls, tin, tout, ms, call}), priced from the registry's
-- current prices (rag._call_cost)
CREATE OR REPLACE FUNCTION rag._usage_rows(usage jsonb)
RETURNS TABLE (operation text, model text, provider text, calls int, input_tokens bigint, output_tokens bigint,
               cost numeric, latency_ms float8, call_id text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT u.op, m.name, m.provider, u.calls, u.tin, u.tout,
           rag._call_cost(u.tin, u.tout, m.price_input_per_1m, m.price_output_per_1m), u.ms, u.call
    FROM jsonb_to_recordset(_usage_rows.usage)
         AS u (op text, model text, calls int, tin bigint, tout bigint, ms float8, call text)
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
    INSERT INTO rag.usage (operation, model, provider, calls, input_tokens, output_tokens, cost, latency_ms, call_id)
    SELECT * FROM rag._usage_rows(_log_usage.usage)
$$;
