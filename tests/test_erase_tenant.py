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
    started = time.monotonic()
    with pytest.raises(psycopg.errors.LockNotAvailable, match="notes_alice"):
        erase(db, "alice", patience="1 second")
    assert time.monotonic() - started < 10
    assert counts(db, "alice")["rag.documents"] == 4
    alice.execute("ROLLBACK")
    assert erase(db, "alice")["rag.documents"] == (4, 0)
