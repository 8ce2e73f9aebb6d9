-- Answers: retrieve, then answer from the retrieved chunks with [n] citations.

-- rag.ask
-- Answer a question from the documents. Returns jsonb
-- {answer, citations: [{index, chunk_id, document_id, source, title, url, snippet}], mode, model}.
-- Without an LLM configured the answer is extractive (sentences of the retrieved chunks).
CREATE FUNCTION rag.ask(question text, k int DEFAULT 8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out jsonb;
BEGIN
    PERFORM rag._check_query(question, k, 'rag.ask');
    out := rag._ask(question, k);
    IF out IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN out;
END
$$;

-- rag._ask (internal): the answer, or NULL with a pending error
CREATE FUNCTION rag._ask(question text, k int)
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.ask(plpy, question, k)
$python$;
