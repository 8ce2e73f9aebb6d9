-- rag.settings
-- Every knob of the extension, its current value and default. Values are ordinary
-- Postgres settings: SET rag.x = ... (session), ALTER DATABASE ... SET rag.x = ... (database).
CREATE FUNCTION rag.settings()
RETURNS TABLE (name text, value text, default_value text, description text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.name,
           coalesce(nullif(current_setting('rag.' || d.name, true), ''), d.default_value),
           d.default_value, d.description
    FROM (VALUES
        ('embedding_model',       'all-MiniLM-L6-v2', 'local embedding model for new chunks and queries'),
        ('embedding_batch_size',  '1',        'texts per model run; 1 is fastest on CPU and makes a text''s vector independent of its batch'),
        ('index_batch_size',      '64',       'documents per indexing round, and keys per rag.work batch'),
        ('max_attempts',          '5',        'rag.work tries a failing row this often, then moves it to rag.errors'),
        ('retry_base_seconds',    '2',        'rag.work waits base * 2^attempts seconds before retrying a row'),
        ('embedding_threads',     '1',        'onnxruntime intra-op threads per backend'),
        ('chunk_target_tokens',   '254',      'chunks are packed up to this many model tokens (254 fills MiniLM''s window)'),
        ('chunk_overlap_tokens',  '32',       'tokens repeated from the end of the previous chunk'),
        ('max_document_bytes',    '10000000', 'largest document accepted, in bytes of UTF-8'),
        ('max_query_chars',       '4000',     'longest question or search query accepted'),
        ('max_k',                 '1000',     'largest k accepted by rag.search and rag.ask'),
        ('bm25_k1',               '0.9',      'BM25 term-frequency saturation (lexical leg)'),
        ('bm25_b',                '0.4',      'BM25 length normalisation, 0..1 (lexical leg)'),
        ('ef_search',             '100',      'HNSW candidate list size (at least the vector leg''s k)'),
        ('iterative_scan',        'relaxed_order', 'pgvector 0.8 iterative index scans: off, relaxed_order or strict_order'),
        ('ask_min_similarity',    '0.3',      'rag.ask answers only from sentences at least this similar to the question')
    ) AS d (name, default_value, description)
$$;
COMMENT ON FUNCTION rag.settings() IS 'rag.settings: every rag.* setting with its current value and default';

-- rag._setting: one setting's current value (internal)
CREATE FUNCTION rag._setting(setting_name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT value FROM rag.settings() WHERE name = setting_name $$;
