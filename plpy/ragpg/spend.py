"""Each tenant's cost today, counted outside any transaction: what rag.daily_budget holds.

rag.usage, the ledger, is a table: its rows go when the transaction that wrote them rolls
back. So a role that made priced calls and then failed its statement, or ran ROLLBACK,
left no trace of them, and could go on calling past its tenant's budget without end. The
count kept here is not transactional, in a file of the server's own
(ragpg_spend/<database oid>/<UTC day>/<sha-256 of the tenant> under the data directory,
the backend's working directory; mode 0600, owned by the server's OS user, so no SQL role
can change it). Each priced request adds the most it can cost before it is sent (reserve:
checked against the budget and added in one turn of the file's lock), and what it cost is
set right when it is recorded: a request that was sent and never answered (a timeout, a
cancel, a retry, a stream closed early) stays counted at its most. A budget check takes the
greater of this count and the ledger's sum. The count is the server's: a hot standby keeps
its own, and a restored backup starts the day from its ledger.

No plpy here: pg.py passes the database and the tenant.
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import os
import shutil
from decimal import Decimal, InvalidOperation
from pathlib import Path

SPEND_DIR = "ragpg_spend"
_PRUNED: set[tuple[int, str]] = set()   # (database, day) whose older days this backend removed


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def _path(db: int, tenant: str, day: str) -> Path:
    return Path(os.getcwd()) / SPEND_DIR / str(db) / day / hashlib.sha256(tenant.encode()).hexdigest()


def cost(input_tokens: int, output_tokens: int, price_input_per_1m: float, price_output_per_1m: float) -> Decimal:
    """A call's cost in exact decimal, as rag._usage_rows computes it in numeric (the
    prices come from numeric columns as floats; their shortest repr is the stored value)."""
    return (input_tokens * Decimal(repr(price_input_per_1m))
            + output_tokens * Decimal(repr(price_output_per_1m))) / 1_000_000


def _value(raw: bytes) -> Decimal:
    try:
        v = Decimal(raw.decode().strip() or "0")
    except (UnicodeDecodeError, InvalidOperation):
        return Decimal(0)
    return v if v.is_finite() else Decimal(0)


_WIDTH = 64   # the count is written whole, one fixed-width write at offset 0


class Over(Exception):
    """The tenant's day is spent: no reservation made."""

    def __init__(self, spent: Decimal):
        super().__init__(str(spent))
        self.spent = spent


def _locked_update(db: int, tenant: str, day: str, change) -> Decimal:
    """Apply change(count) -> new count under the file's exclusive lock; concurrent
    backends take turns. The new count is written in one write of fixed width, so that a
    crash leaves the old count or the new one, never a part."""
    path = _path(db, tenant, day)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        total = change(_value(os.pread(fd, _WIDTH, 0)))
        text = str(total)
        os.pwrite(fd, (text if len(text) < _WIDTH else f"{total:.30E}").ljust(_WIDTH).encode(), 0)
    finally:
        os.close(fd)   # (and its lock)
    _prune(db, day)
    return total


def add(db: int, tenant: str, amount: Decimal, day: str | None = None) -> Decimal:
    """Add to the tenant's count of the day (negative: an estimate set right); returns the
    new count."""
    return _locked_update(db, tenant, day or today(), lambda count: count + amount)


def reserve(db: int, tenant: str, amount: Decimal, budget: Decimal | None, floor: Decimal = Decimal(0),
            day: str | None = None) -> tuple[str, Decimal]:
    """Before a request is sent: with a budget, raise Over if the day is spent (the greater
    of the count and `floor`, the ledger's sum, reached the budget); else add `amount`, at
    most what remains of the budget, in the same turn of the lock, so that requests made at
    once see each other. Returns (the day, what was added)."""
    day = day or today()
    added = amount

    def change(count: Decimal) -> Decimal:
        nonlocal added
        count = max(count, floor)   # (calls the ledger holds and the count does not: the day of an upgrade)
        if budget is not None:
            if count >= budget:
                raise Over(count)
            added = min(amount, budget - count)
        return count + added

    _locked_update(db, tenant, day, change)
    return day, added


def read(db: int, tenant: str, day: str | None = None) -> Decimal:
    """The tenant's count of the day (0 if it made no priced call)."""
    try:
        fd = os.open(_path(db, tenant, day or today()), os.O_RDONLY)
    except FileNotFoundError:
        return Decimal(0)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return _value(os.pread(fd, _WIDTH, 0))
    finally:
        os.close(fd)


def _prune(db: int, day: str) -> None:
    """Remove the database's days before yesterday (once per backend and day)."""
    if (db, day) in _PRUNED:
        return
    _PRUNED.add((db, day))
    keep = {day, (datetime.date.fromisoformat(day) - datetime.timedelta(days=1)).isoformat()}
    base = Path(os.getcwd()) / SPEND_DIR / str(db)
    for old in base.iterdir():
        if old.name not in keep and old.name < day:
            shutil.rmtree(old, ignore_errors=True)
