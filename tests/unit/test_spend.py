"""The day's count of priced calls that rollbacks do not undo (ragpg/spend.py): exact,
shared safely by concurrent backends, one file per tenant whatever its name, old days
removed; and its journal of the calls counted (rag.priced_calls), capped, then summed per
role."""
from __future__ import annotations

import multiprocessing
import os
import stat
from decimal import Decimal

import pytest

from ragpg import spend


def _journal(db: int, tenant: str) -> list[dict]:
    return list(spend.notes(spend.journal(db, tenant, spend.today())[0]))


def test_costs_are_exact_decimals_as_the_ledger_computes_them():
    assert spend.cost(100, 10, Decimal(1000), Decimal(1000)) == Decimal("0.11")
    assert spend.cost(3, 0, Decimal("0.02"), Decimal(0)) == Decimal("0.00000006")
    assert spend.cost(-100, -10, Decimal(1000), Decimal(1000)) == Decimal("-0.11")   # an estimate taken back
    # a price float8 would round (100/7 as numeric holds 16+ digits): as the ledger's numeric
    price = Decimal("14.285714285714285714")
    assert spend.cost(5, 0, price, Decimal(0)) == Decimal("0.00007142857142857142857")


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


def _adder(cwd: str, k: int) -> None:
    os.chdir(cwd)
    for i in range(150):
        spend.add(3, "shared", Decimal("0.01"), note={"call": f"{k}-{i}", "pad": "x" * 300})


def test_concurrent_backends_lose_no_call(tmp_path):
    """Six processes adding at once: the count loses nothing, and each journal line is
    whole."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_adder, args=(str(tmp_path), k)) for k in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    os.chdir(tmp_path)
    assert spend.read(3, "shared") == Decimal("9.00")
    notes = _journal(3, "shared")
    assert sorted(n["call"] for n in notes) == sorted(f"{k}-{i}" for k in range(6) for i in range(150))
    assert sum(Decimal(n["added"]) for n in notes) == Decimal("9.00")


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


def test_the_journal_keeps_each_counted_line_and_what_it_added(tmp_path, monkeypatch):
    """rag.priced_calls reads it: a line per request reserved (what it added, capped at what
    remains), one per call set right, none for a refused reservation; a garbled line is
    left out. Past its cap a call's first line is summed per role instead, and the count
    goes on."""
    monkeypatch.chdir(tmp_path)
    budget = Decimal("1.00")
    spend.reserve(8, "t", Decimal("0.40"), budget, note={"call": "a", "role": "r1"})
    spend.reserve(8, "t", Decimal("0.90"), budget, note={"call": "b", "role": "r1"})   # capped: 0.60 added
    with pytest.raises(spend.Over):
        spend.reserve(8, "t", Decimal("0.01"), budget, note={"call": "c", "role": "r1"})
    spend.add(8, "t", Decimal("-0.29"), note={"call": "a", "role": "r1", "answered": 1})
    spend.add(8, "t", Decimal("0.5"))                                  # no note: not journaled
    assert _journal(8, "t") == [{"call": "a", "role": "r1", "added": "0.40"},
                                {"call": "b", "role": "r1", "added": "0.60"},
                                {"call": "a", "role": "r1", "answered": 1, "added": "-0.29"}]
    assert _journal(8, "other") == [] and _journal(9, "t") == []
    calls = spend._path(8, "t", spend.today()).with_suffix(".calls")
    assert stat.S_IMODE(calls.stat().st_mode) == 0o600
    with calls.open("ab") as f:
        f.write(b"\xff{not json\n[1]\n")
    monkeypatch.setattr(spend, "JOURNAL_MAX", calls.stat().st_size + 40)
    spend.add(8, "t", Decimal(1), note={"call": "d", "role": "r2"})                # fits
    spend.add(8, "t", Decimal(1), note={"call": "e", "role": "r2"})                # past the cap: summed
    spend.add(8, "t", Decimal("0.5"), note={"call": "e", "role": "r2", "answered": 1})
    spend.add(8, "t", Decimal(2), note={"call": "f", "role": 'r"3\n'})
    # a journaled call's next line still goes in, up to JOURNAL_HARD: a call is not split at the cap
    spend.add(8, "t", Decimal("0.25"), note={"call": "d", "role": "r2", "answered": 1, "more": True})
    assert [n["call"] for n in _journal(8, "t")] == ["a", "b", "a", "d", "d"]
    assert "more" not in _journal(8, "t")[-1]
    assert spend.journal(8, "t", spend.today())[1] == {"r2": (1, 2, Decimal("1.5")), 'r"3\n': (1, 1, Decimal(2))}
    assert spend.read(8, "t") == Decimal("5.96")
    monkeypatch.setattr(spend, "UNLISTED_ROLES", 2)                    # roles named at most; the rest as one
    spend.add(8, "t", Decimal(1), note={"call": "g", "role": "r4"})
    spend.add(8, "t", Decimal(1), note={"call": "h", "role": "r5"})
    assert spend.journal(8, "t", spend.today())[1]["(other roles)"] == (2, 2, Decimal(2))
