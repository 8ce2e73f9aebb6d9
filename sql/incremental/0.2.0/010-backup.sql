-- 0.2.0: pg_dump / pg_restore round-trip every row.
--
-- 1. The identity sequences hold user state too (the next document, chunk, usage row...):
--    without them a restored database fails its first insert with 23505.
DO $$
DECLARE
    seq text;
BEGIN
    FOR seq IN SELECT pg_catalog.pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)
               FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
               WHERE c.relnamespace = 'rag'::regnamespace AND c.relkind IN ('r', 'p') AND a.attidentity <> ''
               ORDER BY 1 LOOP
        PERFORM pg_catalog.pg_extension_config_dump(seq, '');
    END LOOP;
END
$$;

-- 2. Every model of the registry, the built-in ones too: an admin may have changed one
--    (its base_url, prices). A restore updates the built-in rows that CREATE EXTENSION
--    made (rag._models_restored) instead of failing on their key.
SELECT pg_catalog.pg_extension_config_dump('rag.models', '');

-- 3. The next model's embeddings of a model switch in progress.
SELECT pg_catalog.pg_extension_config_dump('rag.embeddings_next', '');

-- 4. A chunk's document: a foreign key per partition instead of one on the partitioned
--    table. A tenant's own partition (rag.create_tenant_partition) is not part of the
--    extension, so pg_dump restores its rows with plain COPY, in name order: 'chunks_<t>'
--    before 'documents'. With the key inherited from rag.chunks that COPY failed; a key of
--    the partition's own is dumped after the data, like any user table's.
--    A document's chunks are deleted by rag.documents' delete trigger, through rag.chunks,
--    so that its statement trigger keeps the BM25 statistics (a cascade from a partition's
--    key would delete from the partition, where rag.chunks' statement triggers do not fire);
--    the key, checked at commit, makes sure none is left.
ALTER TABLE rag.chunks DROP CONSTRAINT chunks_document_fkey;
DO $$
DECLARE
    part name;
BEGIN
    FOR part IN SELECT c.relname FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'rag.chunks'::regclass ORDER BY 1 LOOP
        EXECUTE pg_catalog.format(
            'ALTER TABLE rag.%I ADD CONSTRAINT %I FOREIGN KEY (tenant, document_id)'
            ' REFERENCES rag.documents (tenant, id) DEFERRABLE INITIALLY DEFERRED', part, part || '_document_fkey');
    END LOOP;
END
$$;
