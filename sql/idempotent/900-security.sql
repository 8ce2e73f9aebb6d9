-- Row-level security: a session sees and writes only its tenant's rows
-- (rag.current_tenant(), evaluated once per statement as an init plan).
-- FORCE makes the policies apply to the tables' owner too; superusers and roles with
-- BYPASSRLS still see everything, as everywhere in Postgres.

-- Tenant tables: documents, chunks, the lexical leg's index and statistics (document
-- frequencies would leak another tenant's vocabulary), attachments, queue, errors, the usage
-- ledger and the answer log. One policy, the same on each.
-- A table added later with a tenant column joins this list.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['documents', 'chunks', 'posting_blocks', 'lexeme_stats', 'corpus_stats',
                             'attachments', 'queue', 'errors', 'usage', 'usage_history', 'answers',
                             'tenant_models', 'embeddings_next', 'tenant_budgets'] LOOP
        EXECUTE format('ALTER TABLE rag.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE rag.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON rag.%I', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON rag.%I'
                       ' USING (tenant = (SELECT rag.current_tenant()))'
                       ' WITH CHECK (tenant = (SELECT rag.current_tenant()))', t);
    END LOOP;
END
$$;

-- eval sets, their queries, judgments and runs: visible to whoever may act for the
-- set's tenant (not only while acting for it, so a BI role granted the tenant sees runs).
-- Each row below a set carries the set's tenant (a foreign key on (tenant, set_name)).
ALTER TABLE rag.eval_sets ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_sets FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_access ON rag.eval_sets;
CREATE POLICY tenant_access ON rag.eval_sets
    USING (rag._may_act_for(tenant)) WITH CHECK (rag._may_act_for(tenant));
ALTER TABLE rag.eval_queries ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_queries FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS via_set ON rag.eval_queries;
DROP POLICY IF EXISTS tenant_access ON rag.eval_queries;
CREATE POLICY tenant_access ON rag.eval_queries
    USING (rag._may_act_for(tenant)) WITH CHECK (rag._may_act_for(tenant));
ALTER TABLE rag.eval_qrels ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_qrels FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS via_set ON rag.eval_qrels;
DROP POLICY IF EXISTS tenant_access ON rag.eval_qrels;
CREATE POLICY tenant_access ON rag.eval_qrels
    USING (rag._may_act_for(tenant)) WITH CHECK (rag._may_act_for(tenant));
ALTER TABLE rag.eval_answers ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_answers FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS via_set ON rag.eval_answers;
DROP POLICY IF EXISTS tenant_access ON rag.eval_answers;
CREATE POLICY tenant_access ON rag.eval_answers
    USING (rag._may_act_for(tenant)) WITH CHECK (rag._may_act_for(tenant));
ALTER TABLE rag.eval_answer_run ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_answer_run FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS via_set ON rag.eval_answer_run;
DROP POLICY IF EXISTS tenant_access ON rag.eval_answer_run;
CREATE POLICY tenant_access ON rag.eval_answer_run
    USING (rag._may_act_for(tenant)) WITH CHECK (rag._may_act_for(tenant));
ALTER TABLE rag.eval_answer_run_query ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_answer_run_query FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS via_run ON rag.eval_answer_run_query;
CREATE POLICY via_run ON rag.eval_answer_run_query
    USING (EXISTS (SELECT 1 FROM rag.eval_answer_run AS r WHERE r.id = run_id));
ALTER TABLE rag.eval_run ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_run FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS via_set ON rag.eval_run;
DROP POLICY IF EXISTS tenant_access ON rag.eval_run;
CREATE POLICY tenant_access ON rag.eval_run
    USING (rag._may_act_for(tenant)) WITH CHECK (rag._may_act_for(tenant));
ALTER TABLE rag.eval_run_query ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.eval_run_query FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS via_run ON rag.eval_run_query;
CREATE POLICY via_run ON rag.eval_run_query
    USING (EXISTS (SELECT 1 FROM rag.eval_run AS r WHERE r.id = run_id));

-- a role sees only the tenant grants that apply to it; rag_admin manages all of them
ALTER TABLE rag.tenant_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.tenant_roles FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_grants ON rag.tenant_roles;
CREATE POLICY own_grants ON rag.tenant_roles FOR SELECT
    USING (rag._is_member(role_name));
DROP POLICY IF EXISTS admin_all ON rag.tenant_roles;
CREATE POLICY admin_all ON rag.tenant_roles TO rag_admin USING (true) WITH CHECK (true);

-- configuration: every rag role reads the model registry and the database's settings;
-- rag_admin changes them
ALTER TABLE rag.models ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.models FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS read_all ON rag.models;
CREATE POLICY read_all ON rag.models FOR SELECT USING (true);
DROP POLICY IF EXISTS admin_all ON rag.models;
CREATE POLICY admin_all ON rag.models TO rag_admin USING (true) WITH CHECK (true);
ALTER TABLE rag.model_indexes ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.model_indexes FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS read_all ON rag.model_indexes;
CREATE POLICY read_all ON rag.model_indexes FOR SELECT USING (true);
ALTER TABLE rag.config ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.config FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS read_all ON rag.config;
CREATE POLICY read_all ON rag.config FOR SELECT USING (true);
DROP POLICY IF EXISTS admin_all ON rag.config;
CREATE POLICY admin_all ON rag.config TO rag_admin USING (true) WITH CHECK (true);

-- API keys (names only; the secrets are not in tables): a role sees the keys it was
-- granted and its own grants; rag_admin sees and manages all
ALTER TABLE rag.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.api_keys FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS granted ON rag.api_keys;
CREATE POLICY granted ON rag.api_keys FOR SELECT USING (rag._may_use_key(name));
DROP POLICY IF EXISTS admin_all ON rag.api_keys;
CREATE POLICY admin_all ON rag.api_keys TO rag_admin USING (true) WITH CHECK (true);
ALTER TABLE rag.api_key_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.api_key_grants FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_grants ON rag.api_key_grants;
CREATE POLICY own_grants ON rag.api_key_grants FOR SELECT USING (rag._is_member(role_name));
DROP POLICY IF EXISTS admin_all ON rag.api_key_grants;
CREATE POLICY admin_all ON rag.api_key_grants TO rag_admin USING (true) WITH CHECK (true);
