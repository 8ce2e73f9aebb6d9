-- Switching the embedding model without downtime ("dimension drift").
--
-- rag.set_embedding_model(name) records the tenant's next model. rag.work (CALL it, or
-- a pg_cron job, or `ragpg worker`) then embeds every chunk again with that model in
-- batches, into rag.embeddings_next, while search keeps using the current model. When
-- no chunk is left, one transaction moves the new embeddings into rag.chunks and makes
-- the new model current: search switches atomically, and is never blocked (it reads the
-- old rows until that commit). Each model has its own partial HNSW index on rag.chunks
-- (rag.create_model_index), so models of any dimensions live side by side.

ALTER TABLE rag.tenant_models
    ADD CONSTRAINT tenant_models_embedding_model_fkey FOREIGN KEY (embedding_model) REFERENCES rag.models (name),
    ADD CONSTRAINT tenant_models_next_model_fkey FOREIGN KEY (next_model) REFERENCES rag.models (name);

CREATE TABLE rag.embeddings_next (
    chunk_id     bigint PRIMARY KEY,
    tenant       text NOT NULL DEFAULT rag.current_tenant(),
    model        text NOT NULL,
    content_hash bytea NOT NULL,      -- the chunk's, so identical chunks are embedded once
    embedding    vector NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT embeddings_next_chunk_fkey FOREIGN KEY (tenant, chunk_id)
        REFERENCES rag.chunks (tenant, id) ON DELETE CASCADE
);
CREATE INDEX embeddings_next_tenant_hash ON rag.embeddings_next (tenant, model, content_hash);
