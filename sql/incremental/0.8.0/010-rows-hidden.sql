-- 0.7.0's rag._rows_hidden_from_owner (a policy forced on the owner) became
-- rag._rows_hidden (Postgres' row_security_active: any policy that applies to the caller;
-- hostile review 39d). Internal, called by rag.check and rag.resync only.
DROP FUNCTION IF EXISTS rag._rows_hidden_from_owner(regclass);
