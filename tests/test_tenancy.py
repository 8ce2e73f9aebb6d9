"""Tenants cannot see or touch each other's data; roles can only do their job.

alice and bob are rag_writer login roles, each its own tenant (no rag.tenant set);
carol is a rag_reader, dora a rag_admin. All are real roles on the real server.
"""
from __future__ import annotations

import re

import psycopg
import pytest
from pgtest import stats

SECRET = "Project quokkaflux ships the zebrawood turbine on the third moon of March."


def rows(conn, sql, params=None):
    return conn.execute(sql, params).fetchall()


def test_each_role_is_its_own_tenant(connect):
    alice, bob = connect("alice"), connect("bob")
    assert alice.execute("SELECT rag.current_tenant()").fetchone()[0] == "alice"
    assert bob.execute("SELECT rag.current_tenant()").fetchone()[0] == "bob"


def test_tenant_b_sees_no_trace_of_tenant_a(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.execute("SELECT rag.ingest(%s, 'roadmap.md', title => 'Roadmap')", (SECRET,))
    bob.execute("SELECT rag.ingest('Our office plants need water on Mondays.', 'plants.md')")

    # alice finds it
    hits = rows(alice, "SELECT content FROM rag.search('quokkaflux zebrawood turbine')")
    assert any("quokkaflux" in h[0] for h in hits)

    # bob: tables, search (both legs), ask, lexical statistics
    assert rows(bob, "SELECT source FROM rag.documents") == [("plants.md",)]
    assert rows(bob, "SELECT count(*) FROM rag.chunks WHERE content ILIKE '%quokkaflux%'") == [(0,)]
    for (content,) in rows(bob, "SELECT content FROM rag.search('quokkaflux zebrawood turbine', 50)"):
        assert "quokkaflux" not in content
    assert rows(bob, """SELECT count(*) FROM rag.search('quokkaflux zebrawood turbine', 50)
                        WHERE lexical_rank IS NOT NULL""") == [(0,)]
    answer = bob.execute("SELECT rag.ask('When does the zebrawood turbine ship?')").fetchone()[0]
    assert "quokkaflux" not in str(answer) and "roadmap" not in str(answer).lower()
    # corpus statistics of the lexical leg: no document frequency for alice's words
    assert rows(bob, """SELECT count(*) FROM ts_stat('SELECT tsv FROM rag.chunks')
                        WHERE word IN ('quokkaflux', 'zebrawood')""") == [(0,)]
    assert rows(bob, "SELECT count(*) FROM rag.tenant_roles") == [(0,)]
    # BM25 index and statistics, through every table and view
    assert rows(bob, "SELECT count(*) FROM rag.lexical_stats WHERE lexeme IN ('quokkaflux', 'zebrawood')") == [(0,)]
    assert rows(bob, "SELECT count(*) FROM rag.posting_blocks WHERE lexeme = 'quokkaflux'") == [(0,)]
    assert rows(bob, "SELECT count(*) FROM rag.lexeme_stats WHERE lexeme = 'quokkaflux'") == [(0,)]
    assert rows(bob, "SELECT DISTINCT tenant FROM rag.corpus_stats") == [("bob",)]
    assert rows(bob, "SELECT count(*) FROM rag.bm25('quokkaflux zebrawood')") == [(0,)]
    assert rows(alice, "SELECT count(*) FROM rag.bm25('quokkaflux zebrawood')")[0][0] >= 1


def test_embedding_reuse_does_not_cross_tenants(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.execute("SELECT rag.ingest(%s, 'a.md')", (SECRET,))
    before = stats(bob)
    bob.execute("SELECT rag.ingest(%s, 'b.md')", (SECRET,))
    after = stats(bob)
    # the same text in another tenant is embedded again: a cache hit would prove alice has it
    assert after["texts_embedded"] - before["texts_embedded"] == 1
    assert after["chunks_reused"] == before["chunks_reused"]


def test_updates_and_deletes_cannot_reach_another_tenant(connect):
    alice, bob = connect("alice"), connect("bob")
    doc = alice.execute("SELECT rag.ingest(%s, 'roadmap.md')", (SECRET,)).fetchone()[0]
    assert bob.execute("UPDATE rag.documents SET content = 'pwned' WHERE id = %s", (doc,)).rowcount == 0
    assert bob.execute("DELETE FROM rag.documents WHERE id = %s", (doc,)).rowcount == 0
    assert bob.execute("DELETE FROM rag.chunks WHERE document_id = %s", (doc,)).rowcount == 0
    assert bob.execute("DELETE FROM rag.documents").rowcount == 0
    # the same source name in bob's tenant is a different document
    bob_doc = bob.execute("SELECT rag.ingest('Bob''s own roadmap: nothing planned.', 'roadmap.md')").fetchone()[0]
    assert bob_doc != doc
    assert rows(alice, "SELECT content FROM rag.documents WHERE id = %s", (doc,)) == [(SECRET,)]
    assert rows(alice, "SELECT count(*) FROM rag.chunks WHERE document_id = %s", (doc,))[0][0] >= 1
    # alice's own delete works and takes her chunks and lexical statistics only
    alice.execute("DELETE FROM rag.documents WHERE id = %s", (doc,))
    assert rows(alice, "SELECT count(*) FROM rag.chunks") == [(0,)]
    assert rows(alice, "SELECT count(*) FROM rag.lexical_stats") == [(0,)]
    assert rows(bob, "SELECT count(*) FROM rag.chunks") == [(1,)]
    assert rows(bob, "SELECT count(*) FROM rag.lexical_stats")[0][0] > 0


def test_tenant_cannot_be_forged(connect):
    alice, bob = connect("alice"), connect("bob")
    with pytest.raises(psycopg.Error) as exc:
        bob.execute("INSERT INTO rag.documents (tenant, source, content) VALUES ('alice', 'x', 'forged text')")
    assert exc.value.sqlstate == "42501"  # row-level security WITH CHECK
    bob.execute("SET rag.tenant = 'alice'")
    with pytest.raises(psycopg.Error) as exc:
        bob.execute("SELECT * FROM rag.search('anything')")
    assert exc.value.sqlstate == "42501" and "may not act for tenant 'alice'" in str(exc.value)
    with pytest.raises(psycopg.Error) as exc:
        bob.execute("SELECT count(*) FROM rag.documents")
    assert exc.value.sqlstate == "42501"
    bob.execute("RESET rag.tenant")
    assert rows(alice, "SELECT count(*) FROM rag.documents") == [(0,)]


def test_admin_can_let_a_role_act_for_a_shared_tenant(connect):
    alice, bob, dora = connect("alice"), connect("bob"), connect("dora")
    dora.execute("SELECT rag.grant_tenant('bob', 'acme')")
    bob.execute("SET rag.tenant = 'acme'")
    bob.execute("SELECT rag.ingest('Acme invoices are due in 30 days.', 'invoices.md')")
    assert rows(bob, "SELECT tenant FROM rag.documents") == [("acme",)]
    bob.execute("RESET rag.tenant")
    # with exactly one grant, bob's default tenant is now acme
    assert bob.execute("SELECT rag.current_tenant()").fetchone()[0] == "acme"
    alice.execute("SET rag.tenant = 'acme'")
    with pytest.raises(psycopg.Error):
        alice.execute("SELECT count(*) FROM rag.documents")
    alice.execute("RESET rag.tenant")
    assert dora.execute("SELECT rag.revoke_tenant('bob', 'acme')").fetchone()[0] is True
    assert bob.execute("SELECT rag.current_tenant()").fetchone()[0] == "bob"


@pytest.mark.parametrize("sql", [
    "ALTER TABLE rag.documents DISABLE ROW LEVEL SECURITY",
    "ALTER TABLE rag.chunks NO FORCE ROW LEVEL SECURITY",
    "DROP POLICY tenant_isolation ON rag.documents",
    "CREATE POLICY open ON rag.documents USING (true)",
    "SELECT rag.grant_tenant('alice', 'bob')",
    "INSERT INTO rag.tenant_roles (tenant, role_name) VALUES ('bob', 'alice')",
])
def test_writer_cannot_disable_policies_or_act_as_admin(connect, sql):
    alice = connect("alice")
    with pytest.raises(psycopg.Error) as exc:
        alice.execute(sql)
    assert exc.value.sqlstate == "42501", exc.value


def test_superuser_search_is_scoped_to_its_tenant(db, connect):
    alice = connect("alice")
    alice.execute("SELECT rag.ingest(%s, 'roadmap.md')", (SECRET,))
    # the superuser bypasses row-level security, but search and ask answer from one tenant
    assert db.execute("SELECT count(*) FROM rag.search('quokkaflux zebrawood turbine')").fetchone()[0] == 0
    db.execute("SET rag.tenant = 'alice'")
    assert db.execute("SELECT count(*) FROM rag.search('quokkaflux zebrawood turbine')").fetchone()[0] == 1


def test_row_security_off_is_refused_not_bypassed(connect):
    alice = connect("alice")
    alice.execute("SET row_security = off")
    with pytest.raises(psycopg.Error) as exc:
        alice.execute("SELECT count(*) FROM rag.documents")
    assert exc.value.sqlstate == "42501"


def test_reader_can_search_but_not_write(connect):
    carol = connect("carol")
    assert carol.execute("SELECT count(*) FROM rag.search('anything')").fetchone()[0] == 0
    for sql in ("SELECT rag.ingest('some text', 'c.md')",
                "INSERT INTO rag.documents (source, content) VALUES ('c.md', 'some text')",
                "DELETE FROM rag.documents"):
        with pytest.raises(psycopg.Error) as exc:
            carol.execute(sql)
        assert exc.value.sqlstate == "42501", sql


def test_a_role_without_rag_roles_has_no_access(connect):
    nobody = connect("nobody")
    for sql in ("SELECT * FROM rag.search('x')", "SELECT count(*) FROM rag.documents",
                "SELECT rag.ask('x')", "SELECT rag.current_tenant()"):
        with pytest.raises(psycopg.Error) as exc:
            nobody.execute(sql)
        assert exc.value.sqlstate == "42501", sql


def test_every_table_has_forced_row_level_security_and_views_are_invoker(db):
    # tables and partitioned tables; their partitions are reached only through them
    tables = db.execute("""SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
                           WHERE relnamespace = 'rag'::regnamespace AND relkind IN ('r', 'p')
                           AND NOT relispartition""").fetchall()
    assert len(tables) >= 11 and "chunks" in {t[0] for t in tables}
    assert [t for t in tables if not (t[1] and t[2])] == []
    without_policy = db.execute("""SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'rag'::regnamespace
                                   AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                                   AND NOT EXISTS (SELECT 1 FROM pg_policies p
                                   WHERE p.schemaname = 'rag' AND p.tablename = c.relname)""").fetchall()
    assert without_policy == []
    # a partition is granted to no one: direct access would skip the parent's policies
    partitions = db.execute("""SELECT c.relname, EXISTS (SELECT 1 FROM aclexplode(c.relacl) AS a
                                                        WHERE a.grantee <> c.relowner)
                               FROM pg_class AS c WHERE c.relnamespace = 'rag'::regnamespace
                               AND c.relispartition AND c.relkind IN ('r', 'p')""").fetchall()
    assert {"chunks_default", "posting_blocks_default"} <= {r[0] for r in partitions}
    assert [r for r in partitions if r[1]] == []
    views = db.execute("""SELECT relname, coalesce(reloptions, '{}') FROM pg_class
                          WHERE relnamespace = 'rag'::regnamespace AND relkind = 'v'""").fetchall()
    assert views and all("security_invoker=true" in opts for _, opts in views), views
    # two SECURITY DEFINER functions: the trigger that forgets the answers of deleted chunks
    # (0.7.0, hostile review 38), which no role may execute (so none can hang it elsewhere),
    # and whether any tenant uses an embedding model (0.10.0, review 48), rag_admin's
    definers = dict(db.execute("""SELECT p.oid::regprocedure::text, p.proacl::text[] FROM pg_proc p
                                  WHERE p.pronamespace = 'rag'::regnamespace AND p.prosecdef""").fetchall())
    assert set(definers) == {"rag._chunks_forget_answers()", "rag._embedding_model_used(text)"}, definers
    owner = db.execute("SELECT pg_get_userbyid(proowner) FROM pg_proc "
                       "WHERE oid = 'rag._chunks_forget_answers()'::regprocedure").fetchone()[0]
    for name, grantees in (("rag._chunks_forget_answers()", {owner}), ("rag._embedding_model_used(text)", {owner, "rag_admin"})):
        acl = definers[name]   # (NULL: PUBLIC)
        assert acl and {a.split("=")[0] for a in acl} == grantees, (name, acl)
    unpinned = db.execute("""SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'rag'::regnamespace
                             AND p.prokind <> 'p'  -- rag.work commits, so it cannot SET search_path
                             -- a VALUES list inlined into pinned callers (checked below)
                             AND p.oid <> 'rag._setting_defaults()'::regprocedure
                             AND NOT 'search_path=pg_catalog, pg_temp' = ANY (coalesce(p.proconfig, '{}'))""").fetchall()
    # pg_catalog and pg_temp only: not pgvector's schema, where a role may create objects
    assert unpinned == []
    body = db.execute("SELECT prosrc FROM pg_proc WHERE oid = 'rag._setting_defaults()'::regprocedure").fetchone()[0]
    # string literals only: without them, nothing is left that could name an object
    bare = re.sub(r"'(?:[^']|'')*'", "", body)
    assert re.fullmatch(r"\s*SELECT \* FROM \(VALUES[\s(),]*\) AS d \(name, default_value, description\)\s*", bare), bare


def test_the_procedures_name_their_types_so_a_callers_path_runs_no_plant(db, connect):
    """rag.work, rag.purge_ledger and rag.lock_guard commit between batches and so cannot pin
    their search_path; their variables' types (float8, text, name, timestamptz) were looked
    up through the caller's path: a domain planted under such a name in a schema the
    caller's path puts before pg_catalog ran its CHECK as the caller (review 48, read in
    the code; review 23 had qualified the operators)."""
    db.execute("GRANT CREATE ON SCHEMA public TO alice")
    alice = connect("alice")
    alice.execute("CREATE TABLE public.ran_as (who name, what text)")
    alice.execute("GRANT INSERT, SELECT ON public.ran_as TO PUBLIC")
    for t in ("float8", "text", "name", "timestamptz"):
        alice.execute(f"CREATE FUNCTION public.spy_{t}(v pg_catalog.{t}) RETURNS boolean LANGUAGE plpgsql AS $f$ "
                      f"BEGIN INSERT INTO public.ran_as VALUES (current_user, '{t}'); RETURN true; END $f$")
        alice.execute(f"CREATE DOMAIN public.{t} AS pg_catalog.{t} CHECK (public.spy_{t}(VALUE))")
    bob = connect("bob")
    bob.execute("SET search_path = public, pg_catalog")
    bob.execute("CALL rag.work()")
    db.execute("SET search_path = public, pg_catalog")
    db.execute("CALL rag.purge_ledger()")
    db.execute("CALL rag.lock_guard('0 seconds', '1 second')")
    db.execute("RESET search_path")
    assert db.execute("SELECT who, what FROM public.ran_as").fetchall() == []   # bob's and the superuser's before


def test_an_admin_of_one_tenant_cannot_change_a_model_only_another_tenant_uses(db, connect):
    """Whether an embedding model is in use (so that what makes its vectors stays) was read
    under the admin's row-level security: an admin of one tenant could re-register, with
    other dimensions or another provider model, a model that only another tenant used (its
    switch made by an admin who is not the extension's owner: no HNSW index recorded), and
    that tenant's search then failed (review 48, F1, read in the code). Every tenant's row
    counts now (rag._embedding_model_used, rag_admin's, SECURITY DEFINER)."""
    url = "http://127.0.0.1:9/v1"
    db.execute("SELECT rag.add_model('bobs-embed', 'embed', base_url => %s, dimensions => 8)", (url,))
    db.execute("SELECT rag.add_model('bobs-next-embed', 'embed', base_url => %s, dimensions => 3)", (url,))
    # bob's tenant uses bobs-embed and is being switched to bobs-next-embed (no index: its
    # admin is not the owner)
    db.execute("SET rag.tenant = 'bob'")
    db.execute("SELECT rag.ingest('Bob keeps bees.', source => 'bees.md')")
    db.execute("UPDATE rag.tenant_models SET embedding_model = 'bobs-embed', next_model = 'bobs-next-embed' "
               "WHERE tenant = 'bob'")
    db.execute("RESET rag.tenant")
    # and alice has a chunk of a model no row names (written under a session's or role's
    # rag.embedding_model; here by hand): review 49b, after the chunks were left out
    db.execute("SELECT rag.add_model('alices-session-embed', 'embed', base_url => %s, dimensions => 3)", (url,))
    alice = connect("alice")
    did = alice.execute("SELECT rag.ingest('Alice keeps goats.', source => 'goats.md')").fetchone()[0]
    alice.execute("""INSERT INTO rag.chunks (document_id, ord, content, tokens, content_hash, model, embedding)
                     VALUES (%s, 5, 'Goats.', 2, sha256('Goats.'), 'alices-session-embed', '[1,0,0]')""", (did,))
    assert db.execute("SELECT count(*) FROM rag.model_indexes").fetchone() == (0,)
    dora = connect("dora")
    assert dora.execute("SELECT count(*) FROM rag.tenant_models WHERE tenant = 'bob'").fetchone() == (0,)  # (hidden)
    for model, dims in (("bobs-embed", 16), ("bobs-next-embed", 4), ("alices-session-embed", 4)):
        with pytest.raises(psycopg.Error) as e:
            dora.execute("SELECT rag.add_model(%s, 'embed', base_url => %s, dimensions => %s)", (model, url, dims))
        assert e.value.sqlstate == "55006" and f"'{model}' is in use" in str(e.value), e.value
        with pytest.raises(psycopg.Error) as e:
            dora.execute("UPDATE rag.models SET provider_model = 'another' WHERE name = %s", (model,))
        assert e.value.sqlstate == "55006", e.value
    # a model nobody uses is dora's to change, its base URL always
    dora.execute("SELECT rag.add_model('free-embed', 'embed', base_url => %s, dimensions => 8)", (url,))
    dora.execute("SELECT rag.add_model('free-embed', 'embed', base_url => %s, dimensions => 16)", (url,))
    dora.execute("SELECT rag.add_model('bobs-embed', 'embed', base_url => 'http://127.0.0.2:9/v1', dimensions => 8)")
    assert dora.execute("SELECT rag._embedding_model_used('bobs-embed'), rag._embedding_model_used('free-embed')"
                        ).fetchone() == (True, False)
    for role in ("alice", "carol"):     # rag_admin's only
        with pytest.raises(psycopg.Error) as e:
            connect(role).execute("SELECT rag._embedding_model_used('bobs-embed')")
        assert e.value.sqlstate == "42501", e.value
