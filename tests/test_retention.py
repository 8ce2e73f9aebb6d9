"""Retention of the ledger (sql/idempotent/650-retention.sql): rag.purge_ledger removes the
answers older than rag.answer_retention and sums the usage rows older than
rag.usage_retention into rag.usage_history, so that the totals people read stay the same."""
from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest

# (tenant, days ago, model, operation, calls, input tokens, output tokens, cost): priced calls
# as a remote provider logs them, on days that a 30-day retention keeps or removes
PRICED = [
    ("alice", 45, "gpt-x", "ask", 1, 900, 120, "0.0031"),
    ("alice", 45, "gpt-x", "ask", 2, 1800, 260, "0.0066"),
    ("alice", 40, "gpt-x", "ask", 1, 700, 90, "0.0024"),
    ("alice", 40, "emb-x", "index", 3, 5000, 0, "0.0005"),
    ("bob", 45, "gpt-x", "ask", 1, 400, 80, "0.0015"),
    ("bob", 2, "gpt-x", "ask", 1, 500, 70, "0.0017"),
    ("alice", 0, "gpt-x", "ask", 1, 650, 75, "0.0021"),
]


def _ledger(db, connect) -> dict:
    """alice and bob ingest, search and ask (real rows of the local model and the extractive
    answerer), the priced calls above are added, and half the answers are 40 days old."""
    for role in ("alice", "bob"):
        c = connect(role)
        c.execute("SELECT rag.ingest(%s, %s)", (f"# {role}'s notes\n\nThe ferry to the island leaves at seven. "
                                                 f"Tickets are sold on board by {role}.", f"{role}.md"))
        for q in ("When does the ferry leave?", "Where are tickets sold?"):
            c.execute("SELECT count(*) FROM rag.search(%s)", (q,))
            c.execute("SELECT rag.ask(%s)", (q,))
    db.cursor().executemany("INSERT INTO rag.usage (tenant, at, model, provider, operation, calls, input_tokens, output_tokens, "
                   "cost) VALUES (%s, now() - make_interval(days => %s), %s, 'openai', %s, %s, %s, %s, %s)", PRICED)
    db.execute("UPDATE rag.usage SET at = at - interval '40 days' WHERE provider = 'local' AND id % 2 = 0")
    db.execute("UPDATE rag.answers SET at = at - interval '40 days' WHERE id % 2 = 0")
    return _totals(db)


def _totals(db) -> dict:
    return {
        "daily": sorted(db.execute("SELECT day, tenant, model, operation, calls, input_tokens, output_tokens, cost "
                                   "FROM rag.usage_daily").fetchall()),
        "by_model": sorted(db.execute("SELECT model, calls, input_tokens, output_tokens, cost "
                                      "FROM rag.cost_by_model").fetchall()),
    }


def test_the_purge_sums_old_usage_into_history_and_the_totals_stay(db, connect):
    before = _ledger(db, connect)
    old_usage = db.execute("SELECT count(*) FROM rag.usage WHERE at < now() - interval '30 days'").fetchone()[0]
    kept_usage = db.execute("SELECT array_agg(id ORDER BY id) FROM rag.usage "
                            "WHERE at >= now() - interval '30 days'").fetchone()[0]
    old_answers = db.execute("SELECT count(*) FROM rag.answers WHERE at < now() - interval '30 days'").fetchone()[0]
    kept_answers = db.execute("SELECT array_agg(id ORDER BY id) FROM rag.answers "
                              "WHERE at >= now() - interval '30 days'").fetchone()[0]
    assert old_usage >= 7 and len(kept_usage) >= 4 and old_answers >= 2 and len(kept_answers) >= 2
    spent = {t: connect(t).execute("SELECT rag.spent_today()").fetchone()[0] for t in ("alice", "bob")}
    assert spent["alice"] > 0

    admin = connect("dora")
    admin.execute("SELECT rag.configure('usage_retention', '30 days')")
    admin.execute("SELECT rag.configure('answer_retention', ' 30 days ')")
    # three rows a transaction: several batches, each committed
    assert db.execute("CALL rag.purge_ledger(batch_rows => 3)").fetchone() == (old_answers, old_usage)

    assert db.execute("SELECT array_agg(id ORDER BY id) FROM rag.usage").fetchone()[0] == kept_usage
    assert db.execute("SELECT array_agg(id ORDER BY id) FROM rag.answers").fetchone()[0] == kept_answers
    assert _totals(db) == before                     # every day's calls, tokens and cost, every model's
    # alice's two priced ask rows of 45 days ago are one history row
    assert db.execute("SELECT calls, input_tokens, output_tokens, cost FROM rag.usage_history "
                      "WHERE tenant = 'alice' AND model = 'gpt-x' "
                      "AND day = ((now() - interval '45 days') AT TIME ZONE 'UTC')::date").fetchone() \
        == (3, 2700, 380, Decimal("0.0097"))
    assert {t: connect(t).execute("SELECT rag.spent_today()").fetchone()[0] for t in ("alice", "bob")} == spent

    # again: nothing is old any more, and nothing is counted twice
    assert db.execute("CALL rag.purge_ledger()").fetchone() == (0, 0)
    assert _totals(db) == before

    # a tenant reads its own history only (row-level security), through the views too
    bob = connect("bob")
    assert {r[0] for r in bob.execute("SELECT tenant FROM rag.usage_history")} == {"bob"}
    assert {r[0] for r in bob.execute("SELECT tenant FROM rag.usage_daily")} == {"bob"}
    assert connect("carol").execute("SELECT count(*) FROM rag.usage_history").fetchone()[0] == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        bob.execute("INSERT INTO rag.usage_history VALUES ('bob', current_date, 'm', 'p', 'ask', 1, 1, 1, 0)")


def test_without_retention_settings_nothing_is_removed(db, connect):
    before = _ledger(db, connect)
    rows = db.execute("SELECT (SELECT count(*) FROM rag.usage), (SELECT count(*) FROM rag.answers)").fetchone()
    assert db.execute("CALL rag.purge_ledger()").fetchone() == (0, 0)
    assert db.execute("SELECT (SELECT count(*) FROM rag.usage), (SELECT count(*) FROM rag.answers)").fetchone() == rows
    assert db.execute("SELECT count(*) FROM rag.usage_history").fetchone()[0] == 0
    assert _totals(db) == before


@pytest.mark.parametrize("setting,value,says", [
    ("usage_retention", "2 hours", "from 1 day to 1000 years"),     # today's calls are the budget's measure
    ("usage_retention", "banana", "got 'banana'"),
    ("answer_retention", "-1 day", "from 1 hour to 1000 years"),
    ("answer_retention", "100000 years", "got '100000 years'"),
])
def test_a_bad_retention_is_refused_by_name(db, connect, setting, value, says):
    _ledger(db, connect)
    rows = db.execute("SELECT (SELECT count(*) FROM rag.usage), (SELECT count(*) FROM rag.answers)").fetchone()
    with pytest.raises(psycopg.Error) as exc:
        connect("dora").execute("SELECT rag.configure(%s, %s)", (setting, value))
    assert exc.value.sqlstate == "22023"
    assert f"rag.configure: setting rag.{setting} must be empty (kept for good) or an interval" in str(exc.value)
    assert says in str(exc.value)
    # a session's own setting is checked where the purge reads it, before anything goes
    db.execute("SELECT set_config(%s, %s, false)", (f"rag.{setting}", value))
    with pytest.raises(psycopg.Error) as exc:
        db.execute("CALL rag.purge_ledger()")
    assert exc.value.sqlstate == "22023" and f"rag.purge_ledger: setting rag.{setting}" in str(exc.value)
    assert db.execute("SELECT (SELECT count(*) FROM rag.usage), (SELECT count(*) FROM rag.answers)").fetchone() == rows


def test_only_a_superuser_purges_and_only_outside_a_transaction_block(db, connect):
    _ledger(db, connect)
    db.execute("SELECT rag.configure('answer_retention', '30 days')")
    rows = db.execute("SELECT (SELECT count(*) FROM rag.usage), (SELECT count(*) FROM rag.answers)").fetchone()
    for role in ("dora", "alice", "carol"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connect(role).execute("CALL rag.purge_ledger()")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        connect("dora").execute("SELECT rag.schedule_ledger_purge()")
    # (an admin granted the internal batch function still cannot use it: it checks too)
    db.execute("GRANT EXECUTE ON FUNCTION rag._purge_ledger_batch(text, bigint, timestamptz, int) TO rag_admin")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
        connect("dora").execute("SELECT * FROM rag._purge_ledger_batch('answers', 0, now(), 100)")
    assert "needs a superuser" in str(exc.value)
    # it commits each batch: in a transaction block it fails before anything is removed for good
    with pytest.raises(psycopg.errors.InvalidTransactionTermination):
        with db.transaction():
            db.execute("CALL rag.purge_ledger()")
    assert db.execute("SELECT (SELECT count(*) FROM rag.usage), (SELECT count(*) FROM rag.answers)").fetchone() == rows
    with pytest.raises(psycopg.Error) as exc:
        db.execute("CALL rag.purge_ledger(batch_rows => 0)")
    assert exc.value.sqlstate == "22023" and "batch_rows must be >= 1" in str(exc.value)


# -- rag.forget_answers (0.7.0): an answer goes with the chunks it retrieved -----------------

FERRY = "# Ferry\n\nThe ferry to the island leaves at seven. Tickets are sold on board."
BAKERY = "# Bakery\n\nThe bakery on the harbour opens at six and sells rye bread."


def _ask(c, question: str, k: int = 1) -> tuple[int, list[int]]:
    """An answer's id and the chunks it retrieved, as rag.answers holds them."""
    answer_id = int(c.execute("SELECT rag.ask(%s, k => %s)->>'answer_id'", (question, k)).fetchone()[0])
    got = c.execute("SELECT retrieved_chunk_ids FROM rag.answers WHERE id = %s", (answer_id,)).fetchone()[0]
    return answer_id, got


def _chunks_of(c, source: str) -> set[int]:
    return {r[0] for r in c.execute("SELECT c.id FROM rag.chunks AS c JOIN rag.documents AS d ON d.id = c.document_id "
                                    "WHERE d.source = %s", (source,)).fetchall()}


def _both_asked(connect) -> tuple:
    """alice and bob each hold ferry.md and bakery.md; alice asks about both, bob about the
    ferry. Returns alice, bob and their three answers (id, retrieved chunks) in that order."""
    alice, bob = connect("alice"), connect("bob")
    for c in (alice, bob):
        c.execute("SELECT rag.ingest(%s, source => 'ferry.md')", (FERRY,))
        c.execute("SELECT rag.ingest(%s, source => 'bakery.md')", (BAKERY,))
    return alice, bob, (_ask(alice, "When does the ferry to the island leave?"),
                        _ask(alice, "When does the bakery open?"),
                        _ask(bob, "When does the ferry to the island leave?"))


def _answers(db) -> set[int]:
    return {r[0] for r in db.execute("SELECT id FROM rag.answers").fetchall()}


def test_with_forget_answers_on_a_deleted_or_changed_document_takes_its_answers_along(db, connect):
    db.execute("SELECT rag.configure('forget_answers', 'on')")
    alice, _, asked = _both_asked(connect)
    (ferry_a, ferry_a_chunks), (bakery_a, bakery_a_chunks), (ferry_b, _) = asked
    assert set(ferry_a_chunks) <= _chunks_of(alice, "ferry.md") and ferry_a_chunks
    assert not set(bakery_a_chunks) & _chunks_of(alice, "ferry.md") and bakery_a_chunks
    # a session cannot keep them (the setting is the database's)
    alice.execute("SET rag.forget_answers = off")
    assert alice.execute("SELECT value FROM rag.settings() WHERE name = 'forget_answers'").fetchone()[0] == "on"
    alice.execute("DELETE FROM rag.documents WHERE source = 'ferry.md'")
    assert _answers(db) == {bakery_a, ferry_b}          # bob's answer to the same question stays
    # a changed text is chunked again: the answers of its old chunks go
    alice.execute("SELECT rag.ingest(%s, source => 'bakery.md')", (BAKERY.replace("six", "five"),))
    assert _answers(db) == {ferry_b}
    # the same text again changes nothing
    kept, _ = _ask(alice, "When does the bakery open?")
    alice.execute("SELECT rag.ingest(%s, source => 'bakery.md')", (BAKERY.replace("six", "five"),))
    assert _answers(db) == {ferry_b, kept}


def test_with_forget_answers_off_answers_stay_and_a_session_cannot_turn_it_on(db, connect):
    alice = connect("alice")
    alice.execute("SELECT rag.ingest(%s, source => 'ferry.md')", (FERRY,))
    answer, chunks = _ask(alice, "When does the ferry to the island leave?")
    assert chunks
    alice.execute("SET rag.forget_answers = on")
    alice.execute("DELETE FROM rag.documents WHERE source = 'ferry.md'")
    assert _answers(db) == {answer}
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="forget_answers must be on or off"):
        db.execute("SELECT rag.configure('forget_answers', 'sometimes')")


def test_a_row_of_rag_config_written_by_hand_is_checked_and_a_bad_stored_one_is_named(db, connect):
    """rag_admin may write rag.config directly, not only through rag.configure: a row is
    checked as rag.configure checks a value (session 38's reread: a hand-written 'maybe' made
    every ask and every chunk delete fail with Postgres' bare 22P02, naming neither the
    setting nor the table). A value stored before the check (a superuser's restore writes
    rows as dumped) is named by its readers, and nothing is half-done."""
    dora = connect("dora")
    for sql in ("INSERT INTO rag.config (name, value) VALUES ('forget_answers', 'sometimes')",
                "INSERT INTO rag.config (name, value) VALUES ('max_k', 'many')"):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"^rag\.config: setting rag\.\w+ must be"):
            dora.execute(sql)
    with pytest.raises(psycopg.errors.UndefinedObject, match="rag.config: unknown setting 'forget_answer'"):
        dora.execute("INSERT INTO rag.config (name, value) VALUES ('forget_answer', 'on')")
    dora.execute("INSERT INTO rag.config (name, value) VALUES ('forget_answers', ' on ')")
    assert db.execute("SELECT value FROM rag.config WHERE name = 'forget_answers'").fetchone()[0] == "on"
    with pytest.raises(psycopg.errors.InvalidParameterValue,
                       match="rag.config: setting rag.forget_answers must be on or off, got 'maybe'"):
        dora.execute("UPDATE rag.config SET value = 'maybe' WHERE name = 'forget_answers'")
    alice = connect("alice")
    alice.execute("SELECT rag.ingest(%s, source => 'ferry.md')", (FERRY,))
    _ask(alice, "When does the ferry to the island leave?")
    # the restore's settings (rag._restoring): rows are stored as they come
    db.execute("SET row_security = off")
    db.execute("SET check_function_bodies = off")
    db.execute("UPDATE rag.config SET value = 'maybe' WHERE name = 'forget_answers'")
    db.execute("RESET row_security")
    db.execute("RESET check_function_bodies")
    before = _answers(db)
    for sql in ("SELECT rag.ask('When does the ferry to the island leave?')",
                "DELETE FROM rag.documents WHERE source = 'ferry.md'"):
        with pytest.raises(psycopg.errors.InvalidParameterValue,
                           match="rag.forget_answers must be on or off, got 'maybe'") as exc:
            alice.execute(sql)
        assert "rag.configure('forget_answers', 'off')" in exc.value.diag.message_hint
    assert _answers(db) == before and _chunks_of(alice, "ferry.md")
    assert alice.execute("SELECT value FROM rag.settings() WHERE name = 'forget_answers'").fetchone()[0] == "maybe"
    dora.execute("SELECT rag.configure('forget_answers', 'off')")
    alice.execute("DELETE FROM rag.documents WHERE source = 'ferry.md'")
    assert _answers(db) == before


def test_an_attached_row_deleted_or_its_table_detached_takes_its_answers_along(db, connect):
    db.execute("SELECT rag.configure('forget_answers', 'on')")
    db.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    db.execute("ALTER TABLE notes OWNER TO alice")
    alice = connect("alice")
    alice.execute("SELECT rag.attach('notes', 'body')")
    alice.execute("INSERT INTO notes VALUES (1, %s), (2, %s)", (FERRY, BAKERY))
    ferry, chunks = _ask(alice, "When does the ferry to the island leave?")
    bakery, _ = _ask(alice, "When does the bakery open?")
    assert chunks
    alice.execute("DELETE FROM notes WHERE id = 1")
    assert _answers(db) == {bakery}
    alice.execute("SELECT rag.detach('notes')")
    assert _answers(db) == set()


def test_no_writer_or_reader_deletes_answers_and_the_trigger_keeps_to_the_chunks_tenant(db, connect):
    """The trigger deletes as the extension's owner (hostile review 38: under row-level
    security its index could not be used, and writers needed DELETE on the answer log, with
    the setting off too): no writer or reader may delete answers. An answer row a reader
    writes naming another tenant's chunks goes only with its own tenant's chunks: bob's
    delete does not reach carol's row."""
    db.execute("SELECT rag.configure('forget_answers', 'on')")
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    for c in (alice, bob):
        c.execute("SELECT rag.ingest(%s, source => 'ferry.md')", (FERRY,))
    a, _ = _ask(alice, "When does the ferry to the island leave?")
    b, _ = _ask(bob, "When does the ferry to the island leave?")
    bobs = sorted(_chunks_of(db, "ferry.md") - _chunks_of(alice, "ferry.md"))
    carol.execute("""INSERT INTO rag.answers (question, answer, model, mode, retrieved_chunk_ids, latency_ms)
                     VALUES ('q', 'a', 'm', 'extractive', %s, 1)""", (bobs,))
    planted = _answers(db) - {a, b}
    for c in (alice, carol):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DELETE FROM rag.answers")
    bob.execute("DELETE FROM rag.documents WHERE source = 'ferry.md'")
    assert _answers(db) == {a} | planted
    # and nobody may hang the trigger's function on a table of its own
    alice.execute("CREATE TEMP TABLE fake (tenant text, id bigint)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute("CREATE TRIGGER f AFTER DELETE ON fake REFERENCING OLD TABLE AS old_rows "
                      "FOR EACH STATEMENT EXECUTE FUNCTION rag._chunks_forget_answers()")


def test_the_stale_answers_sweep_removes_what_the_trigger_could_not_see(db, connect):
    """Chunks deleted before the setting was on leave answers naming chunks that no longer
    exist: the superuser's sweep removes them, of every tenant; no one else may run it."""
    alice, bob, asked = _both_asked(connect)
    carol = connect("carol")
    (ferry_a, _), (bakery_a, _), (ferry_b, _) = asked
    for c in (alice, bob):
        c.execute("DELETE FROM rag.documents WHERE source = 'ferry.md'")   # forget_answers off
    assert _answers(db) == {ferry_a, bakery_a, ferry_b}
    for c in (alice, carol, connect("dora")):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT rag.forget_stale_answers()")
    assert db.execute("SELECT rag.forget_stale_answers()").fetchone()[0] == 2
    assert _answers(db) == {bakery_a}
    assert db.execute("SELECT rag.forget_stale_answers()").fetchone()[0] == 0


def test_an_answer_whose_chunks_were_deleted_while_it_was_written_is_not_logged(db, connect):
    """rag.ask_stream retrieves, then writes for a while, and logs its answer at the end: a
    delete of its document committed meanwhile (the trigger saw no answer yet) made the
    answer logged after it name the deleted chunks (hostile review 38). It is not logged now
    (answer_id NULL); the stream itself ends as it would."""
    db.execute("SELECT rag.configure('forget_answers', 'on')")
    alice, asker = connect("alice"), connect("alice")
    alice.execute("SELECT rag.ingest(%s, source => 'ferry.md')", (FERRY,))
    asker.execute("BEGIN")
    asker.execute("DECLARE a NO SCROLL CURSOR FOR SELECT (s).* FROM "
                  "(SELECT rag.ask_stream('When does the ferry to the island leave?', k => 1) AS s) AS q")
    assert asker.execute("FETCH 1 FROM a").fetchone()[1]                     # a piece of the answer
    alice.execute("SET statement_timeout = '10s'")
    alice.execute("DELETE FROM rag.documents WHERE source = 'ferry.md'")     # does not wait for the ask
    last = asker.execute("FETCH ALL FROM a").fetchall()[-1]
    asker.execute("COMMIT")
    assert last[1] is None and last[-1] is None, last                       # the end row, no answer_id
    assert _answers(db) == set()
    # with the document in place the same stream is logged
    alice.execute("SELECT rag.ingest(%s, source => 'ferry.md')", (FERRY,))
    rows = asker.execute("SELECT (s).* FROM (SELECT rag.ask_stream('When does the ferry to the island leave?', "
                         "k => 1) AS s) AS q").fetchall()
    assert rows[-1][-1] is not None and _answers(db) == {rows[-1][-1]}


def test_a_writers_delete_finds_the_answers_through_the_gin_index_alone(db, connect):
    """Under row-level security && could not use the index (it is not leakproof): a writer's
    delete compared every answer of its tenant with every deleted id (hostile review 38: a
    20,000-chunk document beside 200,000 answers, ~55 s; a reader's planted arrays of a
    million ids made every delete slow); run as the owner, the planner still read the
    tenant's answers by (tenant, at) for a 1,000-id slice. The trigger reads rag.answers
    through answers_retrieved only: no other scan of it for alice's delete of a document of
    1,500 chunks (written by the superuser, to spare the embeddings)."""
    db.execute("SELECT rag.configure('forget_answers', 'on')")
    alice = connect("alice")
    alice.execute("SELECT rag.ingest(%s, source => 'ferry.md')", (FERRY,))
    _ask(alice, "When does the ferry to the island leave?")
    db.execute("""INSERT INTO rag.chunks (tenant, document_id, ord, content, tokens, content_hash, model, embedding)
                  SELECT 'alice', d.id, g + 100, 'word' || g, 1, sha256(('w' || g)::bytea), c.model, c.embedding
                  FROM rag.documents AS d, rag.chunks AS c, generate_series(1, 1500) AS g
                  WHERE d.source = 'ferry.md' AND c.document_id = d.id AND c.ord = 0""")
    db.execute("""INSERT INTO rag.answers (tenant, question, answer, model, mode, retrieved_chunk_ids, latency_ms)
                  SELECT 'alice', 'q', 'a', 'm', 'extractive', ARRAY(SELECT -g * 8 - i FROM generate_series(1, 8) AS i), 1
                  FROM generate_series(1, 20000) AS g""")
    db.execute("ANALYZE rag.answers")

    def scans() -> tuple:
        db.execute("SELECT pg_stat_clear_snapshot()")
        return db.execute("SELECT (SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'rag.answers'::regclass), "
                          "(SELECT array_agg(idx_scan ORDER BY indexrelname) FROM pg_stat_user_indexes "
                          " WHERE relid = 'rag.answers'::regclass AND indexrelname <> 'answers_retrieved'), "
                          "(SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelid = 'rag.answers_retrieved'::regclass)"
                          ).fetchone()
    alice.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(1.5)
    before = scans()
    alice.execute("DELETE FROM rag.documents WHERE source = 'ferry.md'")
    alice.execute("SELECT pg_stat_force_next_flush()")
    for _ in range(50):
        after = scans()
        if after[2] > before[2]:
            break
        time.sleep(0.1)
    assert after[2] >= before[2] + 2 and after[:2] == before[:2], (before, after)   # two slices, nothing else
    assert db.execute("SELECT count(*) FROM rag.answers").fetchone()[0] == 20000
