"""The day's count of priced calls that rollbacks do not undo (ragpg/spend.py): exact,
shared safely by concurrent backends, one file per tenant whatever its name, old days
removed."""
from __future__ import annotations

import multiprocessing
import os
import stat
from decimal import Decimal

import pytest

from ragpg import spend


def test_costs_are_exact_decimals_as_the_ledger_computes_them():
    assert spend.cost(100, 10, 1000.0, 1000.0) == Decimal("0.11")
    assert spend.cost(3, 0, 0.02, 0.0) == Decimal("0.00000006")
    assert spend.cost(-100, -10, 1000.0, 1000.0) == Decimal("-0.11")   # an estimate taken back


def test_counts_add_up_per_database_tenant_and_day(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert spend.read(1, "acme") == 0
    assert spend.add(1, "acme", Decimal("0.11")) == Decimal("0.11")
    assert spend.add(1, "acme", Decimal("0.11")) == Decimal("0.22")
    assert spend.add(1, "acme", Decimal("-0.02")) == Decimal("0.20")
    assert spend.read(1, "acme") == Decimal("0.20")
    assert spend.read(2, "acme") == 0          # another database
    assert spend.read(1, "acme2") == 0         # another tenant
    assert spend.read(1, "acme", day="1999-01-01") == 0


def test_a_tenant_name_is_never_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ["../../etc/passwd", "/abs", ".", "", "a\x00b", "é" * 5000]:
        spend.add(7, name, Decimal(1))
        assert spend.read(7, name) == 1
    files = [p for p in (tmp_path / spend.SPEND_DIR).rglob("*") if p.is_file()]
    assert len(files) == 6
    day = tmp_path / spend.SPEND_DIR / "7" / spend.today()
    assert all(p.parent == day and len(p.name) == 64 for p in files)
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(day.stat().st_mode) == 0o700


def _adder(cwd: str, n: int) -> None:
    os.chdir(cwd)
    for _ in range(n):
        spend.add(3, "shared", Decimal("0.01"))


def test_concurrent_backends_lose_no_call(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_adder, args=(str(tmp_path), 150)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    os.chdir(tmp_path)
    assert spend.read(3, "shared") == Decimal("9.00")


def test_a_garbled_count_reads_as_zero_and_days_before_yesterday_go(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spend.add(4, "t", Decimal(1), day="2026-01-03")
    spend._path(4, "t", "2026-01-03").write_bytes(b"\xffnot a number")
    assert spend.read(4, "t", day="2026-01-03") == 0
    for day in ["2025-12-30", "2026-01-01", "2026-01-02"]:
        spend.add(4, "t", Decimal(1), day=day)
    spend._PRUNED.clear()
    spend.add(4, "t", Decimal(2), day="2026-01-03")
    assert sorted(p.name for p in (tmp_path / spend.SPEND_DIR / "4").iterdir()) == ["2026-01-02", "2026-01-03"]
    assert spend.read(4, "t", day="2026-01-03") == 2


def test_a_reservation_is_refused_once_the_day_is_spent_and_capped_at_what_remains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    budget = Decimal("1.00")
    assert spend.reserve(5, "t", Decimal("0.40"), budget)[1] == Decimal("0.40")
    assert spend.reserve(5, "t", Decimal("0.90"), budget)[1] == Decimal("0.60")   # what remains
    with pytest.raises(spend.Over) as e:
        spend.reserve(5, "t", Decimal("0.01"), budget)
    assert e.value.spent == Decimal("1.00") and spend.read(5, "t") == Decimal("1.00")   # nothing added
    # the ledger's sum is a floor: calls recorded before the count existed
    with pytest.raises(spend.Over):
        spend.reserve(5, "u", Decimal("0.01"), budget, floor=Decimal("1.5"))
    assert spend.reserve(5, "v", Decimal("0.50"), budget, floor=Decimal("0.7"))[1] == Decimal("0.3")
    with pytest.raises(spend.Over):    # the count was lifted to the floor: the next sees it spent
        spend.reserve(5, "v", Decimal("0.01"), budget, floor=Decimal("0.7"))
    assert spend.read(5, "v") == Decimal("1.0")
    spend.add(5, "w", Decimal("1") / Decimal("3"))   # (28 digits: still one fixed-width write)
    assert spend.read(5, "w") == Decimal("1") / Decimal("3")
    assert spend.reserve(5, "u", Decimal("0.50"), None)[1] == Decimal("0.50")    # no budget: counted all the same


def _reserver(cwd: str, out) -> None:
    os.chdir(cwd)
    got = 0
    for _ in range(40):
        try:
            spend.reserve(6, "race", Decimal("0.10"), Decimal("2.00"))
            got += 1
        except spend.Over:
            pass
    out.put(got)


def test_reservations_made_at_once_never_pass_the_budget(tmp_path):
    """Six processes each try 40 reservations of 0.10 against 2.00: exactly 20 get one."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_reserver, args=(str(tmp_path), out)) for _ in range(6)]
    for p in procs:
        p.start()
    got = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(60)
    os.chdir(tmp_path)
    assert got == 20 and spend.read(6, "race") == Decimal("2.00")
