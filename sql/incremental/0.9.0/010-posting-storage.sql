-- A posting block's ids, tfs and lens are stored uncompressed (hostile review 46b): a
-- writer's blocks of one repeated id compressed 450 to 1, so 5 MB on disk took every
-- reader's BM25 2.2 GB; uncompressed, a block costs a reader a few times its size on disk.
-- rag's own blocks compress little (a merged block's ids are in weight order). Applies to
-- values written from now on, in every partition (SET STORAGE recurses; a new partition
-- takes its parent's); rows written before are left as they are.
ALTER TABLE rag.posting_blocks ALTER COLUMN ids SET STORAGE EXTERNAL,
                               ALTER COLUMN tfs SET STORAGE EXTERNAL,
                               ALTER COLUMN lens SET STORAGE EXTERNAL;
