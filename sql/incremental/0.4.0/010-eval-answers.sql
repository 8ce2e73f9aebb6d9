-- Eval sets with gold answers (QA sets such as covid-qa-dev): each question's answer
-- spans, and retrieval scored on them: success@k = one of the top k chunks comes from the
-- answer's document and contains the answer (rag.evaluate).

CREATE TABLE rag.eval_answers (
    set_name     text NOT NULL,
    query_id     text NOT NULL,
    doc_source   text NOT NULL,                       -- the document that holds the answer
    answer       text NOT NULL CHECK (answer <> ''),  -- the gold answer, as annotated
    answer_start int CHECK (answer_start >= 0),       -- its character offset there, if known
    FOREIGN KEY (set_name, query_id) REFERENCES rag.eval_queries (set_name, query_id) ON DELETE CASCADE
);
CREATE INDEX eval_answers_query ON rag.eval_answers (set_name, query_id);

ALTER TABLE rag.eval_run
    ADD COLUMN success_1 float8,
    ADD COLUMN success_5 float8,
    ADD COLUMN success_10 float8;
ALTER TABLE rag.eval_run_query
    ADD COLUMN success_1 float8,
    ADD COLUMN success_5 float8,
    ADD COLUMN success_10 float8;

SELECT pg_catalog.pg_extension_config_dump('rag.eval_answers', '');

-- Answers measured like retrieval: rag.evaluate_answers runs rag.ask over a QA set's
-- questions and stores, per question and overall, how much of the gold answer the answer
-- holds, whether its citations point into the right document, refusals, length, latency.
CREATE TABLE rag.eval_answer_run (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    set_name        text NOT NULL REFERENCES rag.eval_sets (name) ON DELETE CASCADE,
    model           text NOT NULL,          -- the chat model that answered
    k               int NOT NULL,           -- chunks retrieved per question
    params          jsonb NOT NULL DEFAULT '{}',
    questions       int,
    gold_share      float8,   -- mean share of the gold answer's content words in the answer
    half_share      float8,   -- share of answers holding at least half of them
    exact_share     float8,   -- share of answers containing the whole gold answer
    citations_right float8,   -- share of all citations that point into the gold answer's document
    refusals        float8,   -- share of questions answered with no citation
    mean_words      float8,   -- answer length in words, mean
    p50_ms          float8,
    p95_ms          float8,
    seconds         float8,
    created_at      timestamptz NOT NULL DEFAULT now(),
    run_by          name NOT NULL DEFAULT current_user
);

CREATE TABLE rag.eval_answer_run_query (
    run_id          bigint NOT NULL REFERENCES rag.eval_answer_run (id) ON DELETE CASCADE,
    query_id        text NOT NULL,
    answer          text NOT NULL,
    gold_share      float8 NOT NULL,
    exact           boolean NOT NULL,
    citations       int NOT NULL,
    citations_right int NOT NULL,
    words           int NOT NULL,
    latency_ms      float8,
    PRIMARY KEY (run_id, query_id)
);

SELECT pg_catalog.pg_extension_config_dump('rag.eval_answer_run', '');
SELECT pg_catalog.pg_extension_config_dump('rag.eval_answer_run_query', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('rag.eval_answer_run', 'id'), '');
