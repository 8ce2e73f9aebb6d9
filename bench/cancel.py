"""How long a backend takes to stop after pg_cancel_backend / pg_terminate_backend /
statement_timeout, at each stage of the data path: the figures of docs/security.md.

    python bench/cancel.py --dsn "host=127.0.0.1 port=55432 user=postgres dbname=ragdemo"

Each case starts a statement in a connection of its own, waits until it is well inside
the stage named, signals the backend, and measures the time from the signal to the error
the client gets. Five runs per case; prints the median and the worst, writes
bench/results/<date>-cancel.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import statistics
import threading
import time
import zlib
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

MANUAL = sorted(glob.glob("/usr/share/doc/postgresql-doc-15/html/*.html"))


def manual_html(mb: float) -> str:
    out, n = [], 0
    for f in MANUAL:
        s = Path(f).read_text(errors="replace")
        out.append(s)
        n += len(s)
        if n > mb * 1e6:
            break
    return "".join(out)[: int(mb * 1e6)]


class Hang(BaseHTTPRequestHandler):
    """A model server that never answers (a real socket on loopback)."""

    def do_POST(self):
        time.sleep(60)

    def log_message(self, *a):
        pass


def one_string_pdf(chars: int) -> bytes:
    """A one-page PDF whose content stream (deflated) shows one string of `chars` letters:
    pypdf reads a string a character at a time, in one call (review 56)."""
    stream = zlib.compress(b"BT /F1 12 Tf 72 720 Td (" + b"a" * chars + b") Tj ET", 9)
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
            b"/Contents 5 0 R >>", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for k, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % k + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


CASES = {
    # stage: (SQL, its argument, seconds to wait before the signal)
    "parsing + chunking (10 MB of '# a' + spaces lines)": (
        "SELECT rag.ingest(%s, 'cancel-chunk')", ("# a" + " " * 200 + "b\n") * 45_000, 1.0),
    "embedding (1 MB of the manual's HTML)": (
        "SELECT rag.ingest(%s, 'cancel-embed', metadata => '{\"format\": \"html\"}')", manual_html(1.0), 6.0),
    "reading a PDF (one page: a 19 MB string, 19 KB deflated)": (
        "SELECT rag.ingest_file(%s, 'cancel-string.pdf')", one_string_pdf(19_000_000), 0.5),
    "waiting for a model server that hangs": (
        "SELECT rag.ask('How do I create an index?', model => 'hangs')", None, 1.0),
}


def run_case(dsn: str, sql: str, arg, wait: float, how: str) -> tuple[str, float]:
    out: dict = {}
    conn = psycopg.connect(dsn, autocommit=True)
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    conn.execute("SELECT rag.embed('warm up')")
    if how == "statement_timeout":
        conn.execute(f"SET statement_timeout = '{int(wait * 1000)}ms'")

    def go():
        try:
            conn.execute(sql, (arg,) if arg is not None else ())
            out["state"] = "finished"
        except psycopg.Error as e:
            out["state"] = e.sqlstate or type(e).__name__
        out["at"] = time.perf_counter()
    th = threading.Thread(target=go)
    t0 = time.perf_counter()
    th.start()
    if how == "statement_timeout":
        signal_at = t0 + wait
    else:
        time.sleep(wait)
        with psycopg.connect(dsn, autocommit=True) as admin:
            signal_at = time.perf_counter()
            admin.execute(f"SELECT pg_{how}_backend(%s)", (pid,))
    th.join(120)
    conn.close()
    return out.get("state", "still running"), round(out.get("at", float("inf")) - signal_at, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hang)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with psycopg.connect(a.dsn, autocommit=True) as c:
        c.execute("SELECT rag.add_model('hangs', 'chat', base_url => %s)", (f"http://127.0.0.1:{httpd.server_port}/v1",))
        c.execute("SELECT rag.ingest('# Indexes\n\nCREATE INDEX CONCURRENTLY builds an index without locking writes.', "
                  "'cancel-context.md')")
    rows = []
    print("| stage | signal | SQLSTATE | median s | worst s |\n|---|---|---|---|---|", flush=True)
    for stage, (sql, arg, wait) in CASES.items():
        for how in ("cancel", "terminate", "statement_timeout"):
            runs = [run_case(a.dsn, sql, arg, wait, how) for _ in range(a.runs)]
            secs = [s for _, s in runs]
            row = {"stage": stage, "signal": how, "states": sorted({st for st, _ in runs}),
                   "median_s": statistics.median(secs), "worst_s": max(secs), "runs": secs}
            rows.append(row)
            print(f"| {stage} | {how} | {', '.join(row['states'])} | {row['median_s']} | {row['worst_s']} |", flush=True)
    with psycopg.connect(a.dsn, autocommit=True) as c:
        c.execute("DELETE FROM rag.documents WHERE source LIKE 'cancel-%'")
        c.execute("DELETE FROM rag.models WHERE name = 'hangs'")
    httpd.shutdown()
    out = Path(a.out) / f"{date.today()}-cancel.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
