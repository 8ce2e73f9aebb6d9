-- Switching the embedding model (rag.set_embedding_model).

CREATE FUNCTION rag.set_embedding_model(name text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m rag.models := rag._model(name, 'embed');
BEGIN
    IF EXISTS (SELECT 1 FROM rag.chunks AS c WHERE c.model <> m.name) THEN
        RAISE EXCEPTION 'rag.set_embedding_model: chunks embedded by another model exist'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    RETURN rag.configure('embedding_model', m.name);
END
$$;
