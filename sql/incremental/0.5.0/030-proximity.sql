-- Score fusion gains a proximity term: rag._search_legs takes whether to compute
-- it and returns each candidate's proximity, so its old signature goes (the new one is in
-- idempotent/300-search.sql); rag.search's new argument proximity_weight changes its
-- signature too (its 0.4.0 one is dropped in 010-pages.sql).
DROP FUNCTION IF EXISTS rag._search_legs(text, text, int, int, float8, float8, jsonb, text, boolean);
