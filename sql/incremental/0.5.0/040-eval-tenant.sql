-- rag._eval_tenant names its caller in its error (rag.evaluate or rag.evaluate_answers):
-- a new argument, so the old signature goes (the new one is in idempotent/500-eval.sql).
DROP FUNCTION IF EXISTS rag._eval_tenant(text);
