-- Window embeddings: each chunk is also embedded in windows of up to 64 words
-- (ragpg.chunking.windows), and the vector leg scores a chunk by the mean of its own
-- cosine and its best window's. NULL: not embedded yet (chunks indexed before 0.5.0, or
-- since a model switch, or with rag.window_embeddings off): such a chunk scores its own
-- cosine, and rag.work embeds its windows (nothing is re-embedded by the upgrade itself).
-- '{}': the chunk is one window.
ALTER TABLE rag.chunks ADD COLUMN window_embeddings vector[];
-- what rag.work has left to embed, found without a scan (empty once it is done)
CREATE INDEX chunks_windows_todo ON rag.chunks (tenant, id) WHERE window_embeddings IS NULL;
