"""`ragpg ingest PATH...`: files and folders into the database through rag.ingest_file.

Each file's bytes are sent as a parameter (the server's file system is never read). A
folder is walked for the formats rag.ingest_file reads; a file named on the command line
is always sent. A file is a document whose source is its path relative to the folder
given (its name, for a file given), so running again over the same folder updates the
same documents, and a file whose sha256 is the one recorded (metadata file.sha256) is
skipped without being sent. One transaction per file: a bad file is reported and the
others go on. Progress: files, pages, chunks, rate, ETA; then a summary of what failed
and why. Exit status 1 when a file failed.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SUFFIXES = {".pdf", ".docx", ".html", ".htm", ".xhtml", ".md", ".markdown", ".txt"}


def walk(paths: list[str]) -> list[tuple[Path, str]]:
    """(file, source) for every file to send, in a stable order."""
    out = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                if f.is_file() and f.suffix.lower() in SUFFIXES and not any(s.startswith(".") for s in rel.parts):
                    out.append((f, rel.as_posix()))
        else:
            out.append((p, p.name))   # named on the command line: sent, whatever it is
    return out


@dataclass
class Tally:
    total: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    sent: int = 0
    skipped: int = 0
    pages: int = 0
    chunks: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def line(self, what: str) -> str:
        el = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / el
        eta = (self.total - self.done) / rate if rate else 0
        return (f"[{self.done}/{self.total}] {self.pages} pages, {self.chunks} chunks, "
                f"{rate:.1f} files/s, {self.chunks / el:.1f} chunks/s, eta {eta:.0f}s  {what}")


def run(dsn: str, paths: list[str], url_prefix: str | None = None, tenant: str | None = None,
        quiet: bool = False) -> int:
    files = walk(paths)
    tally = Tally(len(files))
    say = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    with psycopg.connect(dsn, autocommit=True) as conn:
        if tenant:
            conn.execute("SELECT set_config('rag.tenant', %s, false)", (tenant,))
        max_bytes = int(conn.execute("SELECT value FROM rag.settings() WHERE name = 'max_file_bytes'").fetchone()[0])
        known = dict(conn.execute("SELECT source, metadata->'file'->>'sha256' FROM rag.documents "
                                  "WHERE source = ANY(%s)", ([s for _, s in files],)).fetchall())
        for path, source in files:
            tally.done += 1
            try:
                size = path.stat().st_size
                if size > max_bytes:   # not read, not sent: the server would refuse it
                    raise ValueError(f"54000 {size:,} bytes, over rag.max_file_bytes ({max_bytes:,})")
                data = path.read_bytes()
            except (OSError, ValueError) as e:
                tally.failed.append((str(path), str(e)))
                say(tally.line(f"FAILED {path}"))
                continue
            if known.get(source) == hashlib.sha256(data).hexdigest():
                tally.skipped += 1
                say(tally.line(f"unchanged {source}"))
                continue
            url = url_prefix.rstrip("/") + "/" + source if url_prefix else None
            try:
                doc = conn.execute("SELECT rag.ingest_file(%s, %s, source => %s, url => %s)",
                                   (data, path.name, source, url)).fetchone()[0]
                pages, chunks = conn.execute(
                    "SELECT (d.metadata->'file'->>'pages')::int, (SELECT count(*) FROM rag.chunks AS c "
                    "WHERE c.document_id = d.id) FROM rag.documents AS d WHERE d.id = %s", (doc,)).fetchone()
            except psycopg.Error as e:
                msg = (e.diag.message_primary or str(e)).splitlines()[0]
                tally.failed.append((str(path), f"{e.sqlstate} {msg}"))
                say(tally.line(f"FAILED {path}"))
                if conn.broken:
                    raise
                continue
            tally.sent += 1
            tally.pages += pages or 0
            tally.chunks += chunks
            tally.bytes += len(data)
            say(tally.line(source))
    el = time.monotonic() - tally.started
    print(f"ingested {tally.sent} file{'' if tally.sent == 1 else 's'} ({tally.pages} pages, {tally.chunks} chunks, {tally.bytes / 1e6:.1f} MB) "
          f"in {el:.1f}s; {tally.skipped} unchanged, skipped; {len(tally.failed)} failed")
    for path, why in tally.failed:
        print(f"  FAILED {path}: {why}")
    return 1 if tally.failed else 0
