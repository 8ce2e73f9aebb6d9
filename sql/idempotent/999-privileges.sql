-- Privileges, all in one place. Nothing in schema rag is usable by PUBLIC; the three
-- roles of 005-roles.sql get what their job needs. Functions run as the caller
-- (security invoker), so row-level security applies inside them too; internal helpers
-- that public functions call are granted with them.

-- Every run starts from nothing, so that the grants are exactly what this file says, after
-- an upgrade as after an install (a grant dropped from this file is revoked by the next
-- release). The extension's own tables, views and functions only: a tenant's partitions
-- have no grants of their own (they are read through rag.chunks and rag.posting_blocks).
REVOKE ALL ON SCHEMA rag FROM PUBLIC, rag_reader, rag_writer, rag_admin;
DO $$
DECLARE
    obj record;
BEGIN
    FOR obj IN SELECT d.classid, d.objid FROM pg_catalog.pg_depend AS d
               WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
                 AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'rag')
                 AND d.classid IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_proc'::regclass) LOOP
        IF obj.classid = 'pg_catalog.pg_proc'::regclass THEN
            EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC, rag_reader, rag_writer, rag_admin',
                                      obj.objid::regprocedure);
        ELSIF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = obj.objid) IN ('r', 'p', 'v') THEN
            EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %s FROM PUBLIC, rag_reader, rag_writer, rag_admin',
                                      obj.objid::regclass);
        END IF;
    END LOOP;
END
$$;

-- rag_reader: search and ask
GRANT USAGE ON SCHEMA rag TO rag_reader;
GRANT SELECT ON rag.documents, rag.chunks, rag.tenant_roles, rag.posting_blocks, rag.lexeme_stats,
                rag.corpus_stats, rag.lexical_stats, rag.postings, rag.eval_sets, rag.eval_queries, rag.eval_qrels,
                rag.eval_answers, rag.eval_answer_run, rag.eval_answer_run_query, rag.eval_answer_runs, rag.eval_run, rag.eval_run_query, rag.eval_runs, rag.eval_compare,
                rag.attachments, rag.queue, rag.errors, rag.queue_status, rag.document_status,
                rag.models, rag.config, rag.api_keys, rag.api_key_grants, rag.usage, rag.usage_history, rag.answers,
                rag.usage_daily, rag.cost_by_model, rag.tenant_models, rag.embeddings_next,
                rag.model_status, rag.tenant_partitions, rag.model_indexes, rag.tenant_budgets TO rag_reader;
-- every model call is logged by the caller's transaction (search and ask too): the columns
-- that describe the call; the id, tenant, time and role are the database's (defaults)
REVOKE INSERT ON rag.usage, rag.answers FROM rag_reader;
GRANT INSERT (operation, model, provider, calls, input_tokens, output_tokens, cost, latency_ms, call_id)
    ON rag.usage TO rag_reader;
GRANT INSERT (question, answer, model, mode, cited_chunk_ids, retrieved_chunk_ids, removed_citations,
              latency_ms, first_token_ms, input_tokens, output_tokens, finish_reason)
    ON rag.answers TO rag_reader;
GRANT EXECUTE ON FUNCTION
    rag.current_tenant(),
    rag._shown(text),
    rag._shown_list(text[], integer),
    rag._vector_schema(),
    rag._restoring(),
    rag._attachments_above(oid[]),   -- (the event triggers, for any role with the schema)
    rag._partitions_changed(),
    rag._partitions_dropped(),
    rag._follow_partitions(oid[]),
    rag._follow_dropped(bigint[]),
    rag._is_superuser(),
    rag._owns_chunks(),
    rag._is_member(name),
    rag._may_act_for(text),
    rag.settings(),
    rag._setting(text),
    rag._bool_setting(text),
    rag._table_owner(regclass),   -- (rag.check names an attached table's owner)
    rag._tenant_embedding_model(text),   -- (rag._setting('embedding_model') reads it)
    rag._setting_defaults(),
    rag.check(),
    rag._model_index(name, text),         -- (rag.check names a model's invalid index)
    rag._chunks_partitions(),
    rag._model_index_state(name, text),
    rag._own_session(name),
    rag._rows_hidden(regclass),
    rag._worker_takes(regclass, name),
    rag._documents_to_reindex(),
    rag.embed(text, text),
    rag._embed_query(text, text),
    rag._model(text, text),
    rag._may_use_key(text),
    rag._queue_in_progress(),
    rag._pgrowlocks(text),
    rag._partition_of(oid, text),
    rag.spent_today(),
    rag.budget_today(),
    rag._recorded_today(),
    rag._counted_today(),
    rag._counted_today_py(),
    rag.priced_calls(date),
    rag._priced_calls(text),
    rag._usage_rows(jsonb),
    rag._call_cost(bigint, bigint, numeric, numeric),
    rag._log_usage(jsonb),
    rag._python_error(),
    rag._raise_error(jsonb),
    rag._raise_python_error(),
    rag._ask(text, int, text, text, int),
    rag._store_answer(jsonb),
    rag._ask_stream_open_py(text, int, text, text, int),
    rag._ask_stream_open(text, int, text, text, int),
    rag._ask_stream_read(bigint),
    rag._ask_stream_rows(bigint),
    rag._ask_stream_error(bigint),
    rag._ask_stream_end(bigint),
    rag.ask_stream(text, int, text, text, int),
    rag.any_terms_tsquery(text),
    rag._check_query(text, int, text),
    rag._filter_predicate(jsonb),
    rag._ef_search(text),
    rag.query_lexemes(text),
    rag.bm25(text, int, float8, float8, jsonb),
    rag._bm25_py(text, int, float8, float8, jsonb),
    rag._search_legs(text, text, int, int, float8, float8, jsonb, text, boolean, boolean, text, text),
    rag._rerank(text, text, text, text[]),
    rag.search(text, int, text, jsonb, int, int, int, float8, float8, text, text, text, int, float8),
    rag.page_url(text, int),
    rag.ask(text, int, text, text, int),
    rag.backend_stats()
TO rag_reader;

-- rag_writer: ingest (documents in, chunks written by the triggers as the caller)
-- no role but the owner names an id (GENERATED ALWAYS, and the id column is not granted)
REVOKE INSERT, UPDATE ON rag.documents, rag.chunks, rag.attachments, rag.queue, rag.errors, rag.eval_run,
                         rag.eval_answer_run FROM rag_writer;
GRANT INSERT (tenant, source, title, url, metadata, content, attachment_id, source_table, source_key),
      UPDATE (source, title, url, metadata, content, attachment_id, source_table, source_key, updated_at)
    ON rag.documents TO rag_writer;
GRANT DELETE ON rag.documents TO rag_writer;
GRANT INSERT (tenant, document_id, ord, content, heading, page, tokens, content_hash, model, embedding,
              window_embeddings, window_bounds, window_lengths)
    ON rag.chunks TO rag_writer;
GRANT DELETE ON rag.chunks TO rag_writer;
GRANT INSERT, DELETE ON rag.posting_blocks, rag.lexeme_stats, rag.corpus_stats TO rag_writer;
-- a merge or a compaction locks the rows it folds (FOR UPDATE SKIP LOCKED), which needs
-- UPDATE on a column; it changes nothing a writer could not already insert or delete
GRANT UPDATE (merged) ON rag.posting_blocks TO rag_writer;
GRANT UPDATE (df) ON rag.lexeme_stats TO rag_writer;
GRANT UPDATE (chunks) ON rag.corpus_stats TO rag_writer;
GRANT EXECUTE ON FUNCTION
    rag.ingest(text, text, text, text, jsonb),
    rag.ingest_file(bytea, text, text, text, text, jsonb, text),
    rag._check_file(bytea, text, text),
    rag._extract_file_py(bytea, text, text),
    rag._file_metadata(bytea, text, text, text, int),
    rag._extract_file(bytea, text, text),
    rag._check_content(text, text),
    rag._index_documents(bigint[]),
    rag._index_documents_py(bigint[]),
    rag.compact_lexical_stats(text, int),
    rag._add_postings(text, bigint[], tsvector[]),
    rag._merge_due(text, text[]),
    rag._merge_posting_blocks_py(text, text[]),
    rag.merge_posting_blocks(text, text[]),
    rag.rebuild_lexical_index(),
    rag.reindex(bigint[]),
    rag.resync(regclass, boolean),
    rag._eval_tenant(text, text),
    rag._eval_params(text, jsonb, jsonb),
    rag._eval_text(text, boolean),
    rag.evaluate(text, text, int, jsonb),
    rag.evaluate_answers(text, text, int, jsonb, int)
TO rag_writer;
GRANT INSERT (source_table, key_columns, content_column, title_column, url_column, metadata_columns, mode,
              content_is_file, filename_column)
    ON rag.attachments TO rag_writer;
GRANT DELETE ON rag.attachments TO rag_writer;
GRANT INSERT (tenant, attachment_id, source_key), UPDATE (attempts, next_attempt_at, last_error)
    ON rag.queue TO rag_writer;
GRANT INSERT (tenant, attachment_id, source_key, attempts, last_error, enqueued_at) ON rag.errors TO rag_writer;
GRANT DELETE ON rag.queue, rag.errors TO rag_writer;
GRANT EXECUTE ON FUNCTION
    rag.attach(regclass, name, name, name, name[], text, boolean, name),
    rag._file_name(text),
    rag._attached_changed(),
    rag.detach(regclass),
    rag._drop_attachment_triggers(text, regclass, bigint, interval),
    rag._ddl_in_tries(text, text, regclass[], interval, boolean),
    rag._lock_wait(timestamptz, interval),
    rag._relation_lock_holders(regclass[]),
    rag._attachment(bigint),
    rag._object_expr(name[]),
    rag._key_expr(rag.attachments),
    rag._meta_expr(rag.attachments),
    rag._indexed_expr(rag.attachments),
    rag._text_expr(name),
    rag._title_expr(name),
    rag._url_expr(name),
    rag._apply_rows(bigint, jsonb[], jsonb[]),
    rag._table_owner(regclass),
    rag._watch(bigint, regclass),
    rag._watched_relations(bigint, regclass),
    rag._index_rows(rag.attachments, regclass),
    rag._apply_gone(rag.attachments),
    rag._truncated(rag.attachments, regclass),
    rag._truncated_moot(),
    rag._xact_mark(),
    rag._watch_partitions(rag.attachments, boolean),
    rag._may_index(bigint, regclass, text),
    rag.retry_errors(),
    rag._cron_schedule(text, text, text, text, text),
    rag._cron_unschedule(text),
    rag.schedule_worker(text, int),
    rag.unschedule_worker()
TO rag_writer;
GRANT EXECUTE ON PROCEDURE rag.work(int) TO rag_writer;
-- a model switch: rag.work re-embeds and finishes it
GRANT UPDATE (model, embedding, window_embeddings, window_bounds, window_lengths) ON rag.chunks TO rag_writer;
GRANT INSERT, DELETE ON rag.embeddings_next TO rag_writer;
-- (a switch's batch replaces a row of another model for its chunk: ON CONFLICT, review 48)
GRANT UPDATE (model, content_hash, embedding, created_at) ON rag.embeddings_next TO rag_writer;
GRANT INSERT, UPDATE (embedding_model, next_model, switch_started_at, switched_at) ON rag.tenant_models TO rag_writer;
-- (the insert guard: rag._tenant_model_guard; UPDATE by column, not the table's: a role with
-- table-level UPDATE may LOCK TABLE it in any mode, and every tenant's writers lock their row)
GRANT EXECUTE ON FUNCTION
    rag._reembed_batch_py(int),
    rag._reembed_batch(int),
    rag._window_batch_py(int),
    rag._window_batch(int),
    rag._finish_switch(interval),
    rag._claim_tenant_models(text[], boolean, interval),
    rag._lock_tenant_model_row(text, timestamptz),
    rag._switch_embedded(text),
    rag._switch_left(text, bigint)
TO rag_writer;
-- eval sets are loaded and run by writers, into tenants they may act for (RLS checks)
GRANT INSERT, UPDATE, DELETE ON rag.eval_sets, rag.eval_queries, rag.eval_qrels, rag.eval_answers, rag.eval_run_query
    TO rag_writer;
GRANT INSERT (tenant, set_name, mode, k, params),
      UPDATE (queries, ndcg_10, recall_10, recall_100, mrr_10, success_1, success_5, success_10, seconds, params)
    ON rag.eval_run TO rag_writer;
GRANT DELETE ON rag.eval_run TO rag_writer;
GRANT INSERT (tenant, set_name, model, k, params),
      UPDATE (questions, gold_share, half_share, exact_share, citations_right, refusals, mean_words, p50_ms, p95_ms,
              seconds)
    ON rag.eval_answer_run TO rag_writer;
GRANT DELETE ON rag.eval_answer_run TO rag_writer;
GRANT INSERT, DELETE ON rag.eval_answer_run_query TO rag_writer;

-- rag_admin: tenants, models, settings, API keys
GRANT INSERT, DELETE ON rag.tenant_roles TO rag_admin;
GRANT INSERT, UPDATE, DELETE ON rag.models, rag.config, rag.api_keys, rag.api_key_grants TO rag_admin;
GRANT INSERT ON rag.tenant_models TO rag_admin;
GRANT INSERT, UPDATE (daily_budget, set_at, set_by), DELETE ON rag.tenant_budgets TO rag_admin;
GRANT EXECUTE ON FUNCTION
    rag.set_daily_budget(numeric),
    rag.grant_tenant(name, text),
    rag.revoke_tenant(name, text),
    rag.configure(text, text),
    rag._check_setting(text, text),
    rag._retention(text, text, text, text),
    rag._embedding_model_in_use(text),
    rag._embedding_model_used(text),
    rag.add_model(text, text, text, text, int, int, numeric, numeric, text, text, text, jsonb),
    rag.use_model(text),
    rag.set_embedding_model(text),
    rag.finish_embedding_switch(interval),
    rag.create_model_index(text),
    rag.model_index_statements(text),
    rag._check_hnsw_dimensions(rag.models, text),
    rag._model_index_ddl(name, text, boolean),
    rag._make_model_index(name, text),
    rag._lock_tables(text, regclass[], text, interval),
    rag._make_partition_indexes(name, name),
    rag.create_tenant_partition(text),
    rag.set_api_key(text, text, text, text),
    rag._write_key_file(text, text, text),
    rag.grant_api_key(text, name),
    rag.revoke_api_key(text, name),
    rag.drop_api_key(text)
TO rag_admin;
-- the lock guard: what it would end, for rag_admin; ending sessions also needs
-- pg_signal_backend (or a superuser), which the functions check
GRANT EXECUTE ON FUNCTION
    rag._may_signal(),
    rag.lock_holders(),
    rag.end_lock_holders(),
    rag._lock_guard_pass(timestamptz, interval, interval),
    rag.schedule_lock_guard(),
    rag.unschedule_lock_guard()
TO rag_admin;
GRANT EXECUTE ON PROCEDURE rag.lock_guard(interval, interval) TO rag_admin;
