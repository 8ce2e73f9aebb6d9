-- The three roles of rag (cluster-wide, created once, kept across DROP EXTENSION):
--   rag_reader  search and ask
--   rag_writer  rag_reader + ingest, insert/update/delete documents, attach tables
--   rag_admin   rag_writer + tenants, models, keys, settings
-- Grant them to login roles: GRANT rag_writer TO app_user. Privileges: 999-privileges.sql.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rag_reader') THEN
        CREATE ROLE rag_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rag_writer') THEN
        CREATE ROLE rag_writer NOLOGIN IN ROLE rag_reader;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rag_admin') THEN
        CREATE ROLE rag_admin NOLOGIN IN ROLE rag_writer;
    END IF;
END
$$;
