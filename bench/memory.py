"""Peak backend memory and time of one rag.ingest, by document size and shape: the figures
of docs/security.md ("a writer cannot eat the machine's memory").

    python bench/memory.py --dsn "host=127.0.0.1 port=55432 user=postgres dbname=ragdemo" --sizes 1,10

For each size (MB) and shape, a new connection loads the model first (so the baseline
includes it), then one rag.ingest runs while /proc/<backend pid>/status is read every
100 ms. The figure is RssAnon, the backend's private memory: VmRSS also counts the pages
of shared_buffers the backend touched (writing 18,000 chunks touches hundreds of MB of
them), which are the server's cache, not the backend's. Shapes:
  prose     real markdown: this project's docs/ and README, repeated with numbered headings
  headings  '# h' lines only (100,000 of them made 100,000 chunks and 5.5 GB in 0.1.0)
  token     one word with no spaces (one 5,000,000-character chunk in 0.1.0)
The documents are deleted afterwards. Prints a table, writes bench/results/<date>-memory.json.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import date
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def document(shape: str, mb: float) -> str:
    n = int(mb * 1_000_000)
    if shape == "headings":
        return ("# h\n" * (n // 4 + 1))[:n]
    if shape == "token":
        return "x" * n
    base = "\n\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"])
    parts, size, i = [], 0, 0
    while size < n:
        part = f"# Part {i}\n\n{base}\n\n"
        parts.append(part)
        size += len(part.encode())
        i += 1
    return "".join(parts).encode()[:n].decode(errors="ignore")


def status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                out[k] = int(v.split()[0]) // 1024   # MB
    return out


def measure(dsn: str, shape: str, mb: float) -> dict:
    text = document(shape, mb)
    with psycopg.connect(dsn, autocommit=True) as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        c.execute("SELECT rag.embed('warm up the model')")
        base = status(pid)["RssAnon"]
        peak = [base]
        rss = [status(pid)["VmRSS"]]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    st = status(pid)
                    peak.append(st["RssAnon"])
                    rss.append(st["VmRSS"])
                except OSError:
                    return
                time.sleep(0.1)
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.perf_counter()
        row = {"shape": shape, "mb": mb}
        try:
            doc = c.execute("SELECT rag.ingest(%s, %s)", (text, f"memory-{shape}-{mb}")).fetchone()[0]
            row["chunks"] = c.execute("SELECT count(*) FROM rag.chunks WHERE document_id = %s", (doc,)).fetchone()[0]
            c.execute("DELETE FROM rag.documents WHERE id = %s", (doc,))
        except psycopg.Error as e:
            row["error"] = f"{e.sqlstate}: {str(e).splitlines()[0][:120]}"
        row["seconds"] = round(time.perf_counter() - t0, 1)
        done.set()
        th.join()
        row.update(private_before_mb=base, private_peak_mb=max(peak), growth_mb=max(peak) - base,
                   vm_rss_peak_mb=max(rss))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--sizes", default="1,10", help="document sizes in MB, comma-separated")
    ap.add_argument("--shapes", default="prose,headings,token")
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    rows = []
    print("| shape | MB | chunks | seconds | private memory before -> peak (MB) | growth MB | VmRSS peak (with shared buffers) |"
          "\n|---|---|---|---|---|---|---|", flush=True)
    for shape in a.shapes.split(","):
        for mb in (float(s) for s in a.sizes.split(",")):
            r = measure(a.dsn, shape, mb)
            rows.append(r)
            print(f"| {shape} | {mb:g} | {r.get('chunks', r.get('error'))} | {r['seconds']} "
                  f"| {r['private_before_mb']} -> {r['private_peak_mb']} | {r['growth_mb']} | {r['vm_rss_peak_mb']} |", flush=True)
    out = Path(a.out) / f"{date.today()}-memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
