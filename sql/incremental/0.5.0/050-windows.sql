-- Window embeddings: each chunk is also embedded in windows of up to 64 words
-- (ragpg.chunking.windows), and the vector leg scores a chunk by the mean of its own
-- cosine and its best window's. NULL: not embedded yet (chunks indexed before 0.5.0, or
-- since a model switch, or with rag.window_embeddings off): such a chunk scores its own
-- cosine, and rag.work embeds its windows (nothing is re-embedded by the upgrade itself).
-- '{}': the chunk is one window.
ALTER TABLE rag.chunks ADD COLUMN window_embeddings @extschema:vector@.vector[];
-- at most ragpg.chunking.MAX_WINDOWS: a writer writes its own tenant's chunks, and a search
-- reads every candidate's windows
ALTER TABLE rag.chunks ADD CONSTRAINT chunks_window_embeddings_check CHECK (cardinality(window_embeddings) <= 12);

-- (what rag.work has left to embed is indexed by 080-window-spans.sql, with the bounds it also fills in)
