-- rag._rerank gives rag.search the rag.usage row of its call to write (OUT usage), rather
-- than writing it from PL/Python, where each statement is a subtransaction and one that
-- writes takes an id. Its result type changes: the old one goes first.
DROP FUNCTION IF EXISTS rag._rerank(text, text, text, text[]);
