-- rag.usage.call_id: the priced call a ledger row records, as the server's journal of
-- priced calls names it (rag.priced_calls: which counted calls the ledger holds). NULL for
-- unpriced calls and for rows written before 0.6.0. rag._usage_rows, which builds the
-- rows, returns it too: its result type changes, the old one goes first.
ALTER TABLE rag.usage ADD COLUMN call_id text;
DROP FUNCTION IF EXISTS rag._usage_rows(jsonb);
