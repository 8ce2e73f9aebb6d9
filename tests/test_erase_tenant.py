"""rag.erase_tenant: every row rag holds for one tenant goes, in one transaction, and nothing
of another tenant or of a role's own tables; writers in flight are waited for."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

# every table of schema rag with a tenant column, found here independently of the function
TENANT_TABLES = """
    SELECT c.oid::regclass::text FROM pg_class AS c
    JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'tenant' AND NOT a.attisdropped
    WHERE c.relnamespace = 'rag'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
    ORDER BY 1"""
LEDGER = {"rag.usage", "rag.usage_history"}


def counts(db, tenant: str) -> dict[str, int]:
    return {t: db.execute(f"SELECT count(*) FROM {t} WHERE tenant = %s", (tenant,)).fetchone()[0]
            for (t,) in db.execute(TENANT_TABLES).fetchall()}


def fill(db, t: str) -> None:
    """A tenant with a row in every table rag keeps per tenant (as the superuser)."""
    db.execute("SELECT set_config('rag.tenant', %s, false)", (t,))
    db.execute("SELECT rag.ingest(%s, source => 'refunds.md')",
               (f"# Refunds of {t}\n\nRefunds take five days for {t}; the order number is needed.",))
    db.execute("SELECT rag.ingest(%s, source => 'shipping.md')", (f"# Shipping\n\nShipping to {t} takes three days.",))
    db.execute(f'CREATE TABLE "notes_{t}" (id int PRIMARY KEY, body text)')
    db.execute(f"""INSERT INTO "notes_{t}" VALUES (1, 'A note of {t} about the harbour lantern'), (2, 'Another')""")
    db.execute(f"""SELECT rag.attach('"notes_{t}"', 'body')""")
    db.execute(f'CREATE TABLE "later_{t}" (id int PRIMARY KEY, body text)')
    db.execute(f"""SELECT rag.attach('"later_{t}"', 'body', mode => 'async')""")
    db.execute(f"""INSERT INTO "later_{t}" VALUES (1, 'queued one'), (2, 'queued two')""")   # stays queued
    db.execute("""INSERT INTO rag.errors (tenant, attachment_id, source_key, attempts, last_error, enqueued_at)
                  SELECT %s, a.id, '{"id": 9}', 3, 'a failure', now() FROM rag.attachments AS a
                  WHERE a.tenant = %s AND a.mode = 'async'""", (t, t))
    db.execute("SELECT rag.ask('How long do refunds take?')")                # answers and usage
    db.execute("""INSERT INTO rag.usage_history (tenant, day, model, provider, operation, calls, input_tokens,
                                                 output_tokens, cost)
                  VALUES (%s, current_date - 400, 'm', 'p', 'ask', 3, 30, 20, 0.5)""", (t,))
    db.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES (%s, %s)", (f"set_{t}", t))
    db.execute("INSERT INTO rag.eval_queries VALUES (%s, 'q1', 'how long do refunds take')", (f"set_{t}",))
    db.execute("INSERT INTO rag.eval_qrels (set_name, query_id, doc_source, grade) VALUES (%s, 'q1', 'refunds.md', 1)",
               (f"set_{t}",))
    db.execute("INSERT INTO rag.eval_answers (set_name, query_id, doc_source, answer) VALUES (%s, 'q1', 'refunds.md', 'five days')",
               (f"set_{t}",))
    db.execute("SELECT rag.evaluate(%s, 'lexical', 10)", (f"set_{t}",))
    db.execute("SELECT rag.evaluate_answers(%s, k => 3)", (f"set_{t}",))
    db.execute("SELECT rag.set_daily_budget(7)")
    db.execute("SELECT rag.grant_tenant('carol', %s)", (t,))
    db.execute("RESET rag.tenant")


def erase(db, tenant, **kw) -> dict[str, tuple[int, int]]:
    args = "".join(f", {k} => %({k})s" for k in kw)
    rows = db.execute(f"SELECT table_name, removed, kept FROM rag.erase_tenant(%(t)s{args})",
                      {"t": tenant, **kw}).fetchall()
    return {name: (removed, kept) for name, removed, kept in rows}


def search(db, tenant):
    db.execute("SELECT set_config('rag.tenant', %s, false)", (tenant,))
    got = db.execute("SELECT chunk_id, content FROM rag.search('refunds harbour lantern shipping', k => 10)").fetchall()
    db.execute("RESET rag.tenant")
    return got


def test_erase_removes_every_row_of_the_tenant_and_nothing_else(db, connect):
    fill(db, "alice")
    fill(db, "bob")
    before = counts(db, "alice")
    # the setup reaches every table a tenant has rows in (so that the erase is tested on each)
    assert all(n > 0 for t, n in before.items() if t not in ("rag.embeddings_next",)), before
    bob_before, bob_hits = counts(db, "bob"), search(db, "bob")
    assert bob_hits
    runs_before = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                   for t in ("rag.eval_run_query", "rag.eval_answer_run_query")}

    result = erase(db, "alice")

    after = counts(db, "alice")
    assert set(result) == set(after)                   # one row per table with a tenant column
    for t, n in after.items():
        want_kept = before[t] if t in LEDGER else 0
        assert n == want_kept, (t, n)
        assert result[t] == (before[t] - want_kept, want_kept), t
    # what hangs off alice's eval runs went with them; bob's stayed
    for t, n in runs_before.items():
        left = db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        assert 0 < left < n, t
    # nothing of bob's changed, and his search answers as before
    assert counts(db, "bob") == bob_before
    assert search(db, "bob") == bob_hits
    # her tables and their rows stay; rag's triggers on them are gone
    assert db.execute('SELECT count(*) FROM "notes_alice"').fetchone()[0] == 2
    assert db.execute('SELECT count(*) FROM "later_alice"').fetchone()[0] == 2
    assert db.execute("""SELECT count(*) FROM pg_trigger
                         WHERE tgrelid IN ('"notes_alice"'::regclass, '"later_alice"'::regclass)""").fetchone()[0] == 0
    db.execute("""INSERT INTO "notes_alice" VALUES (3, 'written after the erase')""")
    assert counts(db, "alice")["rag.documents"] == 0
    # bob's attached table is still followed
    db.execute("SET rag.tenant = 'bob'")
    db.execute("""INSERT INTO "notes_bob" VALUES (3, 'a zeppelin of bob')""")
    db.execute("RESET rag.tenant")
    assert counts(db, "bob")["rag.documents"] == bob_before["rag.documents"] + 1
    # carol's grant went with the tenant
    carol = connect("carol")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        carol.execute("SET rag.tenant = 'alice'")
        carol.execute("SELECT rag.search('refunds')")
    # the role alice starts a new tenant of her name, whose statistics know only the new document
    alice = connect("alice")
    alice.execute("SELECT rag.ingest('Penguins march in winter.', source => 'new.md')")
    assert alice.execute("SELECT count(*) FROM rag.search('refunds penguins', k => 10)").fetchone()[0] == 1
    assert alice.execute("SELECT max(document_frequency), count(*) FILTER (WHERE lexeme = 'refund') "
                         "FROM rag.lexical_stats").fetchone() == (1, 0)


def test_keep_usage_false_erases_the_ledger_and_an_erased_tenant_is_empty(db):
    fill(db, "alice")
    usage = counts(db, "alice")["rag.usage"]
    assert usage > 0
    first = erase(db, "alice", keep_usage=False)
    assert first["rag.usage"] == (usage, 0) and first["rag.usage_history"] == (1, 0)
    assert all(n == 0 for n in counts(db, "alice").values())
    # again, or a tenant that never was: nothing to remove, nothing left
    for t in ("alice", "nobody-ever"):
        got = erase(db, t)
        assert all(v == (0, 0) for v in got.values()), (t, {k: v for k, v in got.items() if v != (0, 0)})
    assert db.execute("SELECT count(*) FROM rag.tenant_models WHERE tenant = 'nobody-ever'").fetchone()[0] == 0


def test_only_a_superuser_erases_and_bad_arguments_are_named(db, connect):
    fill(db, "alice")
    for role in ("dora", "alice", "carol"):   # rag_admin, the tenant's own writer, a reader granted it
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connect(role).execute("SELECT * FROM rag.erase_tenant('alice')")
    for bad in (None, "", "   "):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="tenant must name a tenant"):
            db.execute("SELECT * FROM rag.erase_tenant(%s)", (bad,))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="patience"):
        db.execute("SELECT * FROM rag.erase_tenant('alice', patience => '-1 s')")
    db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    with pytest.raises(psycopg.errors.ActiveSqlTransaction, match="READ COMMITTED"):
        db.execute("SELECT * FROM rag.erase_tenant('alice')")
    db.execute("ROLLBACK")
    assert counts(db, "alice")["rag.documents"] == 4   # nothing was removed


def test_erase_waits_for_the_tenants_writer_in_flight(db, connect):
    alice = connect("alice")
    alice.execute("SELECT rag.ingest('First document.', source => 'first.md')")
    writer = connect("alice")
    writer.execute("BEGIN")
    writer.execute("SELECT rag.ingest('Written while the tenant is erased.', source => 'inflight.md')")
    # it cannot go past a writer that does not end
    with pytest.raises(psycopg.errors.LockNotAvailable, match="alice"):
        erase(db, "alice", patience="1 second")
    assert counts(db, "alice")["rag.documents"] == 1
    # with patience, it waits for the writer's commit and erases its document too
    out = {}
    eraser = threading.Thread(target=lambda: out.update(erase(db, "alice")))
    eraser.start()
    time.sleep(1.0)
    assert eraser.is_alive()
    writer.execute("COMMIT")
    eraser.join(timeout=60)
    assert out["rag.documents"] == (2, 0)
    assert counts(db, "alice")["rag.chunks"] == 0


def test_a_tenants_own_partitions_are_named_and_left_empty(db):
    fill(db, "alice")
    db.execute("SELECT rag.create_tenant_partition('alice')")
    notices = []
    db.add_notice_handler(lambda n: notices.append(n.message_primary))
    out = erase(db, "alice")
    assert out["rag.chunks"][0] > 0
    named = [m for m in notices if "partitions of tenant 'alice' are left, empty" in m]
    assert len(named) == 1
    parts = named[0].split(": ")[-1].split(", ")
    assert len(parts) == 2 and all(p.startswith(("rag.chunks_", "rag.posting_blocks_")) for p in parts)
    for p in parts:
        assert db.execute(f"SELECT count(*) FROM {p}").fetchone()[0] == 0


def test_an_attached_table_held_by_its_writer_is_waited_for_in_tries(db, connect):
    """Dropping rag's triggers locks the table; a writer with an open transaction on it
    makes the erase give up after its patience, naming the table, with nothing removed."""
    fill(db, "alice")
    alice = connect("alice")
    db.execute('GRANT ALL ON "notes_alice" TO alice')
    alice.execute("BEGIN")
    alice.execute('LOCK TABLE "notes_alice" IN ROW EXCLUSIVE MODE')   # what an open UPDATE of it holds
    pid = alice.execute("SELECT pg_backend_pid()").fetchone()[0]
    started = time.monotonic()
    with pytest.raises(psycopg.errors.LockNotAvailable, match="notes_alice") as e:
        erase(db, "alice", patience="1 second")
    assert time.monotonic() - started < 10
    assert f"(pids {{{pid}}})" in str(e.value)                      # who held it
    assert counts(db, "alice")["rag.documents"] == 4
    alice.execute("ROLLBACK")
    assert erase(db, "alice")["rag.documents"] == (4, 0)


# -- hostile review 37 -------------------------------------------------------------------

def owned_table(db, name: str, owner: str, rows: int = 3) -> None:
    db.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text)")
    db.execute(f"INSERT INTO {name} SELECT g, 'note ' || g || ' about the harbour lantern' FROM generate_series(1, {rows}) g")
    db.execute(f"ALTER TABLE {name} OWNER TO {owner}")


PLANT = """INSERT INTO rag.attachments (tenant, source_table, key_columns, content_column, mode)
           VALUES ('alice', %s, '{id}', 'content', 'sync')"""
MINE = """INSERT INTO rag.attachments (source_table, key_columns, content_column, mode)
          VALUES (%s, '{id}', 'content', 'sync')"""   # a writer's, in her own tenant


def test_an_attachment_row_names_only_a_table_its_writer_could_attach(db, connect):
    """Writers insert rag.attachments rows themselves (rag.attach runs as its caller): one
    written by hand may name only an ordinary table outside rag's and the system's schemas
    that the role may create triggers on (it named rag.chunks, pg_authid or a sequence,
    which a superuser's erase then locked)."""
    owned_table(db, "notes", "alice")
    alice = connect("alice")
    for shared in ("rag.chunks", "rag.answers", "pg_catalog.pg_authid", "public.notes_bob"):
        if shared == "public.notes_bob":
            owned_table(db, "notes_bob", "bob")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot be attached by role alice"):
            alice.execute(MINE, (shared,))
    for other in ("rag.documents_id_seq", "rag.documents_pkey", "4000000000"):
        with pytest.raises(psycopg.errors.WrongObjectType, match="names a table"):
            alice.execute(MINE, (other,))
    # her own table, by hand, as rag.attach would
    alice.execute(MINE, ("notes",))
    assert db.execute("SELECT count(*) FROM rag.attachments").fetchone()[0] == 1


def test_rows_planted_before_the_guard_make_the_erase_lock_nothing_of_theirs(db, connect):
    """Rows written before the guard existed (here by the superuser, who passes it) that name
    shared tables or a sequence: the erase locks a table only if it holds one of rag's
    triggers of the tenant's attachment, so other tenants do not wait and the erase goes."""
    alice = connect("alice")
    alice.execute("SELECT rag.ingest('Alice owns a harbour lantern.', source => 'a.md')")
    for planted in ("rag.chunks", "rag.answers", "pg_catalog.pg_authid", "rag.documents_id_seq"):
        db.execute(PLANT, (planted,))
    db.execute("BEGIN")
    out = erase(db, "alice")
    strong = db.execute("""SELECT relation::regclass::text, mode FROM pg_locks
                           WHERE pid = pg_backend_pid() AND locktype = 'relation'
                             AND mode IN ('ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')""").fetchall()
    assert strong == [], strong
    bob = connect("bob")
    bob.execute("SET lock_timeout = '1s'")
    bob.execute("SELECT rag.ingest('Bob writes about zeppelins.', source => 'b.md')")   # does not wait
    bob.execute("SELECT rag.ask('zeppelins?')")
    db.execute("COMMIT")
    assert out["rag.attachments"] == (4, 0) and out["rag.documents"] == (1, 0)


def test_a_row_the_tenants_transaction_holds_ends_the_erase_at_its_patience(db, connect):
    """A writer updating her documents (which claims no rag.tenant_models row) holds their
    rows: the erase's DELETE waits what is left of its patience, then 55P03 naming the
    table, nothing erased (it waited until statement_timeout, or for ever)."""
    alice = connect("alice")
    alice.execute("SELECT rag.ingest('Alice owns a harbour lantern.', source => 'a.md')")
    hold = connect("alice")
    hold.execute("BEGIN")
    hold.execute("UPDATE rag.documents SET title = title")
    started = time.monotonic()
    with pytest.raises(psycopg.errors.LockNotAvailable, match=r"rows of tenant 'alice' in rag\.documents"):
        erase(db, "alice", patience="1 second")
    assert time.monotonic() - started < 10
    hold.execute("ROLLBACK")
    assert counts(db, "alice")["rag.documents"] == 1
    # the session's own lock_timeout, if shorter, is kept (and restored after)
    db.execute("SET lock_timeout = '200ms'")
    assert erase(db, "alice")["rag.documents"] == (1, 0)
    assert db.execute("SHOW lock_timeout").fetchone()[0] == "200ms"


def test_a_long_reader_of_an_attached_table_ends_the_erase_at_its_patience_and_queues_nobody(db, connect):
    """DROP TRIGGER takes the table ACCESS EXCLUSIVE: behind a transaction that only read
    the table it waited without bound, and every later reader queued behind it. Now the
    lock is taken in tries of 100 ms: others read on, and after the patience 55P03."""
    owned_table(db, "notes", "alice")
    alice = connect("alice")
    alice.execute("SELECT rag.attach('notes', 'body')")
    reader = connect("alice")
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM notes")                     # ACCESS SHARE, held
    out = {}

    def go():
        try:
            out["rows"] = erase(db, "alice", patience="3 seconds")
        except psycopg.Error as e:
            out["error"] = e
    eraser = threading.Thread(target=go)
    eraser.start()
    time.sleep(1.0)
    other = connect("alice")
    other.execute("SET lock_timeout = '1s'")
    for _ in range(3):                                               # others keep reading meanwhile
        assert other.execute("SELECT count(*) FROM notes").fetchone()[0] == 3
        time.sleep(0.3)
    eraser.join(30)
    assert isinstance(out.get("error"), psycopg.errors.LockNotAvailable), out
    assert "rag.erase_tenant" in str(out["error"]) and "notes" in str(out["error"])
    reader.execute("ROLLBACK")
    assert erase(db, "alice")["rag.attachments"] == (1, 0)
    # rag.detach takes the same tries: readers go on while it waits, and it goes after
    alice.execute("SELECT rag.attach('notes', 'body')")
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM notes")
    detached = []
    detacher = threading.Thread(target=lambda: detached.append(
        alice.execute("SELECT rag.detach('notes')").fetchone()[0]))
    detacher.start()
    time.sleep(1.0)
    assert other.execute("SELECT count(*) FROM notes").fetchone()[0] == 3
    assert detacher.is_alive()
    reader.execute("ROLLBACK")
    detacher.join(30)
    assert detached == [True]


def test_sessions_of_the_tenant_with_a_transaction_open_are_named(db, connect):
    """Only document writers hold the tenant's row; a transaction loading an eval set (or
    attaching, or logging an answer) may commit after the erase. The erase names the
    sessions of the roles that may act for the tenant that had one open."""
    alice = connect("alice")
    alice.execute("SELECT rag.ingest('Alice owns a harbour lantern.', source => 'a.md')")
    db.execute("SELECT rag.grant_tenant('carol', 'alice')")
    loader, reader, bob = connect("alice"), connect("carol"), connect("bob")
    loader.execute("BEGIN")
    loader.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('gold', 'alice')")
    reader.execute("BEGIN")
    reader.execute("SELECT 1")
    bob.execute("BEGIN")                                              # another tenant's: not named
    bob.execute("SELECT 1")
    pids = sorted(c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (loader, reader))
    notices = []
    db.add_notice_handler(lambda n: notices.append((n.severity_nonlocalized, n.message_primary)))
    erase(db, "alice")
    warned = [m for sev, m in notices if sev == "WARNING"]
    assert len(warned) == 1 and f"pids {{{','.join(map(str, pids))}}}" in warned[0], warned
    for c in (loader, reader, bob):
        c.execute("COMMIT")
    assert counts(db, "alice")["rag.eval_sets"] == 1                 # what the WARNING said
    notices.clear()
    erase(db, "alice")
    assert not [m for sev, m in notices if sev == "WARNING"]


def test_every_cascading_foreign_key_has_an_index_that_leads_with_it(db):
    """A row removed from a parent (an attachment detached or erased, an eval set, a run)
    finds its children through an index, not a scan of every tenant's rows: rag.errors had
    none, and 300 attachments erased beside 300,000 errors of another tenant took 9 s."""
    fks = db.execute("""
        SELECT c.conrelid::regclass::text, c.conname,
               ARRAY(SELECT a.attname::text FROM unnest(c.conkey) AS k JOIN pg_attribute AS a
                     ON a.attrelid = c.conrelid AND a.attnum = k)
        FROM pg_constraint AS c JOIN pg_class AS r ON r.oid = c.conrelid
        WHERE c.contype = 'f' AND c.confdeltype = 'c' AND r.relnamespace = 'rag'::regnamespace""").fetchall()
    assert len(fks) >= 8
    bare = []
    for table, name, cols in fks:
        indexes = db.execute("""
            SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k (n, o)
                         JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)
            FROM pg_index AS i WHERE i.indrelid = %s::regclass""", (table,)).fetchall()
        ok = False
        for (icols,) in indexes:
            lead = []
            for c in icols:
                if c not in cols:
                    break
                lead.append(c)
            ok = ok or any(c != "tenant" for c in lead)
        if not ok:
            bare.append(name)
    assert not bare, bare


def test_a_tenant_named_with_a_backslash_has_its_partitions_named_and_seen(db, connect):
    """A bound's text quotes a backslash otherwise than format's %L: the erase's NOTICE and
    rag.tenant_partitions missed such a tenant's partitions; both go by name now."""
    tenant = "a\\b"
    part = db.execute("SELECT rag.create_tenant_partition(%s)", (tenant,)).fetchone()[0]
    db.execute("SELECT rag.grant_tenant('alice', %s)", (tenant,))
    alice = connect("alice")
    alice.execute("SELECT set_config('rag.tenant', %s, false)", (tenant,))
    seen = [p for (p,) in alice.execute("SELECT chunks_partition FROM rag.tenant_partitions").fetchall()]
    assert f"rag.{part}" in seen, seen
    notices = []
    db.add_notice_handler(lambda n: notices.append(n.message_primary))
    erase(db, tenant)
    named = [m for m in notices if "partitions of tenant" in m]
    assert len(named) == 1 and f"rag.{part}" in named[0], named


# -- hostile review 37b ------------------------------------------------------------------

def test_a_table_turned_view_over_shared_tables_makes_the_erase_lock_only_the_view(db, connect, pg_container):
    """Postgres 15 lets a table become a view (CREATE RULE "_RETURN", OID kept): a writer's
    attachment row passed the guard on the table, and rag's trigger was then hung on a view
    over rag.chunks and pg_authid. A LOCK TABLE of the view locked what it reads; DROP
    TRIGGER in tries locks the view alone."""
    db.execute("CREATE SCHEMA alice_s AUTHORIZATION alice")
    alice = connect("alice")
    alice.execute("SELECT rag.ingest('Alice owns a harbour lantern.', source => 'a.md')")
    alice.execute("CREATE TABLE alice_s.trap (id int, content text)")
    aid = alice.execute(MINE.replace("VALUES (%s", "VALUES ('alice_s.trap'") + " RETURNING id").fetchone()[0]
    try:
        alice.execute("""CREATE RULE "_RETURN" AS ON SELECT TO alice_s.trap DO INSTEAD
                         SELECT c.id::int AS id, c.content FROM rag.chunks AS c, rag.documents AS d,
                                pg_catalog.pg_authid AS r WHERE false""")
    except (psycopg.errors.FeatureNotSupported, psycopg.errors.WrongObjectType):
        pytest.skip("this Postgres does not turn a table into a view (16 and later)")
    alice.execute("ALTER VIEW alice_s.trap SET (security_invoker = true)")
    alice.execute(f"""CREATE TRIGGER trap AFTER INSERT ON alice_s.trap
                      FOR EACH STATEMENT EXECUTE FUNCTION rag._attached_changed('{aid}')""")
    db.execute("BEGIN")
    out = erase(db, "alice")
    strong = {r for (r,) in db.execute("""SELECT relation::regclass::text FROM pg_locks
                                          WHERE pid = pg_backend_pid() AND locktype = 'relation'
                                            AND mode = 'AccessExclusiveLock'""").fetchall()}
    assert strong == {"alice_s.trap"}, strong
    bob = connect("bob")
    bob.execute("SET lock_timeout = '1s'")
    bob.execute("SELECT rag.ingest('Bob writes about zeppelins.', source => 'b.md')")
    assert bob.execute("SELECT count(*) FROM rag.search('zeppelins')").fetchone()[0] == 1
    db.execute("COMMIT")
    assert out["rag.documents"] == (1, 0)
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'alice_s.trap'::regclass").fetchone()[0] == 0


def test_row_holders_letting_go_one_after_another_do_not_stretch_the_patience(db, connect):
    """Each wait bounded alone let six holders, let go one by one, keep a 3 s erase going
    past 8 s. The deletes are now tried whole, each wait at most 10 ms: 55P03 at the
    patience, while holders are left."""
    alice = connect("alice")
    for i in range(6):
        alice.execute("SELECT rag.ingest(%s, source => %s)", (f"Document {i} of alice.", f"d{i}.md"))
    holders = []
    for i in range(6):
        h = connect("alice")
        h.execute("BEGIN")
        h.execute("UPDATE rag.documents SET title = title WHERE source = %s", (f"d{i}.md",))
        holders.append(h)

    def let_go():
        for h in holders:
            time.sleep(1.0)
            h.execute("ROLLBACK")
    releaser = threading.Thread(target=let_go)
    started = time.monotonic()
    releaser.start()
    with pytest.raises(psycopg.errors.LockNotAvailable, match="past the patience"):
        erase(db, "alice", patience="3 seconds")
    took = time.monotonic() - started
    releaser.join(30)
    assert took < 5.5, took
    assert erase(db, "alice")["rag.documents"] == (6, 0)   # none held: it goes


def test_a_transaction_begun_while_the_erase_waits_and_one_acting_through_set_role_are_named(db, connect):
    """The WARNING looked at sessions once, before the waits, and only at roles named the
    tenant or granted it: a transaction begun while the erase waited, and the HTTP API's
    login acting as the tenant's role (SET LOCAL ROLE), went unnamed."""
    alice = connect("alice")
    alice.execute("SELECT rag.ingest('Alice owns a harbour lantern.', source => 'a.md')")
    holder = connect("alice")
    holder.execute("BEGIN")
    holder.execute("UPDATE rag.documents SET title = title")
    api = connect("api")
    api.execute("BEGIN")
    api.execute("SET LOCAL ROLE alice")
    api.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('api-set', 'alice')")
    notices = []
    db.add_notice_handler(lambda n: notices.append((n.severity_nonlocalized, n.message_primary)))
    out = {}
    eraser = threading.Thread(target=lambda: out.update(erase(db, "alice", patience="10 seconds")))
    eraser.start()
    time.sleep(0.5)
    late = connect("alice")                                   # begun while the erase waits
    late.execute("BEGIN")
    late.execute("INSERT INTO rag.eval_sets (name, tenant) VALUES ('late-set', 'alice')")
    time.sleep(0.5)
    holder.execute("ROLLBACK")
    eraser.join(30)
    assert out["rag.documents"] == (1, 0)
    pids = sorted(c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (api, late))
    warned = [m for sev, m in notices if sev == "WARNING"]
    assert len(warned) == 1 and f"pids {{{','.join(map(str, pids))}}}" in warned[0], (warned, pids)
    api.execute("COMMIT")
    late.execute("COMMIT")
    assert counts(db, "alice")["rag.eval_sets"] == 2            # what the WARNING said


def test_patience_is_bounded(db):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="1 day"):
        erase(db, "alice", patience="30 days")
    assert all(v == (0, 0) for v in erase(db, "alice", patience="1 day").values())


# -- hostile review 37c ------------------------------------------------------------------

def test_tenants_named_with_one_and_two_backslashes_see_and_erase_only_their_own_partitions(db, connect):
    r"""'a\b' and 'a\\b': with standard_conforming_strings on, pg_get_expr writes the
    second's bound as the first's doubled, which the erase took for the first's (and named
    the other's full partitions as left empty, to drop); off, the other way round."""
    one, two = "a\\b", "a\\\\b"
    parts = {t: db.execute("SELECT rag.create_tenant_partition(%s)", (t,)).fetchone()[0] for t in (one, two)}
    db.execute("SELECT set_config('rag.tenant', %s, false)", (two,))
    db.execute("SELECT rag.ingest('Chunks of the tenant with two backslashes.', source => 'two.md')")
    db.execute("RESET rag.tenant")
    db.execute("SELECT rag.grant_tenant('alice', %s), rag.grant_tenant('bob', %s)", (one, two))
    for role, t in (("alice", one), ("bob", two)):
        c = connect(role)
        c.execute("SELECT set_config('rag.tenant', %s, false)", (t,))
        for scs in ("on", "off"):
            c.execute(f"SET standard_conforming_strings = {scs}")
            seen = {p for (p,) in c.execute("SELECT chunks_partition FROM rag.tenant_partitions "
                                            "WHERE bound <> 'DEFAULT'").fetchall()}
            assert seen == {f"rag.{parts[t]}"}, (role, scs, seen)
    for scs in ("on", "off"):
        db.execute(f"SET standard_conforming_strings = {scs}")
        notices = []

        def keep(n, notices=notices):
            notices.append(n.message_primary)
        db.add_notice_handler(keep)
        db.execute("BEGIN")
        erase(db, one)
        db.execute("ROLLBACK")
        db.remove_notice_handler(keep)
        named = [m for m in notices if "partitions of tenant" in m]
        assert len(named) == 1 and parts[one] in named[0] and parts[two] not in named[0], (scs, named)


@pytest.fixture
def inflight(db, connect):
    """alice's attached table `notes` (3 rows), and a writer of hers in flight: a document
    ingested in a transaction left open (it holds her tenant's model row)."""
    owned_table(db, "notes", "alice")
    connect("alice").execute("SELECT rag.attach('notes', 'body')")
    writer = connect("alice")
    writer.execute("BEGIN")
    writer.execute("SELECT rag.ingest('Written while the tenant is erased.', source => 'inflight.md')")
    return writer


def test_a_writer_of_an_attached_table_that_comes_after_waits_and_the_erase_goes(db, connect, inflight):
    """A writer in flight, then another inserting into an attached table: the erase used to
    hold the model row while it tried for the table, the inserter held the table while it
    waited for the row, and the erase failed at its patience. The triggers go first now."""
    out = {}
    eraser = threading.Thread(target=lambda: out.update(erase(db, "alice", patience="20 seconds")))
    eraser.start()
    time.sleep(0.5)
    inserter = connect("alice")
    inserted = []
    writer = threading.Thread(target=lambda: inserted.append(
        inserter.execute("INSERT INTO notes VALUES (50, 'a note written during the erase')").rowcount))
    writer.start()
    time.sleep(1.5)
    inflight.execute("COMMIT")
    eraser.join(30)
    writer.join(30)
    assert out["rag.documents"] == (4, 0), out        # the 3 notes and the document in flight
    assert inserted == [1]                            # after the erase: the table's row, no document
    assert counts(db, "alice")["rag.documents"] == 0


def test_a_writer_in_flight_that_then_waits_for_the_erase_is_cancelled_as_a_deadlock(db, inflight):
    """A writer in flight (it holds the tenant's model row) then writes to an attached table
    the erase holds: a deadlock Postgres does not see (the erase waits in short tries). The
    erase cancels that writer's statement, says so, and goes on."""
    pid = inflight.execute("SELECT pg_backend_pid()").fetchone()[0]
    notices, out, failed = [], {}, []
    db.add_notice_handler(lambda n: notices.append((n.severity_nonlocalized, n.message_primary)))
    eraser = threading.Thread(target=lambda: out.update(erase(db, "alice", patience="20 seconds")))
    eraser.start()
    time.sleep(1.0)                                    # the erase holds the table, waits for the row

    def write():
        try:
            inflight.execute("INSERT INTO notes VALUES (50, 'and now the table')")
        except psycopg.Error as e:
            failed.append(e)
    writer = threading.Thread(target=write)
    writer.start()
    eraser.join(30)
    writer.join(30)
    assert isinstance(failed[0], psycopg.errors.QueryCanceled), failed
    inflight.execute("ROLLBACK")
    assert out["rag.documents"] == (3, 0), out
    warned = [m for sev, m in notices if sev == "WARNING" and "cancelled" in m]
    assert len(warned) == 1 and f"{{{pid}}}" in warned[0], notices


def test_a_row_held_in_a_late_table_retries_that_table_alone(db, connect):
    """The deletes were tried whole: a row held in the last table made every try redo
    every delete (18 times the work of the erase in 8 s). Each table is tried alone now:
    the documents are deleted once, whatever the tries on the held table."""
    alice = connect("alice")
    for i in range(5):
        alice.execute("SELECT rag.ingest(%s, source => %s)", (f"Document {i} about lanterns.", f"d{i}.md"))
    holder = connect("alice")
    holder.execute("BEGIN")
    holder.execute("DELETE FROM rag.posting_blocks WHERE ctid = (SELECT ctid FROM rag.posting_blocks LIMIT 1)")

    def deleted_documents():
        db.execute("SELECT pg_stat_force_next_flush()")
        db.execute("SELECT pg_stat_clear_snapshot()")
        return db.execute("SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'rag.documents'::regclass").fetchone()[0]
    before = deleted_documents()
    with pytest.raises(psycopg.errors.LockNotAvailable, match=r"in rag\.posting_blocks"):
        erase(db, "alice", patience="2 seconds")
    holder.execute("ROLLBACK")
    assert deleted_documents() - before == 5           # once (whole tries: about 10 times)


def test_detaching_a_table_attached_with_force_needs_its_owner(db, connect):
    """rag.attach(force => true) needs only the right to create triggers; dropping them
    needs the owner: rag.detach failed with Postgres' bare 42501, half-way. Now it says whose
    table it is, and the attachment stays whole."""
    owned_table(db, "bobs", "bob")
    db.execute("GRANT SELECT, TRIGGER ON bobs TO alice")
    alice = connect("alice")
    alice.execute("SELECT rag.attach('bobs', 'body', force => true)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="belongs to role bob"):
        alice.execute("SELECT rag.detach('bobs')")
    assert counts(db, "alice")["rag.attachments"] == 1
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'bobs'::regclass AND NOT tgisinternal").fetchone()[0] > 0
    assert erase(db, "alice")["rag.attachments"] == (1, 0)    # the superuser's erase drops them
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'bobs'::regclass AND NOT tgisinternal").fetchone()[0] == 0


# -- session 38: one loop of DDL in tries (rag._ddl_in_tries) --------------------------------

def test_a_table_and_its_triggers_renamed_while_the_detach_tries_are_still_found(db, connect):
    """The drop's statements were made once, before the tries: the table's owner, holding
    the table, renamed rag's triggers and committed, and each later try named a trigger
    that was gone (42704, the detach failed). The triggers are looked for at each try now,
    by function and attachment id, and the table by its OID."""
    owned_table(db, "notes", "alice")
    db.execute("GRANT CREATE ON SCHEMA public TO alice")                     # to rename her table
    alice = connect("alice")
    alice.execute("SELECT rag.attach('notes', 'body')")
    holder = connect("alice")
    holder.execute("BEGIN")
    holder.execute("ALTER TABLE notes RENAME TO notes_renamed")                # ACCESS EXCLUSIVE, held
    detached, failed = [], []

    def go():
        try:
            detached.append(alice.execute("SELECT rag.detach('notes')").fetchone()[0])
        except psycopg.Error as e:
            failed.append(e)
    detacher = threading.Thread(target=go)
    detacher.start()
    time.sleep(1.0)                                                           # it tries meanwhile
    assert detacher.is_alive()
    for (name,) in holder.execute("""SELECT tgname FROM pg_trigger
                                     WHERE tgrelid = 'notes_renamed'::regclass AND NOT tgisinternal""").fetchall():
        holder.execute(f'ALTER TRIGGER "{name}" ON notes_renamed RENAME TO "x_{name}"')
    holder.execute("COMMIT")
    detacher.join(30)
    assert failed == [] and detached == [True], (failed, detached)
    assert db.execute("""SELECT count(*) FROM pg_trigger
                         WHERE tgrelid = 'notes_renamed'::regclass AND NOT tgisinternal""").fetchone()[0] == 0
    assert counts(db, "alice")["rag.attachments"] == 0


def test_an_owner_giving_rags_trigger_names_to_its_own_keeps_nothing_of_rags(db, connect):
    """Postgres looks a trigger's name up again once it has the lock: the owner, holding its
    table, renamed rag's triggers and gave their names to triggers of its own, committed
    while the erase's DROP TRIGGER waited, and the erase dropped the decoys and left rag's,
    whose attachment it removed: every later write to the table failed (hostile review 38).
    The drops are run until none of rag's is left, the second round reading the names under
    the lock (no LOCK TABLE, which a renamed table could redirect: review 38b)."""
    owned_table(db, "notes", "alice")
    db.execute("CREATE FUNCTION public.decoy() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$")
    alice = connect("alice")
    alice.execute("SET statement_timeout = '30s'")
    alice.execute("SELECT rag.attach('notes', 'body')")
    rags = [r[0] for r in alice.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'notes'::regclass "
        "AND tgfoid = 'rag._attached_changed()'::regprocedure ORDER BY 1").fetchall()]
    assert len(rags) == 4   # INSERT, UPDATE, DELETE, TRUNCATE
    alice.execute("BEGIN")
    for i, name in enumerate(rags):
        alice.execute(f'ALTER TRIGGER "{name}" ON notes RENAME TO kept{i}')
        alice.execute(f'CREATE TRIGGER "{name}" AFTER TRUNCATE ON notes FOR EACH STATEMENT EXECUTE FUNCTION public.decoy()')
    out: dict = {}

    def go():
        try:
            out["rows"] = erase(db, "alice", patience="10 seconds")
        except psycopg.Error as e:
            out["error"] = e
    eraser = threading.Thread(target=go)
    eraser.start()
    watcher = connect("carol")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not watcher.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = 'notes'::regclass AND NOT granted").fetchone()[0]:
        time.sleep(0.002)
    alice.execute("COMMIT")                                   # while the erase waits for the table
    eraser.join(30)
    assert "error" not in out and out["rows"]["rag.attachments"] == (1, 0), out
    left = db.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'notes'::regclass "
                      "AND tgfoid = 'rag._attached_changed()'::regprocedure").fetchall()
    assert left == []                                         # none of rag's (the decoys went first)
    alice.execute("INSERT INTO notes VALUES (50, 'a note after the erase')")   # the table takes writes


def test_the_erase_does_not_lock_an_attached_tables_inheritance_children(db, connect):
    """DROP TRIGGER locks the one table (a first fix of review 38 locked it with LOCK TABLE,
    which takes its inheritance children too, bob's here, read in a transaction of his)."""
    owned_table(db, "notes", "alice")
    connect("alice").execute("SELECT rag.attach('notes', 'body')")
    db.execute("CREATE TABLE bobs_notes () INHERITS (notes)")
    db.execute("ALTER TABLE bobs_notes OWNER TO bob")
    bob = connect("bob")
    bob.execute("BEGIN")
    bob.execute("SELECT count(*) FROM bobs_notes")                  # ACCESS SHARE on his child, held
    assert erase(db, "alice", patience="2 seconds")["rag.attachments"] == (1, 0)
    bob.execute("ROLLBACK")


def test_a_name_given_to_a_view_over_others_tables_while_the_erase_waits_locks_none_of_them(db, connect, dsn):
    """Hostile review 38b: the first fix of 38 ran LOCK TABLE on the attached table's name,
    which Postgres looks up again once it has the lock. The owner, holding the table while
    the erase waited, moved it to another schema of hers and gave its name to a view (security
    invoker) over bob's table, and committed: the superuser's LOCK TABLE took the view, so
    bob's table ACCESS EXCLUSIVE until the erase's end. DROP TRIGGER locks the relation it
    names alone: bob's table is never locked by the erase, and rag's triggers go."""
    db.execute("CREATE SCHEMA app AUTHORIZATION alice")
    db.execute("CREATE SCHEMA hide AUTHORIZATION alice")
    db.execute("CREATE TABLE app.notes (id int PRIMARY KEY, body text)")
    db.execute("ALTER TABLE app.notes OWNER TO alice")
    owned_table(db, "bobs", "bob")
    bobs = db.execute("SELECT 'bobs'::regclass::oid").fetchone()[0]
    notes = db.execute("SELECT 'app.notes'::regclass::oid").fetchone()[0]
    alice = connect("alice")
    alice.execute("SET statement_timeout = '30s'")
    alice.execute("SELECT rag.attach('app.notes', 'body')")
    alice.execute("BEGIN")
    alice.execute("LOCK TABLE app.notes IN ACCESS EXCLUSIVE MODE")
    out: dict = {}
    erase_pid = []

    def go():
        with psycopg.connect(dsn, autocommit=True) as s:
            erase_pid.append(s.info.backend_pid)
            try:
                out["rows"] = {t: (r, k) for t, r, k in s.execute(
                    "SELECT table_name, removed, kept FROM rag.erase_tenant('alice', patience => '10 s')").fetchall()}
            except psycopg.Error as e:
                out["error"] = e
    eraser = threading.Thread(target=go)
    eraser.start()
    watcher = connect("carol")
    waits = "SELECT count(*) FROM pg_locks WHERE relation = %s AND NOT granted"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not watcher.execute(waits, (notes,)).fetchone()[0]:
        time.sleep(0.002)
    alice.execute("ALTER TABLE app.notes SET SCHEMA hide")
    alice.execute("CREATE VIEW app.notes WITH (security_invoker = true) AS SELECT * FROM public.bobs")
    alice.execute("COMMIT")                                         # while the erase waits
    seen = 0
    while eraser.is_alive():
        seen += db.execute("SELECT count(*) FROM pg_locks WHERE relation = %s AND pid = %s",
                           (bobs, erase_pid[0])).fetchone()[0]
        time.sleep(0.005)
    eraser.join(30)
    assert seen == 0                                                # bob's table: never the erase's
    assert "error" not in out and out["rows"]["rag.attachments"] == (1, 0), out
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal",
                      (notes,)).fetchone()[0] == 0
