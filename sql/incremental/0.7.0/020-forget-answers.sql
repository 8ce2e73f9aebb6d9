-- rag.answers by the chunks each answer retrieved (its citations are among them): with
-- rag.forget_answers on, deleting a document's chunks removes the answers that may quote
-- them (rag._chunks_forget_answers), found through this index. Built on the rows in place.
CREATE INDEX answers_retrieved ON rag.answers USING gin (retrieved_chunk_ids);
