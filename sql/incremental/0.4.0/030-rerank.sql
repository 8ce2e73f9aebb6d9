-- A third kind of model: rerankers (POST {base_url}/rerank, the protocol Cohere, Jina,
-- Voyage, Hugging Face TEI, vLLM and llama.cpp's server share), used by rag.search and
-- rag.ask with rerank => 'model'.
ALTER TABLE rag.models DROP CONSTRAINT models_kind_check;
ALTER TABLE rag.models ADD CONSTRAINT models_kind_check CHECK (kind IN ('embed', 'chat', 'rerank'));

-- rag.ask and rag.ask_stream gain rerank and rerank_k (idempotent/400-ask.sql)
DROP FUNCTION IF EXISTS rag.ask(text, int, text);
DROP FUNCTION IF EXISTS rag._ask(text, int, text);
DROP FUNCTION IF EXISTS rag.ask_stream(text, int, text);
DROP FUNCTION IF EXISTS rag._ask_stream_open(text, int, text);
DROP FUNCTION IF EXISTS rag._ask_stream_open_py(text, int, text);
