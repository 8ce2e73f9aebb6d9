-- rag._apply_rows takes the keys a statement deleted as a third argument (hostile review
-- 40b); the two-argument form of 0.7.0 goes (an internal function; its callers are rag's)
DROP FUNCTION IF EXISTS rag._apply_rows(bigint, jsonb[]);
