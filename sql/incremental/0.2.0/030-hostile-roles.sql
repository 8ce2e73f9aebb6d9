-- 0.2.0: keys no role can forge or exhaust, API keys bound to the host they were set for.

-- 1. Ids are the database's: GENERATED ALWAYS, and (999-privileges.sql) no role but the
--    owner may name the column in an INSERT. A reader inserting rag.usage rows with the
--    next 200,000 ids made every tenant's search fail with 23505.
ALTER TABLE rag.documents   ALTER COLUMN id SET GENERATED ALWAYS;
ALTER TABLE rag.chunks      ALTER COLUMN id SET GENERATED ALWAYS;
ALTER TABLE rag.usage       ALTER COLUMN id SET GENERATED ALWAYS;
ALTER TABLE rag.answers     ALTER COLUMN id SET GENERATED ALWAYS;
ALTER TABLE rag.queue       ALTER COLUMN id SET GENERATED ALWAYS;
ALTER TABLE rag.errors      ALTER COLUMN id SET GENERATED ALWAYS;
ALTER TABLE rag.attachments ALTER COLUMN id SET GENERATED ALWAYS;
ALTER TABLE rag.eval_run    ALTER COLUMN id SET GENERATED ALWAYS;

-- 2. The next model's embeddings are keyed per tenant: a writer's row for another
--    tenant's chunk id no longer blocks that tenant's model switch.
ALTER TABLE rag.embeddings_next DROP CONSTRAINT embeddings_next_pkey;
ALTER TABLE rag.embeddings_next ADD CONSTRAINT embeddings_next_pkey PRIMARY KEY (tenant, chunk_id);

-- 3. An API key is bound to the base URL it was set for (rag.set_api_key(..., base_url));
--    a model elsewhere cannot use it. Keys of 0.1.0 are bound to the one base URL of the
--    models using them, if there is one; the binding that counts is kept with the secret
--    (ragpg/keys.py), so a key of 0.1.0 is used again once rag.set_api_key binds it.
ALTER TABLE rag.api_keys ADD COLUMN base_url text CHECK (base_url ~ '^https?://[^\s/]+(/[^\s]*)?$');
UPDATE rag.api_keys AS k SET base_url = (SELECT min(m.base_url) FROM rag.models AS m WHERE m.api_key = k.name)
WHERE (SELECT count(DISTINCT m.base_url) FROM rag.models AS m WHERE m.api_key = k.name) = 1;

-- 4. Functions whose arguments changed (re-created by idempotent/; a fresh install has none yet)
DROP FUNCTION IF EXISTS rag.set_api_key(text, text, text);
DROP FUNCTION IF EXISTS rag._write_key_file(text, text);
DROP FUNCTION IF EXISTS rag.attach(regclass, name, name, name, name[], text);
