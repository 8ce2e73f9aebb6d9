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

import contextlib
import contextvars
import threading
import time
from typing import Callable

INTERVAL = 0.05  # seconds between two checks at most (a check costs ~10 us)
STOP_WAIT = 0.25  # seconds a cancel waits for a worker told to stop to end


def no_check() -> None:
    """The default: outside Postgres there is nothing to check."""


check_interrupts: Callable[[], None] = no_check
# what check_interrupts raises on a cancel (plpy.SPIError in a session): code that catches
# broad exceptions around a call that checks lets these through
Interrupt: tuple[type[BaseException], ...] = ()


def interrupt_checker(plpy, interval: float = INTERVAL,
                      clock: Callable[[], float] = time.monotonic) -> Callable[[], None]:
    """A `check_interrupts` for a PL/Python session: a prepared `SELECT 1`, run at most
    once per `interval` seconds of `clock`, so it costs nothing measurable (a call that
    does not run it takes ~0.1 us)."""
    global Interrupt
    Interrupt = (plpy.SPIError,)
    plan = plpy.prepare("SELECT 1")
    last = clock()

    def check() -> None:
        nonlocal last
        now = clock()
        if now - last >= interval:
            last = now
            plpy.execute(plan)

    return check


_worker = threading.local()


def abandoned() -> bool:
    """Whether the call this worker thread runs for `wait` was given up (a cancel): the
    worker's loops stop at their next turn (a model server's answer read in pieces)."""
    gone = getattr(_worker, "gone", None)
    return gone is not None and gone.is_set()


class Abandoned(BaseException):
    """Raised in a worker of `wait(..., stop=True)` whose call was given up (a BaseException:
    a library's own `except Exception` lets it through)."""


def stop_if_abandoned() -> None:
    """In a worker of `wait`: Abandoned if its call was given up (a loop's cancel check
    there, where plpy may not be called)."""
    if abandoned():
        raise Abandoned


def on_abandon(hook: Callable[[], None]) -> None:
    """In a worker thread of `wait`: hook() is called from the waiting thread if the call is
    given up. E.g. a socket shut down, so that a wait in it that is not sliced (a TLS
    handshake) ends at once. It may raise OSError only. Outside a worker: nothing."""
    hooks = getattr(_worker, "hooks", None)
    if hooks is not None:
        hooks.append(hook)


def wait(fn, poll: float = INTERVAL, stop: bool = False):
    """fn() in a worker thread, checking for interrupts every `poll` seconds while it runs:
    a blocking call (an HTTP request to a model server that is slow or hangs) can then be
    cancelled within a second. fn must not touch plpy. On a cancel, the worker is told
    (`abandoned`, `on_abandon`) and its result is dropped: a read in progress ends at its
    next slice (before, a cancelled 1 GB download went on into the next statement).
    `stop`: Abandoned is also raised in the worker, at its next line of Python, for a
    library's loop that looks at nothing of ours (pypdf parsing a 19 MB string ran on
    for 5 s and 180 MB after its statement ended: review 56). Only for work whose state
    is dropped with it (not a pooled HTTP connection)."""
    if check_interrupts is no_check:
        return fn()
    import concurrent.futures

    gone = threading.Event()
    hooks: list[Callable[[], None]] = []
    stopper = _Stopper()

    def run():
        _worker.gone, _worker.hooks = gone, hooks
        return stopper.call(fn) if stop else fn()

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragpg-call")
    try:
        # in the caller's context: a thread starts in an empty one, and pypdf's limits
        # (apply_configuration) are a context variable (its defaults applied: review 56)
        future = pool.submit(contextvars.copy_context().run, run)
        while True:
            try:
                return future.result(timeout=poll)
            except concurrent.futures.TimeoutError:
                pass
            try:
                check_interrupts()
            except BaseException:
                gone.set()
                if stopper.stop():
                    # its unwinding here, not in the session's next statement (the
                    # backend holds the GIL between statements: a stopped worker froze
                    # with its memory until then, +50 MB a cancel: review 56b)
                    concurrent.futures.wait([future], timeout=STOP_WAIT)
                for hook in list(hooks):
                    with contextlib.suppress(OSError):
                        hook()
                raise
    finally:
        pool.shutdown(wait=False)


class _Stopper:
    """Abandoned raised in a worker of `wait(..., stop=True)`, only while it runs its call.

    An asynchronous exception lands at the worker's next line of Python, wherever that is:
    - once the call has returned, in the pool's own code: a traceback in the server log.
      `stop` raises only while the call runs, and the call's end takes back one that is
      set and not yet raised;
    - between logging's taking of its lock and the `try` that gives it back: pypdf logs
      every odd object through `logging.getLogger`, and 3 stops of such a loop in a row
      left the lock held by a thread that was gone. The session's next use of logging
      (the next PDF) then waited for ever, where no cancel and no terminate reach. The
      worker gives back, as it unwinds, every lock of logging it still holds. (An
      import's lock, the same in principle: 3,000 stops amid first imports left none.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: int | None = None  # the worker's, while it runs the call

    def call(self, fn):
        me = threading.get_ident()
        try:
            with self._lock:
                self._thread = me
            try:
                return fn()
            finally:
                with self._lock:
                    self._thread = None
                    _raise_in(me, None)   # set, not yet raised: taken back
        except Abandoned:
            _release_logging()
            raise

    def stop(self) -> bool:
        """Abandoned raised in the worker if it runs the call; whether it was."""
        with self._lock:
            if self._thread is None:
                return False
            _raise_in(self._thread, Abandoned)
            return True


def _raise_in(thread: int, exc: type[BaseException] | None) -> None:
    """exc raised in that thread when it next runs Python (CPython's PyThreadState_SetAsyncExc);
    None takes back one set and not yet raised."""
    import ctypes
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread),
                                               None if exc is None else ctypes.py_object(exc))


def _release_logging() -> None:
    """In a worker that Abandoned is unwinding: logging's locks that this thread still holds,
    given back (it may have landed between a lock's taking and its `try`)."""
    import logging

    locks = [getattr(logging, "_lock", None)]
    locks += [getattr(ref(), "lock", None) for ref in list(getattr(logging, "_handlerList", ()))]
    for lock in locks:
        while getattr(lock, "_is_owned", bool)():
            lock.release()


def sleep(seconds: float, poll: float = INTERVAL) -> None:
    """time.sleep that checks for interrupts every `poll` seconds (retry back-off)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        check_interrupts()
        time.sleep(min(poll, left))


def result(future, poll: float = INTERVAL):
    """A concurrent.futures.Future's result, checking for interrupts every `poll` seconds
    while it runs (the worker must not touch plpy)."""
    import concurrent.futures

    while True:
        try:
            return future.result(timeout=poll)
        except concurrent.futures.TimeoutError:
            check_interrupts()
