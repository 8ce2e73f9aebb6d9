-- The lexical windows of score fusion (each candidate's best window by BM25) from what is
-- kept at ingest: where each of the chunk's windows starts in its tsvector's positions
-- (window_bounds: one more entry than windows, the last one past the last window's end)
-- and how many lexemes it holds (window_lengths). Search then reads the windows' term
-- frequencies from the positions it already fetches for the proximity term. NULL (chunks
-- indexed before): search tokenizes the chunk's windows itself, with the same result.
ALTER TABLE rag.chunks ADD COLUMN window_bounds int4[], ADD COLUMN window_lengths int4[];

-- what rag.work has left to do, found without a scan: the chunks without window
-- embeddings (windows_todo) and those without bounds (bounds_todo: empty once it is done,
-- since chunks indexed from now on get them at ingest); on each partition, as every index
-- of rag.chunks (0.2.0/020-partition-indexes.sql says why), and by
-- rag._make_partition_indexes on the partitions made from now on
DO $$
DECLARE
    part text;
BEGIN
    FOR part IN SELECT c.relname FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'rag.chunks'::regclass ORDER BY 1 LOOP
        EXECUTE pg_catalog.format('CREATE INDEX %I ON rag.%I (tenant, id) WHERE window_embeddings IS NULL',
                                  part || '_windows_todo_idx', part);
        EXECUTE pg_catalog.format('CREATE INDEX %I ON rag.%I (tenant, id) WHERE window_bounds IS NULL',
                                  part || '_bounds_todo_idx', part);
    END LOOP;
END
$$;
