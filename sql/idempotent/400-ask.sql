-- Answers: retrieve, then answer from the retrieved chunks with [n] citations
-- (plpy/ragpg/ask.py). The chat model is rag.chat_model or the call's `model`.

-- rag.ask
-- Answer a question from the documents. Returns jsonb
-- {answer, citations: [{index, chunk_id, document_id, source, title, url, snippet}], model,
--  mode (llm or extractive), removed_citations, usage {input_tokens, output_tokens, cost},
--  latency_ms, first_token_ms, finish_reason, answer_id (its row in rag.answers),
--  rerank {model, rerank_k, reranked, error} (with rerank)}.
-- rerank: a reranker or chat model that reorders the search's best rerank_k before the
-- best k become the context (rag.search's rerank); if it fails, the fused order is used
-- and rerank.error says why.
CREATE OR REPLACE FUNCTION rag.ask(question text, k int DEFAULT 8, model text DEFAULT NULL,
                                   rerank text DEFAULT NULL, rerank_k int DEFAULT 30)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out jsonb;
BEGIN
    PERFORM rag._check_query(question, k, 'rag.ask');
    out := rag._ask(question, k, model, rerank, rerank_k);
    IF out IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN rag._store_answer(out);
END
$$;

-- rag._store_answer (internal): writes what an answer's _log holds (the answer's row in
-- rag.answers unless `store` is false, or rag.forget_answers is on and a chunk it retrieved
-- is gone; the rag.usage rows of its model calls) and returns
-- the answer without _log, with answer_id. Called from plpgsql (rag.ask) it takes no
-- subtransaction id of its own, as a write from PL/Python does (rag.ask_stream's end).
CREATE OR REPLACE FUNCTION rag._store_answer(result jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    log jsonb := result->'_log';
    answer_id bigint;
BEGIN
    -- (nothing to write on a hot standby: the Python side kept no row and stores nothing)
    IF jsonb_typeof(log->'usage') = 'array' AND jsonb_array_length(log->'usage') > 0 THEN
        PERFORM rag._log_usage(log->'usage');
    END IF;
    IF (log->>'store')::boolean AND rag._bool_setting('forget_answers')
       AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(log->'retrieved') AS r (id)
                   WHERE NOT EXISTS (SELECT 1 FROM rag.chunks AS c
                                     WHERE c.tenant = (SELECT rag.current_tenant()) AND c.id = r.id::bigint)) THEN
        -- (rag.forget_answers: a chunk it retrieved was deleted, and the delete committed,
        -- while it was being written; its trigger could not see this answer: not logged)
        log := jsonb_set(log, '{store}', 'false');
    END IF;
    IF (log->>'store')::boolean THEN
        INSERT INTO rag.answers (question, answer, model, mode, cited_chunk_ids, retrieved_chunk_ids,
                                 removed_citations, latency_ms, first_token_ms, input_tokens, output_tokens,
                                 finish_reason)
        VALUES (log->>'question', result->>'answer', result->>'model', result->>'mode',
                ARRAY(SELECT (c->>'chunk_id')::bigint FROM jsonb_array_elements(result->'citations') AS c),
                ARRAY(SELECT r::bigint FROM jsonb_array_elements_text(log->'retrieved') AS r),
                (result->>'removed_citations')::int, (result->>'latency_ms')::float8,
                (result->>'first_token_ms')::float8, (result->'usage'->>'input_tokens')::bigint,
                (result->'usage'->>'output_tokens')::bigint, result->>'finish_reason')
        RETURNING id INTO answer_id;
    END IF;
    RETURN (result - '_log') || jsonb_build_object('answer_id', answer_id);
END
$$;

-- rag._ask (internal): the answer with its _log for rag._store_answer, or NULL with a
-- pending error
CREATE OR REPLACE FUNCTION rag._ask(question text, k int, model text, rerank text, rerank_k int)
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.ask.ask(plpy, question, k, model, rerank, rerank_k)
$python$;

-- rag.ask_stream
-- The answer in pieces as they are generated, one row each, then a last row with the
-- citations (jsonb array) and the answer's id in rag.answers (piece NULL). To get rows
-- while the model is still writing, read it through a cursor with the function in the
-- select list (a function in FROM is run to the end before the first row is returned):
--   BEGIN;
--   DECLARE a NO SCROLL CURSOR FOR SELECT (s).* FROM (SELECT rag.ask_stream('question') AS s) AS q;
--   FETCH 1 FROM a; ...
-- Bad input, retrieval and the model's first response (including retries) fail before
-- the first row; an error during the stream ends it with the provider's SQLSTATE.
CREATE OR REPLACE FUNCTION rag._ask_stream_open_py(question text, k int, model text, rerank text, rerank_k int)
RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.ask.ask_stream_open(plpy, question, k, model, rerank, rerank_k)
$python$;

CREATE OR REPLACE FUNCTION rag._ask_stream_open(question text, k int, model text, rerank text, rerank_k int)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    handle bigint;
BEGIN
    PERFORM rag._check_query(question, k, 'rag.ask_stream');
    handle := rag._ask_stream_open_py(question, k, model, rerank, rerank_k);
    IF handle IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN handle;
END
$$;

-- The rows of an open stream, then, if an error ended them (a cancel included), that error
-- raised as it is: a PL/Python set-returning function cannot raise one of its own (its
-- message would be "error fetching next item from iterator"). Both run lazily, a row at a
-- time, when read through a cursor as above.
CREATE OR REPLACE FUNCTION rag._ask_stream_rows(handle bigint)
RETURNS TABLE (seq int, piece text, citations jsonb, answer_id bigint)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.ask.ask_stream_rows(plpy, handle)
$python$;

CREATE OR REPLACE FUNCTION rag._ask_stream_error(handle bigint)
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.ask.ask_stream_error(plpy, handle)
$python$;

CREATE OR REPLACE FUNCTION rag._ask_stream_end(handle bigint)
RETURNS TABLE (seq int, piece text, citations jsonb, answer_id bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err jsonb := rag._ask_stream_error(handle);
BEGIN
    IF err IS NOT NULL THEN
        PERFORM rag._raise_error(err);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION rag._ask_stream_read(handle bigint)
RETURNS TABLE (seq int, piece text, citations jsonb, answer_id bigint)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (rag._ask_stream_rows(handle)).*
    UNION ALL
    SELECT * FROM rag._ask_stream_end(handle)
$$;

CREATE OR REPLACE FUNCTION rag.ask_stream(question text, k int DEFAULT 8, model text DEFAULT NULL,
                                          rerank text DEFAULT NULL, rerank_k int DEFAULT 30)
RETURNS TABLE (seq int, piece text, citations jsonb, answer_id bigint)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (rag._ask_stream_read(rag._ask_stream_open(question, k, model, rerank, rerank_k))).*
$$;
