-- Files in: rag.ingest_file takes a file's bytes (PDF, DOCX, HTML, markdown, text), finds
-- its text (plpy/ragpg/files.py) and ingests it with rag.ingest, so a file is upserted by
-- source like any document. Nothing is read from the server's file system.

-- rag._extract_file_py (internal)
-- The file's text, formats, title and pages; every column NULL (ok too) with a pending
-- error (raised by the caller, rag._raise_python_error).
CREATE OR REPLACE FUNCTION rag._extract_file_py(
    data bytea, filename text, format text,
    OUT content text, OUT file_format text, OUT text_format text, OUT title text, OUT pages int, OUT ok boolean)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.extract_file(plpy, data, filename, format) or (None,) * 6
$python$;

-- rag._check_file (internal): a clear error for a file argument that cannot be ingested.
CREATE OR REPLACE FUNCTION rag._check_file(data bytea, filename text, caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_bytes bigint := rag._setting('max_file_bytes')::bigint;
BEGIN
    IF filename IS NULL THEN
        RAISE EXCEPTION '%: filename is NULL', caller
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass the file''s name, e.g. handbook.pdf: its suffix helps find the format';
    ELSIF btrim(filename) = '' THEN
        RAISE EXCEPTION '%: filename is empty', caller
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass the file''s name, e.g. handbook.pdf';
    ELSIF data IS NULL THEN
        RAISE EXCEPTION '%: file % is NULL', caller, rag._shown(filename)
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass the file''s bytes';
    ELSIF octet_length(data) = 0 THEN
        RAISE EXCEPTION '%: file % is empty (0 bytes)', caller, rag._shown(filename)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'check that the whole file was sent';
    ELSIF octet_length(data) > max_bytes THEN
        RAISE EXCEPTION '%: file % is % bytes, over the limit of % bytes', caller, rag._shown(filename),
                        octet_length(data), max_bytes
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'split the file, or ask an administrator to raise rag.max_file_bytes: SELECT rag.configure(''max_file_bytes'', ...)';
    END IF;
END
$$;

-- rag._file_metadata (internal): what rag.ingest_file records of a file in the document's
-- metadata, under the key "file" (and "format", the parser its text needs).
CREATE OR REPLACE FUNCTION rag._file_metadata(data bytea, filename text, file_format text, text_format text, pages int)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('format', text_format,
                              'file', jsonb_strip_nulls(jsonb_build_object(
                                  'name', filename, 'format', file_format, 'bytes', octet_length(data),
                                  'sha256', encode(sha256(data), 'hex'), 'pages', pages)))
$$;

-- rag._extract_file (internal)
-- A file's text, title and the metadata rag.ingest_file records; a NULL or empty file
-- gives a NULL content (an attached row without a file has no document), a bad one a
-- clear error naming it. The one path from a file to its text: rag.ingest_file and the
-- attach triggers (rag._apply_rows) both use it.
CREATE OR REPLACE FUNCTION rag._extract_file(data bytea, filename text, format text DEFAULT 'auto',
                                             OUT content text, OUT title text, OUT metadata jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    x record;
BEGIN
    IF data IS NULL OR octet_length(data) = 0 THEN
        RETURN;
    END IF;
    PERFORM rag._check_file(data, filename, 'rag.ingest_file');
    x := rag._extract_file_py(data, filename, coalesce(format, 'auto'));
    IF x.ok IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    content := x.content;
    title := x.title;
    metadata := rag._file_metadata(data, filename, x.file_format, x.text_format, x.pages);
END
$$;

-- rag.ingest_file
-- Add or replace the document made from a file's bytes; returns its id. source defaults
-- to the file name; title to the file's own (PDF metadata, or its first heading).
CREATE OR REPLACE FUNCTION rag.ingest_file(
    data     bytea,
    filename text,
    source   text DEFAULT NULL,
    title    text DEFAULT NULL,
    url      text DEFAULT NULL,
    metadata jsonb DEFAULT '{}',
    format   text DEFAULT 'auto')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    x record;
BEGIN
    PERFORM rag._check_file(data, filename, 'rag.ingest_file');
    IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'rag.ingest_file: metadata must be a JSON object, got %', coalesce(jsonb_typeof(metadata), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass e.g. ''{"team": "support"}''::jsonb';
    END IF;
    x := rag._extract_file(data, filename, format);
    RETURN rag.ingest(x.content, coalesce(source, filename), coalesce(title, x.title), url, metadata || x.metadata);
END
$$;
