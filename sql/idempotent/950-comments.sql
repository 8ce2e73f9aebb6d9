-- The catalog manual: a COMMENT ON for every object of schema rag that users see.
--
-- These comments are what psql shows with \df+, \dv+, \dt+ and \d+, and what BI tools and
-- IDEs show in their schema browsers (JDBC's REMARKS column reads pg_description). Every
-- public function says what it does, its arguments, what it returns and one example call;
-- every internal function (name starting with '_') has one line starting with 'Internal:';
-- every table and view says what its rows are, and the tables users read describe their
-- columns.
--
-- Like every file of sql/idempotent/, this one is re-run by every install and every
-- upgrade (COMMENT ON replaces the previous text), so a comment changed here reaches
-- upgraded databases too. It runs after the files that create the objects, and its text
-- wins over any COMMENT ON in them. tests/test_comments.py fails, naming the objects, when
-- a function, procedure, table or view of the extension (or the schema) has no comment,
-- or a public function's comment has no 'Example:'. A new object gets its comment here,
-- in the section of its stage; the sections follow the order of the other files.

COMMENT ON SCHEMA rag IS
  E'rag: retrieval-augmented generation inside PostgreSQL. Ingest documents (rag.ingest, or INSERT INTO '
  'rag.documents, or rag.attach a table of yours); they are chunked and embedded in the backend. Search with '
  'rag.search (HNSW vectors + BM25, fused with RRF) and answer with citations with rag.ask. Settings: '
  'SELECT * FROM rag.settings(). Roles: rag_reader, rag_writer, rag_admin. Every function, table and view '
  'here has a comment: \\df+ rag.*, \\dv+ rag.*, \\dt+ rag.*.';

-- ---------------------------------------------------------------------------------------
-- Tenancy (010-tenancy.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON TABLE rag.tenant_roles IS
  'Which roles (and their members) may act for which tenant with SET rag.tenant. Managed by rag_admin with '
  'rag.grant_tenant and rag.revoke_tenant; a role sees only the grants that apply to it.';

COMMENT ON FUNCTION rag._is_member(name) IS
  'Internal: whether the current role is (a member of) the named role; false for a dropped role. Used by '
  'rag.current_tenant, rag._may_act_for and the row-level security policies.';

COMMENT ON FUNCTION rag._may_act_for(text) IS
  'Internal: whether the current role may act for a tenant (its own name, except for rag''s group roles, a '
  'grant in rag.tenant_roles, or a superuser). Used by rag.current_tenant and the eval tables'' policies.';

COMMENT ON FUNCTION rag.current_tenant() IS
  'The tenant this session acts for: SET rag.tenant if the role may act for it, else the role''s only '
  'granted tenant, else the role''s own name. Row-level security and every rag function use it; the tenant '
  'is never a function argument. Arguments: none. Returns: text. Raises 42501 if rag.tenant names a tenant '
  'the role may not act for. Example: SET rag.tenant = ''acme''; SELECT rag.current_tenant();';

COMMENT ON FUNCTION rag.grant_tenant(name, text) IS
  'Allow a role (and its members) to act for a tenant with SET rag.tenant (rag_admin). Arguments: role_name '
  '(an existing role), tenant (non-empty). Returns: nothing; granting twice is a no-op. '
  'Example: SELECT rag.grant_tenant(''app'', ''acme'');';

COMMENT ON FUNCTION rag.revoke_tenant(name, text) IS
  'Take back a tenant grant of rag.grant_tenant (rag_admin). Arguments: role_name, tenant. Returns: true if '
  'a grant was removed, false if there was none. Example: SELECT rag.revoke_tenant(''app'', ''acme'');';

-- ---------------------------------------------------------------------------------------
-- Settings (030-settings.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON TABLE rag.config IS
  'Per-database values of rag settings, set by rag_admin with rag.configure; a Postgres setting rag.x (SET, '
  'ALTER ROLE/DATABASE ... SET) overrides them. See SELECT * FROM rag.settings().';

COMMENT ON TABLE rag.tenant_budgets IS
  'Per tenant: its own daily budget, over rag.daily_budget''s (rag.configure), which tenants without a row '
  'keep. Set by a rag_admin acting for the tenant with rag.set_daily_budget; a session of the tenant may '
  'lower it, not raise it. rag.budget_today() shows what counts against it.';
COMMENT ON COLUMN rag.tenant_budgets.tenant IS 'The tenant (rag.current_tenant() of the admin who set it)';
COMMENT ON COLUMN rag.tenant_budgets.daily_budget IS
  'Most cost per UTC day, in the unit of rag.models prices (0 to 1e12; 0: no priced call)';
COMMENT ON COLUMN rag.tenant_budgets.set_at IS 'When it was last set';
COMMENT ON COLUMN rag.tenant_budgets.set_by IS 'The role that last set it';

COMMENT ON TABLE rag.tenant_models IS
  'Per tenant: its embedding model, and the model it is switching to while rag.work re-embeds its chunks '
  '(rag.set_embedding_model). embedding_model NULL, or no row: the database''s setting rag.embedding_model (a '
  'writer makes the row before it first reads the model, rag._claim_tenant_models). Progress: rag.model_status.';

COMMENT ON FUNCTION rag._config_guard() IS
  'Internal: row trigger on rag.config: checks a row written by hand as rag.configure checks a value (22023 '
  'naming the setting, 42704 for an unknown name) and stores it trimmed; refuses a row for embedding_model '
  '(22023), the model of every tenant that never chose one (rag.set_embedding_model changes a tenant''s, '
  're-embedding its chunks). A restore stores rows as dumped.';

COMMENT ON FUNCTION rag._setting_defaults() IS
  'Internal: every setting with its default and description (a VALUES list, inlined by the planner). Read '
  'by rag.settings and rag._setting.';

COMMENT ON FUNCTION rag._setting(text) IS
  'Internal: one setting''s current value (NULL for an unknown name); what every rag function reads its '
  'settings with.';

COMMENT ON FUNCTION rag._bool_setting(text) IS
  'Internal: an on/off setting as a boolean, for SQL readers (rag.forget_answers); any other value fails '
  'with 22023 naming the setting.';

COMMENT ON FUNCTION rag.settings() IS
  'Every setting of the extension with its value now in effect for this session, its default and what it '
  'does. Values come from, first found: SET rag.x / ALTER ROLE or DATABASE ... SET rag.x, rag.config '
  '(rag.configure), the default. Arguments: none. Returns: rows (name, value, default_value, description); '
  'the setting of row name is rag.<name>. Example: SELECT * FROM rag.settings();';

COMMENT ON FUNCTION rag._embedding_model_in_use(text) IS
  'Internal: whether an embedding model may have vectors in rag.chunks: the session''s model (its '
  'rag.embedding_model or its tenant''s), or one any tenant uses (rag._embedding_model_used). Such a model '
  'keeps what makes its vectors (rag._model_identity).';

COMMENT ON FUNCTION rag._embedding_model_used(text) IS
  'Internal: SECURITY DEFINER (rag_admin may execute it): whether any tenant uses an embedding model: '
  'rag.config''s model, a tenant''s current or next model, a model with its own HNSW indexes, or a chunk of '
  'it in any tenant (asked per tenant through an index). Every tenant''s rows, which an admin''s row-level '
  'security hides: an admin of one tenant could change the dimensions of a model only another tenant used '
  '(hostile review 48). Returns yes or no for one name.';

COMMENT ON FUNCTION rag._tenant_model_guard() IS
  'Internal: row trigger on rag.tenant_models: a role that is not rag_admin may only insert the row that '
  'chooses nothing (all NULL but the tenant) and finish the switch an admin started (embedding_model becomes '
  'next_model) once every chunk of the tenant is of the next model (55000 before: rag._finish_switch moves '
  'the vectors first), not choose a model (42501). An update that changes a model waits for the tenant''s '
  'writers (it locks the row FOR UPDATE).';

COMMENT ON FUNCTION rag._switch_left(text, bigint) IS
  'Internal: how many chunks of the tenant still lack their embedding by the tenant''s next model, counted up '
  'to the limit given (rag._switch_embedded and rag.finish_embedding_switch ask).';

COMMENT ON FUNCTION rag._switch_embedded(text) IS
  'Internal: whether every chunk of the tenant has its embedding by the tenant''s next model (rag.work and '
  'rag._finish_switch ask before the last step of a model switch).';

COMMENT ON FUNCTION rag._lock_tenant_model_row(text, timestamptz) IS
  'Internal: locks a tenant''s rag.tenant_models row FOR UPDATE in 100 ms tries until the given time: true once '
  'locked (the lock stays with the caller''s transaction), false if the tenant has no row, NULL if others still '
  'hold it then (rag._claim_tenant_models).';

COMMENT ON FUNCTION rag._claim_tenant_models(text[], boolean, interval) IS
  'Internal: makes each tenant''s rag.tenant_models row if it has none (embedding_model NULL: the '
  'database''s), then holds it: a writer FOR KEY SHARE from its first call in the transaction on, after it waited '
  'for a switch that waits (a FOR SHARE it lets go at once); a switch (for_update) FOR NO KEY UPDATE, which holds new writers, '
  'for its first 5 s, then FOR UPDATE, which waits for every writer that read the old model; in 100 ms tries, '
  '55P03 after patience (default 30 s). Returns each tenant with the model its chunks are written with '
  '(rag._tenant_embedding_model).';

COMMENT ON FUNCTION rag._tenant_embedding_model(text) IS
  'Internal: the embedding model a tenant''s chunks are written with, first found: the setting '
  'rag.embedding_model, the tenant''s rag.tenant_models row, rag.config, the default. '
  'rag._setting(''embedding_model'') returns it for the session''s tenant.';

COMMENT ON FUNCTION rag._model_identity() IS
  'Internal: row trigger on rag.models: an embedding model in use keeps its name, kind, provider, '
  'provider_model, dimensions and normalize option, and is not deleted (55006), through rag.add_model and '
  'direct writes alike.';

COMMENT ON FUNCTION rag._check_setting(text, text) IS
  'Internal: rag.configure''s check of a value before it stores it: on/off settings, numbers within their '
  'readers'' bounds, ef_search, iterative_scan, chat_model (a chat model of rag.models); 22023 naming the '
  'setting otherwise. Returns the value trimmed.';

COMMENT ON FUNCTION rag.set_daily_budget(numeric) IS
  'Set the session tenant''s own daily budget (rag_admin), over rag.daily_budget''s (rag.configure), stored '
  'in rag.tenant_budgets; a session of the tenant may lower it, not raise it. Arguments: budget (numeric, '
  '0 to 1e12, in the unit of rag.models prices; NULL removes it: the tenant keeps rag.configure''s). '
  'Returns: the budget now in effect for this session (text, empty: none). '
  'Example: SET rag.tenant = ''acme''; SELECT rag.set_daily_budget(25);';

COMMENT ON FUNCTION rag.configure(text, text) IS
  'Set a setting for the whole database, every session and role (rag_admin), stored in rag.config; a SET '
  'rag.x in a session still overrides it. Arguments: setting_name (a name of rag.settings(), without '
  '''rag.''), value (text; NULL resets it to the default). The embedding model is changed with '
  'rag.set_embedding_model instead. A value its reader would refuse is refused here (22023). '
  'Returns: the value now in effect for this session. '
  'Example: SELECT rag.configure(''context_tokens'', ''2000'');';

-- ---------------------------------------------------------------------------------------
-- Models, providers and API keys (040-models.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON TABLE rag.models IS
  'The embedding and chat models rag can call: the in-process MiniLM, the built-in extractive answerer, '
  'SmolLM2 on 127.0.0.1:8765, and any OpenAI-compatible server added with rag.add_model (with its prices). '
  'Every rag role reads it; rag_admin changes it. rag.use_model picks the database''s models.';
COMMENT ON COLUMN rag.models.name IS 'The model''s name in rag (rag.ask(model => ...), rag.use_model)';
COMMENT ON COLUMN rag.models.kind IS 'embed (embeddings) or chat (answers)';
COMMENT ON COLUMN rag.models.provider IS 'local (runs in the backend, installed with the extension) or openai (any OpenAI-compatible HTTP server)';
COMMENT ON COLUMN rag.models.provider_model IS 'The model''s id at the provider; NULL: the same as name';
COMMENT ON COLUMN rag.models.base_url IS 'openai provider: the API root, e.g. https://api.openai.com/v1';
COMMENT ON COLUMN rag.models.dimensions IS 'Embedding models: the length of their vectors; NULL for chat models';
COMMENT ON COLUMN rag.models.max_input_tokens IS 'Most input tokens the model accepts (caps the prompt of rag.ask)';
COMMENT ON COLUMN rag.models.price_input_per_1m IS 'Price of 1,000,000 input tokens, in the unit of rag.daily_budget (0: free)';
COMMENT ON COLUMN rag.models.price_output_per_1m IS 'Price of 1,000,000 output tokens (0: free)';
COMMENT ON COLUMN rag.models.api_key IS 'Name of the API key sent with each request (rag.api_keys); NULL: none';
COMMENT ON COLUMN rag.models.tokenizer IS 'tiktoken encoding used to count tokens: cl100k_base or o200k_base';
COMMENT ON COLUMN rag.models.options IS 'JSON options: normalize (embed); context_tokens, answer_max_tokens (chat: caps on the settings)';
COMMENT ON COLUMN rag.models.created_at IS 'When the model was added';

COMMENT ON TABLE rag.api_keys IS
  'Names of provider API keys, never the secrets: a secret is in a file only the server''s OS user can read, '
  'or in a server environment variable (source, env_var). rag.set_api_key, rag.grant_api_key, rag.drop_api_key.';

COMMENT ON TABLE rag.api_key_grants IS
  'Which roles (and their members) may use which API key (rag.grant_api_key, rag.revoke_api_key).';

COMMENT ON FUNCTION rag._models_restored() IS
  'Internal: row trigger on rag.models: during a restore, a dumped row of a built-in model updates the row '
  'CREATE EXTENSION made instead of failing on its key.';

COMMENT ON FUNCTION rag._may_use_key(text) IS
  'Internal: whether the current role was granted this API key; used by the rag.api_keys policy and when a '
  'provider call reads the secret.';

COMMENT ON FUNCTION rag.add_model(text, text, text, text, integer, integer, numeric, numeric, text, text, text, jsonb) IS
  'Register a model of an OpenAI-compatible server (OpenAI, Ollama, vLLM, llama.cpp, LM Studio), or replace '
  'the one of that name (rag_admin). Arguments: name, kind (''embed''/''chat''), provider (''openai''), '
  'base_url, dimensions (embed: required), max_input_tokens, price_input_per_1m, price_output_per_1m, '
  'api_key (a key name), provider_model, tokenizer, options. An embedding model in use keeps its kind, '
  'provider, provider_model, dimensions and normalize option (55006: register a new name and switch with '
  'rag.set_embedding_model). Returns: the rag.models row. Example: SELECT '
  'rag.add_model(''gpt-4o-mini'', ''chat'', base_url => ''https://api.openai.com/v1'', api_key => ''openai'');';

COMMENT ON FUNCTION rag._model(text, text) IS
  'Internal: the rag.models row of a model of the given kind, or a clear error (unknown model, wrong kind).';

COMMENT ON FUNCTION rag.use_model(text) IS
  'Make a model the database''s default (rag_admin): a chat model becomes the answerer of rag.ask '
  '(rag.chat_model), an embedding model goes through rag.set_embedding_model. Arguments: name (of '
  'rag.models). Returns: for a chat model the setting now in effect, for an embedding model ''active'' or '
  '''building''. Example: SELECT rag.use_model(''gpt-4o-mini'');';

COMMENT ON FUNCTION rag._write_key_file(text, text, text) IS
  'Internal: writes an API key''s secret and the base URL it is bound to into its file under the data '
  'directory (mode 0600), or removes it for NULL; called by rag.set_api_key and rag.drop_api_key.';

COMMENT ON FUNCTION rag.set_api_key(text, text, text, text) IS
  'Store a provider API key under a name, bound to the base URL it is for (rag_admin). The secret and its '
  'binding go to a file only the server can read, never a table; only models at base_url (or under it) can '
  'use it, and only the role that set it can change it. Arguments: name; secret (a bind parameter, so it is '
  'not in the query text) or env_var (a server environment variable; superuser only): exactly one; base_url. '
  'Returns: nothing. Example: SELECT rag.set_api_key(''openai'', $1, base_url => ''https://api.openai.com/v1'');';

COMMENT ON FUNCTION rag._is_superuser() IS
  'Internal: whether the current role is a superuser.';

COMMENT ON FUNCTION rag._key_binding() IS
  'Internal: row trigger on rag.api_keys: only a key''s owner (or a superuser) changes its binding or '
  'source, and only a superuser names an environment variable.';

COMMENT ON FUNCTION rag._model_key_binding() IS
  'Internal: row trigger on rag.models: a model that names an API key must live at the key''s base_url.';

COMMENT ON FUNCTION rag.grant_api_key(text, name) IS
  'Let a role (and its members) use an API key, and see that it exists (rag_admin). Arguments: name (of '
  'rag.api_keys), role_name. Returns: nothing. Example: SELECT rag.grant_api_key(''openai'', ''app'');';

COMMENT ON FUNCTION rag.revoke_api_key(text, name) IS
  'Take back an API key grant (rag_admin). Arguments: name, role_name. Returns: true if a grant was '
  'removed. Example: SELECT rag.revoke_api_key(''openai'', ''app'');';

COMMENT ON FUNCTION rag.drop_api_key(text) IS
  'Delete an API key: its name, its grants and its secret file (rag_admin); models that used it send no key. '
  'Arguments: name. Returns: true if it existed. Example: SELECT rag.drop_api_key(''openai'');';

-- ---------------------------------------------------------------------------------------
-- Usage and answers (050-usage.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON TABLE rag.usage IS
  'The cost ledger: one row per model call (embedding or chat, local or remote) with tokens in and out and '
  'their cost at rag.models prices. Tenant data; written by the caller''s transaction (not on a hot standby). '
  'Summaries: rag.usage_daily, rag.cost_by_model. Rows older than rag.usage_retention are summed into '
  'rag.usage_history by rag.purge_ledger.';
COMMENT ON COLUMN rag.usage.id IS 'Row id';
COMMENT ON COLUMN rag.usage.tenant IS 'Tenant that made the call';
COMMENT ON COLUMN rag.usage.at IS 'When the call was made';
COMMENT ON COLUMN rag.usage.role_name IS 'Role that made the call';
COMMENT ON COLUMN rag.usage.operation IS 'What the call was for: index, query, ask or reembed';
COMMENT ON COLUMN rag.usage.model IS 'Model called (rag.models.name)';
COMMENT ON COLUMN rag.usage.provider IS 'local or openai';
COMMENT ON COLUMN rag.usage.calls IS 'Requests sent (local models: model runs)';
COMMENT ON COLUMN rag.usage.input_tokens IS 'Tokens sent to the model';
COMMENT ON COLUMN rag.usage.output_tokens IS 'Tokens the model wrote (0 for embeddings)';
COMMENT ON COLUMN rag.usage.cost IS 'Cost at the model''s prices, in the unit of rag.models prices and rag.daily_budget';
COMMENT ON COLUMN rag.usage.latency_ms IS 'Wall time of the call(s), in milliseconds';
COMMENT ON COLUMN rag.usage.call_id IS
  'The priced call this row records, as the server''s journal names it (rag.priced_calls); NULL for unpriced '
  'calls and rows written before 0.6.0';

COMMENT ON TABLE rag.answers IS
  'Every answer of rag.ask and rag.ask_stream (unless rag.store_answers is off): question, answer, cited and '
  'retrieved chunks, model, latency and tokens; for audit and BI. Tenant data; the answer_id of rag.ask. '
  'Rows older than rag.answer_retention are removed by rag.purge_ledger; with rag.forget_answers on, an '
  'answer goes when a chunk it retrieved is deleted (its document deleted or its text changed).';
COMMENT ON COLUMN rag.answers.id IS 'The answer_id returned by rag.ask and rag.ask_stream';
COMMENT ON COLUMN rag.answers.tenant IS 'Tenant that asked';
COMMENT ON COLUMN rag.answers.at IS 'When it was asked';
COMMENT ON COLUMN rag.answers.role_name IS 'Role that asked';
COMMENT ON COLUMN rag.answers.question IS 'The question as asked';
COMMENT ON COLUMN rag.answers.answer IS 'The answer text, with [n] citation markers';
COMMENT ON COLUMN rag.answers.model IS 'Chat model that answered (rag.models.name)';
COMMENT ON COLUMN rag.answers.mode IS 'llm (a chat model wrote it) or extractive (sentences of the chunks)';
COMMENT ON COLUMN rag.answers.cited_chunk_ids IS 'Chunks (rag.chunks.id) the answer cites';
COMMENT ON COLUMN rag.answers.retrieved_chunk_ids IS 'Chunks rag.search retrieved for the question';
COMMENT ON COLUMN rag.answers.removed_citations IS 'Markers of the model that named no chunk it was given, removed';
COMMENT ON COLUMN rag.answers.latency_ms IS 'Time to the whole answer, in milliseconds';
COMMENT ON COLUMN rag.answers.first_token_ms IS 'Time to the model''s first token (LLM answers), in milliseconds';
COMMENT ON COLUMN rag.answers.input_tokens IS 'Prompt tokens sent to the chat model';
COMMENT ON COLUMN rag.answers.output_tokens IS 'Tokens the chat model wrote';
COMMENT ON COLUMN rag.answers.finish_reason IS 'Why the model stopped (stop, length, ...); NULL for extractive answers';

COMMENT ON TABLE rag.usage_history IS
  'The model calls rag.purge_ledger removed from rag.usage (older than rag.usage_retention), summed per UTC '
  'day, tenant, model, provider and operation; rag.usage_daily and rag.cost_by_model count them. Tenant data, '
  'written only by rag.purge_ledger.';
COMMENT ON COLUMN rag.usage_history.tenant IS 'Tenant that made the calls';
COMMENT ON COLUMN rag.usage_history.day IS 'The UTC day of the calls';
COMMENT ON COLUMN rag.usage_history.model IS 'Model called (rag.models.name)';
COMMENT ON COLUMN rag.usage_history.provider IS 'Its provider at the time of the calls';
COMMENT ON COLUMN rag.usage_history.operation IS 'What the calls were for: index, query, ask or reembed';
COMMENT ON COLUMN rag.usage_history.calls IS 'Requests sent (local models: model runs), summed';
COMMENT ON COLUMN rag.usage_history.input_tokens IS 'Tokens sent to the model, summed';
COMMENT ON COLUMN rag.usage_history.output_tokens IS 'Tokens the model wrote, summed';
COMMENT ON COLUMN rag.usage_history.cost IS 'Cost at the prices of the time, summed';

COMMENT ON VIEW rag.usage_daily IS
  'Model calls, tokens and cost per UTC day, tenant, model and operation (from rag.usage and rag.usage_history). '
  'Example: SELECT * FROM rag.usage_daily ORDER BY day DESC;';

COMMENT ON VIEW rag.cost_by_model IS
  'Model calls, tokens and cost per model over all days, with the model''s current prices and its first and '
  'last call (from rag.usage, rag.usage_history and rag.models; a call summed into rag.usage_history counts '
  'from the start of its UTC day).';

COMMENT ON FUNCTION rag._usage_rows(jsonb) IS
  'Internal: rag.usage rows for model calls as the Python side records them (a jsonb array of {op, model, '
  'calls, tin, tout, ms, call}), priced from rag.models (rag._call_cost).';

COMMENT ON FUNCTION rag._call_cost(bigint, bigint, numeric, numeric) IS
  'Internal: a call''s cost from its tokens and a model''s prices per million tokens, in numeric: the one '
  'place it is computed (rag._usage_rows, rag.priced_calls).';

COMMENT ON FUNCTION rag._log_usage(jsonb) IS
  'Internal: writes rag._usage_rows. Called from plpgsql (rag.search, rag.embed, rag._store_answer) it '
  'takes no subtransaction id of its own, as a write from PL/Python would.';

COMMENT ON FUNCTION rag.spent_today() IS
  'The session tenant''s model cost so far this UTC day: what rag.daily_budget is checked against. '
  'The greater of the ledger''s sum (rag.usage) and the server''s own count, which a rollback does not '
  'undo: calls made in a transaction that rolled back count too. '
  'Arguments: none. Returns: numeric, in the unit of rag.models prices. Example: SELECT rag.spent_today();';

COMMENT ON FUNCTION rag.budget_today() IS
  'The session tenant''s daily budget and what counts against it today: budget (rag.daily_budget, NULL: '
  'none), recorded (the ledger, rag.usage), counted (the server''s count of priced calls, which a rollback '
  'does not undo), spent (the greater: rag.spent_today()) and remaining (NULL without a budget). A count '
  'above the ledger is calls whose transaction rolled back or is still open. '
  'Arguments: none. Example: SELECT * FROM rag.budget_today();';

COMMENT ON FUNCTION rag.priced_calls(date) IS
  'The session tenant''s priced model calls of a UTC day as this server counted them, outside any '
  'transaction: at (its first request), role_name, operation, model, requests (sent, retries included), '
  'answered, counted (what it holds of rag.budget_today()''s count), cost (of the answered requests; NULL if '
  'none was answered), input_tokens and output_tokens (as the provider reported them), recorded (a rag.usage '
  'row of the same call, role, operation, model and tokens, and at least its cost), pid (the backend) and '
  'call_id (rag.usage.call_id). A call not recorded was rolled back, is still open, or ran on a hot standby, '
  'which keeps its own journal and no ledger. Today and yesterday only (22023 for another day). The journal '
  'lists about 35,000 calls per tenant and day; past that, calls are summed per role, in rows without call_id '
  '(requests and counted only). '
  'Arguments: day date (default: today, UTC). Example: SELECT * FROM rag.priced_calls() WHERE recorded IS NOT TRUE;';

COMMENT ON FUNCTION rag._priced_calls(text) IS
  'Internal: the session tenant''s journal of priced calls of a UTC day (YYYY-MM-DD; a file of the server''s, '
  'ragpg_spend/ under the data directory), one object per call, then the calls past its cap summed per role.';

COMMENT ON FUNCTION rag._recorded_today() IS
  'Internal: the session tenant''s cost this UTC day in the ledger, rag.usage (this transaction''s rows '
  'included).';

COMMENT ON FUNCTION rag._counted_today_py() IS
  'Internal: rag._counted_today''s read of the server''s count, as text (NULL with a pending error).';

COMMENT ON FUNCTION rag._counted_today() IS
  'Internal: the session tenant''s cost this UTC day as the server counted each priced call when it '
  'returned, outside any transaction (a file of the server''s, ragpg_spend/ under the data directory): '
  'calls whose transaction rolled back included.';

-- ---------------------------------------------------------------------------------------
-- Embedding and the PL/Python bridge (100-embedding.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON FUNCTION rag._python_error() IS
  'Internal: takes the error a PL/Python function left pending (as jsonb), for rag._raise_python_error.';

COMMENT ON FUNCTION rag._raise_error(jsonb) IS
  'Internal: raises an error from its fields (message, sqlstate, detail, hint; jsonb), as kept by the Python side.';

COMMENT ON FUNCTION rag._raise_python_error() IS
  'Internal: raises the pending PL/Python error with its own message, SQLSTATE, detail and hint; called by '
  'the plpgsql wrappers when a Python function returns NULL.';

COMMENT ON FUNCTION rag._embed_query(text, text) IS
  'Internal: the embedding of a text in pgvector''s text form (vec, NULL with a pending error) and the '
  'rag.usage rows of its call (usage), which rag.embed writes; the Python side of rag.embed.';

COMMENT ON FUNCTION rag.embed(text, text) IS
  'The embedding of a text, as search embeds queries: with the tenant''s current embedding model, or with '
  'model. Arguments: input (non-empty text), model (a name of rag.models of kind embed; default NULL: the '
  'current one). Returns: vector (384 dimensions for all-MiniLM-L6-v2). '
  'Example: SELECT 1 - (rag.embed(''refund'') <=> rag.embed(''money back'')) AS cosine_similarity;';

COMMENT ON FUNCTION rag._index_documents_py(bigint[]) IS
  'Internal: the Python side of rag._index_documents (NULL with a pending error).';

COMMENT ON FUNCTION rag._index_documents(bigint[]) IS
  'Internal: chunks and embeds these documents and replaces their chunks, reusing embeddings of unchanged '
  'text; called by the rag.documents statement triggers. Returns how many documents were indexed.';

COMMENT ON FUNCTION rag.backend_stats() IS
  'Counters of this backend (session) since it started: index_calls, index_rounds, documents_indexed, '
  'model_calls, texts_embedded, chunks_reused, chunks_written, seconds spent chunking, embedding and in the '
  'database, writes skipped on a hot standby, and calls per embedder. Arguments: none. Returns: jsonb. '
  'Example: SELECT rag.backend_stats();';

-- ---------------------------------------------------------------------------------------
-- Ingest (200-ingest.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON TABLE rag.documents IS
  'The documents: one row per source, with its full text. INSERT, UPDATE and DELETE index through triggers '
  '(chunks and embeddings in rag.chunks, batched per statement); rag.ingest upserts by source. Rows of an '
  'attached table carry source_table and source_key. Tenant data (row-level security).';
COMMENT ON COLUMN rag.documents.id IS 'Document id (rag.chunks.document_id, rag.search document_id)';
COMMENT ON COLUMN rag.documents.tenant IS 'Tenant the document belongs to (default: rag.current_tenant())';
COMMENT ON COLUMN rag.documents.source IS 'Names the document, unique per tenant: a file name, URL, ''<table>#<key>'' for attached rows';
COMMENT ON COLUMN rag.documents.title IS 'Title shown in citations, at most 4,096 characters; if NULL, set from the document''s first heading (at most 500) when it is indexed';
COMMENT ON COLUMN rag.documents.url IS 'Link shown in citations, at most 8,192 characters';
COMMENT ON COLUMN rag.documents.metadata IS 'JSON object, matched by rag.search(filter => ...); format: markdown, text or html forces the parser';
COMMENT ON COLUMN rag.documents.content IS 'The full text (markdown, plain text or HTML), at most rag.max_document_bytes';
COMMENT ON COLUMN rag.documents.content_hash IS 'sha256 of content, set by the trigger: unchanged content is not indexed again';
COMMENT ON COLUMN rag.documents.attachment_id IS 'The attachment (rag.attachments) it comes from, one of its own tenant''s (the key is (tenant, attachment_id)); NULL for ingested documents';
COMMENT ON COLUMN rag.documents.source_table IS 'Attached rows: their table, e.g. public.articles';
COMMENT ON COLUMN rag.documents.source_key IS 'Attached rows: their primary key as JSON, e.g. {"id": 42}, to JOIN back';
COMMENT ON COLUMN rag.documents.created_at IS 'When the document was first stored';
COMMENT ON COLUMN rag.documents.updated_at IS 'When the document was last updated';

COMMENT ON TABLE rag.chunks IS
  'The chunks of the documents, with their embeddings (vector leg, one HNSW index per model) and tsvector '
  '(lexical leg): written by the indexing triggers, deleted with their document. Partitioned by tenant: '
  'rag.chunks_default, plus a partition per tenant made by rag.create_tenant_partition. Tenant data.';
COMMENT ON COLUMN rag.chunks.id IS 'Chunk id (rag.search chunk_id, citations'' chunk_id)';
COMMENT ON COLUMN rag.chunks.tenant IS 'Tenant of the chunk, always its document''s';
COMMENT ON COLUMN rag.chunks.document_id IS 'Its document (rag.documents.id)';
COMMENT ON COLUMN rag.chunks.ord IS 'Position within the document, from 0';
COMMENT ON COLUMN rag.chunks.content IS 'The chunk''s text: an exact slice of the document''s text';
COMMENT ON COLUMN rag.chunks.heading IS 'Heading path of its section, e.g. Handbook > Refunds';
COMMENT ON COLUMN rag.chunks.page IS 'Page of its document the chunk comes from, from 1 (PDF files; text with form feeds); NULL for text without pages';
COMMENT ON COLUMN rag.chunks.tokens IS 'Length in word pieces of the embedding model (at most rag.chunk_target_tokens)';
COMMENT ON COLUMN rag.chunks.content_hash IS 'sha256 of content: embeddings are reused by (model, hash)';
COMMENT ON COLUMN rag.chunks.model IS 'Embedding model that produced embedding (rag.models.name)';
COMMENT ON COLUMN rag.chunks.embedding IS 'The embedding, of the model''s dimensions';
COMMENT ON COLUMN rag.chunks.window_embeddings IS 'Embeddings of the chunk''s windows (its sentences in runs of up to 64 words; at most 12), same model: the vector leg scores the mean of the chunk''s cosine and its best window''s. ''{}'': the chunk is one window; NULL: not embedded yet (rag.work embeds them) or rag.window_embeddings off (which also makes search ignore them)';
COMMENT ON COLUMN rag.chunks.window_bounds IS 'Where each of the chunk''s windows (as for window_embeddings) starts among its tsvector''s positions, and one past the last window''s end: search reads each window''s term frequencies from the positions (score fusion''s lexical windows, rag.lexical_windows). NULL: indexed before; search then tokenizes the windows itself, until rag.work fills it in';
COMMENT ON COLUMN rag.chunks.window_lengths IS 'Lexemes in each of the chunk''s windows (as window_bounds): the length of a window in BM25';
COMMENT ON COLUMN rag.chunks.tsv IS 'to_tsvector(''english'', content): the lexical leg''s terms (generated)';
COMMENT ON COLUMN rag.chunks.created_at IS 'When the chunk was written';

COMMENT ON TABLE rag.chunks_default IS
  'The default partition of rag.chunks: the chunks of every tenant without a partition of its own. Query '
  'rag.chunks rather than this table.';

COMMENT ON FUNCTION rag.ingest_file(bytea, text, text, text, text, jsonb, text) IS
  'Add or replace the document made from a file''s bytes: PDF (text layer, page by page: every chunk knows '
  'its page; the outline gives heading paths), DOCX (headings, lists, tables), HTML, markdown or UTF-8 text, '
  'found from the content first and the file name second. Then as rag.ingest: upserted by source, unchanged '
  'text does no work. Encrypted PDFs, PDFs without a text layer (OCR is not supported) and damaged files '
  'are refused with the file''s name (0A000, 22P03); rag.max_file_bytes, rag.max_file_pages and '
  'rag.max_document_bytes bound the work (54000). Arguments: data, filename, source (default: filename), '
  'title (default: the file''s own), url, metadata (JSON object), format (auto, pdf, docx, html, markdown, '
  'text). The document''s metadata gets "file": {name, format, bytes, sha256, pages}. Returns: the document '
  'id. Example: SELECT rag.ingest_file(pg_read_binary_file(''/srv/handbook.pdf''), ''handbook.pdf'') (as a '
  'superuser; applications send the bytes as a parameter).';

COMMENT ON FUNCTION rag._check_file(bytea, text, text) IS
  'Internal: raises a clear error for a file argument that cannot be ingested (NULL or empty name or '
  'bytes, over rag.max_file_bytes); called by rag.ingest_file and the attach triggers.';

COMMENT ON FUNCTION rag._extract_file_py(bytea, text, text) IS
  'Internal: a file''s text (a form feed between PDF pages), its format, the parser its text needs, its '
  'title and pages (plpy/ragpg/files.py); ok NULL with a pending error.';

COMMENT ON FUNCTION rag._file_metadata(bytea, text, text, text, integer) IS
  'Internal: the metadata rag.ingest_file records of a file: format (the text''s parser) and file {name, '
  'format, bytes, sha256, pages}.';

COMMENT ON FUNCTION rag._extract_file(bytea, text, text) IS
  'Internal: a file''s text, title and the metadata rag.ingest_file records; NULL content for a NULL or empty '
  'file; a clear error naming a bad one. Used by rag.ingest_file and, for attached tables of files, rag._apply_rows.';

COMMENT ON FUNCTION rag._check_content(text, text) IS
  'Internal: raises a clear error for content that cannot be indexed (NULL, empty, over '
  'rag.max_document_bytes); called by rag.ingest and the rag.documents trigger.';

COMMENT ON FUNCTION rag._shown(text) IS
  'Internal: a value as an error message shows it: quoted, NULL as NULL, cut to its first 80 characters '
  'with its length after, so that a message and its log line stay short.';

COMMENT ON FUNCTION rag._shown_list(text[], integer) IS
  'Internal: values as an error message lists them: each as rag._shown shows it, comma-separated, the first '
  '`most` (5) only, then '', ...'' when there are more.';

COMMENT ON FUNCTION rag._vector_schema() IS
  'Internal: the schema pgvector is installed in, quoted for SQL text. rag''s functions run with '
  'search_path = pg_catalog, pg_temp and name pgvector''s types, operators and functions with it.';

COMMENT ON FUNCTION rag._restoring() IS
  'Internal: whether this session is a pg_restore or pg_dump script (row_security and check_function_bodies '
  'both off) run by a role that may write rag''s tables so (a superuser, or BYPASSRLS); the triggers then '
  'only store rows.';

COMMENT ON FUNCTION rag._chunks_before_write() IS
  'Internal: refuses a chunk over 131,072 characters or with a heading over 4,096, and window bounds and '
  'lengths of more than 13 and 12 entries (54000), past what rag makes, and an embedding without its model''s '
  'registered dimensions (22023); a writer''s own chunks are read by every reader of its tenant. A restore '
  'stores rows as dumped.';

COMMENT ON TRIGGER chunks_before_write ON rag.chunks IS
  'A chunk is at most 131,072 characters, its heading 4,096, its window bounds and lengths 13 and 12 entries, '
  'its embedding of its model''s dimensions (rag._chunks_before_write).';

COMMENT ON FUNCTION rag._posting_blocks_before_insert() IS
  'Internal: refuses a posting block of more than 8,192 postings, or whose ids, tfs and lens are not 8, 2 and '
  '4 bytes a posting (54000): every reader''s BM25 decodes a block whole. A restore stores rows as dumped.';

COMMENT ON TRIGGER posting_blocks_before_insert ON rag.posting_blocks IS
  'A posting block holds 1 to 8,192 postings (rag._posting_blocks_before_insert).';

COMMENT ON FUNCTION rag._documents_before_write() IS
  'Internal: row trigger on rag.documents: checks content, and the source (at most 4,096 characters but an '
  'attached row''s, its table and key), title (4,096), url (8,192), source_table (1,024) and source_key (8,192 '
  'characters of its text) it writes (54000 past one), sets content_hash and updated_at. '
  'A restore stores rows as dumped.';

COMMENT ON FUNCTION rag._documents_after_insert() IS
  'Internal: statement trigger on rag.documents: indexes every inserted row in one rag._index_documents call.';

COMMENT ON FUNCTION rag._documents_after_update() IS
  'Internal: statement trigger on rag.documents: re-indexes the updated rows whose content or '
  'metadata->>''format'' changed.';

COMMENT ON FUNCTION rag.ingest(text, text, text, text, jsonb) IS
  'Add or replace the document named source, chunked and embedded now. Unchanged content does no work; '
  'changed content embeds only chunks whose text is new. Arguments: content (markdown, text or HTML), '
  'source (unique name per tenant; at most 4,096 characters), title (4,096), url (8,192), metadata (JSON object; '
  'format: markdown, text or html '
  'forces the parser). Returns: the document id (bigint). Example: SELECT rag.ingest(''Refunds take five '
  'business days.'', source => ''handbook.md'', title => ''Handbook'', metadata => ''{"team": "support"}'');';

-- ---------------------------------------------------------------------------------------
-- Search (300-search.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON FUNCTION rag._check_query(text, integer, text) IS
  'Internal: raises a clear error for a NULL, empty or too long query, or k outside 1..rag.max_k; called by '
  'rag.search, rag.ask and rag.ask_stream.';

COMMENT ON FUNCTION rag.any_terms_tsquery(text) IS
  'A tsquery matching any of a text''s terms (english stemming, stop words dropped), as the ts_rank lexical '
  'leg of rag.search uses; websearch_to_tsquery would require every term. Arguments: query (text). Returns: '
  'tsquery (NULL if no term is left). Example: SELECT rag.any_terms_tsquery(''how long do refunds take'');';

COMMENT ON FUNCTION rag._filter_predicate(jsonb) IS
  'Internal: the SQL predicate (on documents alias d) of a search filter: "source" (string or array) and '
  'metadata containment; used by rag.search and rag.bm25.';

COMMENT ON FUNCTION rag._ef_search(text) IS
  'Internal: the HNSW candidate list size for a tenant''s search: rag.ef_search, or with auto 100 growing '
  'to 1000 with the corpus; used by rag.search.';

COMMENT ON FUNCTION rag._rerank(text, text, text, text[]) IS
  'Internal: each passage''s new rank (1-based) from a reranker (POST {base_url}/rerank) or a chat model '
  '(listwise, ragpg/rerank.py), its scores (rerank models), or the error that made it fail (error set, '
  'ranks NULL: rag.search keeps its fused order); usage: the rag.usage row of its call, which rag.search '
  'writes (rag._log_usage). ok is NULL with a pending error.';

COMMENT ON FUNCTION rag.page_url(text, integer) IS
  'A document URL pointing at a page: url with its fragment replaced by #page=N (the PDF open parameter); '
  'url unchanged when page is NULL. Arguments: url, page. Returns: text. Used by rag.search and citations. '
  'Example: SELECT rag.page_url(''https://example.com/handbook.pdf'', 12);';

COMMENT ON FUNCTION rag.search(text, integer, text, jsonb, integer, integer, integer, double precision, double precision, text, text, text, integer, double precision) IS
  'Hybrid retrieval over the current tenant''s chunks: HNSW (cosine) and BM25 candidates, fused by score '
  '(fusion convex: each candidate''s vector score (its cosine, or with window embeddings the mean of its '
  'cosine and its best window''s) and exact BM25, min-max normalised over the candidates, '
  '(w_v * vector + w_l * lexical)/(w_v + w_l), plus w_p * proximity, the IDF-weighted share of the query''s '
  'words the chunk holds within 12 word positions; with w_p > 0 the lexical score is 0.7 x its BM25 and 0.3 x '
  'its best window''s, each normalised, unless the setting rag.lexical_windows is off) or by rank (fusion rrf: w_v/(rrf_c + vector_rank) + '
  'w_l/(rrf_c + lexical_rank)), optionally reordered by a reranker. Arguments: query, k (8), mode (hybrid, '
  'vector, lexical), filter (JSON: "source" and metadata keys), vector_k/lexical_k (30), rrf_c (60), '
  'vector_weight/lexical_weight (1), lexical_ranking (bm25, ts_rank), fusion (convex, rrf), rerank (a model '
  'of kind rerank, or a chat model: reorders the fused best rerank_k; if it fails the fused order stays and '
  'a WARNING says why), rerank_k (30), proximity_weight (0.2; 0: off, and no window BM25). Returns: rows (chunk_id, '
  'document_id, ord, content, score, vector_rank, lexical_rank, source_table, source_key, rerank_rank, '
  'heading, page, url), best first; score is '
  'the fused score, or in mode vector the vector score and in mode lexical the BM25 score; heading and '
  'page say where the chunk is (page: PDF files), url is the document''s, with #page=N when the page is known. '
'Example: SELECT * FROM rag.search(''refund policy'', k => 8);';

-- ---------------------------------------------------------------------------------------
-- Lexical leg: BM25 (310-lexical.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON TABLE rag.posting_blocks IS
  'The inverted index of the BM25 leg: each lexeme''s postings (chunk id, term frequency, chunk length) in '
  'blocks of up to 8,192, as byte strings of big-endian integers, with each block''s largest tf and smallest '
  'length (they bound its BM25 weights, for block-max pruning). Writers append fresh blocks; '
  'rag.merge_posting_blocks rewrites a lexeme''s blocks best postings first. Partitioned by tenant like '
  'rag.chunks. Tenant data; ragpg/lexical.py has the design.';

COMMENT ON TABLE rag.posting_blocks_default IS
  'The default partition of rag.posting_blocks: the blocks of every tenant without a partition of its own. '
  'Query rag.posting_blocks rather than this table.';

COMMENT ON TABLE rag.lexeme_stats IS
  'BM25 document frequencies per tenant and lexeme, as +n/-n deltas written by the rag.chunks triggers '
  '(sum(df) is the frequency) and folded by rag.compact_lexical_stats. Read it through rag.lexical_stats.';

COMMENT ON TABLE rag.corpus_stats IS
  'BM25 corpus statistics per tenant, as deltas: sum(chunks) is the number of chunks, sum(total_len) their '
  'total length in lexemes (one row per writing statement until rag.compact_lexical_stats folds them).';

COMMENT ON FUNCTION rag._chunks_lexical_insert() IS
  'Internal: statement trigger on rag.chunks: indexes the new chunks (rag._add_postings), compacts the '
  'statistics now and then, and merges the lexemes whose fresh blocks piled up (rag._merge_due).';

COMMENT ON FUNCTION rag._add_postings(text, bigint[], tsvector[]) IS
  'Internal: index chunks of one tenant (ids and tsvectors): one fresh posting block per lexeme of theirs, '
  'and the BM25 statistics deltas. Called by the insert trigger and rag.rebuild_lexical_index.';

COMMENT ON FUNCTION rag._chunks_lexical_delete() IS
  'Internal: statement trigger on rag.chunks: negative statistics deltas and the deleted chunks'' '
  'rag.embeddings_next rows. Their postings stay in their blocks until their lexemes'' next merge; queries '
  'skip them.';

COMMENT ON FUNCTION rag._chunks_forget_answers() IS
  'Internal: statement trigger on rag.chunks: with rag.forget_answers on (rag.config only), removes the '
  'answers of rag.answers that retrieved a deleted chunk of their own tenant (their text may quote it); runs '
  'as the role that deleted the chunks.';

COMMENT ON FUNCTION rag.forget_stale_answers() IS
  'Remove the answers of rag.answers that retrieved a chunk which no longer exists (a writer: its tenant''s; '
  'a superuser: every tenant''s), whatever rag.forget_answers says: the chunks deleted before it was turned on, '
  'and an ask that committed after its chunks'' delete. Arguments: none. Returns: answers removed. '
  'Example: SELECT rag.forget_stale_answers();';

COMMENT ON FUNCTION rag._merge_due(text, text[]) IS
  'Internal: merge those of these lexemes whose fresh blocks piled up (64, or 8 or 4,096 postings holding a '
  'quarter as many postings as the merged blocks); only in READ COMMITTED. Returns: lexemes merged.';

COMMENT ON FUNCTION rag._merge_posting_blocks_py(text, text[]) IS
  'Internal: the Python side of rag.merge_posting_blocks (NULL with a pending error).';

COMMENT ON FUNCTION rag.merge_posting_blocks(text, text[]) IS
  'Rewrite lexemes'' posting blocks as merged blocks, best postings first, dropping deleted chunks'' '
  'postings; the insert trigger calls it when fresh blocks pile up, an administrator may after deleting many '
  'documents. A lexeme another transaction is merging is skipped. Arguments: tenant (the current one), '
  'lexemes (default NULL: all of them). Returns: lexemes merged. Example: SELECT rag.merge_posting_blocks();';

COMMENT ON FUNCTION rag.rebuild_lexical_index() IS
  'Rebuild the current tenant''s posting blocks and BM25 statistics from its chunks'' tsvectors, as the insert '
  'trigger builds them from chunks written 5,000 at a time (e.g. after a block was damaged by hand). Returns: '
  'the number of postings. Example: SELECT rag.rebuild_lexical_index();';

COMMENT ON FUNCTION rag._search_legs(text, text, integer, integer, double precision, double precision, jsonb, text, boolean, boolean, text, text) IS
  'Internal: rag.search''s candidates, the union of each leg''s best (HNSW over the tenant''s chunks of its '
  'embedding model; BM25 or ts_rank, run while the model embeds the query): ids, each leg''s score and rank '
  '(NULL outside that leg''s top); with both_scores, both legs'' scores for every candidate, and with proximity '
  '(BM25) its proximity (0..1) and, unless lexical_windows (the setting''s value) is off, its best window''s '
  'BM25 (window_lexical_scores); a chunk''s vector score '
  'is averaged with its best window''s unless window_embeddings (the setting''s value) is off; usage: the '
  'rag.usage rows of its model calls, which rag.search writes (rag._log_usage). ok is NULL with a pending error.';

COMMENT ON FUNCTION rag._bm25_py(text, integer, double precision, double precision, jsonb) IS
  'Internal: the Python side of rag.bm25: (chunk_ids, scores) best first, or NULLs with a pending error.';

COMMENT ON FUNCTION rag.compact_lexical_stats(text, integer) IS
  'Fold a tenant''s BM25 statistics deltas (rag.lexeme_stats, rag.corpus_stats) into one row per lexeme, if '
  'more than min_statements statements added deltas since last time; safe with concurrent writers. The '
  'triggers call it with 32. Arguments: tenant (default: the current one), min_statements (default 0: '
  'always). Returns: lexeme rows kept (0 if skipped). Example: SELECT rag.compact_lexical_stats();';

COMMENT ON FUNCTION rag.query_lexemes(text) IS
  'The distinct lexemes of a text as the lexical leg sees them (english stemming, stop words dropped). '
  'Arguments: query (text). Returns: text[]. Example: SELECT rag.query_lexemes(''write ahead log'');';

COMMENT ON FUNCTION rag.bm25(text, integer, double precision, double precision, jsonb) IS
  'Okapi BM25 over the current tenant''s chunks, best first: the lexical leg of rag.search. Exact top n at '
  'any size (block-max pruning over rag.posting_blocks). Arguments: query, n (results, 30), k1 and b '
  '(default: rag.bm25_k1, rag.bm25_b), filter (as rag.search). Returns: rows (chunk_id, score). '
  'Example: SELECT * FROM rag.bm25(''write ahead log'', n => 10);';

COMMENT ON VIEW rag.postings IS
  'The lexical index decoded from rag.posting_blocks, one row per posting of an existing chunk: tenant, '
  'lexeme, chunk_id, tf (occurrences in the chunk), len (the chunk''s length in lexemes). Rows as row-level '
  'security allows (a tenant''s role: its own). For inspection; slow on a large index. '
  'Example: SELECT chunk_id, tf FROM rag.postings WHERE lexeme = ''vacuum'' ORDER BY tf DESC LIMIT 5;';

COMMENT ON VIEW rag.lexical_stats IS
  'The current tenant''s lexical statistics, one row per lexeme with its document frequency (chunks that '
  'contain it). Example: SELECT * FROM rag.lexical_stats ORDER BY document_frequency DESC LIMIT 10;';

-- ---------------------------------------------------------------------------------------
-- Answers (400-ask.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON FUNCTION rag.ask(text, integer, text, text, integer) IS
  'Answer a question from the current tenant''s documents, with [n] citations: rag.search, then the chat '
  'model (rag.chat_model: extractive, or an LLM). Sources, titles and URLs come from rag.documents. '
  'Arguments: question, k (chunks retrieved, 8), model (of rag.models, default: rag.chat_model), rerank (a '
  'rerank or chat model that reorders the search''s best rerank_k first; default none), rerank_k (30). '
  'Returns: jsonb {answer, citations [{index, chunk_id, document_id, source, title, url, snippet}], model, '
  'mode, removed_citations, usage, latency_ms, answer_id, rerank {model, rerank_k, reranked, error}}. '
  'Example: SELECT rag.ask(''How long do refunds take?'');';

COMMENT ON FUNCTION rag._ask(text, integer, text, text, integer) IS
  'Internal: the Python side of rag.ask: the answer with its _log (question, retrieved chunk ids, store, '
  'usage) for rag._store_answer (NULL with a pending error).';

COMMENT ON FUNCTION rag._store_answer(jsonb) IS
  'Internal: writes an answer''s _log (its row in rag.answers unless store is false, the rag.usage rows of '
  'its model calls) and returns the answer without it, with answer_id. From plpgsql (rag.ask) it takes no '
  'subtransaction id of its own.';

COMMENT ON FUNCTION rag._ask_stream_open_py(text, integer, text, text, integer) IS
  'Internal: the Python side of rag._ask_stream_open: retrieves and opens the model''s stream, returns a handle.';

COMMENT ON FUNCTION rag._ask_stream_open(text, integer, text, text, integer) IS
  'Internal: checks the question and opens a stream for rag.ask_stream (errors surface here, before any '
  'row); returns its handle.';

COMMENT ON FUNCTION rag._ask_stream_read(bigint) IS
  'Internal: the rows of an open stream for rag.ask_stream: answer pieces, then the citations row; or, if an '
  'error ends them (a cancel included), that error, with its own message and SQLSTATE.';

COMMENT ON FUNCTION rag._ask_stream_rows(bigint) IS
  'Internal: the Python side of rag._ask_stream_read: the rows; an error ends them and is kept with the handle.';

COMMENT ON FUNCTION rag._ask_stream_error(bigint) IS
  'Internal: the error that ended rag._ask_stream_rows of this handle (jsonb; taken), or NULL.';

COMMENT ON FUNCTION rag._ask_stream_end(bigint) IS
  'Internal: no rows; raises the error that ended rag._ask_stream_rows of this handle, if one did.';

COMMENT ON FUNCTION rag.ask_stream(text, integer, text, text, integer) IS
  'rag.ask, streamed: one row per piece of the answer as the model writes it, then a last row (piece NULL) '
  'with the citations and the answer''s id in rag.answers. Read it through a cursor with the function in '
  'the select list (in FROM it runs to the end first). Arguments: as rag.ask (rerank included). Returns: rows (seq, piece, '
  'citations, answer_id). Example: DECLARE a NO SCROLL CURSOR FOR SELECT (s).* FROM (SELECT '
  'rag.ask_stream(''How long do refunds take?'') AS s) AS q; FETCH 1 FROM a;';

-- ---------------------------------------------------------------------------------------
-- Evaluation (500-eval.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON TABLE rag.eval_sets IS
  'Retrieval eval sets (loaded with ragpg eval load, BEIR layout): each set''s documents are in a tenant of '
  'its own, eval:<name>. Keyed by (tenant, name): two tenants may each have a set of the same name. Visible '
  'to roles that may act for that tenant.';

COMMENT ON TABLE rag.eval_queries IS
  'The queries of each eval set (rag.eval_sets, by tenant and set_name; a row inserted without its tenant '
  'belongs to the current tenant, whose set it must name).';

COMMENT ON TABLE rag.eval_qrels IS
  'Graded relevance judgments of the eval queries: a document (by its source in the set''s tenant) or a '
  'chunk, with a grade > 0.';

COMMENT ON TABLE rag.eval_answers IS
  'Gold answers of QA eval sets (loaded from answers.jsonl beside the BEIR files, e.g. covid-qa-dev): per '
  'query, the document holding the answer (its source in the set''s tenant), the answer text and its '
  'character offset there. rag.evaluate scores success@k on them.';

COMMENT ON TABLE rag.eval_run IS
  'One row per rag.evaluate run: set, mode, k, the search parameters and settings used, and the overall '
  'nDCG@10, recall@10, recall@100 and MRR@10, and success@1/5/10 for sets with gold answers. Read through '
  'rag.eval_runs.';

COMMENT ON TABLE rag.eval_run_query IS
  'Per query of an eval run: its nDCG@10, recall@10, recall@100 and MRR@10; success@1/5/10 (1 or 0) when '
  'the query has gold answers, else NULL.';

COMMENT ON FUNCTION rag._eval_text(text, boolean) IS
  'Internal: text as rag.evaluate and rag.evaluate_answers match answers: lower-cased, whitespace runs as one '
  'space; a gold answer (gold => true) also trimmed and cut to 200 characters.';

COMMENT ON FUNCTION rag._eval_tenant(text, text) IS
  'Internal: the tenant of the eval set a name means: with SET rag.tenant, that tenant''s set of the name; '
  'else the only set of that name the caller can see; else an error naming the caller (42704 none; 42P08 '
  'several, listing their tenants). Called by rag.evaluate and rag.evaluate_answers.';

COMMENT ON FUNCTION rag._eval_row_tenant() IS
  'Internal: trigger on the tables below an eval set (queries, judgments, answers, runs): a row inserted '
  'without its tenant belongs to the current tenant and must name a set it holds (42704); without SET '
  'rag.tenant, a name another visible tenant also holds is 42P08.';

COMMENT ON FUNCTION rag._eval_params(text, jsonb, jsonb) IS
  'Internal: checks an evaluation''s params against the keys it reads and their types (22023 naming the key).';

COMMENT ON FUNCTION rag.evaluate(text, text, integer, jsonb) IS
  'Run every judged query of an eval set (with rag.eval_qrels rows) through rag.search in the set''s tenant and '
  'store nDCG@10, recall@10, '
  'recall@100 and MRR@10 per query and overall (rag.eval_runs); for sets with gold answers (rag.eval_answers) '
  'also success@1/5/10, the share of queries with a top-k chunk from the answer''s document containing the '
  'answer. Arguments: set_name (of rag.eval_sets; with SET rag.tenant that tenant''s set of the name, else '
  'the only one the caller can see), '
  'mode (hybrid, vector, lexical), k (results per query, 100), params (other rag.search arguments, e.g. '
  '{"rrf_c": 20}). Returns: the run id. Example: SELECT rag.evaluate(''med'', ''hybrid'', 100);';

COMMENT ON TABLE rag.eval_answer_run IS
  'One row per rag.evaluate_answers run: set, chat model, k, parameters and settings, and the summary '
  '(gold_share, half_share, exact_share, citations_right, refusals, mean_words, p50_ms, p95_ms). Read '
  'through rag.eval_answer_runs.';

COMMENT ON TABLE rag.eval_answer_run_query IS
  'Per question of an answer run: the answer, the share of the gold answer''s content words it holds, '
  'whether it contains the whole gold answer, its citations and how many point into the gold answer''s '
  'document, its length in words and latency.';

COMMENT ON FUNCTION rag.evaluate_answers(text, text, integer, jsonb, integer) IS
  'Answer a QA set''s questions (rag.eval_answers) with rag.ask in the set''s tenant and store, per question '
  'and overall, how much of the gold answer each answer holds (content words; whole), the share of '
  'citations into the gold answer''s document, refusals (no citation), length in words and latency. '
  'Arguments: set_name, model (chat model, default rag.chat_model), k (8), params (rerank, rerank_k), '
  'questions (the first n by id; NULL: all). Returns: the run id. '
  'Example: SELECT rag.evaluate_answers(''covid-qa-dev'', questions => 200);';

COMMENT ON VIEW rag.eval_answer_runs IS
  'Every answer run (rag.evaluate_answers) with its summary, newest first. '
  'Example: SELECT * FROM rag.eval_answer_runs;';
COMMENT ON COLUMN rag.eval_answer_runs.run_id IS 'The run id returned by rag.evaluate_answers';
COMMENT ON COLUMN rag.eval_answer_runs.set_name IS 'The eval set (rag.eval_sets.name)';
COMMENT ON COLUMN rag.eval_answer_runs.model IS 'The chat model that answered';
COMMENT ON COLUMN rag.eval_answer_runs.k IS 'Chunks retrieved per question';
COMMENT ON COLUMN rag.eval_answer_runs.questions IS 'Questions answered';
COMMENT ON COLUMN rag.eval_answer_runs.gold_share IS 'Mean share of the gold answer''s content words in the answer';
COMMENT ON COLUMN rag.eval_answer_runs.half_share IS 'Share of answers holding at least half of the gold answer''s content words';
COMMENT ON COLUMN rag.eval_answer_runs.exact_share IS 'Share of answers containing the whole gold answer';
COMMENT ON COLUMN rag.eval_answer_runs.citations_right IS 'Share of citations pointing into the gold answer''s document';
COMMENT ON COLUMN rag.eval_answer_runs.refusals IS 'Share of questions answered without a citation';
COMMENT ON COLUMN rag.eval_answer_runs.mean_words IS 'Mean answer length in words';
COMMENT ON COLUMN rag.eval_answer_runs.p50_ms IS 'Median rag.ask latency';
COMMENT ON COLUMN rag.eval_answer_runs.p95_ms IS '95th percentile rag.ask latency';
COMMENT ON COLUMN rag.eval_answer_runs.seconds IS 'Duration of the run';
COMMENT ON COLUMN rag.eval_answer_runs.params IS 'rag.ask parameters and every setting used';
COMMENT ON COLUMN rag.eval_answer_runs.created_at IS 'When the run started';
COMMENT ON COLUMN rag.eval_answer_runs.run_by IS 'Role that ran it';
COMMENT ON COLUMN rag.eval_answer_runs.tenant IS 'The eval set''s tenant (sets are keyed by tenant and name)';

COMMENT ON VIEW rag.eval_runs IS
  'Every eval run with its overall metrics (nDCG@10, recall@10, recall@100, MRR@10), newest first. '
  'Example: SELECT * FROM rag.eval_runs;';
COMMENT ON COLUMN rag.eval_runs.run_id IS 'The run id returned by rag.evaluate';
COMMENT ON COLUMN rag.eval_runs.set_name IS 'The eval set (rag.eval_sets.name)';
COMMENT ON COLUMN rag.eval_runs.mode IS 'Search mode: hybrid, vector or lexical';
COMMENT ON COLUMN rag.eval_runs.k IS 'Results retrieved per query';
COMMENT ON COLUMN rag.eval_runs.queries IS 'Queries evaluated';
COMMENT ON COLUMN rag.eval_runs.ndcg_10 IS 'Mean nDCG@10 (linear gain)';
COMMENT ON COLUMN rag.eval_runs.recall_10 IS 'Mean recall@10';
COMMENT ON COLUMN rag.eval_runs.recall_100 IS 'Mean recall@100';
COMMENT ON COLUMN rag.eval_runs.mrr_10 IS 'Mean reciprocal rank of the first relevant result in the top 10';
COMMENT ON COLUMN rag.eval_runs.seconds IS 'Duration of the run';
COMMENT ON COLUMN rag.eval_runs.params IS 'rag.search parameters and every setting used';
COMMENT ON COLUMN rag.eval_runs.success_1 IS 'Share of queries whose first chunk holds a gold answer (sets with answers)';
COMMENT ON COLUMN rag.eval_runs.success_5 IS 'Share of queries with a gold answer in a top-5 chunk (sets with answers)';
COMMENT ON COLUMN rag.eval_runs.success_10 IS 'Share of queries with a gold answer in a top-10 chunk (sets with answers)';
COMMENT ON COLUMN rag.eval_runs.created_at IS 'When the run started';
COMMENT ON COLUMN rag.eval_runs.run_by IS 'Role that ran it';
COMMENT ON COLUMN rag.eval_runs.tenant IS 'The eval set''s tenant (sets are keyed by tenant and name)';

COMMENT ON VIEW rag.eval_compare IS
  'Any two runs of the same eval set (same tenant and name) side by side: metrics of run_a and run_b, the nDCG@10 change, and how '
  'many queries got better or worse. Example: SELECT * FROM rag.eval_compare WHERE run_a = 1 AND run_b = 2;';

-- ---------------------------------------------------------------------------------------
-- Attached tables and the queue (600-attach.sql, 610-cron.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON TABLE rag.attachments IS
  'Tables of yours kept in step with rag.documents (rag.attach): their key, content, title, url and '
  'metadata columns and mode (sync or async). rag.detach removes one with its documents. Tenant data.';
COMMENT ON COLUMN rag.attachments.id IS 'Attachment id, returned by rag.attach';
COMMENT ON COLUMN rag.attachments.tenant IS 'Tenant that attached the table; its documents go there';
COMMENT ON COLUMN rag.attachments.source_table IS 'The attached table';
COMMENT ON COLUMN rag.attachments.key_columns IS 'The table''s primary key columns';
COMMENT ON COLUMN rag.attachments.content_column IS 'Column indexed as the document text (bytea: files, see content_is_file)';
COMMENT ON COLUMN rag.attachments.content_is_file IS 'The content column is bytea: each row holds a file (PDF, DOCX, ...), read as rag.ingest_file does';
COMMENT ON COLUMN rag.attachments.filename_column IS 'For files: the column with each file''s name or content type (NULL: the row''s key names it)';
COMMENT ON COLUMN rag.attachments.title_column IS 'Column used as the title, or NULL';
COMMENT ON COLUMN rag.attachments.url_column IS 'Column used as the URL, or NULL';
COMMENT ON COLUMN rag.attachments.metadata_columns IS 'Columns copied into the documents'' metadata (for search filters)';
COMMENT ON COLUMN rag.attachments.mode IS 'sync (indexed in the writing transaction) or async (queued for rag.work)';
COMMENT ON COLUMN rag.attachments.created_at IS 'When the table was attached';

COMMENT ON TABLE rag.queue IS
  'Keys of rows of attached tables (async mode) waiting to be indexed by rag.work, with their retries. '
  'A row that keeps failing moves to rag.errors. Summary: rag.queue_status. Tenant data.';
COMMENT ON COLUMN rag.queue.id IS 'Queue entry id (rows are taken in this order)';
COMMENT ON COLUMN rag.queue.tenant IS 'Tenant of the attachment';
COMMENT ON COLUMN rag.queue.attachment_id IS 'The attachment (rag.attachments.id), one of the row''s tenant''s (the key is (tenant, attachment_id))';
COMMENT ON COLUMN rag.queue.source_key IS 'Primary key of the changed row, as JSON';
COMMENT ON COLUMN rag.queue.enqueued_at IS 'When the change was queued';
COMMENT ON COLUMN rag.queue.attempts IS 'Failed attempts so far';
COMMENT ON COLUMN rag.queue.next_attempt_at IS 'Not retried before this (rag.retry_base_seconds * 2^attempts after a failure)';
COMMENT ON COLUMN rag.queue.last_error IS 'Message of the last failure';

COMMENT ON TABLE rag.errors IS
  'Rows of attached tables that failed rag.max_attempts times, with the last error; rag.retry_errors() '
  'puts them back on the queue. Tenant data.';
COMMENT ON COLUMN rag.errors.id IS 'Error row id';
COMMENT ON COLUMN rag.errors.tenant IS 'Tenant of the attachment';
COMMENT ON COLUMN rag.errors.attachment_id IS 'The attachment (rag.attachments.id), one of the row''s tenant''s (the key is (tenant, attachment_id))';
COMMENT ON COLUMN rag.errors.source_key IS 'Primary key of the row that failed, as JSON';
COMMENT ON COLUMN rag.errors.attempts IS 'Attempts made';
COMMENT ON COLUMN rag.errors.last_error IS 'Message of the last failure';
COMMENT ON COLUMN rag.errors.enqueued_at IS 'When the change was first queued';
COMMENT ON COLUMN rag.errors.failed_at IS 'When it was given up';

COMMENT ON FUNCTION rag._object_expr(name[]) IS
  'Internal: SQL expression building a jsonb object of these columns of alias t; used for keys and metadata '
  'of attached tables.';

COMMENT ON FUNCTION rag._key_expr(rag.attachments) IS
  'Internal: SQL expression for an attached row''s primary key as jsonb (alias t).';

COMMENT ON FUNCTION rag._meta_expr(rag.attachments) IS
  'Internal: SQL expression for an attached row''s metadata columns as jsonb (alias t).';

COMMENT ON FUNCTION rag._title_expr(name) IS
  'Internal: SQL for a column of row t as rag.documents stores a title: text, cut to 4,096 characters.';

COMMENT ON FUNCTION rag._url_expr(name) IS
  'Internal: SQL for a column of row t as rag.documents stores a url: text, left out (NULL) past 8,192 characters.';

COMMENT ON FUNCTION rag._text_expr(name) IS
  'Internal: SQL expression for a column of alias t as text, or NULL::text for no column.';

COMMENT ON FUNCTION rag._indexed_expr(rag.attachments) IS
  'Internal: SQL expression for an attached row''s indexed columns as one jsonb array, to find real changes.';

COMMENT ON FUNCTION rag._attachment(bigint) IS
  'Internal: an attachment of the current tenant, or a 42501 error; used by the attached tables'' triggers.';

COMMENT ON FUNCTION rag._table_owner(regclass) IS
  'Internal: the role that owns a table, NULL for a dropped one (rag.work indexes only rows of tables the '
  'current role owns).';

COMMENT ON FUNCTION rag._apply_rows(bigint, jsonb[], jsonb[]) IS
  'Internal: brings the documents of these keys of an attached table in line with its rows (upsert or '
  'delete; a row found by pg_catalog''s equality and the same key). A key whose row row-level security may '
  'hide from the caller is queued for the owner''s worker, unless in deleted (rows the caller''s statement '
  'deleted). A title over 4,096 characters is cut, a url over 8,192 left out (rag._title_expr, rag._url_expr; '
  'the table keeps both). '
  'Called by the triggers (sync), rag.work (async), rag.resync and the backfill.';

COMMENT ON FUNCTION rag._attached_changed() IS
  'Internal: statement trigger on attached tables: finds keys whose indexed columns changed or whose rows '
  'the statement deleted, then applies them and deletes the deleted rows'' documents (sync) or enqueues them (async).';

COMMENT ON FUNCTION rag.attach(regclass, name, name, name, name[], text, boolean, name) IS
  'Keep rag.documents in step with a table of yours: existing rows are indexed now (sync) or queued '
  '(async), later INSERT/UPDATE/DELETE/TRUNCATE through statement triggers on the table and each partition '
  '(partitions created, attached, detached or dropped later are followed). Search results JOIN back via source_key. '
  'A bytea content column holds files (PDF, DOCX, HTML, markdown, text), read as rag.ingest_file does. '
  'Arguments: source_table (yours: another role''s needs force), content_column (text, or bytea: files), '
  'title_column, url_column, metadata_columns (name[]), mode (sync or async: async needs an owner that can '
  'log in, rag.work indexes queued rows only in its own session), force, filename_column (for '
  'files: a file name or content type per row; default: the row''s key). Returns: the attachment id. '
  'Example: SELECT rag.attach(''uploads'', content_column => ''data'', filename_column => ''name'', mode => '
  '''async'');';

COMMENT ON FUNCTION rag._file_name(text) IS
  'Internal: a name the file-format detection can use, from a file name or a content type (application/pdf '
  'gives file.pdf); used for attached tables of files.';

COMMENT ON FUNCTION rag._watch(bigint, regclass) IS
  'Internal: rag''s four statement triggers of an attachment (INSERT, UPDATE, DELETE, TRUNCATE) on a relation, '
  'the attached table or one of its partitions, for each event no enabled trigger of the attachment covers '
  'yet. Returns: how many it made.';

COMMENT ON FUNCTION rag._watched_relations(bigint, regclass) IS
  'Internal: the relations holding rag''s triggers of an attachment: its table first, then the table '
  'owner''s relations with such a trigger (partitions, and former ones); another role''s relation never.';

COMMENT ON FUNCTION rag._index_rows(rag.attachments, regclass) IS
  'Internal: brings the documents of the keys of a relation''s rows (the attached table, or a partition that '
  'joined it) in line with the table, rag.index_batch_size keys at a time (sync), or queues the keys '
  '(async; a key already queued is not queued again); returns the keys applied or queued. Called by rag.attach, '
  'rag.resync and for ATTACH PARTITION.';

COMMENT ON FUNCTION rag._truncated(rag.attachments, regclass) IS
  'Internal: after a TRUNCATE of a partition of an attached table, the documents whose row is gone '
  '(rag._apply_gone), once per statement however many partitions it truncated: the leaf partitions found empty '
  'are marked for the transaction until the next write or document, and a firing whose leaves are all marked returns.';

COMMENT ON FUNCTION rag._truncated_moot() IS
  'Internal: clears rag._truncated''s mark of empty partitions for the transaction (a row may have come into '
  'one): called by every write through rag''s triggers of an attached table and every document applied.';

COMMENT ON FUNCTION rag._xact_mark() IS
  'Internal: this transaction''s id and start (µs), which name it in the transaction-local settings '
  'rag._claim_tenant_models and rag._truncated keep; a value set by hand for a session names none of its '
  'transactions.';

COMMENT ON FUNCTION rag._apply_gone(rag.attachments) IS
  'Internal: the documents of an attached table whose row is gone (a partition detached, truncated or '
  'dropped): their keys applied in one statement (sync; nothing to embed) or queued (async). Linear in the '
  'table and its documents.';

COMMENT ON FUNCTION rag._watch_partitions(rag.attachments, boolean) IS
  'Internal: rag''s triggers on every partition of an attached table (any depth) and none left on a former '
  'one; with index_rows, a newly watched leaf''s rows are indexed and a former one''s documents go. Called by '
  'rag.attach, rag.resync and the event trigger rag_partitions_changed.';

COMMENT ON FUNCTION rag._attachments_above(oid[]) IS
  'Internal: the attachments whose triggers are on these relations or on a table they are partitions of '
  '(from pg_trigger, whatever the tenant), each with its table: the highest such relation.';

COMMENT ON FUNCTION rag._may_index(bigint, regclass, text) IS
  'Internal: the attachment when this session may index its rows for a DDL statement (acting for its '
  'tenant, as the table''s owner), else NULL after a WARNING naming what was left and the fix (rag.resync).';

COMMENT ON FUNCTION rag._partitions_changed() IS
  'Internal: event trigger function after CREATE TABLE and ALTER TABLE: a partition created in or attached '
  'to an attached table gets rag''s triggers and its rows indexed; a detached one loses its triggers and its '
  'rows'' documents.';

COMMENT ON FUNCTION rag._partitions_dropped() IS
  'Internal: event trigger function after DROP TABLE: a dropped partition of an attached table takes its '
  'rows'' documents with it (rag._apply_gone).';

COMMENT ON FUNCTION rag._follow_partitions(oid[]) IS
  'Internal: the work of rag._partitions_changed for the relations of a DDL statement, once its role is '
  'known to use rag: triggers on new partitions, rows indexed when the session may (rag._may_index).';

COMMENT ON FUNCTION rag._follow_dropped(bigint[]) IS
  'Internal: the work of rag._partitions_dropped for the attachments whose triggers went with a dropped '
  'table: rag._apply_gone when the session may (rag._may_index).';

COMMENT ON EVENT TRIGGER rag_partitions_changed IS
  'rag: keeps the partitions of attached tables watched (CREATE TABLE ... PARTITION OF, ATTACH and DETACH '
  'PARTITION): rag._partitions_changed.';

COMMENT ON EVENT TRIGGER rag_partitions_dropped IS
  'rag: deletes the documents of the rows of a dropped partition of an attached table: rag._partitions_dropped.';

COMMENT ON FUNCTION rag.detach(regclass) IS
  'Stop indexing an attached table: drop its triggers, and remove its documents, chunks, queue entries and '
  'errors. Arguments: source_table. Returns: true if the table was attached (for this tenant), else false. '
  'Example: SELECT rag.detach(''articles'');';

COMMENT ON FUNCTION rag._drop_attachment_triggers(text, regclass, bigint, interval) IS
  'Internal: drop rag''s triggers of an attachment on one relation (its table, a partition), found by trigger function and argument (the '
  'attachment id), whatever their names, in tries (rag._ddl_in_tries) up to patience (55P03 naming the '
  'caller); a relation without such a trigger is not touched (rag.detach, rag.erase_tenant).';

COMMENT ON FUNCTION rag._ddl_in_tries(text, text, regclass[], interval, boolean) IS
  'Internal: run the DDL statements that a query returns (given the relations as $1, asked again at each try; '
  'with until_none, again after they ran, until it returns none) in one subtransaction, each lock asked for in '
  'tries of at most 100 ms, 200 ms apart, so that nobody queues behind a waiting request; 55P03 naming the '
  'caller, the relations and the sessions holding locks on them after patience. Runs as its caller '
  '(rag._lock_tables, rag._drop_attachment_triggers).';

COMMENT ON FUNCTION rag._attachments_guard() IS
  'Internal: trigger of rag.attachments: a row inserted by a role that is not a superuser names an ordinary or '
  'partitioned table outside rag''s and the system''s schemas, on which the role may create triggers (42809, '
  '42501 otherwise).';

COMMENT ON FUNCTION rag.erase_tenant(text, boolean, interval) IS
  'Remove every row rag holds for a tenant, in one transaction (superuser): its documents, chunks, lexical '
  'index, attached tables'' registrations and rag''s triggers on them (the tables and their rows stay), queue, '
  'errors, answers, eval sets and runs, model choice, budget and role grants; the ledger (rag.usage, '
  'rag.usage_history) too unless keep_usage. Waits first for the tenant''s document writers in flight, then '
  'for its attached tables and rows held by its transactions, all within patience (then 55P03, nothing '
  'erased); later writers start a new tenant of that name; a WARNING names sessions of the tenant''s roles '
  '(not superusers'') with a transaction open at its end (what they commit later is not erased). Its own '
  'partitions stay, empty (a NOTICE names them). Arguments: tenant, keep_usage (default true), patience '
  '(default 30 seconds, at most 1 day). Returns: one row per '
  'table of schema rag with a tenant column: table_name, removed, kept (the tenant''s rows left: 0 but a kept '
  'ledger). Example: SELECT * FROM rag.erase_tenant(''acme'', keep_usage => false);';

COMMENT ON FUNCTION rag._partition_of(oid, text) IS
  'Internal: whether a relation is the partition of a tenant: its bound, written by pg_get_expr with '
  'standard_conforming_strings on, is exactly the tenant''s literal (rag.tenant_partitions, rag.erase_tenant).';

COMMENT ON FUNCTION rag._lock_wait(timestamptz, interval) IS
  'Internal: a lock_timeout in ms for one wait: what is left until deadline, at most most and the session''s '
  'own lock_timeout, at least 1 ms and at most what the setting takes.';

COMMENT ON FUNCTION rag._relation_lock_holders(regclass[]) IS
  'Internal: the sessions other than this one holding a lock on one of rels or on a relation of its partition '
  'tree (0 for a prepared transaction); rag._ddl_in_tries names them, rag._end_waiting_holders cancels those '
  'that wait for this session.';

COMMENT ON FUNCTION rag._end_waiting_holders(regclass[]) IS
  'Internal: cancel the statements of the sessions that hold a lock on one of rels (or a partition) and wait '
  'for this session: a deadlock its short lock tries hide from Postgres (rag.erase_tenant). Returns their pids.';

COMMENT ON FUNCTION rag._tenant_tables() IS
  'Internal: the tables of schema rag with a tenant column, in the order rag.erase_tenant empties them '
  '(attachments, documents, chunks, queue, errors, eval_sets, then the others by name).';

COMMENT ON PROCEDURE rag.work(integer) IS
  'Drain the current tenant''s queue of attached rows (async mode), then continue a model switch in progress, '
  'then embed the windows of chunks that have none (rag.chunks.window_embeddings NULL: indexed before 0.5.0 '
  'or re-embedded by a switch; not with rag.window_embeddings off) and fill in the windows'' bounds where they '
  'are NULL (rag.chunks.window_bounds: indexed before 0.5.0; no model involved). '
  'Batches of rag.index_batch_size keys, one transaction each, FOR UPDATE SKIP LOCKED so workers run side by '
  'side; failures retried with backoff, then moved to rag.errors. Arguments: max_batches (default NULL: '
  'until nothing is left). Returns: nothing (a procedure: CALL it outside a transaction block). '
  'Example: CALL rag.work();';

COMMENT ON FUNCTION rag.retry_errors() IS
  'Put the current tenant''s rows that failed for good (rag.errors) back on the queue with fresh attempts. '
  'Arguments: none. Returns: how many were requeued. Example: SELECT rag.retry_errors();';

COMMENT ON FUNCTION rag._pgrowlocks(text) IS
  'Internal: pgrowlocks'' C function (contrib pgrowlocks 1.2), declared in rag''s schema so that no overload '
  'created where pgrowlocks lives can make rag''s call ambiguous; for rag._queue_in_progress.';

COMMENT ON FUNCTION rag._queue_in_progress() IS
  'Internal: ctids of the rag.queue rows a worker holds right now (via pgrowlocks); for rag.queue_status.';

COMMENT ON VIEW rag.queue_status IS
  'Per attached table: rows pending, in progress (held by a worker now), retrying, failed (rag.errors), and '
  'the age of the oldest queued row. Example: SELECT * FROM rag.queue_status;';

COMMENT ON VIEW rag.document_status IS
  'Per document: its chunks, how many have an embedding, and the embedding model(s). '
  'Example: SELECT * FROM rag.document_status;';

COMMENT ON FUNCTION rag._cron_schedule(text, text, text, text, text) IS
  'Internal: schedules pg_cron job job_name (the same name again replaces it); 55000 naming the caller, with '
  'the hint, where pg_cron is not installed. Called by rag.schedule_worker, rag.schedule_lock_guard and '
  'rag.schedule_ledger_purge.';

COMMENT ON FUNCTION rag._cron_unschedule(text) IS
  'Internal: removes pg_cron job job_name; true if there was one (false without pg_cron).';

COMMENT ON FUNCTION rag.schedule_worker(text, integer) IS
  'A pg_cron job running CALL rag.work(max_batches) on a schedule, as the current role in its default '
  'tenant (needs pg_cron; otherwise run ragpg worker). One job per database and role. Arguments: schedule '
  '(cron syntax, default every minute), max_batches (per run, 10). Returns: the pg_cron job id. '
  'Example: SELECT rag.schedule_worker(''* * * * *'');';

COMMENT ON FUNCTION rag.unschedule_worker() IS
  'Remove the current role''s rag.work job of rag.schedule_worker. Arguments: none. Returns: true if there '
  'was one. Example: SELECT rag.unschedule_worker();';

-- ---------------------------------------------------------------------------------------
-- Switching the embedding model (620-model-switch.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON TABLE rag.embeddings_next IS
  'During an embedding model switch: each chunk''s embedding by the next model, built by rag.work and moved '
  'into rag.chunks in one transaction when all are done. Empty otherwise. Tenant data.';

COMMENT ON FUNCTION rag._owns_chunks() IS
  'Internal: whether the current role owns rag.chunks (may create its indexes and partitions); used by '
  'rag.create_model_index and rag.create_tenant_partition.';

COMMENT ON TABLE rag.model_indexes IS
  'Embedding models that have an HNSW index of their own on every partition of rag.chunks '
  '(rag.create_model_index), so that tenant partitions made later, and restores, get it too.';

COMMENT ON FUNCTION rag._chunks_partitions() IS
  'Internal: the partitions of rag.chunks (the default one and each tenant''s), by name, from pg_inherits '
  '(no lock on them); walked by the functions that make, check or count a model''s indexes.';

COMMENT ON FUNCTION rag._model_index(name, text) IS
  'Internal: the name of one embedding model''s HNSW index on one partition of rag.chunks.';

COMMENT ON FUNCTION rag._make_model_index(name, text) IS
  'Internal: creates one model''s partial HNSW index on one partition of rag.chunks unless a valid one exists '
  '(one of its name that is invalid, being built or of another definition is a 55000 naming it); used by '
  'rag.create_model_index, rag._make_partition_indexes and the rag.model_indexes restore trigger.';

COMMENT ON FUNCTION rag._check_hnsw_dimensions(rag.models, text) IS
  'Internal: refuses (54000, naming the model and the caller) a model whose vectors pgvector''s HNSW cannot '
  'index (over 2,000 dimensions); rag.create_model_index and rag.model_index_statements call it.';

COMMENT ON FUNCTION rag._model_index_ddl(name, text, boolean) IS
  'Internal: the CREATE INDEX (CONCURRENTLY when asked) statement of one model''s partial HNSW index on one '
  'partition of rag.chunks; rag._make_model_index runs it, rag.model_index_statements returns it.';

COMMENT ON FUNCTION rag._model_index_state(name, text) IS
  'Internal: one model''s HNSW index on one partition of rag.chunks, by its name: valid (the model''s as '
  'registered: access method, operator class, dimensions, predicate), other (another definition), invalid (a '
  'failed or cancelled CREATE INDEX CONCURRENTLY), building (such a build running, as the caller may see it) '
  'or missing.';

COMMENT ON FUNCTION rag.model_index_statements(text) IS
  'The statements that build one embedding model''s HNSW indexes without holding any tenant''s ingest: a '
  'CREATE INDEX CONCURRENTLY for each partition of rag.chunks lacking a valid one (after a DROP INDEX '
  'CONCURRENTLY of an invalid one); none when all are built. rag.create_model_index builds them in its '
  'transaction, holding SHARE on each partition (every tenant''s ingest into it waits). Run them as the owner '
  'of rag.chunks, outside a transaction, then rag.create_model_index (it finds them and records the model). '
  'Arguments: model_name (an embed model of rag.models). Returns: one statement a row. '
  'Example: SELECT rag.model_index_statements(''smollm2-embed'') \gexec   (in psql)';

COMMENT ON FUNCTION rag.finish_embedding_switch(interval) IS
  'Run the last step of the session tenant''s embedding model switch now (rag_admin): it moves every vector of '
  'the next model into rag.chunks and makes that model current, holding the tenant''s writers meanwhile '
  '(one HNSW insert a chunk). rag.work does it on its own unless rag.finish_switches is off. Arguments: '
  'patience (how long the tenant''s writers may hold their row before it gives up, 30 seconds; not negative). Returns: '
  'active (done), building (more than 64 chunks, or rag.index_batch_size if lower, still to embed: CALL rag.work(); or the writers held '
  'the row: a WARNING), none (no switch). Example: SELECT rag.finish_embedding_switch();';

COMMENT ON FUNCTION rag.create_model_index(text) IS
  'Create the partial HNSW index for one embedding model on every partition of rag.chunks (the owner of '
  'rag.chunks), recorded in rag.model_indexes so later partitions and restores get it; without it search '
  'with that model scans. rag.set_embedding_model calls it. Arguments: model_name (an embed model of '
  'rag.models). Returns: the index name on rag.chunks_default (existing: unchanged). '
  'Example: SELECT rag.create_model_index(''smollm2-embed'');';

COMMENT ON FUNCTION rag._model_indexes_restored() IS
  'Internal: row trigger on rag.model_indexes: during a restore, makes the model''s index on '
  'rag.chunks_default (pg_dump does not dump it).';

COMMENT ON FUNCTION rag.set_embedding_model(text) IS
  'Switch the tenant''s embedding model, even to another dimension, without downtime (rag_admin): with no '
  'chunks it is immediate; otherwise rag.work re-embeds in the background while search keeps the old model, '
  'then switches in one transaction. The current model again cancels a switch. Arguments: name (embed model '
  'of rag.models). Returns: ''active'' or ''building''. Waits for the tenant''s writers (30 s, then 55P03); '
  'READ COMMITTED only (25000). Example: SELECT rag.set_embedding_model(''smollm2-embed'');';

COMMENT ON FUNCTION rag._reembed_batch_py(integer) IS
  'Internal: the Python side of rag._reembed_batch (NULL with a pending error).';

COMMENT ON FUNCTION rag._reembed_batch(integer) IS
  'Internal: embeds up to n of the tenant''s chunks with its next model into rag.embeddings_next; returns '
  'how many, or -1 with no switch in progress. Called by rag.work.';

COMMENT ON FUNCTION rag._window_batch_py(integer) IS
  'Internal: the Python side of rag._window_batch (NULL with a pending error).';

COMMENT ON FUNCTION rag._window_batch(integer) IS
  'Internal: embeds the windows of up to n of the tenant''s chunks that have none (rag.chunks.window_embeddings '
  'NULL) with its embedding model, unless rag.window_embeddings is off, and fills in their window_bounds and '
  'window_lengths where those are NULL; returns how many chunks, 0 when none is left. Called by rag.work.';

COMMENT ON FUNCTION rag._finish_switch(interval) IS
  'Internal: when every chunk has its next embedding, makes the next model current in one transaction; '
  'called by rag.work. Holds the tenant''s rag.tenant_models row FOR UPDATE (its writers lock it before they '
  'read its model; rag._claim_tenant_models: new ones wait while it waits), asked for in 100 ms tries: other '
  'tenants'' writers go on. False if there is no '
  'switch or a chunk still lacks its next embedding, and with a WARNING if the tenant''s writers held the row for '
  'patience (default 30 s). READ COMMITTED only (25000).';

COMMENT ON VIEW rag.model_status IS
  'The current tenant''s embedding model and the progress of a switch: next_model, chunks, next_embedded, '
  'state (active or building), and windows_pending: chunks of the current model whose window embeddings '
  'rag.work has yet to make (after an upgrade from 0.4.0 or a switch). Example: SELECT * FROM rag.model_status;';

-- ---------------------------------------------------------------------------------------
-- Partitions per tenant (630-partitions.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON FUNCTION rag._make_partition_indexes(name, name) IS
  'Internal: the keys and indexes (GIN, HNSW per model of rag.model_indexes) of a tenant''s new partitions '
  'of rag.chunks and rag.posting_blocks; called by rag.create_tenant_partition.';

COMMENT ON FUNCTION rag.create_tenant_partition(text) IS
  'Give a large tenant its own partitions of rag.chunks and rag.posting_blocks (own HNSW and GIN indexes; search '
  'prunes to them), moving its rows out of the default ones in one transaction; writers wait meanwhile. '
  'Needs the owner of rag.chunks. Arguments: tenant. Returns: the chunks partition''s name (existing: '
  'unchanged). Example: SELECT rag.create_tenant_partition(''acme'');';

COMMENT ON VIEW rag.tenant_partitions IS
  'The partitions of rag.chunks (the default one and each tenant''s own): bound, name, total size in bytes '
  'and approximate chunks. Example: SELECT * FROM rag.tenant_partitions;';

COMMENT ON FUNCTION rag._documents_after_delete() IS
  'Internal: statement trigger on rag.documents: deletes the deleted documents'' chunks through rag.chunks '
  '(so its trigger keeps the BM25 statistics).';

-- ---------------------------------------------------------------------------------------
-- The lock guard (640-lock-guard.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON FUNCTION rag._may_signal() IS
  'Internal: whether the current role may end other roles'' sessions (a superuser, or a member of '
  'pg_signal_backend).';

COMMENT ON FUNCTION rag.lock_holders() IS
  'The sessions the lock guard would end now: each holds, or queues for, a lock stronger than ROW EXCLUSIVE '
  'on a table of schema rag, or of schema cron where pg_cron is installed (LOCK TABLE; rag''s own readers and '
  'writers never take one), and its login role '
  'is not a superuser, a member of the table''s owner or of rag_admin (a VACUUM, ANALYZE or CREATE INDEX '
  'CONCURRENTLY at work is spared). Arguments: none. Returns: pid, role, relation, mode, granted (false: '
  'queued), waiting_pids (sessions it blocks), and prepared: the name of a prepared transaction that holds '
  'such a lock (pid NULL; no session to end). Example: SELECT * FROM rag.lock_holders();';

COMMENT ON FUNCTION rag.end_lock_holders() IS
  'One pass of the lock guard: ends (pg_terminate_backend) each session rag.lock_holders() lists, with a '
  'WARNING naming it; a prepared transaction gets a WARNING with the ROLLBACK PREPARED to run. Needs a '
  'superuser or a member of pg_signal_backend (42501). Arguments: none. Returns: the sessions ended. '
  'Example: SELECT * FROM rag.end_lock_holders();';

COMMENT ON FUNCTION rag._lock_guard_pass(timestamptz, interval, interval) IS
  'Internal: one pass of rag.lock_guard (rag.end_lock_holders()); true if another fits in run_for from started.';

COMMENT ON PROCEDURE rag.lock_guard(interval, interval) IS
  'The lock guard for run_for (default 55 seconds): rag.end_lock_holders() every `every` (1 second), each '
  'pass in its own transaction. Call it outside a transaction block. Arguments: run_for, every. '
  'Example: CALL rag.lock_guard();';

COMMENT ON FUNCTION rag.schedule_lock_guard() IS
  'A pg_cron job running CALL rag.lock_guard() every minute in this database, as the current role (a '
  'superuser or a member of pg_signal_backend; needs pg_cron). Arguments: none. Returns: the pg_cron job id. '
  'Example: SELECT rag.schedule_lock_guard();';

COMMENT ON FUNCTION rag.unschedule_lock_guard() IS
  'Remove this database''s job of rag.schedule_lock_guard. Arguments: none. Returns: true if there was one. '
  'Example: SELECT rag.unschedule_lock_guard();';

-- ---------------------------------------------------------------------------------------
-- Retention of the ledger (650-retention.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON FUNCTION rag._retention(text, text, text, text) IS
  'Internal: a retention setting''s value as an interval (NULL for empty: kept for good); 22023 naming the '
  'caller and the setting unless it is an interval from shortest (an interval''s text) to 1000 years.';

COMMENT ON FUNCTION rag._ledger_cutoffs(integer) IS
  'Internal: rag.purge_ledger''s checks (a superuser, batch_rows >= 1, rag.answer_retention and '
  'rag.usage_retention) and the time before which each ledger''s rows go (NULL: none).';

COMMENT ON FUNCTION rag._purge_ledger_batch(text, bigint, timestamptz, integer) IS
  'Internal: one batch of rag.purge_ledger: the next batch_rows rows of rag.answers or rag.usage after '
  'after_id, those made before cutoff removed (usage summed into rag.usage_history in the same statement). '
  'Returns the last id looked at (NULL: none left) and how many went.';

COMMENT ON PROCEDURE rag.purge_ledger(integer, bigint, bigint) IS
  'Removes the answers older than rag.answer_retention from rag.answers, and sums the rag.usage rows older '
  'than rag.usage_retention (at least 1 day) into rag.usage_history (the daily totals and rag.cost_by_model '
  'stay the same); an empty setting, the default, keeps them. Each row is looked at once, batch_rows per '
  'transaction. A superuser''s (42501), outside a transaction block. Arguments: batch_rows (10000). Returns: '
  'answers_removed, usage_removed. Example: CALL rag.purge_ledger();';

COMMENT ON FUNCTION rag.schedule_ledger_purge(text) IS
  'A pg_cron job running CALL rag.purge_ledger() on schedule (cron syntax; default 17 3 * * *, nightly) in '
  'this database, as the current role (a superuser; needs pg_cron). Arguments: schedule. Returns: the pg_cron '
  'job id. Example: SELECT rag.schedule_ledger_purge();';

COMMENT ON FUNCTION rag.unschedule_ledger_purge() IS
  'Remove this database''s job of rag.schedule_ledger_purge. Arguments: none. Returns: true if there was one. '
  'Example: SELECT rag.unschedule_ledger_purge();';

COMMENT ON FUNCTION rag._lock_tables(text, regclass[], text, interval) IS
  'Internal: LOCK TABLE tables IN lock_mode MODE for DDL (rag.create_tenant_partition, '
  'rag.create_model_index), in tries (rag._ddl_in_tries) so that nobody queues behind a waiting request; '
  '55P03 naming the caller and the sessions holding locks on them after patience (30 seconds).';

-- ---------------------------------------------------------------------------------------
-- Checking derived data (670-check.sql)
-- ---------------------------------------------------------------------------------------

COMMENT ON FUNCTION rag._documents_to_reindex() IS
  'Internal: the visible documents whose chunks are not those of their text (the text changed with rag''s '
  'triggers off, no chunks, or chunks of another embedding model than the tenant''s) and why. Read by '
  'rag.check and rag.reindex.';

COMMENT ON FUNCTION rag._own_session(name) IS
  'Internal: whether this session is the role''s own: logged in as it (pg_stat_activity), with no SET ROLE or '
  'SET SESSION AUTHORIZATION since. rag reads a table of that role''s (running its code) only then: rag.check, '
  'rag.resync, rag.work.';

COMMENT ON FUNCTION rag._rows_hidden(regclass) IS
  'Internal: whether row-level security is active for the current role on the table (row_security_active), so '
  'reading it may leave rows out (rag.check does not read it; rag.resync refuses, 42501; rag.work leaves its '
  'queued rows).';

COMMENT ON FUNCTION rag._worker_takes(regclass, name) IS
  'Internal: whether rag.work, in a session of role me (NULL: no role''s own session), takes the queued rows '
  'of the table: a dropped table''s, and its own tables'' that row-level security does not filter for it. '
  'Also counted by ragpg worker.';

COMMENT ON FUNCTION rag.check() IS
  'What rag derived that is out of step with what it derives from, for the tenants the caller can see (a '
  'superuser: every tenant): documents not indexed, the lexical index''s statistics and blocks, embedding '
  'models'' HNSW indexes search cannot use (invalid, or not of the model''s definition) and HNSW indexes of no '
  'registered model, attached '
  'tables whose rag triggers are missing or disabled, and attached rows out of step with their documents (tables '
  'the caller owns, in a session of its own, not after SET ROLE; others are named, not read). Reads everything it checks once; changes nothing. Returns one '
  'row per problem and tenant: tenant, problem, affected (rows), example, fix (what to run). No rows: '
  'nothing found. Example: SELECT * FROM rag.check();';

COMMENT ON FUNCTION rag.reindex(bigint[]) IS
  'Chunk and embed documents again from their stored text (chunks of unchanged text keep their embeddings). '
  'Arguments: document_ids (default NULL: every visible document rag.check finds not indexed; an id the '
  'caller cannot see is 42704). Returns: how many documents. Example: SELECT rag.reindex();';

COMMENT ON FUNCTION rag.resync(regclass, boolean) IS
  'Bring the documents of an attached table (of the session''s tenant) in step with its rows, as if every '
  'row had just been written (sync: applied now; async: queued for rag.work); documents of rows that are '
  'gone are deleted; unchanged rows embed nothing. Run by the table''s owner (42501 otherwise unless force, '
  'as rag.attach). Arguments: source_table, force (false). Returns: the keys applied or queued. '
  'Example: SELECT rag.resync(''articles'');';
