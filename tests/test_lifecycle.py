"""The extension's lifecycle as a DBA runs it: ALTER EXTENSION rag UPDATE from the last
release with data in place, and pg_dump / pg_restore round trips.

The old releases (0.1.0 to 0.11.0) are installed in the image from their git commits
(scripts/old_releases.sh); pg_dump, pg_restore and psql are the server's own, run in its
container (the same suite runs against the Postgres 15, 17 and 18 images).
"""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import catalog
import psycopg
import pytest
from pgtest import as_role, with_db

ROOT = Path(__file__).resolve().parent.parent
OLDS = ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "0.9.0", "0.10.0", "0.11.0"]
OLD = OLDS[-1]   # the last release


def _v(version: str) -> tuple[int, ...]:
    """A release's version, compared as numbers ("0.10.0" comes after "0.9.0")."""
    return tuple(int(p) for p in version.split("."))
BEFORE_050 = "0.4.0"   # the release before 0.5.0: the tests of 0.5.0's upgrade steps start there
NEW = next(line.split("=", 1)[1] for line in (ROOT / "scripts/versions.env").read_text().splitlines()
           if line.startswith("RAGPG_VERSION="))
# real documents: this project's own manual pages
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
QUESTIONS = ["how do I restore a backup", "which roles may search", "what does bm25 cost",
             "switch the embedding model without downtime"]


@pytest.fixture
def new_db(server_url):
    """new_db(version=None) -> the URL of a new, empty database with rag at that version."""
    made = []

    def _make(version: str | None = None, extension: bool = True) -> str:
        name = "l_" + uuid.uuid4().hex[:12]
        with psycopg.connect(server_url, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        made.append(name)
        url = with_db(server_url, name)
        if extension:
            with psycopg.connect(url, autocommit=True) as c:
                c.execute("CREATE EXTENSION rag " + (f"VERSION '{version}' " if version else "") + "CASCADE")
        return url
    yield _make
    with psycopg.connect(server_url, autocommit=True) as c:
        for name in made:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _version(conn) -> str:
    return conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'rag'").fetchone()[0]


def _columns(conn) -> dict[str, list[str]]:
    """The columns of every table in schemas rag and public, in order."""
    return {rel: cols for rel, cols in conn.execute("""
        SELECT c.oid::regclass::text, array_agg(quote_ident(a.attname) ORDER BY a.attnum) FROM pg_class AS c
        JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relnamespace IN ('rag'::regnamespace, 'public'::regnamespace) AND c.relkind = 'r'
        GROUP BY 1 ORDER BY 1""").fetchall()}


def _checksums(conn, columns: dict[str, list[str]] | None = None) -> dict[str, tuple[int, str]]:
    """(rows, md5 of the rows in order) of every table in schemas rag and public (a
    superuser's view: row-level security does not apply), over the given columns of each
    (an upgrade compares the columns the old release had: a release may add columns)."""
    out = {}
    for rel, cols in _columns(conn).items():
        cols = (columns or {}).get(rel, cols)
        row = f"ROW({', '.join('t.' + c for c in cols)})::text"
        out[rel] = tuple(conn.execute(
            f"SELECT count(*), coalesce(md5(string_agg({row}, E'\\n' ORDER BY {row})), '') FROM {rel} AS t"
        ).fetchone())
    return out


def _search_as(url: str, role: str, rank_fusion: bool = False, old_rule: bool = False) -> list:
    """rag.search's results; rank_fusion: with the releases' fusion before 0.4.0 (RRF);
    old_rule: 0.4.0's score fusion (no proximity term, 0.5.0's addition)."""
    fusion = ", fusion => 'rrf'" if rank_fusion else ", proximity_weight => 0" if old_rule else ""
    with psycopg.connect(as_role(url, role), autocommit=True) as c:
        return [c.execute("SELECT chunk_id, document_id, round(score::numeric, 6), vector_rank, lexical_rank "
                          f"FROM rag.search(%s, 8{fusion})", (q,)).fetchall() for q in QUESTIONS]


def _ingest_as(url: str, role: str, paths) -> None:
    with psycopg.connect(as_role(url, role), autocommit=True) as c:
        for p in paths:
            c.execute("SELECT rag.ingest(%s, source => %s)", (p.read_text(), p.name))


def _partitions_work(url: str) -> bool:
    """Whether the installed release can make a tenant partition on this server: on
    Postgres 17 and later a partition inherits the parent's identity column, and 0.2.0 to
    0.4.0 (GENERATED ALWAYS ids, written back without OVERRIDING SYSTEM VALUE) fail there.
    Those releases never supported 17; 0.5.0 does (tested on 17 and 18)."""
    with psycopg.connect(url) as c:
        if int(c.execute("SHOW server_version_num").fetchone()[0]) < 170000:
            return True
        return _version(c) not in ("0.2.0", "0.3.0", "0.4.0")


def _fill(url: str) -> bool:
    """Two tenants' real documents (alice: docs/, bob: the README), a tenant partition for
    bob (where the release can make one: returned), a synchronously attached table, an
    asynchronous one with a pending queue, answers, settings and grants; every model call
    is in rag.usage."""
    _ingest_as(url, "alice", DOCS[:-1])
    _ingest_as(url, "bob", DOCS[-1:])
    partition = _partitions_work(url)
    with psycopg.connect(url, autocommit=True) as su:
        if partition:
            su.execute("SELECT rag.create_tenant_partition('bob')")
        su.execute("CREATE TABLE public.articles (id int PRIMARY KEY, title text, body text NOT NULL)")
        su.execute("INSERT INTO public.articles VALUES (1, 'Ferries', 'The harbour ferry leaves at six.'), "
                   "(2, 'Trains', 'The night train to the coast runs on Fridays.')")
        su.execute("SELECT rag.attach('public.articles', 'body', title_column => 'title')")
        su.execute("CREATE TABLE public.shelves (id int PRIMARY KEY, body text NOT NULL) PARTITION BY RANGE (id)")
        su.execute("CREATE TABLE public.shelves_low PARTITION OF public.shelves FOR VALUES FROM (0) TO (100)")
        su.execute("INSERT INTO public.shelves VALUES (1, 'Shelf one holds the atlases.')")
        su.execute("SELECT rag.attach('public.shelves', 'body')")
        su.execute("CREATE TABLE public.tickets (id int PRIMARY KEY, body text NOT NULL)")
        su.execute("SELECT rag.attach('public.tickets', 'body', mode => 'async')")
        su.execute("INSERT INTO public.tickets SELECT i, 'Ticket ' || i || ': the printer jams.' "
                   "FROM generate_series(1, 3) AS i")                 # queued, not worked
        su.execute("SELECT rag.configure('context_tokens', '2500')")
        su.execute("SELECT rag.grant_tenant('carol', 'alice')")
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as c:
        for q in QUESTIONS[:2]:
            c.execute("SELECT rag.ask(%s)", (q,))
    return partition


def _hnsw_indexes(conn) -> list:
    """(name, file) of every HNSW index with storage (not the partitioned ones of 0.1.0)."""
    return conn.execute("SELECT c.oid::regclass::text, pg_relation_filenode(c.oid) FROM pg_class AS c "
                        "JOIN pg_am AS a ON a.oid = c.relam WHERE a.amname = 'hnsw' AND c.relkind = 'i' "
                        "ORDER BY 1").fetchall()


# every posting of the lexical index of an existing chunk: rows of a table before 0.3.0,
# the view that decodes the blocks from 0.4.0 on; 0.3.0 had blocks and no view (its
# big-endian integers decoded here in plain SQL)
POSTINGS = {
    "rows": "SELECT count(*), md5(string_agg(concat_ws(' ', tenant, lexeme, chunk_id, tf, len), ',' "
            "ORDER BY tenant, lexeme, chunk_id)) FROM rag.postings",
    "0.3.0": """SELECT count(*), md5(string_agg(concat_ws(' ', p.tenant, p.lexeme, p.chunk_id, p.tf, p.len), ','
                                         ORDER BY p.tenant, p.lexeme, p.chunk_id))
                FROM (SELECT b.tenant, b.lexeme,
                             ('x' || encode(substr(b.ids, 8 * i + 1, 8), 'hex'))::bit(64)::bigint AS chunk_id,
                             ('x' || encode(substr(b.tfs, 2 * i + 1, 2), 'hex'))::bit(16)::int AS tf,
                             ('x' || encode(substr(b.lens, 4 * i + 1, 4), 'hex'))::bit(32)::int AS len
                      FROM rag.posting_blocks AS b, generate_series(0, b.n - 1) AS i) AS p
                WHERE EXISTS (SELECT 1 FROM rag.chunks AS c WHERE c.tenant = p.tenant AND c.id = p.chunk_id)"""}
ROW_POSTINGS = ("0.1.0", "0.2.0")   # the releases whose upgrade converts rows to blocks


@pytest.mark.parametrize("old", OLDS)
def test_upgrade_from_the_last_release_keeps_every_row_and_result(new_db, old):
    OLD = old  # noqa: N806
    url = new_db(OLD)
    part = _fill(url)
    with psycopg.connect(url, autocommit=True) as su:      # a second model's index, 0.1.0's way
        su.execute("SELECT rag.create_model_index('smollm2-embed')")
        hnsw_before = _hnsw_indexes(su)
    searches = {r: _search_as(url, r) for r in ("alice", "bob", "carol")}   # (searches log usage rows)
    assert all(any(rows) for rows in searches.values())
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as old_session:
        old_session.execute("SELECT count(*) FROM rag.search('ferry', 3)")  # 0.1.0's Python is loaded here

        with psycopg.connect(url, autocommit=True) as su:
            assert _version(su) == OLD
            before, old_columns = _checksums(su), _columns(su)
            postings = su.execute(POSTINGS.get(OLD, POSTINGS["rows"])).fetchone()
            settings = su.execute("SELECT name, value FROM rag.settings() ORDER BY 1").fetchall()
            su.execute("ALTER EXTENSION rag UPDATE")
            assert _version(su) == NEW
            after = _checksums(su, old_columns)
            # every row of the old release is still there, unchanged (nothing re-chunked or
            # re-embedded: the chunks' embeddings are in the checksum, and rag.usage logs
            # every model call) but the lexical index's: its postings are now blocks, every
            # one of them converted (bob's partition too)
            converted = OLD in ROW_POSTINGS
            index = {k for k in before if k.startswith("rag.postings_")}
            bobs = {"rag.postings_" + bob_suffix(su)} if part else set()
            assert index == ({"rag.postings_default"} | bobs if converted else set())
            assert {k: v for k, v in after.items() if k in before} == {k: v for k, v in before.items()
                                                                       if k not in index}
            # and the tables the later releases add
            added = {"0.2.0": {"rag.model_indexes"},
                     "0.3.0": {"rag.posting_blocks_default"} | ({"rag.posting_blocks_" + bob_suffix(su)} if part else set()),
                     "0.4.0": {"rag.eval_answers", "rag.eval_answer_run", "rag.eval_answer_run_query"},
                     "0.5.0": {"rag.usage_history"},
                     "0.6.0": {"rag.tenant_budgets"}}
            assert set(after) - set(before) == set().union(*(t for v, t in added.items() if _v(v) > _v(OLD)))
            assert postings[0] > 1000 and su.execute(POSTINGS["rows"]).fetchone() == postings
            if converted:   # into merged blocks
                assert su.execute("SELECT bool_and(merged) FROM rag.posting_blocks").fetchone()[0] is True
            # every partition keeps its HNSW indexes, files and all (none rebuilt); 0.1.0's
            # per-model index is recorded, and found again under its new names
            hnsw_after = _hnsw_indexes(su)
            assert sorted(f for _, f in hnsw_after) == sorted(f for _, f in hnsw_before)
            assert len(hnsw_after) == (4 if part else 2)
            assert su.execute("SELECT model FROM rag.model_indexes").fetchall() == [("smollm2-embed",)]
            idx = su.execute("SELECT rag.create_model_index('smollm2-embed')").fetchone()[0]
            assert idx.startswith("chunks_default_hnsw_") and _hnsw_indexes(su) == hnsw_after
            now = dict(su.execute("SELECT name, value FROM rag.settings()").fetchall())
            # settings keep their values, and new settings are at their defaults;
            # 0.3.0 dropped bm25_term_candidates (BM25 is exact)
            assert {k for k, _ in settings} - set(now) == ({"bm25_term_candidates"} if converted else set())
            assert {k: now[k] for k, _ in settings if k in now} == {k: v for k, v in settings if k in now}
            # every partition of rag.chunks, bob's with his rows in it too, keeps its
            # embeddings in its rows from now on (0.5.0: STORAGE MAIN)
            storage = dict(su.execute(
                "SELECT a.attrelid::regclass::text, a.attstorage::text FROM pg_attribute AS a "
                "WHERE a.attname = 'embedding' AND a.attrelid IN "
                "(SELECT relid FROM pg_partition_tree('rag.chunks'))").fetchall())
            assert len(storage) == (3 if part else 2) and set(storage.values()) == {"m"}, storage

        # a session that had the old release's Python loaded is told to reconnect
        with pytest.raises(psycopg.Error) as e:
            old_session.execute("SELECT count(*) FROM rag.search('ferry', 3)")
        assert e.value.sqlstate == "55000" and "reconnect" in str(e.value)

    # the same results, asked for the old release's rule: RRF before 0.4.0, 0.4.0's score
    # fusion without 0.5.0's proximity term
    assert {r: _search_as(url, r, rank_fusion=_v(OLD) < _v("0.4.0"), old_rule=OLD == "0.4.0") for r in searches} == searches
    # and the upgraded database works: ingest, trigger indexing, ask, the queue
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as c:
        doc = c.execute("SELECT rag.ingest('# Upgrades\n\nALTER EXTENSION rag UPDATE keeps every row.', "
                        "source => 'upgrades.md')").fetchone()[0]
        assert c.execute("SELECT count(*) FROM rag.chunks WHERE document_id = %s", (doc,)).fetchone()[0] == 1
        answer = c.execute("SELECT rag.ask('What keeps every row?')").fetchone()[0]
        assert any(x["document_id"] == doc for x in answer["citations"]), answer
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("CALL rag.work()")
        assert su.execute("SELECT count(*) FROM rag.documents AS d JOIN rag.attachments AS a ON a.id = d.attachment_id "
                          "WHERE a.source_table = 'public.tickets'::regclass").fetchone()[0] == 3
        assert su.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0
        # the upgrade gave each attached table rag's TRUNCATE trigger (0.8.0)
        assert su.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.articles'::regclass "
                          "AND tgfoid = 'rag._attached_changed()'::regprocedure "
                          "AND tgtype::int & 32 <> 0").fetchone()[0] == 1
        # and each partition of an attached table its four (0.8.0): a write naming it is seen
        assert su.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.shelves_low'::regclass "
                          "AND tgfoid = 'rag._attached_changed()'::regprocedure").fetchone()[0] == 4
        su.execute("INSERT INTO public.shelves_low VALUES (2, 'Shelf two holds the dictionaries.')")
        assert su.execute("SELECT array_agg(d.source_key->>'id' ORDER BY 1) FROM rag.documents AS d "
                          "JOIN rag.attachments AS a ON a.id = d.attachment_id "
                          "WHERE a.source_table = 'public.shelves'::regclass").fetchone()[0] == ["1", "2"]
        # the old release's triggers (named after the table's OID) are found by rag.detach
        assert su.execute("SELECT rag.detach('public.articles')").fetchone()[0] is True
        assert su.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.articles'::regclass "
                          "AND NOT tgisinternal").fetchone()[0] == 0
        su.execute("INSERT INTO public.articles VALUES (9, 'Rafts', 'Rafts drift downstream.')")
    # chunks indexed before 0.5.0 have no window embeddings (searched by their own cosine,
    # as above) until rag.work embeds them; 0.5.0 on, they were made with the chunk
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as c:
        waiting = c.execute("SELECT count(*) FROM rag.chunks WHERE window_embeddings IS NULL").fetchone()[0]
        assert (waiting > 0) == (_v(OLD) < _v("0.5.0")), waiting
        assert c.execute("SELECT windows_pending FROM rag.model_status").fetchone()[0] == waiting
        assert c.execute("SELECT count(*) FROM rag.chunks WHERE window_bounds IS NULL").fetchone()[0] == waiting
        c.execute("CALL rag.work()")
        assert c.execute("SELECT count(*) FROM rag.chunks WHERE window_embeddings IS NULL "
                         "OR window_bounds IS NULL OR window_lengths IS NULL").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM rag.chunks WHERE cardinality(window_embeddings) > 0").fetchone()[0] > 0
    # a tenant the old release wrote is erased whole (0.7.0): its attached table's triggers,
    # named the old release's way, found by function and argument; the others keep every row
    with psycopg.connect(url, autocommit=True) as su:
        me = su.execute("SELECT current_user::text").fetchone()[0]
        others = "SELECT tenant, count(*) FROM rag.chunks WHERE tenant <> %s GROUP BY 1 ORDER BY 1"
        kept_before = su.execute(others, (me,)).fetchall()
        out = {t: (r, k) for t, r, k in su.execute(
            "SELECT table_name, removed, kept FROM rag.erase_tenant(%s, keep_usage => false)", (me,)).fetchall()}
        assert all(k == 0 for _, k in out.values()), out
        assert out["rag.attachments"] == (2, 0) and out["rag.documents"][0] == 5, out   # the tickets', the shelves'
        assert su.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('public.tickets'::regclass, "
                          "'public.shelves'::regclass, 'public.shelves_low'::regclass) "
                          "AND NOT tgisinternal").fetchone()[0] == 0
        assert su.execute("SELECT count(*) FROM public.tickets").fetchone()[0] == 3
        assert su.execute(others, (me,)).fetchall() == kept_before
        assert {t for t, _ in kept_before} >= {"alice", "bob"}
    # an answer the old release logged goes with its document once forget_answers is on
    # (0.7.0: found through the index the upgrade built), and no answer is left naming a
    # chunk that is gone
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("SELECT rag.configure('forget_answers', 'on')")
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as c:
        first, docs = c.execute(
            "SELECT a.id, array_agg(DISTINCT ch.document_id) FROM rag.answers AS a "
            "JOIN rag.chunks AS ch ON ch.id = ANY (a.retrieved_chunk_ids) GROUP BY a.id ORDER BY a.id LIMIT 1").fetchone()
        assert c.execute("SELECT count(*) FROM rag.answers").fetchone()[0] >= 3
        c.execute("DELETE FROM rag.documents WHERE id = ANY (%s)", (docs,))
        assert c.execute("SELECT count(*) FROM rag.answers WHERE id = %s", (first,)).fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM rag.answers AS a WHERE EXISTS (SELECT 1 FROM unnest(a.retrieved_chunk_ids) "
                         "AS r (id) WHERE NOT EXISTS (SELECT 1 FROM rag.chunks AS ch WHERE ch.id = r.id))").fetchone()[0] == 0


def bob_suffix(conn) -> str:
    return conn.execute("SELECT left(md5('bob'), 12)").fetchone()[0]


@pytest.mark.parametrize("old", OLDS)
def test_an_upgraded_schema_equals_a_fresh_install(new_db, old):
    fresh, upgraded = new_db(), new_db(old)
    with psycopg.connect(upgraded, autocommit=True) as c:
        c.execute("ALTER EXTENSION rag UPDATE")
    with psycopg.connect(fresh) as a, psycopg.connect(upgraded) as b:
        sa, sb = catalog.snapshot(a), catalog.snapshot(b)
    assert catalog.diff(sa, sb) == []
    assert len(sa["functions"]) > 50 and len(sa["policies"]) > 20 and sa["config_dump"]  # it saw something


def _tool(container, name: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """A client program (pg_dump, pg_restore, psql) of the server's own version, run in its
    container (host networking: the same URLs): the host's are Postgres 15's, and pg_dump
    refuses a newer server. container: a testcontainers container, or a container's name."""
    cid = container if isinstance(container, str) else container.get_wrapped_container().id
    run = 'exec "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/$0" "$@"'
    return subprocess.run(["docker", "exec", "-i", cid, "sh", "-c", run, name, *args], input=stdin,
                          capture_output=True, timeout=600)


def _plpython_calls(url: str) -> int:
    """PL/Python calls in the database so far (track_functions), i.e. rag's Python."""
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute("""SELECT coalesce(sum(s.calls), 0) FROM pg_stat_user_functions AS s
                            JOIN pg_proc AS p ON p.oid = s.funcid JOIN pg_language AS l ON l.oid = p.prolang
                            WHERE l.lanname = 'plpython3u'""").fetchone()[0]


@pytest.fixture
def filled(new_db, local_llm):
    """A database with every kind of state rag keeps (_fill_all)."""
    url = new_db()
    _fill_all(url, local_llm)
    return url


def _fill_all(url: str, local_llm: str) -> None:
    """_fill's state, a PDF (chunks with pages), an eval set evaluated for retrieval and
    answers, and a model switch in progress (the local llama.cpp model, 576 dimensions, 2 of
    bob's chunks embedded by it)."""
    _fill(url)
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as c:     # a PDF: chunks with pages
        c.execute("SELECT rag.ingest_file(%s, 'routine-vacuuming.pdf')",
                  ((ROOT / "tests/files/routine-vacuuming.pdf").read_bytes(),))
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("SELECT rag.add_model('smollm2-embed', 'embed', base_url => %s, dimensions => 576, "
                   "provider_model => 'smollm2', max_input_tokens => 2048)", (local_llm,))
        su.execute("SELECT rag.create_model_index('smollm2-embed')")
        # an eval set with a gold answer, evaluated for retrieval and for answers
        su.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('tiny', 'eval:tiny')")
        su.execute("SET rag.tenant = 'eval:tiny'")
        su.execute("SELECT rag.ingest('Ferries leave the harbour at seven every morning.', 'ferries.md')")
        su.execute("INSERT INTO rag.eval_queries VALUES ('tiny', 'q1', 'When do ferries leave?')")
        su.execute("INSERT INTO rag.eval_qrels (set_name, query_id, doc_source, grade) VALUES ('tiny', 'q1', 'ferries.md', 1)")
        su.execute("INSERT INTO rag.eval_answers (set_name, query_id, doc_source, answer, answer_start) "
                   "VALUES ('tiny', 'q1', 'ferries.md', 'at seven every morning', 26)")
        su.execute("SELECT rag.evaluate('tiny')")
        su.execute("SELECT rag.evaluate_answers('tiny')")
        su.execute("RESET rag.tenant")
        # a ledger purged once: a priced call of 40 days ago summed into rag.usage_history
        su.execute("INSERT INTO rag.usage (tenant, at, model, provider, operation, calls, input_tokens, cost) "
                   "VALUES ('alice', now() - interval '40 days', 'gpt-x', 'openai', 'ask', 2, 900, 0.004)")
        su.execute("SET rag.usage_retention = '30 days'")
        assert su.execute("CALL rag.purge_ledger()").fetchone() == (0, 1)
        su.execute("RESET rag.usage_retention")
        # a priced call's ledger row names its call (0.6.0; rag.priced_calls)
        su.execute("INSERT INTO rag.usage (tenant, model, provider, operation, input_tokens, cost, call_id) "
                   "VALUES ('alice', 'gpt-x', 'openai', 'ask', 120, 0.0002, '0123456789abcdef')")
    with psycopg.connect(as_role(url, "dora"), autocommit=True) as admin:
        admin.execute("SELECT rag.grant_tenant('dora', 'bob')")
        admin.execute("SET rag.tenant = 'bob'")
        assert admin.execute("SELECT rag.set_daily_budget(12.5)").fetchone()[0] == "12.5"   # (0.6.0)
        assert admin.execute("SELECT rag.set_embedding_model('smollm2-embed')").fetchone()[0] == "building"
        admin.execute("SET rag.index_batch_size = 2")
        admin.execute("CALL rag.work(1)")
        assert admin.execute("SELECT next_embedded, state FROM rag.model_status").fetchone() == (2, "building")


@pytest.mark.parametrize("fmt", ["custom", "plain", "directory"])
def test_dump_and_restore_round_trip_every_row_without_a_model_call(filled, new_db, fmt, pg_container):
    """custom and plain: one stream; directory: pg_dump with 2 jobs, and pg_restore as
    docs/operations.md says for a parallel restore: the data section in one job (rag's
    tables reference each other), the indexes and constraints after it in 2."""
    src = filled
    searches = {r: _search_as(src, r) for r in ("alice", "bob")}   # (searches log usage rows)
    with psycopg.connect(src, autocommit=True) as su:
        before = _checksums(su)
        assert before["rag.embeddings_next"][0] == 2 and before["rag.queue"][0] == 3
        assert before["rag.usage"][0] > 0 and before["rag.answers"][0] == 3   # (one from rag.evaluate_answers)
        assert before["rag.usage_history"][0] == 1 and before["rag.tenant_budgets"][0] == 1
        assert su.execute("SELECT count(call_id) FROM rag.usage").fetchone()[0] == 1
        for t in ("rag.eval_run", "rag.eval_run_query", "rag.eval_answers", "rag.eval_answer_run",
                  "rag.eval_answer_run_query"):
            assert before[t][0] >= 1, t
        assert su.execute("SELECT count(DISTINCT page) FROM rag.chunks").fetchone()[0] == 10
        before_models = su.execute("SELECT base_url FROM rag.models WHERE name = 'smollm2-embed'").fetchone()[0]
        assert before_models != "http://127.0.0.1:8765/v1"

    folder = f"/tmp/dump-{uuid.uuid4().hex[:8]}"   # (directory: in the container)
    r = _tool(pg_container, "pg_dump", "--format", fmt, "--dbname", src,
              *(["--jobs", "2", "--file", folder] if fmt == "directory" else []))
    assert r.returncode == 0, r.stderr.decode()
    dump = r.stdout
    dst = new_db(extension=False)
    with psycopg.connect(dst, autocommit=True) as c:   # count the restore's PL/Python calls
        c.execute(f"ALTER DATABASE {dst.rsplit('/', 1)[1]} SET track_functions = 'pl'")
    if fmt == "custom":
        r = _tool(pg_container, "pg_restore", "--exit-on-error", "--dbname", dst, stdin=dump)
    elif fmt == "directory":
        for section, jobs in (("pre-data", "1"), ("data", "1"), ("post-data", "2")):
            r = _tool(pg_container, "pg_restore", "--exit-on-error", "--section", section, "--jobs", jobs,
                      "--dbname", dst, folder)
            assert r.returncode == 0, (section, r.stderr.decode())
        subprocess.run(["docker", "exec", pg_container.get_wrapped_container().id, "rm", "-rf", folder], check=True)
    else:
        r = _tool(pg_container, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname", dst, stdin=dump)
    assert r.returncode == 0, r.stderr.decode()
    assert "ERROR" not in r.stderr.decode(), r.stderr.decode()

    assert _plpython_calls(dst) == 0                    # no chunking, no model call, nothing re-embedded
    with psycopg.connect(dst, autocommit=True) as su:
        assert _checksums(su) == before                 # every table, rag's and the user's (pages too)
        assert su.execute("SELECT state, next_embedded FROM rag.model_status "
                          "WHERE tenant = rag.current_tenant()").fetchone() is not None
        # the model index on the extension's own partition is made again by the restore
        idx = su.execute("SELECT rag.create_model_index('smollm2-embed')").fetchone()[0]
        assert su.execute("SELECT to_regclass(%s) IS NOT NULL", (f"rag.{idx}",)).fetchone()[0]
        bob_part = su.execute("SELECT chunks_partition FROM rag.tenant_partitions WHERE bound LIKE '%''bob''%'"
                              ).fetchone()[0]
        assert su.execute("SELECT count(*) FROM pg_indexes WHERE schemaname || '.' || tablename = %s",
                          (bob_part,)).fetchone()[0] >= 8
    assert {r: _search_as(dst, r) for r in searches} == searches

    # and the restored database works
    _still_works(dst, before_models)
    assert _plpython_calls(dst) > 0                     # the counter counts


def _still_works(url: str, before_models: str) -> None:
    """A database of _fill_all's, after a restore or an upgrade, works: ids continue, the
    triggers index again (bob's into his partition), ask cites and logs, the queue drains,
    a changed built-in model row came back as changed, and detach / attach find the
    attached table's triggers."""
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as c:
        doc = c.execute("SELECT rag.ingest('# Restores\n\npg_restore brings every row back.', "
                        "source => 'restores.md')").fetchone()[0]
        assert doc > max(r[0] for r in c.execute("SELECT id FROM rag.documents WHERE source <> 'restores.md'"))
        answer = c.execute("SELECT rag.ask('What brings every row back?')").fetchone()[0]
        assert any(x["document_id"] == doc for x in answer["citations"]), answer
        assert answer["answer_id"] > 3
    with psycopg.connect(as_role(url, "bob"), autocommit=True) as c:   # into his own partition
        c.execute("SELECT rag.ingest('# Bob\n\nBob writes again after the restore.', source => 'bob2.md')")
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("INSERT INTO public.articles VALUES (3, 'Boats', 'Boats sail at dawn.')")
        assert su.execute("SELECT count(*) FROM rag.documents AS d JOIN rag.attachments AS a ON a.id = d.attachment_id "
                          "WHERE a.source_table = 'public.articles'::regclass").fetchone()[0] == 3  # its trigger came back
        su.execute("CALL rag.work()")
        assert su.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0
        assert su.execute("SELECT base_url FROM rag.models WHERE name = 'smollm2-embed'").fetchone()[0] == \
            before_models                               # a changed built-in model row came back as changed
        # detach finds the restored triggers (named after the old table's OID before 0.5.0),
        # and the table writes without rag; attached again, it indexes again
        triggers = ("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.articles'::regclass "
                    "AND tgfoid = 'rag._attached_changed()'::regprocedure")
        assert su.execute(triggers).fetchone()[0] == 4   # INSERT, UPDATE, DELETE, TRUNCATE
        # a partition's triggers came back too; a write naming it is indexed
        su.execute("INSERT INTO public.shelves_low VALUES (3, 'Shelf three holds the maps.')")
        assert su.execute("SELECT count(*) FROM rag.documents AS d JOIN rag.attachments AS a ON a.id = d.attachment_id "
                          "WHERE a.source_table = 'public.shelves'::regclass").fetchone()[0] == 2
        assert su.execute("SELECT rag.detach('public.articles')").fetchone()[0] is True
        assert su.execute(triggers).fetchone()[0] == 0
        su.execute("INSERT INTO public.articles VALUES (4, 'Oars', 'Oars row the boat.')")
        su.execute("SELECT rag.attach('public.articles', 'body', title_column => 'title')")
        assert su.execute(triggers).fetchone()[0] == 4   # INSERT, UPDATE, DELETE, TRUNCATE
        su.execute("INSERT INTO public.articles VALUES (5, 'Sails', 'Sails catch the wind.')")
        assert su.execute("SELECT count(*) FROM rag.documents AS d JOIN rag.attachments AS a ON a.id = d.attachment_id "
                          "WHERE a.source_table = 'public.articles'::regclass").fetchone()[0] == 5


PGVECTOR = next(line.split("=", 1)[1] for line in (ROOT / "scripts/versions.env").read_text().splitlines()
                if line.startswith("PGVECTOR_VERSION="))
PGVECTOR_OLD = next(line.split("=", 1)[1] for line in (ROOT / "scripts/versions.env").read_text().splitlines()
                    if line.startswith("PGVECTOR_OLD_VERSION="))


def _vector_version(conn) -> str:
    return conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]


def test_every_install_gets_the_pinned_pgvector(new_db):
    with psycopg.connect(new_db(), autocommit=True) as c:
        assert _vector_version(c) == PGVECTOR
        assert c.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
                         ).fetchone()[0] == PGVECTOR


def test_pgvector_updates_under_a_live_rag_with_its_indexes_intact(new_db):
    """A database as rag 0.4.0 left it (pgvector 0.8.0), data in place: ALTER EXTENSION
    vector UPDATE keeps every HNSW index (same files, valid) and every search result, then
    rag updates too."""
    url = new_db(extension=False)
    with psycopg.connect(url, autocommit=True) as su:
        su.execute(f"CREATE EXTENSION vector VERSION '{PGVECTOR_OLD}'")
        su.execute("CREATE EXTENSION rag VERSION '0.4.0' CASCADE")
    part = _fill(url)
    searches = {r: _search_as(url, r) for r in ("alice", "bob")}
    assert all(any(rows) for rows in searches.values())
    with psycopg.connect(url, autocommit=True) as su:
        hnsw = _hnsw_indexes(su)
        assert _vector_version(su) == PGVECTOR_OLD and len(hnsw) == (2 if part else 1)
        su.execute("ALTER EXTENSION vector UPDATE")
        assert _vector_version(su) == PGVECTOR
        assert _hnsw_indexes(su) == hnsw                     # not rebuilt: the same files
        assert su.execute("SELECT bool_and(i.indisvalid) FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
                          "JOIN pg_am AS a ON a.oid = c.relam WHERE a.amname = 'hnsw'").fetchone()[0] is True
    assert {r: _search_as(url, r) for r in searches} == searches   # new sessions, the new vector.so
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("ALTER EXTENSION rag UPDATE")
        assert _version(su) == NEW
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as c:
        doc = c.execute("SELECT rag.ingest('# Vectors\n\npgvector updates in place.', source => 'v.md')").fetchone()[0]
        assert c.execute("SELECT document_id FROM rag.search('pgvector updates in place', 1)").fetchone()[0] == doc


PLANT = """CREATE TABLE public.ran_as (who name);
           GRANT INSERT ON public.ran_as TO PUBLIC;
           CREATE FUNCTION public.spy(state bigint[], v bigint) RETURNS bigint[] LANGUAGE plpgsql AS $f$
           BEGIN INSERT INTO public.ran_as VALUES (current_user); RETURN pg_catalog.array_append(state, v); END $f$;
           CREATE AGGREGATE public.array_agg(bigint) (sfunc = public.spy, stype = bigint[]);
           CREATE FUNCTION public.spy4(state int[], v int) RETURNS int[] LANGUAGE sql AS 'SELECT pg_catalog.array_append(state, v)';
           CREATE AGGREGATE public.array_agg(int) (sfunc = public.spy4, stype = int[]);"""


@pytest.mark.parametrize("own_schema", [False, True])
def test_objects_planted_where_pgvector_lives_are_never_called(new_db, own_schema):
    """Hostile review 21: rag's functions had pgvector's schema on their search path, so a
    role that can create objects there (public, by default) could plant an array_agg(bigint)
    that rag.search called with its caller's rights, a superuser's too. Now their path is
    pg_catalog, pg_temp and pgvector is named with its schema: the plant in public is never
    called, with vector in public (CASCADE's default) or in a schema of its own."""
    url = new_db(extension=False)
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("GRANT CREATE ON SCHEMA public TO alice")
        su.execute(("CREATE SCHEMA vector; CREATE EXTENSION vector SCHEMA vector; " if own_schema else "")
                   + "CREATE EXTENSION rag CASCADE")
        where = su.execute("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        assert where == ("vector" if own_schema else "public")
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
        alice.execute(PLANT)
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("SET search_path = public, vector")   # the caller's path: the plant first
        su.execute("SELECT rag.ingest('Refunds take five business days. Shipping is free.', 'r.md')")
        assert su.execute("SELECT count(*) FROM rag.search('refunds', 3)").fetchone()[0] == 1
        assert "five business days" in su.execute("SELECT rag.ask('How long do refunds take?')->>'answer'").fetchone()[0]
        assert su.execute("SELECT rag.embed('a') <=> rag.embed('a')").fetchone()[0] < 1e-6
        su.execute("CREATE TABLE public.notes (id bigint PRIMARY KEY, body text NOT NULL)")
        su.execute("SELECT rag.attach('public.notes', 'body', mode => 'async')")
        su.execute("INSERT INTO public.notes VALUES (1, 'The ferry leaves at six.'), (2, 'Tickets cost two euros.')")
        su.execute("CALL rag.work()")
        assert su.execute("SELECT count(*) FROM rag.search('ferry', 3)").fetchone()[0] >= 1
        # the plant works when called by name: it is there, rag just never calls it
        assert su.execute("SELECT count(*) FROM public.ran_as").fetchone()[0] == 0
        su.execute("SELECT public.array_agg(x::bigint) FROM generate_series(1, 2) AS x")
        assert su.execute("SELECT count(*) FROM public.ran_as").fetchone()[0] == 2


def test_the_upgrade_stops_at_a_foreign_key_of_yours_on_an_eval_set_name(new_db):
    """0.5.0 keys eval sets by (tenant, name). A foreign key of a user's table on the old key
    stops the upgrade, named, instead of being dropped with rag's own (hostile review 24)."""
    url = new_db(BEFORE_050)
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('s1', 'eval:s1')")
        su.execute("CREATE TABLE my_notes (set_name text REFERENCES rag.eval_sets (name), note text)")
        su.execute("INSERT INTO my_notes VALUES ('s1', 'keep me consistent')")
        with pytest.raises(psycopg.Error) as exc:
            su.execute("ALTER EXTENSION rag UPDATE")
        assert exc.value.sqlstate == "2BP01"
        assert "foreign key my_notes_set_name_fkey of table public.my_notes references an eval table" in str(exc.value)
        assert _version(su) == BEFORE_050
        assert su.execute("SELECT count(*) FROM pg_constraint WHERE conname = 'my_notes_set_name_fkey'").fetchone()[0] == 1
        su.execute("ALTER TABLE my_notes DROP CONSTRAINT my_notes_set_name_fkey")
        su.execute("ALTER EXTENSION rag UPDATE")
        assert _version(su) == NEW
        assert su.execute("SELECT tenant, name FROM rag.eval_sets").fetchall() == [("eval:s1", "s1")]


def test_the_upgrade_gives_each_database_its_own_copy_of_its_api_key_files(new_db, fake_openai):
    """Before 0.5.0 a key's secret was ragpg_keys/<name>, one file for every database of the
    cluster with a key of that name; 0.5.0 keeps ragpg_database_keys/<database oid>/<name>. The
    upgrade copies the shared file into the directory of each database that has the key,
    and of no other: one that names the key later has no secret to send."""
    from openai_fake import Scenario
    secret = "sk-upgrade-" + uuid.uuid4().hex
    name = "k" + uuid.uuid4().hex[:8]   # (the shared files of the test cluster outlive a test)
    model_url = fake_openai.add("upgraded-key", Scenario(chat_text="Five business days [1]."))
    root = f"http://127.0.0.1:{fake_openai.port}"
    has, lacks = new_db(BEFORE_050), new_db(BEFORE_050)
    ask = "SELECT rag.ask('How long do refunds take?', model => 'keyed')"
    with psycopg.connect(has, autocommit=True) as su:
        su.execute("SELECT rag.set_api_key(%s, %s, base_url => %s)", (name, secret, root))
        su.execute("SELECT rag.grant_api_key(%s, current_user)", (name,))
        su.execute("SELECT rag.add_model('keyed', 'chat', base_url => %s, api_key => %s)", (model_url, name))
        su.execute("SELECT rag.ingest('# Refunds\n\nRefunds take five business days.', source => 'r.md')")
        su.execute(ask)
        assert fake_openai.requests["upgraded-key"][-1]["authorization"] == f"Bearer {secret}"
    notices = {}
    for url in (has, lacks):
        with psycopg.connect(url, autocommit=True) as su:
            seen = notices.setdefault(url, [])
            su.add_notice_handler(lambda d, seen=seen: seen.append(d.message_primary))
            su.execute("ALTER EXTENSION rag UPDATE")
            assert _version(su) == NEW
    assert any("1 API key file(s) copied into ragpg_database_keys/" in n for n in notices[has]), notices[has]
    assert not any("API key" in n for n in notices[lacks]), notices[lacks]
    with psycopg.connect(has, autocommit=True) as su:
        oid = su.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        assert f'"secret": "{secret}"' in su.execute("SELECT pg_read_file(%s)", (f"ragpg_database_keys/{oid}/{name}",)).fetchone()[0]
        calls = len(fake_openai.requests["upgraded-key"])
        su.execute(ask)
        assert len(fake_openai.requests["upgraded-key"]) == calls + 1
        assert fake_openai.requests["upgraded-key"][-1]["authorization"] == f"Bearer {secret}"
    with psycopg.connect(lacks, autocommit=True) as su:
        su.execute("INSERT INTO rag.api_keys (name, source, base_url) VALUES (%s, 'file', %s)", (name, root))
        su.execute("SELECT rag.grant_api_key(%s, current_user)", (name,))
        su.execute("SELECT rag.add_model('keyed', 'chat', base_url => %s, api_key => %s)", (model_url, name))
        su.execute("SELECT rag.ingest('# Refunds\n\nRefunds take five business days.', source => 'r.md')")
        with pytest.raises(psycopg.Error) as exc:
            su.execute(ask)
        assert f"the secret of API key '{name}' is missing on this server" in str(exc.value)


def test_rag_can_be_removed_and_installed_again_leaving_the_users_tables(new_db):
    """docs/operations.md, "Removing rag from a database": the refusal that names what
    depends on rag, then the documented steps, then rag again."""
    url = new_db()
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text NOT NULL)")
        su.execute("INSERT INTO notes VALUES (1, 'Refunds', 'Refunds take five business days.')")
        su.execute("SELECT rag.attach('public.notes', 'body', title_column => 'title')")
        su.execute("SELECT rag.ingest('# Returns\n\nReturns are free within a month.', source => 'r.md')")
        su.execute("SELECT rag.create_tenant_partition('bob')")
        su.execute("SELECT rag.set_api_key('gone', 'sk-gone', base_url => 'http://127.0.0.1:9/v1')")
        oid = su.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        keys = f"ragpg_database_keys/{oid}"
        assert su.execute("SELECT pg_ls_dir(%s)", (keys,)).fetchall() == [("gone",)]
        with pytest.raises(psycopg.Error) as exc:
            su.execute("DROP EXTENSION rag")
        assert exc.value.sqlstate == "2BP01" and "trigger rag_attachment_" in (exc.value.diag.message_detail or "")

        su.execute("SELECT rag.drop_api_key(k.name) FROM rag.api_keys AS k")
        su.execute("DROP EXTENSION rag CASCADE")
        su.execute("DROP SCHEMA rag")
        assert su.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'rag'").fetchone()[0] == 0
        assert su.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'notes'::regclass "
                          "AND NOT tgisinternal").fetchone()[0] == 0
        assert su.execute("SELECT pg_ls_dir(%s)", (keys,)).fetchall() == []
        # nothing of this database holds on to rag's roles (DROP ROLE after the last one)
        assert su.execute("SELECT count(*) FROM pg_shdepend AS d JOIN pg_roles AS r ON r.oid = d.refobjid "
                          "WHERE d.dbid = %s AND r.rolname LIKE 'rag\\_%%'", (oid,)).fetchone()[0] == 0
        su.execute("INSERT INTO notes VALUES (2, 'Boats', 'Boats sail at dawn.')")
        assert su.execute("SELECT count(*) FROM notes").fetchone()[0] == 2

        su.execute("CREATE EXTENSION rag CASCADE")
        su.execute("SELECT rag.attach('public.notes', 'body', title_column => 'title')")
        assert su.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 2   # both rows of notes
        top = su.execute("SELECT c.content FROM rag.search('boats at dawn', 1) AS s "
                         "JOIN rag.chunks AS c ON c.id = s.chunk_id").fetchone()[0]
        assert "Boats sail at dawn." in top


def test_the_upgrade_unlinks_rows_that_point_at_another_tenants_attachment(new_db):
    """0.5.0 keys a document's, queue row's and failed row's attachment by (tenant, id).
    Rows an older release let a writer point at another tenant's attachment are fixed by
    the upgrade, with a WARNING: the document stays, without the link; the queue row, which
    no worker could index, goes. The other tenant can then detach."""
    url = new_db(BEFORE_050)
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("GRANT CREATE ON SCHEMA public TO alice")
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
        alice.execute("CREATE TABLE alice_pages (id int PRIMARY KEY, body text)")
        alice.execute("INSERT INTO alice_pages VALUES (1, 'The harbour ferry leaves at six.')")
        att = alice.execute("SELECT rag.attach('alice_pages', 'body')").fetchone()[0]
    with psycopg.connect(as_role(url, "bob"), autocommit=True) as bob:
        bob.execute("INSERT INTO rag.documents (source, content, attachment_id) VALUES ('mine', 'Bob''s own text.', %s)",
                    (att,))
        bob.execute("INSERT INTO rag.queue (tenant, attachment_id, source_key) VALUES ('bob', %s, '{\"id\": 1}')", (att,))
    with psycopg.connect(url, autocommit=True) as su:
        seen = []
        su.add_notice_handler(lambda d: seen.append(d.message_primary or ""))
        su.execute("ALTER EXTENSION rag UPDATE")
        assert _version(su) == NEW
    assert "rag: 1 documents, 1 queued rows and 0 failed rows pointed at another tenant's attachment" in seen, seen
    with psycopg.connect(as_role(url, "bob"), autocommit=True) as bob:
        assert bob.execute("SELECT content, attachment_id FROM rag.documents").fetchall() == [("Bob's own text.", None)]
        assert bob.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0
        assert bob.execute("SELECT count(*) FROM rag.search('Bob own text', 3)").fetchone()[0] == 1
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
        assert alice.execute("SELECT count(*) FROM rag.documents WHERE attachment_id = %s", (att,)).fetchone()[0] == 1
        assert alice.execute("SELECT rag.detach('alice_pages')").fetchone()[0] is True
        assert alice.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 0


# Objects a role with CREATE on public plants where the required extensions live, each a
# closer match than pg_catalog's for something rag's scripts or functions use, each
# recording who ran it (hostile review 22: the install and upgrade scripts ran them as
# the installing superuser, and views and CHECK constraints kept them bound).
SPIES = """CREATE TABLE IF NOT EXISTS public.ran_as (who name, what text);
GRANT INSERT ON public.ran_as TO PUBLIC;
CREATE FUNCTION public.spy_contains(a text[], b text[]) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN INSERT INTO public.ran_as VALUES (current_user, '@>'); RETURN pg_catalog.arraycontains(a, b); END $f$;
CREATE OPERATOR public.@> (LEFTARG = text[], RIGHTARG = text[], FUNCTION = public.spy_contains);
CREATE FUNCTION public.spy_oideq(a oid, b regclass) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN INSERT INTO public.ran_as VALUES (current_user, '= regclass'); RETURN a OPERATOR(pg_catalog.=) b::oid; END $f$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.spy_oideq);
CREATE FUNCTION public.spy_ge(a numeric, b integer) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN INSERT INTO public.ran_as VALUES (current_user, '>='); RETURN a OPERATOR(pg_catalog.>=) b::numeric; END $f$;
CREATE OPERATOR public.>= (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = public.spy_ge);
CREATE FUNCTION public.spy_gt(a numeric, b integer) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN INSERT INTO public.ran_as VALUES (current_user, '>'); RETURN a OPERATOR(pg_catalog.>) b::numeric; END $f$;
CREATE OPERATOR public.> (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = public.spy_gt);
CREATE FUNCTION public.format(f text, a text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN INSERT INTO public.ran_as VALUES (current_user, 'format'); RETURN pg_catalog.format(f, a); END $f$;
CREATE FUNCTION public.spy_intlt(a integer, b integer) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN INSERT INTO public.ran_as VALUES (current_user, '<'); RETURN a OPERATOR(pg_catalog.<) b; END $f$;
CREATE OPERATOR public.< (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.spy_intlt);"""
# overloads that make a call by name ambiguous (a denial of service, not code run): before
# an install too (hostile review 23: the install failed on pgrowlocks')
AMBIGUOUS = """CREATE FUNCTION public.vector_dims(public.vector, int DEFAULT 0) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION public.vector_norm(public.vector, int DEFAULT 0) RETURNS float8 LANGUAGE sql AS 'SELECT 1.0';
CREATE FUNCTION public.pgrowlocks(text, int DEFAULT 0) RETURNS SETOF record LANGUAGE sql AS 'SELECT NULL::record';"""


def _bound_to_public(conn) -> list:
    """What of rag's calls a function or operator alice made (this query, with public out of
    its search path: it compares oids with regclass, as the plant does)."""
    conn.execute("SET search_path = pg_catalog")
    return conn.execute("""
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid), pg_describe_object(d.refclassid, d.refobjid, 0)
        FROM pg_depend AS d
        WHERE d.classid <> 'pg_operator'::regclass   -- (the plants' operators call the plants' functions)
          AND ((d.refclassid = 'pg_proc'::regclass AND d.refobjid IN (SELECT oid FROM pg_proc WHERE proowner = 'alice'::regrole))
               OR (d.refclassid = 'pg_operator'::regclass
               AND d.refobjid IN (SELECT oid FROM pg_operator WHERE oprowner = 'alice'::regrole)))""").fetchall()


def _use_everything(url: str) -> None:
    """ingest, search, ask, embed, attach + worker, queue status, the views."""
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("SET search_path = public")
        su.execute("SELECT rag.ingest('Refunds take five business days. Shipping is free.', 'r.md')")
        assert su.execute("SELECT count(*) FROM rag.search('refunds', 3)").fetchone()[0] >= 1
        assert "five business days" in su.execute("SELECT rag.ask('How long do refunds take?')->>'answer'").fetchone()[0]
        su.execute("SELECT rag.embed('a')")
        su.execute("CREATE TABLE public.notes (id bigint PRIMARY KEY, body text NOT NULL)")
        su.execute("SELECT rag.attach('public.notes', 'body', mode => 'async')")
        su.execute("INSERT INTO public.notes VALUES (1, 'The ferry leaves at six.')")
        su.execute("SET search_path = public, pg_catalog")   # the plants first: rag.work cannot pin its path
        su.execute("CALL rag.work()")
        su.execute("SET search_path = public")
        for view in ("rag.queue_status", "rag.lexical_stats", "rag.tenant_partitions", "rag.usage_daily",
                     "rag.model_status", "rag.document_status"):
            su.execute(f"SELECT count(*) FROM {view}")
        su.execute("INSERT INTO rag.usage (operation, model, provider, input_tokens, cost) "
                   "VALUES ('embed', 'm', 'local', 1, 0.5)")


def test_an_install_into_a_poisoned_public_runs_and_binds_none_of_it(new_db):
    """Hostile review 22: CREATE EXTENSION rag ran with rag's and pgvector's schemas on its
    search path, so objects planted in public ran as the installing superuser (alice's
    operator made her one) and stayed bound in rag's views and CHECK constraints. Every
    script now runs with search_path = pg_catalog, pg_temp and names pgvector with its
    schema; overloads that would make a call by name ambiguous break nothing, the install neither."""
    url = new_db(extension=False)
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("CREATE EXTENSION vector; CREATE EXTENSION pgrowlocks; CREATE EXTENSION pg_trgm")
        su.execute("GRANT CREATE ON SCHEMA public TO alice")
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
        alice.execute(SPIES)
        alice.execute(AMBIGUOUS)
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("CREATE EXTENSION rag CASCADE")
        assert _bound_to_public(su) == []
        assert su.execute("SELECT who, what, count(*) FROM public.ran_as GROUP BY 1, 2").fetchall() == []
    _use_everything(url)
    with psycopg.connect(url, autocommit=True) as su:
        assert su.execute("SELECT who, what, count(*) FROM public.ran_as GROUP BY 1, 2").fetchall() == []
        su.execute("SELECT 1 WHERE ARRAY['a'] @> ARRAY['a']")        # the plants work, called by name
        assert su.execute("SELECT count(*) FROM public.ran_as").fetchone()[0] == 1


def test_an_upgrade_runs_no_plant_and_rebinds_what_an_old_install_bound(new_db):
    """The same plants made before an install of 0.4.0: its install bound its
    CHECK constraints and views to them (as hostile review 22 showed). The upgrade runs
    none of them and makes those objects again, bound to pg_catalog's operators."""
    url = new_db(extension=False)
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("CREATE EXTENSION vector; CREATE EXTENSION pgrowlocks; CREATE EXTENSION pg_trgm")
        su.execute("GRANT CREATE ON SCHEMA public TO alice")
    with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
        alice.execute(SPIES)
        alice.execute(AMBIGUOUS)
    with psycopg.connect(url, autocommit=True) as su:
        su.execute(f"CREATE EXTENSION rag VERSION '{BEFORE_050}' CASCADE")
        assert _bound_to_public(su) != []                   # the old release's install bound them
        su.execute("TRUNCATE public.ran_as")
        su.execute("ALTER EXTENSION rag UPDATE")
        assert _version(su) == NEW
        assert su.execute("SELECT who, what FROM public.ran_as").fetchall() == []
        assert _bound_to_public(su) == []
    _use_everything(url)
    with psycopg.connect(url, autocommit=True) as su:
        assert su.execute("SELECT who, what FROM public.ran_as").fetchall() == []


def test_the_upgrade_drops_pg_trgm_and_trusts_only_the_extensions_rag_requires(new_db):
    """0.5.0 no longer requires pg_trgm (no release used it). 0.4.0's install pulled it
    in (its own requires); after the upgrade rag no longer depends on it, so it
    can be dropped, and the install check trusts only what rag requires now, read from
    pg_depend: an object of rag's bound to pg_trgm fails the upgrade, one bound to pgvector's
    functions does not."""
    url = new_db(BEFORE_050)

    def required(su) -> set[str]:
        return {r[0] for r in su.execute("""
            SELECT r.extname FROM pg_depend AS d JOIN pg_extension AS r ON r.oid = d.refobjid
            WHERE d.classid = 'pg_extension'::regclass AND d.refclassid = 'pg_extension'::regclass
              AND d.objid = (SELECT oid FROM pg_extension WHERE extname = 'rag')""")}

    with psycopg.connect(url, autocommit=True) as su:
        assert required(su) == {"vector", "plpython3u", "pg_trgm", "pgrowlocks"}
        trgm, vec = (su.execute("SELECT n.nspname FROM pg_extension AS e JOIN pg_namespace AS n "
                                "ON n.oid = e.extnamespace WHERE e.extname = %s", (x,)).fetchone()[0]
                     for x in ("pg_trgm", "vector"))
        su.execute(f"CREATE VIEW rag.trigram_probe AS SELECT {trgm}.similarity('ferry', 'ferries') AS s")
        su.execute(f"CREATE VIEW rag.vector_probe AS SELECT {vec}.vector_dims('[1,2]'::{vec}.vector) AS n")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
            su.execute("ALTER EXTENSION rag UPDATE")
        assert "rag.trigram_probe" in str(e.value) and "similarity" in str(e.value)
        assert "vector_probe" not in str(e.value)
        assert _version(su) == BEFORE_050               # the whole upgrade rolled back
        su.execute("DROP VIEW rag.trigram_probe")
        su.execute("ALTER EXTENSION rag UPDATE")
        assert _version(su) == NEW
        assert required(su) == {"vector", "plpython3u", "pgrowlocks"}
        su.execute("DROP EXTENSION pg_trgm")            # nothing of rag's needs it
        assert su.execute("SELECT n FROM rag.vector_probe").fetchone()[0] == 2
        su.execute("SELECT rag.ingest('Ferries leave the harbour at seven.', 'ferries.md')")
        assert su.execute("SELECT count(*) FROM rag.search('when do ferries leave')").fetchone()[0] == 1
