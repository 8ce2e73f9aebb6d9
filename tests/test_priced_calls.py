"""rag.priced_calls: the server's journal of priced calls (plpy/ragpg/spend.py), which no
rollback undoes, read against the ledger (rag.usage): which calls the ledger lost, by whom,
within a bounded cost (hostile review 36)."""
from __future__ import annotations

import hashlib
import time
from decimal import Decimal

import psycopg
import pytest
from openai_fake import Scenario

JOURNAL_MAX = 8 << 20   # spend.JOURNAL_MAX

# n calls written into a tenant's journal of today as spend._journal writes them (a request
# reserved, then set right) and added to its count, as the superuser: a stand-in for the
# 35,000 priced calls that fill it (about 50 ms each against the fake provider). With cap,
# a garbled line fills what is left up to it.
FILL = r"""
DO $fill$
import datetime, hashlib, json, os, secrets
tenant, role, n, cap, op, model = %(tenant)s, %(role)s, %(n)s, %(cap)s, %(op)s, %(model)s
db = plpy.execute("SELECT oid FROM pg_database WHERE datname = current_database()")[0]["oid"]
day = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
base = os.path.join("ragpg_spend", str(db), day)
os.makedirs(base, mode=0o700, exist_ok=True)
p = os.path.join(base, hashlib.sha256(tenant.encode()).hexdigest())
if not os.path.exists(p):
    with open(p, "w") as f:
        f.write("0".ljust(64))
size = os.path.getsize(p + ".calls") if os.path.exists(p + ".calls") else 0
out, ledger = [], []
now = datetime.datetime.now(datetime.timezone.utc).isoformat()
for i in range(n):
    c = secrets.token_hex(8)
    a = json.dumps({"call": c, "op": op, "model": model, "pid": 1, "role": role, "at": now, "added": "0.001"},
                   separators=(",", ":")) + "\n"
    b = json.dumps({"call": c, "role": role, "at": now, "answered": 1, "cost": "0.005", "in": 5, "out": 0,
                    "added": "0.004"}, separators=(",", ":")) + "\n"
    if cap and size + len(a) + len(b) > cap:
        break
    out.append(a + b)
    ledger.append(c)
    size += len(a) + len(b)
if cap:
    out.append("#" * (cap - size - 1) + "\n")
with open(p + ".calls", "a") as f:
    f.write("".join(out))
with open(p, "r+") as f:
    count = float(f.read().strip() or 0) + 0.005 * len(ledger)
    f.seek(0)
    f.write(str(round(count, 3)).ljust(64))
$fill$ LANGUAGE plpython3u
"""


def _fill(db, tenant: str, n: int, cap: int = 0, role: str | None = None, op: str = "query", model: str = "pemb"):
    db.execute("CREATE EXTENSION IF NOT EXISTS plpython3u")
    db.execute((FILL % {"tenant": repr(tenant), "role": repr(role or tenant), "n": n, "cap": cap, "op": repr(op),
                        "model": repr(model)}).encode())


def _priced_embedder(db, fake_openai, name="pemb"):
    url = fake_openai.add(name, Scenario(dims=3))
    db.execute("SELECT rag.add_model(%s, 'embed', base_url => %s, dimensions => 3, price_input_per_1m => 1000)",
               (name, url))


def _sqlstate(excinfo) -> str:
    return excinfo.value.sqlstate


def test_priced_calls_names_the_calls_the_ledger_lost(db, connect, fake_openai):
    """The count says how much a rollback took from the ledger, not which calls: the
    server also journals each priced call (spend.py), and rag.priced_calls lists them with
    whether rag.usage holds each, so a DBA can name the role whose calls left no row."""
    url = fake_openai.add("pricey", Scenario(chat_text="Refunds take five business days [1].",
                                             usage={"prompt_tokens": 100, "completion_tokens": 10}))
    db.execute("SELECT rag.add_model('pricey', 'chat', base_url => %s, price_input_per_1m => 1000, "
               "price_output_per_1m => 1000)", (url,))
    for source, text in [("refunds.md", "# Refunds\n\nRefunds take five business days.")]:
        db.execute("SELECT rag.ingest(%s, source => %s)", (text, source))
    me = db.execute("SELECT current_user").fetchone()[0]
    ask = "SELECT rag.ask('refunds?', model => 'pricey')"
    db.execute(ask)                                                       # committed
    db.execute("BEGIN")
    db.execute(ask)
    db.execute("ROLLBACK")                                                # rolled back
    with pytest.raises(psycopg.Error):                                    # a statement that fails
        db.execute("DO $$ BEGIN PERFORM rag.ask('refunds?', model => 'pricey'); RAISE EXCEPTION 'no'; END $$")
    calls = "SELECT role_name, operation, model, requests, answered, counted, cost, recorded FROM rag.priced_calls()"
    one = (me, "ask", "pricey", 1, 1, Decimal("0.11"), Decimal("0.11"))
    assert db.execute(calls).fetchall() == [one + (True,), one + (False,), one + (False,)]
    assert db.execute("SELECT sum(counted) FROM rag.priced_calls()").fetchone()[0] == \
        db.execute("SELECT counted FROM rag.budget_today()").fetchone()[0]
    recorded = db.execute("SELECT call_id FROM rag.usage WHERE model = 'pricey'").fetchall()
    assert recorded == db.execute("SELECT call_id FROM rag.priced_calls() WHERE recorded").fetchall()
    # a ledger row written by hand does not make a lost call recorded unless it records it
    # whole (rag_reader may insert rag.usage rows: calls are logged by the caller's transaction)
    lost = db.execute("SELECT call_id FROM rag.priced_calls() WHERE NOT recorded LIMIT 1").fetchone()[0]
    db.execute("INSERT INTO rag.usage (operation, model, provider, calls, input_tokens, output_tokens, cost, call_id) "
               "VALUES ('ask', 'pricey', 'openai', 1, 0, 0, 0, %s)", (lost,))
    assert db.execute("SELECT count(*) FROM rag.priced_calls() WHERE recorded").fetchone()[0] == 1
    # the tenant's own: another tenant's roles see none of them
    assert connect("bob").execute("SELECT count(*) FROM rag.priced_calls()").fetchone()[0] == 0
    # the days kept: today and yesterday
    assert db.execute("SELECT count(*) FROM rag.priced_calls((now() AT TIME ZONE 'UTC')::date - 1)"
                      ).fetchone()[0] == 0
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT * FROM rag.priced_calls((now() AT TIME ZONE 'UTC')::date - 2)")
    assert _sqlstate(e) == "22023" and "is not kept" in str(e.value)


def test_a_ledger_row_records_a_call_only_whole(db, connect, fake_openai):
    """Review 36: a row the call's own role wrote by hand, of another model and operation
    but the call's id, tokens and cost, made a lost call recorded (the ledger's costs per
    model then disagreed). The row must name the same role, operation, model and tokens,
    and at least its cost."""
    _priced_embedder(db, fake_openai)
    carol = connect("carol")
    carol.execute("BEGIN")
    carol.execute("SELECT rag.embed('lost one', 'pemb')")
    carol.execute("ROLLBACK")
    call, op, tin, cost = carol.execute("SELECT call_id, operation, input_tokens, cost FROM rag.priced_calls() "
                                        "WHERE NOT recorded").fetchone()
    insert = ("INSERT INTO rag.usage (operation, model, provider, calls, input_tokens, output_tokens, cost, call_id) "
              "VALUES (%s, %s, 'openai', 1, %s, 0, %s, %s)")
    recorded = "SELECT recorded FROM rag.priced_calls() WHERE call_id = %s"
    carol.execute(insert, ("ingest", "some-other-model", tin, cost, call))
    carol.execute(insert, (op, "pemb", tin + 1, cost, call))              # other tokens
    carol.execute(insert, (op, "pemb", tin, cost / 2, call))              # less than it cost
    assert carol.execute(recorded, (call,)).fetchone()[0] is False
    db.execute("SELECT rag.grant_tenant('dora', 'carol')")
    with connect("dora") as dora:                                         # another role of the tenant: its own row
        dora.execute("SET rag.tenant = 'carol'")
        dora.execute(insert, (op, "pemb", tin, cost, call))
        assert dora.execute("SELECT count(*) FROM rag.priced_calls() WHERE call_id = %s", (call,)).fetchone()[0] == 1
    assert carol.execute(recorded, (call,)).fetchone()[0] is False
    carol.execute(insert, (op, "pemb", tin, cost, call))                  # the call, recorded whole by its role
    assert carol.execute(recorded, (call,)).fetchone()[0] is True


def test_priced_calls_reads_its_day_in_any_datestyle(db, connect):
    """Review 36: the day reached Python in the session's DateStyle ('05/12/2026'), never
    today's: 22023 for every session not in ISO."""
    carol = connect("carol")
    for style in ("SQL, DMY", "German", "Postgres, MDY", "ISO, YMD"):
        carol.execute(f"SET datestyle = '{style}'")
        assert carol.execute("SELECT count(*) FROM rag.priced_calls()").fetchone()[0] == 0, style
        assert carol.execute("SELECT count(*) FROM rag.priced_calls(current_date - 1)").fetchone()[0] == 0, style


def test_calls_past_the_journal_s_cap_are_summed_per_role(db, connect, fake_openai):
    """Review 36: any role of a tenant can fill its journal with cheap priced calls; the
    calls of every role after that were counted and listed nowhere. Past the cap, lines are
    summed per role: the rows without call_id."""
    _priced_embedder(db, fake_openai)
    carol = connect("carol")
    carol.execute("SELECT rag.embed('one', 'pemb')")                     # a real line of carol's
    _fill(db, "alice", 100_000, cap=JOURNAL_MAX, role="carol")            # ... and the rest of her fill
    alice = connect("alice")
    counted0 = alice.execute("SELECT counted FROM rag.budget_today()").fetchone()[0]
    alice.execute("BEGIN")
    alice.execute("SELECT rag.embed('secret question', 'pemb')")
    alice.execute("ROLLBACK")                                             # lost from the ledger
    counted = alice.execute("SELECT counted FROM rag.budget_today()").fetchone()[0]
    past = alice.execute("SELECT role_name, requests, counted, recorded FROM rag.priced_calls() "
                         "WHERE call_id IS NULL").fetchall()
    assert past == [("alice", 1, counted - counted0, None)]
    listed = alice.execute("SELECT count(*), sum(counted) FROM rag.priced_calls()").fetchone()
    assert listed[0] > 15_000 and listed[1] == counted                    # everything counted is shown


def test_priced_calls_on_a_full_journal_is_linear_bounded_and_cancellable(db, connect):
    """Review 36: recorded was a correlated subquery, one scan of the tenant's ledger rows
    per call (a full journal of 127,583 calls with their own rows: ~25 minutes), and a 32 MB
    journal took 564 MB of the backend and 2.4 s to honour a statement_timeout of 800 ms.
    Now one hashed join, a journal of at most 8 MB parsed line by line with interrupt checks."""
    _fill(db, "alice", 100_000, cap=JOURNAL_MAX, role="alice")
    alice = connect("alice")
    # every call with its own ledger row (the normal case): quadratic would take minutes
    alice.execute("INSERT INTO rag.usage (operation, model, provider, input_tokens, output_tokens, cost, call_id) "
                  "SELECT 'query', 'pemb', 'openai', 5, 0, 0.005, call_id FROM rag.priced_calls()")
    pid = alice.execute("SELECT pg_backend_pid()").fetchone()[0]
    before = _peak_kb(db, pid)
    alice.execute("SET statement_timeout = '20s'")
    n, recorded = alice.execute("SELECT count(*), count(*) FILTER (WHERE recorded) FROM rag.priced_calls()").fetchone()
    assert n > 15_000 and recorded == n
    assert _peak_kb(db, pid) - before < 200_000                            # KB: well under 200 MB
    alice.execute("SET statement_timeout = '300ms'")
    t0 = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        alice.execute("SELECT count(*) FROM rag.priced_calls()")
    assert time.monotonic() - t0 < 1.3


def _peak_kb(db, pid: int) -> int:
    status = db.execute("SELECT pg_read_file('/proc/' || %s || '/status')", (pid,)).fetchone()[0]
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def test_a_call_in_flight_at_the_cap_keeps_its_cost_and_its_later_requests_are_summed(db, fake_openai):
    """Review 36b: every later line of a call already in the journal could be written up
    to the hard cap, so one long call (an ingest, one request per chunk) took the whole
    margin, and the calls in flight then lost the line that says what they cost (shown as
    not answered and not recorded though committed). Past the cap a call's requests are
    summed like any other line; only the line that sets it right still goes in."""
    _priced_embedder(db, fake_openai)
    db.execute("SET rag.embedding_model = 'pemb'")
    db.execute("SET rag.provider_batch_size = 1")                        # a request per chunk
    me, tenant = db.execute("SELECT current_user, rag.current_tenant()").fetchone()
    _fill(db, tenant, 100_000, cap=JOURNAL_MAX - 200, role="someone")   # room for one request's line
    text = "# Tides\n\n" + "\n\n".join(" ".join(f"Pier {i} sees the ferry {j} leave when the tide turns."
                                                 for j in range(25)) for i in range(8))
    db.execute("SELECT rag.ingest(%s, source => 'tides.md')", (text,))
    ours = db.execute("SELECT requests, answered, recorded FROM rag.priced_calls() "
                      "WHERE role_name = current_user AND call_id IS NOT NULL").fetchall()
    chunks = db.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
    assert chunks >= 3 and ours == [(1, chunks, True)]                   # in flight at the cap: whole
    summed = db.execute("SELECT requests, recorded FROM rag.priced_calls() "
                        "WHERE role_name = current_user AND call_id IS NULL").fetchall()
    assert len(summed) == 1 and summed[0][0] >= chunks - 1 and summed[0][1] is None
    # the audit query shows what it cannot name (recorded NULL), and every row adds up to the count
    assert db.execute("SELECT count(*) FROM rag.priced_calls() WHERE recorded IS NOT TRUE "
                      "AND role_name = current_user").fetchone()[0] == 1
    assert db.execute("SELECT sum(counted) FROM rag.priced_calls()").fetchone()[0] == \
        db.execute("SELECT counted FROM rag.budget_today()").fetchone()[0]
    size = db.execute("SELECT (pg_stat_file(%s)).size", (_journal_file(db, tenant),)).fetchone()[0]
    assert JOURNAL_MAX - 200 < size < JOURNAL_MAX + 1000                 # one request's line and one call's


def test_a_price_float8_would_round_still_matches_the_ledger(db, connect, fake_openai):
    """Review 36b: the journal's cost came from the price as float8 (100/7 rounds up), the
    ledger's from numeric: every committed call of such a model showed as not recorded."""
    url = fake_openai.add("pthird", Scenario(dims=3))
    db.execute("SELECT rag.add_model('pthird', 'embed', base_url => %s, dimensions => 3, "
               "price_input_per_1m => 100.0 / 7)", (url,))
    carol = connect("carol")
    carol.execute("SELECT rag.embed('one committed call', 'pthird')")
    carol.execute("SELECT rag.embed('and another, somewhat longer, committed call', 'pthird')")
    assert carol.execute("SELECT count(*), bool_and(recorded) FROM rag.priced_calls()").fetchone() == (2, True)


def _journal_file(db, tenant: str) -> str:
    oid = db.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    day = db.execute("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')").fetchone()[0]
    return f"ragpg_spend/{oid}/{day}/{hashlib.sha256(tenant.encode()).hexdigest()}.calls"


def test_a_count_the_server_cannot_read_is_a_named_error(db, connect):
    """rag.spent_today() and rag.budget_today() read the server's count: a directory the
    server cannot read (a wrong mount, a DBA's chmod) was SQLSTATE 38000 with a Python
    class name in the message; now 58030 naming the tenant, as for rag.priced_calls and a
    priced call (which is not made)."""
    db.execute("CREATE EXTENSION IF NOT EXISTS plpython3u")
    carol = connect("carol")
    assert carol.execute("SELECT rag.spent_today()").fetchone()[0] == 0
    chmod = """DO $x$
import os
oid = plpy.execute("SELECT oid FROM pg_database WHERE datname = current_database()")[0]["oid"]
os.makedirs(f"ragpg_spend/{oid}", exist_ok=True)
os.chmod(f"ragpg_spend/{oid}", %s)
$x$ LANGUAGE plpython3u"""
    db.execute(chmod % "0")
    try:
        for q in ["SELECT rag.spent_today()", "SELECT * FROM rag.budget_today()", "SELECT * FROM rag.priced_calls()"]:
            with pytest.raises(psycopg.Error) as e:
                carol.execute(q)
            assert _sqlstate(e) == "58030" and str(e.value).startswith("rag: ") and "'carol'" in str(e.value), q
            assert "/" not in e.value.diag.message_primary and "Permission denied" in str(e.value)   # no path
    finally:
        db.execute(chmod % "0o700")
    assert carol.execute("SELECT rag.spent_today()").fetchone()[0] == 0
