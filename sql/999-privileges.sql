-- Privileges, in one place. Until roles arrive (rag_reader / rag_writer / rag_admin),
-- the extension's owner and superusers use it; internal functions are not for PUBLIC.
REVOKE ALL ON FUNCTION rag._index_documents(bigint[]) FROM PUBLIC;
