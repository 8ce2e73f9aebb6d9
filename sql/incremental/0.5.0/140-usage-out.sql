-- rag._rerank and rag._embed_query give rag.search and rag.embed the rag.usage rows of
-- their calls to write (OUT usage), rather than writing them from PL/Python, where each
-- statement is a subtransaction and one that writes takes an id. Their result types
-- change: the old ones go first.
DROP FUNCTION IF EXISTS rag._rerank(text, text, text, text[]);
DROP FUNCTION IF EXISTS rag._embed_query(text, text);
