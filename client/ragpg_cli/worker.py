"""`ragpg worker --dsn ...`: drain rag.queue with CALL rag.work(), forever (or --once).

Several workers can run side by side (rag.work locks rows with SKIP LOCKED). A worker
killed mid-batch loses nothing: its batch was never committed and stays queued.
"""
from __future__ import annotations

import signal
import time

import psycopg

# the due rows this worker may take (those of tables its login owns and sees whole, as
# rag.work takes them): how many, and the oldest
DUE = """
    SELECT count(*), min(q.id) FROM rag.queue AS q JOIN rag.attachments AS a ON a.id = q.attachment_id
    WHERE q.tenant = rag.current_tenant() AND q.next_attempt_at <= now()
      AND rag._worker_takes(a.source_table, CASE WHEN rag._own_session(current_user) THEN current_user END)"""


def run(dsn: str, interval: float = 1.0, once: bool = False, tenant: str | None = None) -> int:
    stop = {"now": False}

    def on_signal(*_):
        stop["now"] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if tenant:
            conn.execute("SELECT set_config('rag.tenant', %s, false)", (tenant,))
        while not stop["now"]:
            t0 = time.perf_counter()
            before = conn.execute(DUE).fetchone()
            conn.execute("CALL rag.work(max_batches => 100)")
            after = conn.execute(DUE).fetchone()
            print(f"worker: pass in {time.perf_counter() - t0:.1f}s, {after[0]} due", flush=True)
            if once:
                break
            # nothing due, or nothing taken: what is due is another worker's batch, locked
            # until it commits (rag.work skips locked rows); the oldest due row would have
            # gone first (review 40: it spun while another worker held the rows)
            if not after[0] or after == before:
                time.sleep(interval)
    return 0
