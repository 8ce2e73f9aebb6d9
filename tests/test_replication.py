"""Read scale-out and failover: a primary and a hot standby (two containers of our image,
streaming replication on loopback). Search and ask run on the standby; the primary is
killed hard, the standby promoted, and no acknowledged document is lost (synchronous
replication on)."""
from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest
from conftest import IMAGE, free_port, start_server
from openai_fake import Scenario
from testcontainers.core.container import DockerContainer


def _wait(fn, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if fn():
                return
        except psycopg.Error as e:
            last = e
        time.sleep(0.3)
    raise TimeoutError(f"{what} not reached in {timeout:.0f} s ({last})")


@pytest.fixture
def pair():
    """(primary url, standby url, primary container, standby container)."""
    s_port = free_port()
    primary = start_server("app")
    p_port = primary.port
    standby = None
    try:
        p_url = primary.get_connection_url()
        with psycopg.connect(p_url, autocommit=True) as c:
            c.execute("CREATE ROLE replicator REPLICATION LOGIN PASSWORD 'replicator'")
            c.execute("CREATE EXTENSION rag CASCADE")
        standby = DockerContainer(IMAGE)
        standby.with_kwargs(network_mode="host")
        standby.with_env("PGPORT", str(s_port)).with_env("PGDATA", "/var/lib/postgresql/data")
        standby.with_env("RAGPG_PRIMARY_CONNINFO",
                         f"host=127.0.0.1 port={p_port} user=replicator password=replicator")
        standby.with_command("postgres -c listen_addresses=127.0.0.1")
        standby.start()
        s_url = f"postgresql://tester:tester@127.0.0.1:{s_port}/app"
        _wait(lambda: psycopg.connect(s_url).close() or True, 120, "standby accepting connections")
        with psycopg.connect(p_url, autocommit=True) as c:
            # synchronous from now on: a commit returns once the standby has the WAL on disk
            c.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            c.execute("SELECT pg_reload_conf()")
            _wait(lambda: c.execute("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
                                    ).fetchone()[0] == 1, 30, "a synchronous standby")
        yield p_url, s_url, primary, standby
    finally:
        for c in (standby, primary):
            if c is not None:
                try:
                    c.stop()
                except Exception:
                    pass


def _replayed(p_url, s_url):
    with psycopg.connect(p_url, autocommit=True) as p, psycopg.connect(s_url, autocommit=True) as s:
        lsn = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        _wait(lambda: s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0], 30,
              "standby replay")


def test_search_and_ask_on_a_standby_then_failover_loses_nothing(pair, fake_openai):
    p_url, s_url, primary, standby = pair
    acked = []
    url = fake_openai.add("pricey", Scenario(chat_text="Every 9 seconds [1].",
                                             usage={"prompt_tokens": 100, "completion_tokens": 10}))
    with psycopg.connect(p_url, autocommit=True) as p:
        p.execute("SELECT rag.add_model('pricey', 'chat', base_url => %s, price_input_per_1m => 1000, "
                  "price_output_per_1m => 1000)", (url,))
        p.execute("SELECT rag.configure('daily_budget', '0.3')")
        for i in range(20):
            p.execute("SELECT rag.ingest(%s, source => %s)",
                      (f"# Lighthouse {i}\n\nLighthouse {i} flashes every {i + 2} seconds over the bay.", f"lh{i}.md"))
            acked.append(f"lh{i}.md")  # the commit returned: acknowledged
    _replayed(p_url, s_url)

    with psycopg.connect(s_url, autocommit=True) as s:
        assert s.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        hits = s.execute("SELECT d.source FROM rag.search('lighthouse 7 flashes', 3) AS r "
                         "JOIN rag.documents AS d ON d.id = r.document_id").fetchall()
        assert ("lh7.md",) in hits
        out = s.execute("SELECT rag.ask('How often does lighthouse 7 flash?')").fetchone()[0]
        assert out["citations"] and out["answer_id"] is None  # answered; not stored on a standby
        st = s.execute("SELECT rag.backend_stats()").fetchone()[0]
        assert st["writes_skipped_read_only"] >= 2  # the answer and the usage rows, skipped and counted
        with pytest.raises(psycopg.Error) as e:
            s.execute("SELECT rag.ingest('x', source => 'x.md')")
        assert e.value.sqlstate == "25006"  # read_only_sql_transaction: writes go to the primary
        # priced calls on a standby leave no ledger row (nothing can be written there), and
        # are counted against the budget by the standby itself (0.6.0; uncapped before)
        for _ in range(3):
            s.execute("SELECT rag.ask('How often does lighthouse 7 flash?', model => 'pricey')")
        with pytest.raises(psycopg.Error) as e:
            s.execute("SELECT rag.ask('How often does lighthouse 7 flash?', model => 'pricey')")
        assert e.value.sqlstate == "53400" and len(fake_openai.requests["pricey"]) == 3
        assert s.execute("SELECT recorded, counted FROM rag.budget_today()").fetchone() == (0, Decimal("0.33"))
        # which calls they were: the standby's journal (it has no ledger)
        assert s.execute("SELECT count(*), sum(counted), bool_or(recorded) FROM rag.priced_calls()").fetchone() == \
            (3, Decimal("0.33"), False)
    with psycopg.connect(p_url, autocommit=True) as p:   # the primary's count is its own
        assert p.execute("SELECT counted FROM rag.budget_today()").fetchone()[0] == 0
        assert p.execute("SELECT count(*) FROM rag.priced_calls()").fetchone()[0] == 0

    # the primary dies hard (SIGKILL, no shutdown checkpoint); the standby is promoted
    primary.get_wrapped_container().kill()
    with psycopg.connect(s_url, autocommit=True) as s:
        assert s.execute("SELECT pg_promote(wait => true, wait_seconds => 30)").fetchone()[0] is True
        got = {r[0] for r in s.execute("SELECT source FROM rag.documents")}
        assert set(acked) <= got                      # no acknowledged document lost
        assert s.execute("SELECT count(*) FROM rag.chunks").fetchone()[0] >= 20
        # and it goes on: ingest and ask on the new primary
        s.execute("SELECT rag.ingest('# Foghorn\n\nThe foghorn sounds twice a minute in fog.', source => 'fog.md')")
        out = s.execute("SELECT rag.ask('How often does the foghorn sound?')").fetchone()[0]
        assert out["answer_id"] is not None and out["citations"][0]["source"] == "fog.md"
