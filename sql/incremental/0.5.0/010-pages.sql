-- Files in, pages out: each chunk knows the page it comes from (PDF text keeps a form
-- feed between pages, and the chunker never lets a chunk span one). NULL for text
-- without pages; chunks indexed before 0.5.0 keep NULL until their document is
-- re-indexed (nothing is re-chunked by the upgrade).
ALTER TABLE rag.chunks ADD COLUMN page int;
ALTER TABLE rag.chunks ADD CONSTRAINT chunks_page_check CHECK (page >= 1);
-- rag.search returns where each chunk is (heading path, page, link): its result type
-- changes, so the old signature goes (the new one is in idempotent/300-search.sql)
DROP FUNCTION IF EXISTS rag.search(text, int, text, jsonb, int, int, int, float8, float8, text, text, text, int);
