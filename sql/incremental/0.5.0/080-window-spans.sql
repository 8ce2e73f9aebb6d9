-- The lexical windows of score fusion (each candidate's best window by BM25) from what is
-- kept at ingest: where each of the chunk's windows starts in its tsvector's positions
-- (window_bounds: one more entry than windows, the last one past the last window's end)
-- and how many lexemes it holds (window_lengths). Search then reads the windows' term
-- frequencies from the positions it already fetches for the proximity term. NULL (chunks
-- indexed before): search tokenizes the chunk's windows itself, with the same result.
ALTER TABLE rag.chunks ADD COLUMN window_bounds int4[], ADD COLUMN window_lengths int4[];
