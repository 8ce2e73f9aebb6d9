-- rag.attach takes a bytea column of files (PDF, DOCX, ...) and a column with their names
-- or content types: the attachment records both, and rag.attach gains filename_column
-- (the old signature goes; the new one is in idempotent/600-attach.sql).
ALTER TABLE rag.attachments ADD COLUMN content_is_file boolean NOT NULL DEFAULT false;
ALTER TABLE rag.attachments ADD COLUMN filename_column name;
DROP FUNCTION IF EXISTS rag.attach(regclass, name, name, name, name[], text, boolean);
