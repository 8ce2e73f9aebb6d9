"""files.py without a database: format detection, the real files' structure, headings
placed from a PDF outline. (The errors, limits and cancel are tested through SQL, in
tests/test_files.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest
from pdfmaker import make_pdf
from ragpg import files

FILES = Path(__file__).resolve().parents[1] / "files"


@pytest.mark.parametrize("head, name, fmt", [
    (b"%PDF-1.7\n", "x.bin", "pdf"), (b"junk\n%PDF-1.4", "x", "pdf"), (b"PK\x03\x04", "x.zip", "docx"),
    (b"<p>hi</p>", "a.HTM", "html"), (b"# hi", "a.md", "markdown"), (b"hi", "a.txt", "text"), (b"hi", "a", "auto")])
def test_detect(head, name, fmt):
    assert files.detect(head, name) == fmt


def test_a_name_that_lies_is_an_error():
    with pytest.raises(files.FileCorrupt, match="is named .pdf but is not a PDF"):
        files.detect(b"<html>", "report.pdf")


def test_the_real_pdf_has_its_pages_and_outline():
    x = files.extract((FILES / "routine-vacuuming.pdf").read_bytes(), "routine-vacuuming.pdf")
    assert (x.file_format, x.text_format, x.pages, x.title) == ("pdf", "markdown", 10, "25.1. Routine Vacuuming")
    pages = x.text.split("\f")
    assert len(pages) == 10 and "two billion transactions" in pages[4]
    assert "## 25.1.5. Preventing Transaction ID Wraparound Failures" in x.text.split("\n")


def test_the_real_docx_keeps_headings_lists_tables():
    x = files.extract((FILES / "routine-vacuuming.docx").read_bytes(), "v.docx")
    lines = x.text.split("\n")
    assert "## 25.1. Routine Vacuuming" in lines and "### 25.1.4. Updating the Visibility Map" in lines
    assert "- To update the visibility map, which speeds up index-only scans." in lines
    assert x.title == "25.1. Routine Vacuuming" and x.pages is None and "\f" not in x.text


def test_outline_headings_go_on_the_line_that_shows_them():
    page = "Contents\nIntro\nUsage\nIntro\nSome text.\nUsage\nMore text."
    # the contents list comes first: each heading takes its title's last line after the previous
    assert files._place_headings(page, [(1, "Intro"), (2, "Usage")]) == \
        "Contents\nIntro\nUsage\n# Intro\nSome text.\n## Usage\nMore text."
    assert files._place_headings("Body.", [(1, "Missing")]) == "# Missing\nBody."
    assert files._tidy("#include <x.h>\nexam-\nple") == " #include <x.h>\nexample"


def test_the_windowed_markup_search_refuses_what_one_search_refuses(monkeypatch):
    """A DOCX part is searched for long tags and runs a window at a time (a cancel check
    before each: one search of 40 MB held a backend 0.4 s). Windows end at a '<', so a tag
    or a run that crosses one is still found: random markup, tiny windows and limits, is
    refused exactly when one search over all of it finds either."""
    import random
    import re
    monkeypatch.setattr(files, "_MANY_ATTRIBUTES", re.compile(
        files._MANY_ATTRIBUTES.pattern.replace(b"{%d}" % (files.MAX_XML_ATTRIBUTES + 1), b"{3}")))
    rnd = random.Random(7)
    pieces = [b"<", b"a", b" ", b"=", b'"', b">", b"'", b"<a", b' x="1"', b" y='>'", b' z="<"']
    refused = 0
    for _ in range(20_000):
        raw = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(60)))
        max_bytes = rnd.randrange(1, 12)
        monkeypatch.setattr(files, "_XML_WINDOW", rnd.randrange(1, 20))
        whole = bool(files._MANY_ATTRIBUTES.search(raw) or re.search(rb"(?:\A|<)[^<]{%d}" % (max_bytes + 1), raw))
        try:
            files._check_tags_and_runs(raw, "word/document.xml", "x.docx", max_bytes)
        except files.LimitExceeded:
            refused += 1
            assert whole, (raw, max_bytes, files._XML_WINDOW)
        else:
            assert not whole, (raw, max_bytes, files._XML_WINDOW)
    assert 2_000 < refused < 18_000   # (both answers were tried)


def test_the_markup_search_checks_for_a_cancel_every_window(monkeypatch):
    """40 MB of empty elements (review 47's file): a check every 1 MB or so."""
    calls = []
    monkeypatch.setattr(files.interrupts, "check_interrupts", lambda: calls.append(1))
    files._check_tags_and_runs(b"<w:p>" + b"<a/>" * 9_900_000 + b"</w:p>", "word/document.xml", "x.docx", 10_000_000)
    assert len(calls) >= 39_600_000 // files._XML_WINDOW, len(calls)


def test_a_character_reads_as_32_characters_at_most():
    """A CMap may map a code to 256 characters (an unknown /Differences name to any
    number): a 2 KB page read as 409 M characters, past the limit only after seconds in
    calls that no cancel reaches (review 57). The page's text is bounded by its codes."""
    x = files.extract(make_pdf(["AAAB"], to_unicode={"A": "x" * 256, "B": "fi"}), "a.pdf")
    assert x.text.strip() == "x" * (3 * files._MAX_CHAR_TEXT) + "fi"


def test_a_cmap_too_large_to_parse_is_refused():
    """A /ToUnicode of 19 MB held 1.1 GB in pypdf's parsing, in calls of 1 s (review 57)."""
    assert files.extract(make_pdf(["AB"], to_unicode={"A": "q"}, cmap_pad=1_000), "a.pdf").text.strip() == "qB"
    with pytest.raises(files.LimitExceeded, match="CMap holds 4,000,1.. bytes, more than 4,000,000"):
        files.extract(make_pdf(["AB"], to_unicode={"A": "q"}, cmap_pad=files._MAX_CMAP), "a.pdf")


def test_a_documents_decoded_streams_are_bounded(monkeypatch):
    """pypdf keeps every stream it decodes for the whole document: a 3.8 MB file of 200
    fonts, each with its own 19 MB CMap, took 3.6 GB (review 57). At most _MAX_DECODED."""
    pdf = make_pdf(["a" * 300_000] * 5, deflate=True)
    assert len(files.extract(pdf, "a.pdf").text) > 1_500_000
    monkeypatch.setattr(files, "_MAX_DECODED", 1_000_000)
    with pytest.raises(files.LimitExceeded, match="its streams decode to more than 1,000,000 bytes"):
        files.extract(pdf, "a.pdf")


def test_a_page_names_5000_fonts_at_most():
    """pypdf builds every font a page (and its forms) names: 100,000 font dictionaries in a
    5.6 MB file took 1.9 GB, and their collection 0.8 s in one call (review 57b)."""
    pdf = make_pdf(["hello"])
    fonts = lambda n: b"/Font << " + b"".join(b"/F%d 3 0 R " % i for i in range(1, n + 1)) + b">>"  # noqa: E731
    assert files.extract(pdf.replace(b"/Font << /F1 3 0 R >>", fonts(5_000)), "a.pdf").text == "hello"
    with pytest.raises(files.LimitExceeded, match="a page names more than 5,000 fonts"):
        files.extract(pdf.replace(b"/Font << /F1 3 0 R >>", fonts(5_001)), "a.pdf")


# -- the reader process (files._read_apart) ------------------------------------------

GIB = 1 << 30


def _expanding_pdf(codes: int) -> bytes:
    """A small PDF whose one character code reads as 32 astral characters (the cap), in one
    Tj of `codes` codes: its page's text is 32 x codes characters, built by pypdf before
    any bound of ours sees it (review 57b, B1: 19 M codes took +2.5 GB)."""
    return make_pdf(["A" * codes], deflate=True, to_unicode={"A": "\U0001F600" * 32})


@pytest.mark.parametrize("name", ["routine-vacuuming.pdf", "shared-mime-info-spec.pdf"])
def test_the_reader_process_reads_as_this_process_does(name):
    data = (FILES / name).read_bytes()
    assert files.extract(data, name, reader_memory=GIB) == files.extract(data, name)


def test_the_reader_process_gives_back_our_errors_as_they_are():
    """The class (SQLSTATE), message and hint of an error of the reading cross the process."""
    data = (FILES / "backup-dump-encrypted.pdf").read_bytes()
    with pytest.raises(files.FileNotSupported) as inside:
        files.extract(data, "b.pdf")
    with pytest.raises(files.FileNotSupported) as apart:
        files.extract(data, "b.pdf", reader_memory=GIB)
    assert (apart.value.message, apart.value.hint) == (inside.value.message, inside.value.hint)
    with pytest.raises(files.LimitExceeded, match="has 3 pages, over the limit of 2"):
        files.extract(make_pdf(["a", "b", "c"]), "c.pdf", max_pages=2, reader_memory=GIB)


def test_the_reader_process_has_a_memory_limit():
    """A PDF whose reading needs more memory than the reader may have is refused (54000,
    naming the limit); the same file is read under a higher limit."""
    pdf = _expanding_pdf(300_000)   # 9.6 M characters: 38 MB as one str, more as pypdf builds it
    assert len(files.extract(pdf, "e.pdf", max_bytes=1 << 30, reader_memory=GIB).text) == 9_600_000
    with pytest.raises(files.LimitExceeded, match=r"it needs more than 128 MB of memory") as e:
        files.extract(pdf, "e.pdf", max_bytes=1 << 30, reader_memory=128 << 20)
    assert "rag.max_file_memory" in e.value.hint


def test_a_cancel_kills_the_reader_process(monkeypatch):
    """A cancel (check_interrupts raising) ends the reading at once: the reader is killed,
    not waited for, whatever pypdf is doing in it."""
    import subprocess
    import time
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(*a, **k):
        started.append(real_popen(*a, **k))
        return started[-1]
    monkeypatch.setattr(subprocess, "Popen", popen)
    t0 = time.monotonic()

    def check():
        if time.monotonic() - t0 > 0.5:
            raise KeyboardInterrupt("cancelled")
    monkeypatch.setattr(files.interrupts, "check_interrupts", check)
    pdf = _expanding_pdf(19_000_000)   # seconds of pypdf work, then past any memory limit
    with pytest.raises(KeyboardInterrupt, match="cancelled"):
        files.extract(pdf, "slow.pdf", max_bytes=1 << 30, reader_memory=GIB)
    assert started and started[0].returncode == -9   # SIGKILL, and reaped


def test_a_pdfs_surrogates_are_paired_or_replaced():
    """A font's map may give UTF-16 surrogates one at a time: a pair read as its character,
    one alone as U+FFFD (Postgres takes no surrogate: such a page was a 38000 error)."""
    pdf = make_pdf(["ABAC"], to_unicode={"A": "\ud83d", "B": "\ude00", "C": "x"})
    assert files.extract(pdf, "a.pdf").text == "\U0001F600\ufffdx"
    assert files.extract(pdf, "a.pdf", reader_memory=GIB).text == "\U0001F600\ufffdx"


def test_the_reader_process_has_a_cpu_time_limit():
    """The reader may use at most reader_seconds of CPU time (4 readers at once near their
    memory limit spun in the kernel for minutes: review 58)."""
    pdf = _expanding_pdf(19_000_000)   # seconds of pypdf work
    with pytest.raises(files.LimitExceeded, match=r"it takes more than 1 second of CPU time") as e:
        files.extract(pdf, "slow.pdf", max_bytes=1 << 30, reader_memory=GIB, reader_seconds=1)
    assert "rag.max_file_seconds" in e.value.hint
