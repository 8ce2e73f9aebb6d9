-- rag.tenant_budgets: a tenant's own daily budget, over rag.daily_budget's (rag.configure),
-- which every other tenant keeps. Set by a rag_admin acting for the tenant
-- (rag.set_daily_budget); a session of the tenant may lower it, not raise it.
CREATE TABLE rag.tenant_budgets (
    tenant        text PRIMARY KEY DEFAULT rag.current_tenant(),
    daily_budget  numeric NOT NULL CHECK (daily_budget >= 0 AND daily_budget <= 1e12),
    set_at        timestamptz NOT NULL DEFAULT now(),
    set_by        name NOT NULL DEFAULT current_user
);
SELECT pg_catalog.pg_extension_config_dump('rag.tenant_budgets', '');
