-- rag.answers by the chunks each answer retrieved (its citations are among them): with
-- rag.forget_answers on, deleting a document's chunks removes the answers that may quote
-- them (rag._chunks_forget_answers), found through this index. Built on the rows in place.
-- Without GIN's pending list (fastupdate off): every scan reads the whole list, comparing
-- each listed answer's ids with each deleted chunk's, and the answers written since the
-- last vacuum made one delete of a 1,000-chunk slice take 330 ms instead of 2 ms (40,000
-- answers; hostile review 38). An answer then costs a few microseconds more to write.
CREATE INDEX answers_retrieved ON rag.answers USING gin (retrieved_chunk_ids) WITH (fastupdate = off);
