-- rag._setting_defaults (internal): every setting, its default and what it does.
-- A VALUES list that names nothing, without a SET clause, so that the planner inlines it
-- into its callers (a SQL function with SET is planned anew on every call).
CREATE OR REPLACE FUNCTION rag._setting_defaults()
RETURNS TABLE (name text, default_value text, description text)
LANGUAGE sql IMMUTABLE
AS $$
    SELECT * FROM (VALUES
        ('embedding_model',       'all-MiniLM-L6-v2', 'local embedding model for new chunks and queries'),
        ('embedding_batch_size',  '1',        'texts per model run; 1 is fastest on CPU and makes a text''s vector independent of its batch'),
        ('index_batch_size',      '64',       'documents per indexing round, and keys per rag.work batch'),
        ('max_attempts',          '5',        'rag.work tries a failing row this often, then moves it to rag.errors'),
        ('retry_base_seconds',    '2',        'rag.work waits base * 2^attempts seconds before retrying a row'),
        ('embedding_threads',     '1',        'onnxruntime intra-op threads per backend'),
        ('chunk_target_tokens',   '254',      'chunks are packed up to this many model tokens (254 fills MiniLM''s window)'),
        ('chunk_overlap_tokens',  '32',       'tokens repeated from the end of the previous chunk'),
        ('max_document_bytes',    '10000000', 'largest document accepted, in bytes of UTF-8 (a limit: a session may lower it; rag.configure raises it)'),
        ('max_file_bytes',        '50000000', 'largest file accepted by rag.ingest_file, in bytes (a limit: a session may lower it; rag.configure raises it)'),
        ('max_file_pages',        '2000',     'most pages of a PDF accepted by rag.ingest_file (a limit: a session may lower it; rag.configure raises it)'),
        ('max_file_memory',       '1073741824', 'most bytes of memory (address space) of the process that reads one PDF for rag.ingest_file; past it the PDF is refused (a limit: a session may lower it; rag.configure raises it)'),
        ('max_file_seconds',      '120',      'most seconds of CPU time of the process that reads one PDF for rag.ingest_file; past them the PDF is refused (a limit: a session may lower it; rag.configure raises it)'),
        ('max_chunks_per_document', '20000',  'most chunks one document may become (a limit: a session may lower it; rag.configure raises it)'),
        ('max_query_chars',       '4000',     'longest question or search query accepted (a limit: a session may lower it; rag.configure raises it)'),
        ('max_k',                 '1000',     'largest k accepted by rag.search and rag.ask (a limit: a session may lower it; rag.configure raises it)'),
        ('bm25_k1',               '0.9',      'BM25 term-frequency saturation (lexical leg)'),
        ('bm25_b',                '0.4',      'BM25 length normalisation, 0..1 (lexical leg)'),
        ('ef_search',             'auto',     'HNSW candidate list size, at least the vector leg''s k; auto: 100, or chunks / 2500 past 250,000 chunks (at most 1000)'),
        ('iterative_scan',        'relaxed_order', 'pgvector 0.8 iterative index scans: off, relaxed_order or strict_order'),
        ('ask_min_similarity',    '0.3',      'rag.ask answers only from sentences at least this similar to the question'),
        ('chat_model',            'extractive', 'model of rag.models that writes answers; extractive: sentences of the chunks, no LLM'),
        ('context_tokens',        '3000',     'most tokens of retrieved chunks put in the LLM prompt (capped by the model''s max_input_tokens)'),
        ('answer_max_tokens',     '400',      'most tokens the LLM may write per answer'),
        ('temperature',           '0.1',      'LLM sampling temperature'),
        ('provider_timeout_seconds', '30',    'timeout of one HTTP request to a model provider'),
        ('provider_max_retries',  '3',        'retries of a provider call after 429, 5xx, timeouts and connection errors'),
        ('provider_retry_base_seconds', '0.5', 'retry n waits a random time up to base * 2^n seconds (exponential backoff, full jitter)'),
        ('provider_batch_size',   '96',       'texts per embedding request to a provider (a limit: a session may lower it; rag.configure raises it)'),
        ('daily_budget',          '',         'most cost per tenant per UTC day (the unit of rag.models prices); empty: no limit. Set with rag.configure; a session may only lower it'),
        ('store_answers',         'on',       'rag.ask stores every answer in rag.answers (off: not stored)'),
        ('answer_retention',      '',         'rag.purge_ledger removes answers older than this interval (at least 1 hour) from rag.answers (empty: kept)'),
        ('forget_answers',        'off',      'on: when a document''s chunks are deleted (the document deleted, detached, erased, or re-chunked when its text changes), the answers of rag.answers that retrieved any of them go too, as they may quote them; database-wide, set with rag.configure only (a session cannot change it)'),
        ('usage_retention',       '',         'rag.purge_ledger sums rag.usage rows older than this interval (at least 1 day) into rag.usage_history (empty: kept)'),
        ('window_embeddings',     'on',       'each chunk is also embedded in windows of up to 64 words, and the vector leg scores the mean of the chunk''s and its best window''s cosine (off: new chunks get none, and search uses cosines only)'),
        ('lexical_windows',       'on',       'with the proximity term, score fusion reads a chunk''s lexical score as 0.7 x its BM25 and 0.3 x its best window''s (off: BM25 alone)'),
        ('finish_switches',       'on',       'rag.work finishes a tenant''s embedding model switch once every chunk is embedded again (its last step holds the tenant''s writers, ~1 ms a chunk); off: an admin runs it, at a time of their choosing, with rag.finish_embedding_switch(); database-wide, set with rag.configure only (a session cannot change it)')
    ) AS d (name, default_value, description)
$$;

-- 0.2.0's helpers of rag._setting, SQL functions meant to be inlined: they were not (a
-- SQL function called from plpgsql is planned on every call), and cost up to 0.2 ms a setting
DROP FUNCTION IF EXISTS rag._setting_value(text, text, text);
DROP FUNCTION IF EXISTS rag._limited(text, text);

-- rag._setting: one setting's current value (internal; NULL for an unknown name), first
-- found: the Postgres setting rag.x, rag.config, the default; embedding_model is the
-- session tenant's (rag._tenant_embedding_model: its rag.tenant_models row comes before
-- rag.config). The limits that protect the server can only be lowered by a
-- session: higher than the database's value counts only for a superuser; a value that is
-- not a number is returned as asked, so that its reader says what is wrong with it.
-- plpgsql with static queries only: planned once per session, ~10 us a call (it is on
-- every hot path).
CREATE OR REPLACE FUNCTION rag._setting(setting_name text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    configured text;
    asked text;
    plain text;
BEGIN
    IF setting_name = 'embedding_model' THEN   -- (the same rule for any tenant: ingest's)
        RETURN rag._tenant_embedding_model(rag.current_tenant());
    END IF;
    SELECT coalesce(c.value, d.default_value) INTO configured
    FROM rag._setting_defaults() AS d LEFT JOIN rag.config AS c ON c.name = d.name
    WHERE d.name = setting_name;
    IF NOT FOUND THEN
        RETURN NULL;
    ELSIF setting_name IN ('forget_answers', 'finish_switches') THEN
        RETURN configured;   -- the database's choice: a session cannot turn it off (or on)
    END IF;
    asked := nullif(current_setting('rag.' || setting_name, true), '');
    plain := btrim(asked, E' \t\r\n');   -- (ASCII blanks only: a number's reader takes no other)
    IF setting_name = 'daily_budget' THEN
        -- a tenant's own budget (rag.set_daily_budget) comes first
        configured := coalesce((SELECT b.daily_budget::text FROM rag.tenant_budgets AS b
                                WHERE b.tenant = (SELECT rag.current_tenant())), configured);
        -- the budget binds the tenant's roles: rag.configure or rag.set_daily_budget sets it
        -- (an administrator), a session (SET, ALTER ROLE / DATABASE SET) may only lower it;
        -- an empty one is no limit
        IF plain IS NOT DISTINCT FROM nullif(btrim(configured), '') OR rag._is_superuser() THEN
            RETURN coalesce(asked, configured);
        ELSIF plain = '' OR plain IS NULL THEN
            RETURN configured;
        ELSIF plain !~* '^([0-9]{1,30}\.?[0-9]{0,30}|\.[0-9]{1,30})(e[+-]?[0-9]{1,3})?$' THEN
            -- (not left to its reader: Python's float() also reads '+1e3', '1_000' and
            -- other digits than ASCII's, which would pass the comparison below unseen)
            RAISE EXCEPTION 'rag: setting rag.daily_budget must be a number, got %', rag._shown(asked)
                USING ERRCODE = 'invalid_parameter_value', HINT = 'RESET rag.daily_budget';
        ELSIF configured = '' OR plain::numeric <= configured::numeric THEN
            RETURN plain;
        END IF;
        RETURN configured;
    END IF;
    IF setting_name IN ('max_document_bytes', 'max_file_bytes', 'max_file_pages', 'max_file_memory', 'max_file_seconds', 'max_chunks_per_document', 'max_query_chars', 'max_k',
                        'embedding_threads', 'embedding_batch_size', 'index_batch_size', 'provider_batch_size') THEN
        IF asked IS NULL THEN
            RETURN configured;
        ELSIF plain !~ '^[0-9]{1,18}$' THEN
            IF rag._is_superuser() THEN
                RETURN asked;   -- (its reader refuses what is not a number, naming it)
            END IF;
            RAISE EXCEPTION 'rag: setting rag.% must be a whole number, got %', setting_name, rag._shown(asked)
                USING ERRCODE = 'invalid_parameter_value', HINT = format('RESET rag.%s', setting_name);
        ELSIF plain::numeric <= configured::numeric OR rag._is_superuser() THEN
            RETURN plain;
        END IF;
        RETURN configured;
    END IF;
    RETURN coalesce(asked, configured);
END
$$;

-- rag._bool_setting (internal): an on/off setting read in SQL, as a boolean; a value that
-- is neither (a row of rag.config written before rag._config_guard checked them, or by a
-- superuser's restore) fails naming the setting (22023), not with a bare cast error.
CREATE OR REPLACE FUNCTION rag._bool_setting(setting_name text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := rag._setting(setting_name);
BEGIN
    CASE lower(btrim(v))
        WHEN 'on', 'true', 'yes', '1' THEN RETURN true;
        WHEN 'off', 'false', 'no', '0' THEN RETURN false;
        ELSE RAISE EXCEPTION 'rag: setting rag.% must be on or off, got %', setting_name, rag._shown(v)
                 USING ERRCODE = 'invalid_parameter_value',
                       HINT = format('SELECT rag.configure(%L, %L) stores a checked value', setting_name, 'off');
    END CASE;
END
$$;

-- rag.settings
-- Every knob of the extension, its current value and default. Values are ordinary
-- Postgres settings: SET rag.x = ... (session), ALTER DATABASE ... SET rag.x = ... (database),
-- or rows of rag.config (rag.configure).
CREATE OR REPLACE FUNCTION rag.settings()
RETURNS TABLE (name text, value text, default_value text, description text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.name, rag._setting(d.name), d.default_value, d.description FROM rag._setting_defaults() AS d
$$;

-- rag._check_setting (internal): a value for a setting, as rag.configure is about to store
-- it, checked as its reader will check it, so that a typo fails here (22023, naming the
-- setting) instead of in every session afterwards. Returns the value, trimmed. The bounds
-- are the readers' own (ragpg.pg and ragpg.ask `_int_setting(s, name, lo, hi)`, the SQL
-- readers); tests/unit/test_settings_rules.py keeps the two lists equal. A bound that
-- depends on the model (a chunk can be at most the model's window) is checked on use.
CREATE OR REPLACE FUNCTION rag._check_setting(setting_name text, value text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := btrim(value);
    rule record;
    num numeric;
BEGIN
    SELECT * INTO rule FROM (VALUES
        -- name, kind, lowest, highest
        ('embedding_batch_size', 'int', 1, 1024),
        ('index_batch_size', 'int', 1, 100000),
        ('max_attempts', 'int', 1, 1000),
        ('retry_base_seconds', 'float', 0, 86400),
        ('embedding_threads', 'int', 1, 64),
        ('chunk_target_tokens', 'int', 8, 8190),
        ('chunk_overlap_tokens', 'int', 0, 8189),
        ('max_document_bytes', 'int', 1, 1099511627776),
        ('max_file_bytes', 'int', 1, 1099511627776),
        ('max_file_pages', 'int', 1, 10000000),
        ('max_file_memory', 'int', 134217728, 1099511627776),
        ('max_file_seconds', 'int', 1, 86400),
        ('max_chunks_per_document', 'int', 1, 10000000),
        ('max_query_chars', 'int', 1, 1000000000),
        ('max_k', 'int', 1, 1000000),
        ('bm25_k1', 'float', 0, 1e6),
        ('bm25_b', 'float', 0, 1),
        ('ask_min_similarity', 'float', -1, 1),
        ('context_tokens', 'int', 10, 1000000),
        ('answer_max_tokens', 'int', 1, 100000),
        ('temperature', 'float', 0, 2),
        ('provider_timeout_seconds', 'float', 0.1, 3600),
        ('provider_max_retries', 'int', 0, 20),
        ('provider_retry_base_seconds', 'float', 0, 60),
        ('provider_batch_size', 'int', 1, 2048),
        ('daily_budget', 'float', 0, 1e12),
        ('store_answers', 'bool', NULL, NULL),
        ('forget_answers', 'bool', NULL, NULL),
        ('window_embeddings', 'bool', NULL, NULL),
        ('lexical_windows', 'bool', NULL, NULL),
        ('finish_switches', 'bool', NULL, NULL)
    ) AS r (name, kind, lo, hi) WHERE r.name = setting_name;
    IF FOUND AND rule.kind = 'bool' THEN
        IF lower(v) NOT IN ('on', 'off', 'true', 'false', 'yes', 'no', '1', '0') THEN
            RAISE EXCEPTION 'rag.configure: setting rag.% must be on or off, got %', setting_name, rag._shown(value)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSIF FOUND AND NOT (setting_name = 'daily_budget' AND v = '') THEN   -- an empty budget: no limit
        -- (digits bounded, so that the cast below cannot overflow numeric)
        IF rule.kind = 'int' AND v !~ '^[+-]?[0-9]{1,19}$'
           OR rule.kind = 'float' AND v !~* '^[+-]?([0-9]{1,30}\.?[0-9]{0,30}|\.[0-9]{1,30})(e[+-]?[0-9]{1,3})?$' THEN
            RAISE EXCEPTION 'rag.configure: setting rag.% must be %, got %', setting_name,
                  CASE rule.kind WHEN 'int' THEN 'an integer' ELSE 'a number' END, rag._shown(value)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        num := v::numeric;
        IF rule.kind = 'float' THEN
            BEGIN   -- (numeric holds 1e-999 exactly; the readers' float8 does not: 22003 for every session)
                PERFORM v::float8;
            EXCEPTION WHEN numeric_value_out_of_range THEN
                RAISE EXCEPTION 'rag.configure: setting rag.% must be 0 or a number a double precision holds, got %',
                      setting_name, rag._shown(value)
                    USING ERRCODE = 'invalid_parameter_value';
            END;
        END IF;
        IF num < rule.lo OR num > rule.hi THEN
            RAISE EXCEPTION 'rag.configure: setting rag.% must be between % and %, got %', setting_name,
                  rule.lo, rule.hi, v
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSIF setting_name = 'ef_search'
          AND NOT (CASE WHEN v ~ '^[0-9]{1,4}$' THEN v::int BETWEEN 1 AND 1000 ELSE v = 'auto' END) THEN
        RAISE EXCEPTION 'rag.configure: setting rag.ef_search must be auto or between 1 and 1000, got %', rag._shown(value)
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF setting_name = 'iterative_scan' AND v NOT IN ('off', 'relaxed_order', 'strict_order') THEN
        RAISE EXCEPTION 'rag.configure: setting rag.iterative_scan must be off, relaxed_order or strict_order, got %',
              rag._shown(value)
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF setting_name IN ('answer_retention', 'usage_retention') THEN
        PERFORM rag._retention('rag.configure', setting_name, v,
                               CASE setting_name WHEN 'usage_retention' THEN '1 day' ELSE '1 hour' END);
    ELSIF setting_name = 'chat_model'
          AND NOT EXISTS (SELECT 1 FROM rag.models AS m WHERE m.name = v AND m.kind = 'chat') THEN
        RAISE EXCEPTION 'rag.configure: setting rag.chat_model must name a chat model of rag.models, got %', rag._shown(value)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'SELECT name FROM rag.models WHERE kind = ''chat''';
    END IF;
    RETURN v;
END
$$;

-- rag._xact_mark (internal): names this transaction, by its id and its start in µs, in
-- the transaction-local settings that remember what it did (rag._claim_tenant_models'
-- claims, rag._truncated's empty partitions). A value set by hand for a session names no
-- transaction of it, even with the ids it will get: the start is the transaction's own
-- (hostile review 32). Takes a transaction id if the transaction had none.
CREATE OR REPLACE FUNCTION rag._xact_mark()
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_current_xact_id()::text || ':' || (extract(epoch FROM now()) * 1000000)::bigint::text
$$;

-- rag._config_guard (internal)
-- Row trigger on rag.config: a row written by hand (rag_admin writes the table directly
-- too) is checked as rag.configure checks it, so that a typo fails here (22023 naming the
-- setting, 42704 for a name rag does not know) and not in every session afterwards; the
-- value is stored trimmed. No row for embedding_model, whoever writes it (rag.configure
-- refuses it): that value is the model of every tenant that never chose one
-- (rag.tenant_models.embedding_model NULL): one admin would switch them all at once,
-- without re-embedding a chunk, and their vector search would read vectors of another
-- model (hostile review 30). A restore stores rows as they were dumped.
CREATE OR REPLACE FUNCTION rag._config_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    msg text;
    hint text;
BEGIN
    IF rag._restoring() THEN
        RETURN NEW;
    ELSIF NEW.name = 'embedding_model' THEN
        RAISE EXCEPTION 'rag.config: the embedding model is changed with rag.set_embedding_model, per tenant'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'it re-embeds the chunks in the background and switches when they are done';
    ELSIF NOT EXISTS (SELECT 1 FROM rag._setting_defaults() AS d WHERE d.name = NEW.name) THEN
        RAISE EXCEPTION 'rag.config: unknown setting %', rag._shown(NEW.name)
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM rag.settings() lists them';
    END IF;
    BEGIN
        NEW.value := rag._check_setting(NEW.name, NEW.value);
    EXCEPTION WHEN invalid_parameter_value THEN
        -- (the rule's own message, named after the table written rather than rag.configure)
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
        RAISE EXCEPTION '%', regexp_replace(msg, '^rag\.configure:', 'rag.config:')
            USING ERRCODE = 'invalid_parameter_value', HINT = coalesce(nullif(hint, ''), 'rag.configure checks a value the same way');
    END;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER config_guard BEFORE INSERT OR UPDATE ON rag.config
    FOR EACH ROW EXECUTE FUNCTION rag._config_guard();

-- rag.set_daily_budget (rag_admin): the session tenant's own daily budget, over
-- rag.configure's; NULL removes it (the tenant keeps rag.configure's). Returns the budget
-- now in effect for this session.
CREATE OR REPLACE FUNCTION rag.set_daily_budget(budget numeric)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    for_tenant text := rag.current_tenant();
BEGIN
    IF budget IS NULL THEN
        DELETE FROM rag.tenant_budgets AS b WHERE b.tenant = for_tenant;
    ELSIF NOT (budget >= 0 AND budget <= 1e12) THEN   -- (NaN too)
        RAISE EXCEPTION 'rag.set_daily_budget: budget must be between 0 and 1e12, got %', budget
            USING ERRCODE = 'invalid_parameter_value';
    ELSE
        INSERT INTO rag.tenant_budgets AS b (tenant, daily_budget) VALUES (for_tenant, budget)
        ON CONFLICT ON CONSTRAINT tenant_budgets_pkey
        DO UPDATE SET daily_budget = excluded.daily_budget, set_at = now(), set_by = current_user;
    END IF;
    RETURN rag._setting('daily_budget');
END
$$;

-- rag.configure (rag_admin)
-- Set a setting for this database (every session, every role), or reset it with NULL.
-- Returns the value now in effect for this session.
CREATE OR REPLACE FUNCTION rag.configure(setting_name text, value text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rag.settings() AS s WHERE s.name = setting_name) THEN
        RAISE EXCEPTION 'rag.configure: unknown setting %', rag._shown(setting_name)
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM rag.settings() lists them';
    END IF;
    IF setting_name = 'embedding_model' THEN
        RAISE EXCEPTION 'rag.configure: the embedding model is changed with rag.set_embedding_model'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'it re-embeds the chunks in the background and switches when they are done';
    END IF;
    IF value IS NULL THEN
        DELETE FROM rag.config AS c WHERE c.name = setting_name;
    ELSE
        INSERT INTO rag.config AS c (name, value) VALUES (setting_name, rag._check_setting(setting_name, value))
        ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now(), updated_by = current_user;
    END IF;
    RETURN rag._setting(setting_name);
END
$$;
