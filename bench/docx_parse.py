"""What reading a large Word document costs: tests/files/routine-vacuuming.docx (LibreOffice)
with its body repeated 100 times (word/document.xml 11.8 MB, 3.6 M characters of text),
read by ragpg.files as rag.ingest_file does, five times in one process; the median time,
the peak memory of the process and a digest of the text (equal digests: the same text).
Give `--package` the directory holding another version's `ragpg` package to compare
(review 47 streamed the parse: before and after, one run each, in docs/security.md).

    .venv/bin/python bench/docx_parse.py [--package DIR] [--copies N]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import resource
import statistics
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def large_docx(copies: int) -> bytes:
    src = zipfile.ZipFile(ROOT / "tests/files/routine-vacuuming.docx")
    doc = src.read("word/document.xml")
    start, end = doc.index(b"<w:body>") + len(b"<w:body>"), doc.rindex(b"<w:sectPr")
    doc = doc[:start] + doc[start:end] * copies + doc[end:]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name in src.namelist():
            z.writestr(name, doc if name == "word/document.xml" else src.read(name))
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", default=str(ROOT / "plpy"), help="directory holding the ragpg package")
    ap.add_argument("--copies", type=int, default=100)
    args = ap.parse_args()
    sys.path.insert(0, args.package)
    from ragpg import files

    data = large_docx(args.copies)
    seconds = []
    for _ in range(5):
        t = time.perf_counter()
        text = files.extract(data, "large.docx", max_bytes=100_000_000).text
        seconds.append(time.perf_counter() - t)
    print(f"{args.package}: {len(data):,} bytes zipped, {len(text):,} characters; median "
          f"{statistics.median(seconds):.3f} s; peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB; "
          f"text {hashlib.sha256(text.encode()).hexdigest()[:12]}")


if __name__ == "__main__":
    main()
