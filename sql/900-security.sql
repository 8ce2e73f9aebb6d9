-- Row-level security: a session sees and writes only its tenant's rows
-- (rag.current_tenant(), evaluated once per statement as an init plan).
-- FORCE makes the policies apply to the tables' owner too; superusers and roles with
-- BYPASSRLS still see everything, as everywhere in Postgres.

ALTER TABLE rag.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.documents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rag.documents
    USING (tenant = (SELECT rag.current_tenant()))
    WITH CHECK (tenant = (SELECT rag.current_tenant()));

ALTER TABLE rag.chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rag.chunks
    USING (tenant = (SELECT rag.current_tenant()))
    WITH CHECK (tenant = (SELECT rag.current_tenant()));

-- a role sees only the tenant grants that apply to it; rag_admin manages all of them
ALTER TABLE rag.tenant_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.tenant_roles FORCE ROW LEVEL SECURITY;
CREATE POLICY own_grants ON rag.tenant_roles FOR SELECT
    USING (rag._is_member(role_name));
CREATE POLICY admin_all ON rag.tenant_roles TO rag_admin USING (true) WITH CHECK (true);
