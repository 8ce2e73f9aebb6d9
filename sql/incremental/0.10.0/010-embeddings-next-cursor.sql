-- A model switch's batches find where the last one stopped (hostile review 48, F5): each
-- batch read the tenant's chunks in id order from the first and passed over every one
-- already embedded, so a switch was quadratic in the tenant's chunks. The highest chunk
-- done per tenant and model is read from this index (rag.embeddings_next holds rows only
-- while a switch is in progress: the index is built over those, if any).
CREATE INDEX IF NOT EXISTS embeddings_next_tenant_chunk ON rag.embeddings_next (tenant, model, chunk_id);

-- The index for a chunk's text already embedded (by hash) leads with the hash: led by
-- (tenant, model), it was what the planner took for the highest chunk done as well, on a
-- table a switch starts empty and unanalysed, reading every row done in each batch.
DROP INDEX IF EXISTS rag.embeddings_next_tenant_hash;
CREATE INDEX IF NOT EXISTS embeddings_next_hash ON rag.embeddings_next (content_hash, tenant, model);
