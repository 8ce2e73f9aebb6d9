-- PL/Python entry points. Each body is a few lines: the prologue (expanded at build time
-- from sql/python-prologue.py) puts the extension's own versioned package directory on
-- sys.path once per session, then the body calls into plpy/ragpg/pg.py.

-- Errors: a PL/Python function that fails returns NULL and leaves its error pending; the
-- plpgsql function that called it raises it with rag._raise_python_error(), so users see
-- 'rag.x: message' with its SQLSTATE, not PL/Python's 'plpy.Error: ...'.

-- rag._python_error / rag._raise_error / rag._raise_python_error (internal)
CREATE OR REPLACE FUNCTION rag._python_error()
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.take_error()
$python$;

CREATE OR REPLACE FUNCTION rag._raise_error(err jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING
        MESSAGE = coalesce(err->>'message', 'rag: unknown error'),
        ERRCODE = coalesce(err->>'sqlstate', 'XX000'),
        DETAIL = coalesce(err->>'detail', ''),
        HINT = coalesce(err->>'hint', '');
END
$$;

CREATE OR REPLACE FUNCTION rag._raise_python_error()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err jsonb := rag._python_error();
BEGIN
    IF err IS NULL THEN
        RAISE EXCEPTION 'rag: internal error: a Python function returned NULL without an error'
            USING ERRCODE = 'internal_error';
    END IF;
    PERFORM rag._raise_error(err);
END
$$;

-- rag._embed_query (internal): the embedding as pgvector's text form (vec), or NULL with a
-- pending error, and the rag.usage rows of its call for rag.embed to write (usage; as
-- rag._search_legs'). Text, not real[]: PL/Python passes every float to Postgres as a
-- printed string, and a real[] of 384 cost 0.5 ms to build; ragpg.embedding prints integers.
DROP FUNCTION IF EXISTS rag._embed(text, text);   -- 0.2.0's, as real[]
CREATE OR REPLACE FUNCTION rag._embed_query(input text, model text, OUT vec text, OUT usage jsonb)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.embed_query(plpy, input, model)
$python$;

-- rag._vector_schema (internal): pgvector's schema, quoted for SQL text. rag's functions
-- run with search_path = pg_catalog, pg_temp, without that schema: a role that can create
-- objects in it (public, often) could otherwise plant a function or operator with closer
-- argument types than pg_catalog's (an array_agg(bigint)) that rag would call with its
-- caller's rights. So every pgvector type, operator and function rag names at run time is
-- qualified with this (Postgres 15 has no @extschema:vector@).
CREATE OR REPLACE FUNCTION rag._vector_schema()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT quote_ident(n.nspname) FROM pg_catalog.pg_extension AS e
    JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'vector'
$$;

-- rag.embed
-- The embedding of a text with the current embedding model (rag.embedding_model), or
-- with `model` of rag.models. Useful to compare texts: SELECT rag.embed('a') <=> rag.embed('b').
CREATE OR REPLACE FUNCTION rag.embed(input text, model text DEFAULT NULL)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text;
    usage jsonb;
BEGIN
    IF input IS NULL OR btrim(input, E' \t\r\n\f\v') = '' THEN
        RAISE EXCEPTION 'rag.embed: input is empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass the text to embed';
    END IF;
    SELECT q.vec, q.usage INTO v, usage FROM rag._embed_query(input, model) AS q;
    IF v IS NULL THEN
        PERFORM rag._raise_python_error();
    ELSIF usage IS NOT NULL THEN   -- (written here: no subtransaction id, as from PL/Python)
        PERFORM rag._log_usage(usage);
    END IF;
    RETURN v;  -- pgvector's text form, read by the declared result type's input function
END
$$;

-- rag._index_documents_py / rag._index_documents (internal)
-- Chunk and embed these documents and replace their chunks (called by the triggers).
CREATE OR REPLACE FUNCTION rag._index_documents_py(document_ids bigint[])
RETURNS int
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.index_documents(plpy, document_ids or [])
$python$;

CREATE OR REPLACE FUNCTION rag._index_documents(document_ids bigint[])
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int := rag._index_documents_py(document_ids);
BEGIN
    IF n IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN n;
END
$$;

-- rag.backend_stats
-- Counters of this backend: model calls, texts embedded, chunks reused, time per stage.
CREATE OR REPLACE FUNCTION rag.backend_stats()
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.backend_stats()
$python$;
