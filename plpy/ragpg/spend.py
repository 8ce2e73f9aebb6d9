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

Beside each count, in the same turn of its lock, a journal of the calls it counted
(<sha-256>.calls, one JSON line per request reserved and one per call set right): which
role, model and operation, when, and what was counted, so that rag.priced_calls can name
the calls the ledger lost to a rollback, and the calls a hot standby made (it has no
ledger). A request's line is journaled while the journal holds less than JOURNAL_MAX
bytes; the line that sets a journaled call right, up to JOURNAL_HARD (one a call, so that
a call in flight at the cap keeps its cost and tokens; the calls in flight are at most the
server's backends). Past that a line is not written but summed per role
(<sha-256>.unlisted: lines left out and what they added), so that a role that fills the
journal cannot hide which roles' calls came after.

No plpy here: pg.py passes the database and the tenant.
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import io
import json
import os
import shutil
from decimal import Decimal, InvalidOperation
from pathlib import Path

SPEND_DIR = "ragpg_spend"
_PRUNED: set[tuple[int, str]] = set()   # (database, day) whose older days this backend removed


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def kept_days(day: str | None = None) -> list[str]:
    """The days kept on `day` (default today): it and the day before."""
    day = day or today()
    return [day, (datetime.date.fromisoformat(day) - datetime.timedelta(days=1)).isoformat()]


def _path(db: int, tenant: str, day: str) -> Path:
    return Path(os.getcwd()) / SPEND_DIR / str(db) / day / hashlib.sha256(tenant.encode()).hexdigest()


def cost(input_tokens: int, output_tokens: int, price_input_per_1m: Decimal, price_output_per_1m: Decimal) -> Decimal:
    """A call's cost in exact decimal, as rag._usage_rows computes it in numeric (the
    prices as rag.models holds them, numeric: a float8 rounds a price such as 100/7)."""
    return (input_tokens * price_input_per_1m + output_tokens * price_output_per_1m) / 1_000_000


def value(raw: bytes | str | None) -> Decimal:
    """A count or an amount as written; 0 for anything garbled."""
    try:
        v = Decimal((raw.decode() if isinstance(raw, bytes) else str(raw or "")).strip() or "0")
    except (UnicodeDecodeError, InvalidOperation):
        return Decimal(0)
    return v if v.is_finite() else Decimal(0)


_WIDTH = 64   # the count is written whole, one fixed-width write at offset 0
JOURNAL_MAX = 8 << 20          # ~35,000 calls of one request
JOURNAL_HARD = 12 << 20        # the most rag.priced_calls reads
UNLISTED_ROLES = 1000          # roles named in the sum of lines left out; the rest as one


class Over(Exception):
    """The tenant's day is spent: no reservation made."""

    def __init__(self, spent: Decimal):
        super().__init__(str(spent))
        self.spent = spent


def _locked_update(db: int, tenant: str, day: str, change, note=None) -> tuple[Decimal, bool]:
    """Apply change(count) -> new count under the file's exclusive lock; concurrent
    backends take turns. The new count is written in one write of fixed width, so that a
    crash leaves the old count or the new one, never a part. note(), called after change,
    is the line for the day's journal, written in the same turn of the lock. Returns the
    new count, and whether the line was journaled."""
    path = _path(db, tenant, day)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        total = change(value(os.pread(fd, _WIDTH, 0)))
        text = str(total)
        os.pwrite(fd, (text if len(text) < _WIDTH else f"{total:.30E}").ljust(_WIDTH).encode(), 0)
        listed = note is not None and _journal(path, note())
    finally:
        os.close(fd)   # (and its lock)
    _prune(db, day)
    return total, listed


def _journal(path: Path, note: dict) -> bool:
    """One line appended (while the journal is under JOURNAL_MAX; with note["more"], the
    line that sets a journaled call right, under JOURNAL_HARD); else summed per role in the
    .unlisted file. The journal tells, the count binds: a line that cannot be written (a
    full disk) is left out, and the call goes on. Returns whether it was appended."""
    room = JOURNAL_HARD if note.pop("more", False) else JOURNAL_MAX
    line = (json.dumps(note, separators=(",", ":")) + "\n").encode()
    try:
        jfd = os.open(path.with_suffix(".calls"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if os.fstat(jfd).st_size + len(line) <= room:
                os.write(jfd, line)
                return True
        finally:
            os.close(jfd)
        _unlisted(path.with_suffix(".unlisted"), str(note.get("role")), "answered" not in note, value(note["added"]))
    except OSError:
        pass
    return False


def _unlisted(path: Path, role: str, request: bool, added: Decimal) -> None:
    """Add a line left out to its role's sum: {role: [requests, lines, added]}."""
    sums = _sums(_read(path, 1 << 20))
    if role not in sums and len(sums) >= UNLISTED_ROLES:
        role = "(other roles)"
    requests, lines, total = sums.get(role, (0, 0, Decimal(0)))
    sums[role] = (requests + request, lines + 1, total + added)
    # a new file put in its place (rename): a crash leaves the old sums or the new ones
    new = path.with_suffix(".unlisted-new")
    new.write_bytes(json.dumps({r: [n, k, str(a)] for r, (n, k, a) in sums.items()}).encode())
    os.chmod(new, 0o600)
    os.replace(new, path)


def _read(path: Path, most: int) -> bytes:
    """At most `most` bytes of a file (none if it does not exist)."""
    try:
        with open(path, "rb") as f:
            return f.read(most)
    except FileNotFoundError:
        return b""


def _sums(raw: bytes) -> dict[str, tuple[int, int, Decimal]]:
    try:
        kept = json.loads(raw or b"{}")
        return {str(r): (int(v[0]), int(v[1]), value(v[2])) for r, v in kept.items()}
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return {}


def add(db: int, tenant: str, amount: Decimal, day: str | None = None, note: dict | None = None) -> Decimal:
    """Add to the tenant's count of the day (negative: an estimate set right); returns the
    new count. `note`, with "added", is journaled."""
    return _locked_update(db, tenant, day or today(), lambda count: count + amount,
                          None if note is None else lambda: dict(note, added=str(amount)))[0]


def reserve(db: int, tenant: str, amount: Decimal, budget: Decimal | None, floor: Decimal = Decimal(0),
            day: str | None = None, note: dict | None = None) -> tuple[str, Decimal, bool]:
    """Before a request is sent: with a budget, raise Over if the day is spent (the greater
    of the count and `floor`, the ledger's sum, reached the budget); else add `amount`, at
    most what remains of the budget, in the same turn of the lock, so that requests made at
    once see each other. `note`, with "added", is journaled. Returns (the day, what was
    added, whether the note was journaled)."""
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

    _, listed = _locked_update(db, tenant, day, change, None if note is None else lambda: dict(note, added=str(added)))
    return day, added, listed


def read(db: int, tenant: str, day: str | None = None) -> Decimal:
    """The tenant's count of the day (0 if it made no priced call)."""
    try:
        fd = os.open(_path(db, tenant, day or today()), os.O_RDONLY)
    except FileNotFoundError:
        return Decimal(0)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return value(os.pread(fd, _WIDTH, 0))
    finally:
        os.close(fd)


def journal(db: int, tenant: str, day: str) -> tuple[bytes, dict[str, tuple[int, int, Decimal]]]:
    """The tenant's journal of the day as written (JSON lines, in order; at most
    JOURNAL_HARD bytes), and the lines left out past it, summed per role: {role: (requests,
    lines, added)}. Read under the count's lock, so that no line is half-written; parsed
    after, by the caller."""
    path = _path(db, tenant, day)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return b"", {}
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        raw, unlisted = _read(path.with_suffix(".calls"), JOURNAL_HARD), _read(path.with_suffix(".unlisted"), 1 << 20)
    finally:
        os.close(fd)
    return raw, _sums(unlisted)


def notes(raw: bytes, check=lambda: None):
    """The journal's lines as dicts, one at a time (a line that is not an object naming
    its call is left out); check() between lines (Postgres' interrupts)."""
    for line in io.BytesIO(raw):
        check()
        try:
            note = json.loads(line)
        except ValueError:
            continue
        if isinstance(note, dict) and isinstance(note.get("call"), str):
            yield note


def _prune(db: int, day: str) -> None:
    """Remove the database's days before yesterday (once per backend and day)."""
    if (db, day) in _PRUNED:
        return
    _PRUNED.add((db, day))
    keep = kept_days(day)
    base = Path(os.getcwd()) / SPEND_DIR / str(db)
    for old in base.iterdir():
        if old.name not in keep and old.name < day:
            shutil.rmtree(old, ignore_errors=True)
