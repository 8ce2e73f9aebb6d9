-- rag.tenant_models.embedding_model may be NULL: the tenant uses the database's model
-- (rag.embedding_model), as with no row. A tenant's writers make that row before they first
-- read the model (rag._claim_tenant_models), so that an immediate model switch always has a
-- row to lock against a first document still being embedded (0.4.0 switched under it).
ALTER TABLE rag.tenant_models ALTER COLUMN embedding_model DROP NOT NULL;
