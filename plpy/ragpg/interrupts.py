"""A hook that lets Postgres cancel the engine's long loops.

PL/Python does not process interrupts while Python code runs: statement_timeout,
pg_cancel_backend() and pg_terminate_backend() wait until Python returns. So every loop
whose number of turns grows with the input (lines, paragraphs, sentences, tokenizer
batches, HTML tags, embedding batches) calls `check_interrupts()`.

Here it does nothing, so the modules stay plain Python (unit tests, no database). pg.py
replaces it with `interrupt_checker(plpy)`: at most every 50 ms it runs a prepared
`SELECT 1`, whose executor runs CHECK_FOR_INTERRUPTS; a pending cancel then raises
plpy.SPIError (spiexceptions.QueryCanceled, SQLSTATE 57014) out of the loop, and a
pending terminate ends the backend. Callers must let that exception through: no broad
`except` around a loop that calls the hook.
"""
from __future__ import annotations

import time
from typing import Callable

INTERVAL = 0.05  # seconds between two checks at most (a check costs ~10 us)


def no_check() -> None:
    """The default: outside Postgres there is nothing to check."""


check_interrupts: Callable[[], None] = no_check


def interrupt_checker(plpy, interval: float = INTERVAL,
                      clock: Callable[[], float] = time.monotonic) -> Callable[[], None]:
    """A `check_interrupts` for a PL/Python session: a prepared `SELECT 1`, run at most
    once per `interval` seconds of `clock`, so it costs nothing measurable (a call that
    does not run it takes ~0.1 us)."""
    plan = plpy.prepare("SELECT 1")
    last = clock()

    def check() -> None:
        nonlocal last
        now = clock()
        if now - last >= interval:
            last = now
            plpy.execute(plan)

    return check
