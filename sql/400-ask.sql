-- Answers: retrieve, then answer from the retrieved chunks with [n] citations.

-- rag.ask
-- Answer a question from the documents. Returns jsonb
-- {answer, citations: [{index, chunk_id, document_id, source, title, url, snippet}], mode, model}.
-- Without an LLM configured the answer is extractive (sentences of the retrieved chunks).
CREATE FUNCTION rag.ask(question text, k int DEFAULT 8)
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    plpy.execute(plpy.prepare("SELECT rag._check_query($1, $2, 'rag.ask')", ["text", "int"]), [question, k])
    return ragpg.pg.ask(plpy, question, k)
$python$;
