-- A chunk's embedding stays in its row (STORAGE MAIN; pgvector's default is EXTERNAL). A
-- chunk's row is over TOAST's 2 kB with its text and window embeddings, so the 1.5 kB
-- embedding went out of line, and every exact cosine (a small tenant's vector leg, the
-- candidates only BM25 found, a filtered search) fetched it from the TOAST table: 2.5 ms
-- for 1,218 chunks, 0.7 ms inline. The other long columns go out of line first, the
-- embedding only if the row is still too long (a model of thousands of dimensions).
-- Partitions follow (new ones copy it); rows already written keep theirs out of line
-- until they are written again.
ALTER TABLE rag.chunks ALTER COLUMN embedding SET STORAGE MAIN;
