-- rag.search gains `fusion` (score fusion by default), `rerank` and `rerank_k`, and its legs
-- return scores: the old signatures go (their new versions are in idempotent/300-search.sql).
DROP FUNCTION IF EXISTS rag.search(text, int, text, jsonb, int, int, int, float8, float8, text);
DROP FUNCTION IF EXISTS rag._search_legs(text, text, int, int, float8, float8, jsonb, boolean);
