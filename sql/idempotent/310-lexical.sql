-- The lexical leg's index upkeep. Per tenant (incremental/0.1.0/310-lexical.sql and
-- 0.3.0/010-posting-blocks.sql have the tables):
--   rag.posting_blocks  each lexeme's postings in blocks (ragpg/lexical.py)
--   rag.lexeme_stats    document frequency per lexeme, as insert-only deltas
--   rag.corpus_stats    chunk count and total length, as deltas too
-- The statement triggers on rag.chunks keep all three; writers only ever insert rows, so
-- concurrent writers never wait on each other.

-- rag._chunks_lexical_insert / rag._chunks_lexical_delete
-- Statement triggers on rag.chunks. Insert: one fresh block per (tenant, lexeme) of the
-- statement's chunks, the statistics' deltas (rag._add_postings), and a merge of the lexemes whose fresh
-- blocks have piled up. Delete: the statistics' deltas only; the chunks' postings stay in
-- their blocks until their lexemes' next merge, and queries skip them (ragpg.lexical).
CREATE OR REPLACE FUNCTION rag._chunks_lexical_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    IF rag._restoring() THEN
        RETURN NULL;  -- blocks and statistics are in the dump
    END IF;
    FOR t IN SELECT n.tenant, array_agg(n.id ORDER BY n.id) AS ids, array_agg(n.tsv ORDER BY n.id) AS tsvs
             FROM new_rows AS n GROUP BY n.tenant LOOP
        PERFORM rag._add_postings(t.tenant, t.ids, t.tsvs);
        PERFORM rag.compact_lexical_stats(t.tenant, 32);
        PERFORM rag._merge_due(t.tenant, ARRAY(SELECT DISTINCT u.lexeme FROM unnest(t.tsvs) AS v (tsv), unnest(v.tsv) AS u));
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rag._chunks_lexical_delete()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rag._restoring() THEN
        RETURN NULL;
    END IF;
    INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
    SELECT o.tenant, u.lexeme, -count(*) FROM old_rows AS o, unnest(o.tsv) AS u GROUP BY 1, 2;
    -- and the next model's embeddings of a switch in progress (rag.embeddings_next)
    DELETE FROM rag.embeddings_next AS n USING old_rows AS o WHERE n.chunk_id = o.id AND n.tenant = o.tenant;
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT o.tenant, -count(*),
           -coalesce(sum((SELECT sum(cardinality(u.positions)) FROM unnest(o.tsv) AS u)), 0)
    FROM old_rows AS o GROUP BY o.tenant;
    RETURN NULL;
END
$$;

-- rag._add_postings (internal)
-- Index chunks of one tenant: one fresh block per lexeme of theirs, and the statistics'
-- deltas (document frequencies, chunk count, total length). Called by the insert trigger
-- and by rag.rebuild_lexical_index; merges are rag._merge_due's.
CREATE OR REPLACE FUNCTION rag._add_postings(tenant text, ids bigint[], tsvs tsvector[])
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH n AS (
        SELECT * FROM unnest(ids, tsvs) WITH ORDINALITY AS n (id, tsv, o)
    ), p AS (
        SELECT u.lexeme, n.id AS chunk_id, cardinality(u.positions) AS tf,
               sum(cardinality(u.positions)) OVER (PARTITION BY n.id) AS len,
               (n.o - 1) / 8192 AS part   -- (a chunk holds a lexeme once: at most 8,192 a part)
        FROM n, unnest(n.tsv) AS u
    ), blocks AS (
        INSERT INTO rag.posting_blocks (tenant, lexeme, first_id, merged, n, max_tf, min_len, ids, tfs, lens)
        SELECT _add_postings.tenant, p.lexeme, min(p.chunk_id), false, count(*), max(p.tf), min(p.len),
               string_agg(int8send(p.chunk_id), ''::bytea ORDER BY p.chunk_id),
               string_agg(int2send(p.tf::int2), ''::bytea ORDER BY p.chunk_id),
               string_agg(int4send(p.len::int), ''::bytea ORDER BY p.chunk_id)
        FROM p GROUP BY p.lexeme, p.part   -- (at most 8,192 a block: rag._posting_blocks_before_insert)
    ), df AS (
        INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
        SELECT _add_postings.tenant, p.lexeme, count(*) FROM p GROUP BY p.lexeme
    )
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT _add_postings.tenant, count(*), coalesce(sum(l.len), 0)
    FROM n LEFT JOIN (SELECT DISTINCT p.chunk_id, p.len FROM p) AS l ON l.chunk_id = n.id
    HAVING count(*) > 0
$$;

-- rag._posting_blocks_before_insert (internal)
-- Row trigger: a block holds 1 to 8,192 postings (lexical.BLOCK_MAX, as merged ones do),
-- its ids, tfs and lens 8, 2 and 4 bytes each. A writer may write blocks (the ingest
-- triggers run as the caller); every reader's BM25 decoded a block whole, and one of 12 M
-- postings (2 MB on disk) took a reader +1.26 GB (hostile review 46). A restore stores
-- rows as dumped.
CREATE OR REPLACE FUNCTION rag._posting_blocks_before_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (NEW.n NOT BETWEEN 1 AND 8192 OR octet_length(NEW.ids) <> 8 * NEW.n OR octet_length(NEW.tfs) <> 2 * NEW.n
        OR octet_length(NEW.lens) <> 4 * NEW.n) AND NOT rag._restoring() THEN
        RAISE EXCEPTION 'rag.posting_blocks: a block of % postings in %, % and % bytes; a block holds 1 to 8192 postings, 8, 2 and 4 bytes each',
                        NEW.n, octet_length(NEW.ids), octet_length(NEW.tfs), octet_length(NEW.lens)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'rag writes the lexical index: SELECT rag.rebuild_lexical_index() rebuilds it';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER posting_blocks_before_insert BEFORE INSERT ON rag.posting_blocks
    FOR EACH ROW EXECUTE FUNCTION rag._posting_blocks_before_insert();

CREATE OR REPLACE TRIGGER chunks_lexical_insert AFTER INSERT ON rag.chunks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._chunks_lexical_insert();
CREATE OR REPLACE TRIGGER chunks_lexical_delete AFTER DELETE ON rag.chunks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rag._chunks_lexical_delete();

-- rag._merge_due (internal)
-- Merge those of these lexemes whose fresh blocks have piled up: 64 of them, or 8 (or
-- 4,096 postings: fresh blocks are not ordered, so a query cannot stop early in them)
-- that hold a quarter as many postings as the merged ones (so a lexeme's postings are
-- rewritten a bounded number of times as it grows, ~5 on average). Only in READ COMMITTED: in a
-- snapshot older than the statement, a concurrent merge would make this one fail.
CREATE OR REPLACE FUNCTION rag._merge_due(tenant text, lexemes text[])
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    due text[];
    n int;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN 0;
    END IF;
    SELECT array_agg(x.lexeme) INTO due FROM (
        SELECT b.lexeme FROM rag.posting_blocks AS b
        WHERE b.tenant = _merge_due.tenant AND b.lexeme = ANY (lexemes)
        GROUP BY b.lexeme
        HAVING count(*) FILTER (WHERE NOT b.merged) >= 64
            OR ((count(*) FILTER (WHERE NOT b.merged) >= 8 OR sum(b.n) FILTER (WHERE NOT b.merged) >= 4096)
                AND 4 * coalesce(sum(b.n) FILTER (WHERE NOT b.merged), 0) >= coalesce(sum(b.n) FILTER (WHERE b.merged), 0))) AS x;
    IF due IS NULL THEN
        RETURN 0;
    END IF;
    n := rag._merge_posting_blocks_py(tenant, due);
    IF n IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN n;
END
$$;

-- rag.merge_posting_blocks
-- Rewrite lexemes' blocks as merged blocks, best postings first, without deleted chunks'
-- postings (the triggers call it; an administrator may, e.g. after deleting many
-- documents). A lexeme another transaction is merging is skipped. Returns the number
-- of lexemes merged.
CREATE OR REPLACE FUNCTION rag._merge_posting_blocks_py(tenant text, lexemes text[])
RETURNS int
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.merge_posting_blocks(plpy, tenant, lexemes or [])
$python$;

CREATE OR REPLACE FUNCTION rag.merge_posting_blocks(tenant text DEFAULT rag.current_tenant(), lexemes text[] DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    IF tenant IS DISTINCT FROM rag.current_tenant() THEN
        RAISE EXCEPTION 'rag.merge_posting_blocks: tenant % is not the current tenant', rag._shown(tenant)
            USING ERRCODE = 'insufficient_privilege', HINT = 'SET rag.tenant first';
    END IF;
    n := rag._merge_posting_blocks_py(tenant, coalesce(lexemes, ARRAY(
             SELECT DISTINCT b.lexeme FROM rag.posting_blocks AS b WHERE b.tenant = merge_posting_blocks.tenant)));
    IF n IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN n;
END
$$;

-- rag.rebuild_lexical_index
-- Rebuild the current tenant's blocks and statistics from its chunks' tsvectors, as the
-- insert trigger builds them from chunks written 5,000 at a time (e.g. after a block was
-- damaged by hand). Returns the number of postings.
CREATE OR REPLACE FUNCTION rag.rebuild_lexical_index()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    my_tenant text := rag.current_tenant();
    last_id bigint := -9223372036854775808;
    ids bigint[];
    tsvs tsvector[];
BEGIN
    DELETE FROM rag.posting_blocks AS b WHERE b.tenant = my_tenant;
    DELETE FROM rag.lexeme_stats AS s WHERE s.tenant = my_tenant;
    DELETE FROM rag.corpus_stats AS s WHERE s.tenant = my_tenant;
    LOOP
        SELECT array_agg(c.id ORDER BY c.id), array_agg(c.tsv ORDER BY c.id) INTO ids, tsvs
        FROM (SELECT c.id, c.tsv FROM rag.chunks AS c WHERE c.tenant = my_tenant AND c.id > last_id
              ORDER BY c.id LIMIT 5000) AS c;
        EXIT WHEN ids IS NULL;
        PERFORM rag._add_postings(my_tenant, ids, tsvs);
        last_id := ids[cardinality(ids)];
    END LOOP;
    PERFORM rag._merge_due(my_tenant, ARRAY(SELECT DISTINCT b.lexeme FROM rag.posting_blocks AS b
                                            WHERE b.tenant = my_tenant));
    RETURN (SELECT coalesce(sum(b.n), 0) FROM rag.posting_blocks AS b WHERE b.tenant = my_tenant);
END
$$;

-- rag.compact_lexical_stats
-- Fold a tenant's statistics deltas into one row per lexeme, once more than
-- `min_statements` writing statements have added deltas since the last time (the
-- triggers call it with 32, so a query sums at most ~33 rows per lexeme). Safe with
-- concurrent writers, and none waits for another: a compaction takes the deltas no other
-- one holds (FOR UPDATE SKIP LOCKED; a sum of deltas is a delta, so two compactions may
-- fold parts each), and deltas added meanwhile are left for the next one. Row locks, not
-- an advisory lock: any role can take an advisory lock whose key it can compute, and
-- hold off a tenant's compactions; a row lock needs the tenant's rows (row-level security).
CREATE OR REPLACE FUNCTION rag.compact_lexical_stats(tenant text DEFAULT rag.current_tenant(), min_statements int DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM (SELECT 1 FROM rag.corpus_stats AS s
                                 WHERE s.tenant = compact_lexical_stats.tenant
                                 LIMIT greatest(min_statements, 0) + 1) AS x;
    IF n <= min_statements THEN
        RETURN 0;
    END IF;
    WITH d AS (DELETE FROM rag.lexeme_stats AS s
               WHERE s.ctid = ANY (ARRAY(SELECT x.ctid FROM rag.lexeme_stats AS x
                                         WHERE x.tenant = compact_lexical_stats.tenant FOR UPDATE SKIP LOCKED))
               RETURNING s.lexeme, s.df)
    INSERT INTO rag.lexeme_stats (tenant, lexeme, df)
    SELECT compact_lexical_stats.tenant, d.lexeme, sum(d.df) FROM d GROUP BY d.lexeme HAVING sum(d.df) <> 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    WITH d AS (DELETE FROM rag.corpus_stats AS s
               WHERE s.ctid = ANY (ARRAY(SELECT x.ctid FROM rag.corpus_stats AS x
                                         WHERE x.tenant = compact_lexical_stats.tenant FOR UPDATE SKIP LOCKED))
               RETURNING s.chunks, s.total_len)
    INSERT INTO rag.corpus_stats (tenant, chunks, total_len)
    SELECT compact_lexical_stats.tenant, sum(d.chunks), sum(d.total_len) FROM d HAVING count(*) > 0;
    RETURN n;
END
$$;

-- rag.query_lexemes
-- The distinct lexemes of a query, as the lexical leg sees them (english stemming).
CREATE OR REPLACE FUNCTION rag.query_lexemes(query text)
RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tsvector_to_array(to_tsvector('english'::regconfig, query)) $$;

-- rag.bm25
-- Okapi BM25 over the current tenant's chunks, best first (the lexical leg of rag.search):
--   score = sum over query lexemes t in the chunk of
--           idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))
--   idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
-- N (chunks), df and avglen (lexemes per chunk) are the tenant's corpus statistics; k1
-- and b default to the settings rag.bm25_k1 and rag.bm25_b. Exact top n at any size:
-- block-max pruning reads the blocks that can matter (ragpg/lexical.py). With a `filter`
-- (rag.search's), over the chunks that match it.
CREATE OR REPLACE FUNCTION rag._bm25_py(query text, n int, k1 float8, b float8, filter jsonb,
                                        OUT chunk_ids bigint[], OUT scores float8[])
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp
AS $python$
    #@ragpg-prologue
    return ragpg.pg.bm25(plpy, query, n, k1, b, filter)
$python$;

CREATE OR REPLACE FUNCTION rag.bm25(query text, n int DEFAULT 30, k1 float8 DEFAULT NULL, b float8 DEFAULT NULL,
                         filter jsonb DEFAULT NULL)
RETURNS TABLE (chunk_id bigint, score float8)
LANGUAGE plpgsql STABLE ROWS 30
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    k1 := coalesce(k1, rag._setting('bm25_k1')::float8);
    b := coalesce(b, rag._setting('bm25_b')::float8);
    IF query IS NULL OR n IS NULL OR n < 1 THEN
        RETURN;
    END IF;
    -- rag.search's limits (a 40 MB query took 8.7 s, n 2,000,000,000 was taken: hostile review 43)
    PERFORM rag._check_query(query, n, 'rag.bm25');
    SELECT * INTO r FROM rag._bm25_py(query, n, k1, b, filter);  -- NULLs on an error
    IF r.chunk_ids IS NULL THEN
        PERFORM rag._raise_python_error();
    END IF;
    RETURN QUERY SELECT u.c, u.s FROM unnest(r.chunk_ids, r.scores) AS u (c, s);
END
$$;

-- rag.lexical_stats
-- The current tenant's lexical statistics, for inspection and BI: one row per lexeme.
CREATE OR REPLACE VIEW rag.lexical_stats WITH (security_invoker = true) AS
    SELECT s.lexeme, sum(s.df)::bigint AS document_frequency
    FROM rag.lexeme_stats AS s
    WHERE s.tenant = rag.current_tenant()
    GROUP BY s.lexeme
    HAVING sum(s.df) > 0;

-- rag.postings
-- The lexical index decoded, one row per posting of a chunk that exists (the postings
-- of deleted chunks wait in their blocks for the next merge, and are left out), for
-- inspection: which chunks hold a lexeme, how often, and how long each chunk is.
CREATE OR REPLACE VIEW rag.postings WITH (security_invoker = true) AS
    WITH p AS MATERIALIZED (   -- decoded first: a join on a decoded id is not planned well
        SELECT b.tenant, b.lexeme,
               ('x' || encode(substr(b.ids, 8 * i + 1, 8), 'hex'))::bit(64)::bigint AS chunk_id,
               ('x' || encode(substr(b.tfs, 2 * i + 1, 2), 'hex'))::bit(16)::int AS tf,
               ('x' || encode(substr(b.lens, 4 * i + 1, 4), 'hex'))::bit(32)::int AS len
        FROM rag.posting_blocks AS b, generate_series(0, b.n - 1) AS i
    )
    SELECT p.tenant, p.lexeme, p.chunk_id, p.tf, p.len
    FROM p
    WHERE EXISTS (SELECT 1 FROM rag.chunks AS c WHERE c.tenant = p.tenant AND c.id = p.chunk_id);
