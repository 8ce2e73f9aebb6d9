"""`ragpg worker --dsn ...`: drain rag.queue with CALL rag.work(), forever (or --once).

Several workers can run side by side (rag.work locks rows with SKIP LOCKED). A worker
killed mid-batch loses nothing: its batch was never committed and stays queued.
"""
from __future__ import annotations

import signal
import time

import psycopg


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
            conn.execute("CALL rag.work(max_batches => 100)")
            # the due rows this worker may take: those of tables its login owns, as rag.work
            # takes them (another owner's rows stay due, and must not keep it from sleeping)
            waiting = conn.execute("""
                SELECT count(*) FROM rag.queue AS q JOIN rag.attachments AS a ON a.id = q.attachment_id
                WHERE q.tenant = rag.current_tenant() AND q.next_attempt_at <= now()
                  AND rag._worker_takes(a.source_table,
                                        CASE WHEN rag._own_session(current_user) THEN current_user END)""").fetchone()[0]
            print(f"worker: pass in {time.perf_counter() - t0:.1f}s, {waiting} due", flush=True)
            if once:
                break
            if not waiting:
                time.sleep(interval)
    return 0
