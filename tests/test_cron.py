"""Workers on a schedule with pg_cron (installed and preloaded in our image)."""
from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest
from conftest import start_server


def test_without_pg_cron_the_error_says_what_to_do(db):
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.schedule_worker()")
    assert exc.value.sqlstate == "55000" and "pg_cron is not installed" in str(exc.value)
    assert "ragpg worker" in exc.value.diag.message_hint
    assert db.execute("SELECT rag.unschedule_worker()").fetchone()[0] is False


def test_a_cron_job_drains_the_queue(server_url):
    # pg_cron lives in the image's own database (cron.database_name), not in the test copies
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS rag CASCADE")
        db.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        db.execute("CREATE TABLE cron_docs (id int PRIMARY KEY, body text)")
        try:
            db.execute("INSERT INTO cron_docs SELECT i, 'Scheduled row ' || i || ' about lighthouses.' "
                       "FROM generate_series(1, 20) i")
            db.execute("SELECT rag.attach('cron_docs', 'body', mode => 'async')")
            assert db.execute("SELECT pending FROM rag.queue_status").fetchone()[0] == 20
            job = db.execute("SELECT rag.schedule_worker('* * * * *')").fetchone()[0]
            assert db.execute("SELECT command FROM cron.job WHERE jobid = %s", (job,)).fetchone()[0] \
                == "CALL rag.work(max_batches => 10)"
            deadline = time.monotonic() + 150  # cron runs every minute (two minute-starts: _first_run)
            while time.monotonic() < deadline:
                if db.execute("SELECT count(*) FROM rag.queue").fetchone()[0] == 0:
                    break
                time.sleep(2)
            assert db.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 20
            # the queue empties before rag.work returns (it commits each batch, then runs its window
            # pass), so the run's status is read once pg_cron has recorded its end
            run = _first_run(db, job, 60)
            assert run is not None and run[0] == "succeeded"
            assert db.execute("SELECT rag.unschedule_worker()").fetchone()[0] is True
        finally:
            db.execute("SELECT rag.unschedule_worker()")
            db.execute("DROP TABLE cron_docs")
            db.execute("DROP EXTENSION rag")


def test_the_lock_guard_runs_on_a_schedule(server_url):
    """rag.schedule_lock_guard: pg_cron runs CALL rag.lock_guard() every minute; a writer's
    session holding rag.chunks locked while another waits is ended within that minute."""
    from pgtest import as_role
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS rag CASCADE")
        db.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        alice = psycopg.connect(as_role(server_url, "alice"), autocommit=True)
        try:
            job = db.execute("SELECT rag.schedule_lock_guard()").fetchone()[0]
            assert db.execute("SELECT command, schedule FROM cron.job WHERE jobid = %s", (job,)).fetchone() \
                == ("CALL rag.lock_guard()", "* * * * *")
            alice.execute("BEGIN")
            alice.execute("LOCK TABLE rag.chunks IN ACCESS EXCLUSIVE MODE")
            db.execute("SET statement_timeout = '150s'")       # cron runs every minute
            t0 = time.monotonic()
            assert db.execute("SELECT count(*) FROM rag.chunks").fetchone()[0] == 0   # waits, then runs
            assert time.monotonic() - t0 < 150
            with pytest.raises(psycopg.OperationalError):
                alice.execute("SELECT 1")
            assert db.execute("SELECT rag.unschedule_lock_guard()").fetchone()[0] is True
            assert db.execute("SELECT rag.unschedule_lock_guard()").fetchone()[0] is False
        finally:
            alice.close()
            db.execute("RESET statement_timeout")
            db.execute("SELECT rag.unschedule_lock_guard()")
            _end_guard_runs(db)
            db.execute("DROP EXTENSION rag")


def _end_guard_runs(db, quiet_s=2.0, deadline_s=30.0):
    """Ends every run of the lock guard and waits until none has been seen for quiet_s: a
    run that pg_cron started at a minute's turn, just before its job was unscheduled, was
    not yet in pg_stat_activity when it was terminated, and lived on for its run_for,
    ending the next test's lock holder before the test could (seen once in CI)."""
    running = "FROM pg_stat_activity WHERE query LIKE 'CALL rag.lock_guard%' AND pid <> pg_backend_pid()"
    deadline, quiet_since = time.monotonic() + deadline_s, time.monotonic()
    while time.monotonic() < deadline:
        if db.execute(f"SELECT count(*) {running}").fetchone()[0]:
            db.execute(f"SELECT pg_terminate_backend(pid) {running}")
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"lock guard runs still start after {deadline_s} s: {_cron_runs(db)}")


def _first_run(db, job, deadline_s, until=("succeeded", "failed")):
    """The first run of a pg_cron job, once its status is one of `until` (None at the deadline).
    A job scheduled in the last moments of a minute may first run two minute-starts later (seen
    once in CI: pg_cron 1.4 started a job scheduled then only after more than 75 s), so the
    deadlines below span two."""
    deadline = time.monotonic() + deadline_s   # cron runs every minute
    while time.monotonic() < deadline:
        row = db.execute("SELECT status, start_time, end_time FROM cron.job_run_details WHERE jobid = %s "
                         "ORDER BY runid LIMIT 1", (job,)).fetchone()
        if row and row[0] in until:
            return row
        time.sleep(1)
    return None


def _cron_runs(db):
    """What pg_cron knows of its jobs and runs, for a failed assertion's message."""
    return (db.execute("SELECT clock_timestamp()").fetchone()[0],
            db.execute("SELECT jobid, schedule, command, active FROM cron.job").fetchall(),
            db.execute("SELECT jobid, status, start_time, end_time, return_message "
                       "FROM cron.job_run_details ORDER BY runid").fetchall())


def test_the_ledger_purge_runs_on_a_schedule_while_the_guard_runs(server_url):
    """rag.schedule_ledger_purge: pg_cron runs CALL rag.purge_ledger(), a procedure that
    commits each batch (a procedure with a SET clause could not: the guard's first version).
    It runs while a run of the lock guard goes on: pg_cron 1.4 (Debian 12) in background
    worker mode started no job while another ran (pg_cron issue #200), so the guard's runs,
    55 s a minute, held back every other job; the image runs pg_cron's jobs over the local
    socket instead (docker/entrypoint.sh)."""
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS rag CASCADE")
        db.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        guard = None
        try:
            db.execute("INSERT INTO rag.usage (tenant, at, model, provider, operation, input_tokens, cost) "
                       "SELECT 'alice', now() - interval '3 days', 'gpt-x', 'openai', 'ask', 100, 0.001 "
                       "FROM generate_series(1, 5)")
            db.execute("INSERT INTO rag.usage (tenant, model, provider, operation, input_tokens) "
                       "VALUES ('alice', 'gpt-x', 'openai', 'ask', 10)")
            db.execute("SELECT rag.configure('usage_retention', '1 day')")
            # a guard run that outlasts the next minute's start
            guard = db.execute("SELECT cron.schedule('test guard', '* * * * *', "
                               "'CALL rag.lock_guard(run_for => ''300 seconds'')')").fetchone()[0]
            assert _first_run(db, guard, 135, until=("running",)) is not None, _cron_runs(db)
            job = db.execute("SELECT rag.schedule_ledger_purge('* * * * *')").fetchone()[0]
            assert db.execute("SELECT command FROM cron.job WHERE jobid = %s", (job,)).fetchone()[0] \
                == "CALL rag.purge_ledger()"
            run = _first_run(db, job, 135)
            assert run is not None and run[0] == "succeeded", _cron_runs(db)
            assert db.execute("SELECT status FROM cron.job_run_details WHERE jobid = %s ORDER BY runid LIMIT 1",
                              (guard,)).fetchone()[0] == "running"
            assert db.execute("SELECT count(*) FROM rag.usage").fetchone()[0] == 1
            assert db.execute("SELECT calls, input_tokens, cost FROM rag.usage_history").fetchall() \
                == [(5, 500, Decimal("0.005"))]
            assert db.execute("SELECT rag.unschedule_ledger_purge()").fetchone()[0] is True
            assert db.execute("SELECT rag.unschedule_ledger_purge()").fetchone()[0] is False
        finally:
            db.execute("SELECT rag.unschedule_ledger_purge()")
            if guard is not None:
                db.execute("SELECT cron.unschedule(%s)", (guard,))
                _end_guard_runs(db)
            db.execute("DROP EXTENSION rag")


def test_the_guard_ends_a_lock_on_pg_crons_tables(server_url):
    """pg_cron lets PUBLIC delete from cron.job_run_details, so a role that may use schema
    cron (granted for rag.schedule_worker) can lock it, and pg_cron's launcher, which logs
    every run there, then starts no job: the guard's neither (hostile review 29). The
    guard treats pg_cron's tables as rag's."""
    from pgtest import as_role
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS rag CASCADE")
        db.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        db.execute("GRANT USAGE ON SCHEMA cron TO bob")
        _end_guard_runs(db)   # (a scheduled guard's run would end bob's lock first)
        bob = psycopg.connect(as_role(server_url, "bob"), autocommit=True)
        try:
            bob_pid = bob.execute("SELECT pg_backend_pid()").fetchone()[0]
            bob.execute("BEGIN")
            bob.execute("LOCK TABLE cron.job_run_details IN ACCESS EXCLUSIVE MODE")
            assert db.execute("SELECT pid, role, relation::text, mode FROM rag.lock_holders()").fetchall() \
                == [(bob_pid, "bob", "cron.job_run_details", "AccessExclusiveLock")]
            assert db.execute("SELECT pid FROM rag.end_lock_holders()").fetchall() == [(bob_pid,)]
            with pytest.raises(psycopg.OperationalError):
                bob.execute("SELECT 1")
        finally:
            bob.close()
            db.execute("REVOKE USAGE ON SCHEMA cron FROM bob")
            db.execute("DROP EXTENSION rag")


def test_scheduling_on_pg_crons_background_workers_before_1_5_warns():
    """pg_cron older than 1.5 in background worker mode starts no job while another runs
    (pg_cron issue #200): scheduling says so, naming the setting that avoids it. On a
    pg_cron that has the fix (the images of Postgres 17 and 18), nothing is said."""
    server = start_server("cronbgw", "-c cron.use_background_workers=on")
    try:
        with psycopg.connect(server.get_connection_url(), autocommit=True) as db:
            db.execute("CREATE EXTENSION rag CASCADE")
            db.execute("CREATE EXTENSION pg_cron")
            version = db.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]
            said = []
            db.add_notice_handler(lambda d: said.append((d.severity_nonlocalized, d.message_primary, d.message_hint)))
            assert db.execute("SELECT rag.schedule_worker()").fetchone()[0] >= 1
            if tuple(int(x) for x in version.split("-")[0].split(".")) < (1, 5):
                assert len(said) == 1 and said[0][0] == "WARNING", said
                assert "rag.schedule_worker: pg_cron" in said[0][1] and "issue #200" in said[0][1]
                assert "cron.use_background_workers = off" in said[0][2]
            else:
                assert said == []
            # a writer schedules too: pg_cron lets only superusers read its settings, and the
            # first check read them with current_setting, which failed (42501) for everyone
            # else (hostile review 30); it is said to those who may read them
            db.execute("CREATE ROLE wendy LOGIN PASSWORD 'wendy' IN ROLE rag_writer")
            db.execute("GRANT USAGE ON SCHEMA cron TO wendy")
            wendy_url = server.get_connection_url().replace("tester:tester@", "wendy:wendy@")
            with psycopg.connect(wendy_url, autocommit=True) as wendy:
                job = wendy.execute("SELECT rag.schedule_worker()").fetchone()[0]
                assert db.execute("SELECT username, command FROM cron.job WHERE jobid = %s", (job,)).fetchone() \
                    == ("wendy", "CALL rag.work(max_batches => 10)")
    finally:
        server.stop()
