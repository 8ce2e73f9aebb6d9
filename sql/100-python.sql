-- PL/Python entry points. Each body is a few lines: the prologue (expanded at build time
-- from sql/python-prologue.py) puts the extension's own versioned package directory on
-- sys.path once per session, then the body calls into plpy/ragpg/pg.py.

-- rag.embed
-- The embedding of a text with the current embedding model (rag.embedding_model).
-- Useful to compare texts in SQL: SELECT rag.embed('a') <=> rag.embed('b').
CREATE FUNCTION rag.embed(input text)
RETURNS vector
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    if input is None or not input.strip():
        plpy.error("rag.embed: input is empty", sqlstate="22023",
                   hint="pass the text to embed")
    return ragpg.pg.embed_query(plpy, input)
$python$;

-- rag._index_documents
-- Chunk and embed these documents and replace their chunks (called by the triggers).
CREATE FUNCTION rag._index_documents(document_ids bigint[])
RETURNS int
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.index_documents(plpy, document_ids or [])
$python$;

-- rag.backend_stats
-- Counters of this backend: model calls, texts embedded, chunks reused, time per stage.
CREATE FUNCTION rag.backend_stats()
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.backend_stats()
$python$;
