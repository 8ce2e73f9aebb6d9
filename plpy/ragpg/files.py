"""File bytes -> document text (stage 0 of the data path, before text.py).

The format is read from the content first, the file name second:
- PDF (`%PDF-` in the first KiB): the text layer, page by page, through pypdf (pure
  Python). Pages are separated by a form feed, which the chunker treats as a page break,
  so every chunk knows its page. The outline (bookmarks), when there is one, becomes
  markdown headings at the top of the pages it points to: the chunks' heading paths.
- DOCX (a ZIP with word/document.xml): read with zipfile and ElementTree from the
  standard library: heading styles become `#` lines, list paragraphs `- ` lines, table
  rows ` | `-joined lines, other paragraphs are separated by blank lines.
- Anything else must be UTF-8 text: `.html`/`.htm` is HTML, `.md` markdown, `.txt`
  plain text, and other names are detected as text.py does.

Bad files raise RagError with the file's name: FileCorrupt (22P03) for a truncated or
malformed file, FileNotSupported (0A000) for an encrypted PDF or one without a text layer,
LimitExceeded (54000) past the page or size limits or for a ZIP bomb. Inside Postgres a PDF
is read in a process of its own, with limits of memory and CPU time, killed at a cancel
(`_read_apart`). The limits bound time and memory: pypdf's own (decompressed stream
sizes, parsing work per content stream, outline and page-tree sizes) are set lower than
its defaults, a DOCX part is read at most `max_bytes` decompressed, and every page or
paragraph checks for interrupts.
"""
from __future__ import annotations

import codecs
import contextvars
import gc
import io
import itertools
import logging
import re
import traceback
import warnings
import zipfile
from dataclasses import dataclass
from xml.etree import ElementTree

from . import interrupts
from .errors import InvalidParameter, LimitExceeded, RagError, shown
from .text import detect_format, found_title


class FileCorrupt(RagError):
    sqlstate = "22P03"  # invalid_binary_representation: not the file it claims to be


class FileNotSupported(RagError):
    sqlstate = "0A000"  # feature_not_supported: encrypted, or no text layer (scanned)


FORMATS = ("auto", "pdf", "docx", "html", "markdown", "text")
_BY_SUFFIX = {"pdf": "pdf", "docx": "docx", "html": "html", "htm": "html", "xhtml": "html",
              "md": "markdown", "markdown": "markdown", "txt": "text", "text": "text"}
# pypdf's limits, below its defaults (75 MB streams, 2M parsing steps): a page's content
# stream is parsed in one call that cannot be interrupted, so each call stays well under
# a second; real pages are far below these (the PostgreSQL manual's largest: ~200 KB)
_PDF_LIMITS = dict(maximum_declared_stream_length=20_000_000, zlib_maximum_output_length=20_000_000,
                   lzw_maximum_output_length=20_000_000, run_length_maximum_output_length=20_000_000,
                   array_based_stream_maximum_output_length=20_000_000, stream_decoding_work_maximum_length=40_000_000,
                   stream_parsing_work_maximum_count=300_000, outline_maximum_entries=20_000, outline_maximum_depth=20,
                   page_tree_maximum_depth=50, xform_maximum_invocations_per_extraction=500,
                   jbig2dec_binary=None)  # never run an external program
# and bounds pypdf has no setting for (review 57; `_bound_pypdf`): every stream pypdf decodes
# stays in memory for the whole document (a 3.8 MB file of 200 fonts, each with a CMap of
# 19 MB of blanks, took 3.6 GB), a /ToUnicode CMap's parsing holds ~50 times its size in
# single calls that no cancel reaches (19 MB: +1.1 GB, 1 s), and a character's text may be
# 256 characters long (a CMap's) or any length (an unknown glyph name of /Differences): a
# 2 KB page read as 409 M characters
_MAX_DECODED = 256_000_000   # bytes of decoded streams a document
_MAX_CMAP = 4_000_000        # bytes of one /ToUnicode (a large CJK font's: ~0.5 MB)
_MAX_CHAR_TEXT = 32          # characters one character code reads as (ligatures: 2-3)
_MAX_PAGE_FONTS = 5_000      # fonts pypdf builds for a page, its forms' too (100,000: 1.9 GB)
_decoded_left: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("decoded_left", default=None)
_fonts_left: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("fonts_left", default=None)


class _TooComplex(BaseException):
    """A bound of `_bound_pypdf` passed, raised inside pypdf (a BaseException: pypdf's own
    `except Exception` lets it through)."""


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_HEADING_STYLE = re.compile(r"^(?:heading\s*([1-9])|title)$", re.I)


@dataclass(frozen=True)
class Extracted:
    text: str              # the document's text; a form feed between pages
    file_format: str       # pdf, docx, html, markdown or text
    text_format: str       # how text.py reads `text`: markdown, text or html
    title: str | None      # from the file's metadata, when it has one
    pages: int | None      # PDF pages


def detect(data: bytes, filename: str) -> str:
    """The file's format from its first bytes, then its name's suffix."""
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if data[:4] == b"PK\x03\x04":
        return "docx"
    if suffix in ("pdf", "docx"):
        # named as one, but not one: empty, truncated at the start, or something else
        raise FileCorrupt(f"rag.ingest_file: {shown(filename)} is named .{suffix} but is not a {suffix.upper()} file "
                          f"(it starts with {data[:8]!r})", hint="check the file is complete and what its name says")
    return _BY_SUFFIX.get(suffix, "auto")


def extract(data: bytes, filename: str, fmt: str = "auto", max_pages: int = 2000,
            max_bytes: int = 10_000_000, reader_memory: int | None = None, reader_seconds: int = 120) -> Extracted:
    """Extract the text of a file; see the module docstring. `max_bytes` bounds the text
    (and any part of a DOCX) in bytes, `max_pages` a PDF's pages. `reader_memory`: a PDF is
    read in a process of its own with at most that many bytes of address space and
    `reader_seconds` seconds of CPU time (`_read_apart`), when the server has a Python
    interpreter; None: in this process."""
    fmt = (fmt or "auto").lower()
    if fmt not in FORMATS:
        raise InvalidParameter(f"rag.ingest_file: unknown file format {shown(fmt)}",
                               hint="format must be one of " + ", ".join(FORMATS))
    if fmt == "auto":
        fmt = detect(data, filename)
    if fmt == "pdf":
        return _pdf(data, filename, max_pages, max_bytes, reader_memory, reader_seconds)
    if fmt == "docx":
        return _docx(data, filename, max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FileCorrupt(f"rag.ingest_file: {shown(filename)} is not a PDF or DOCX file, and not UTF-8 text "
                          f"(byte {e.start:,} is 0x{data[e.start]:02x})",
                          hint="convert text files to UTF-8; supported files: PDF, DOCX, HTML, markdown, text") from None
    if fmt == "auto":
        fmt = detect_format(text)
    return Extracted(text, fmt, fmt, None, None)


def _pdf(data: bytes, name: str, max_pages: int, max_bytes: int, reader_memory: int | None,
         reader_seconds: int) -> Extracted:
    python = _python() if reader_memory else None
    if python:
        pages, title = _read_apart(python, data, name, max_pages, max_bytes, reader_memory, reader_seconds)
    else:
        pages, title = _read_pdf(data, name, max_pages, max_bytes)
    if not any(p.strip() for p in pages):
        raise FileNotSupported(f"rag.ingest_file: {shown(name)} has no text layer in its {len(pages):,} "
                               f"page{'s' if len(pages) != 1 else ''} "
                               "(a scanned document?); OCR is not supported",
                               hint="run OCR first (e.g. ocrmypdf), then ingest the result")
    return Extracted("\n\f".join(pages), "pdf", "markdown", title, len(pages))


def _python() -> str | None:
    """The Python interpreter to run a reader process with: this one's (PL/Python's
    sys.executable is empty: the server's /usr/bin/pythonX.Y then), if it is there."""
    import os
    import sys
    for exe in (sys.executable, os.path.join(sys.base_exec_prefix, "bin", "python%d.%d" % sys.version_info[:2])):
        if exe and os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    return None


# the reader process's program: this module, found where the server's Python finds it
_CHILD = "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); from ragpg import files; files._reader_main()"
_ERRORS = {c.__name__: c for c in (FileCorrupt, FileNotSupported, LimitExceeded)}
_OUT_OF_MEMORY = 4   # the reader's exit status when its memory ran out (its limit)


def _read_apart(python: str, data: bytes, name: str, max_pages: int, max_bytes: int,
                memory: int, seconds: int) -> tuple[list[str], str | None]:
    """`_read_pdf` in a process of its own (review 57b: pypdf's memory and time on a hostile
    PDF have more shapes than bounds can name). The process has at most `memory` bytes of
    address space and `seconds` of CPU time (4 readers at once near their memory limit
    spun for minutes in the kernel: review 58), gives its memory back when it ends, dies
    with its backend, and is killed (SIGKILL) at a cancel: a statement_timeout or
    pg_cancel_backend ends the reading within the 50 ms of a check, whatever pypdf is
    doing, and the backend's own memory and GIL are not pypdf's to hold."""
    import json
    import os
    import signal
    import subprocess
    import sys
    path = [p for p in sys.path if isinstance(p, str) and os.path.isabs(p)]
    # the file as the reader's stdin from memory (communicate cannot go on writing a pipe
    # after it timed out), after a line of what else it needs (not in its arguments, which
    # any user of the host sees); -I -S: no user site, no PYTHON* variables, no environment
    with os.fdopen(os.memfd_create("ragpg-pdf"), "w+b") as file:
        file.write(json.dumps([name, max_pages, max_bytes, memory, seconds, os.getpid()]).encode() + b"\n")
        file.write(data)
        file.seek(0)
        try:
            proc = subprocess.Popen([python, "-I", "-S", "-c", _CHILD, json.dumps(path)], stdin=file,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={}, cwd="/")
        except OSError as e:
            raise RagError(f"rag.ingest_file: cannot start a process to read {shown(name)}: {e}",
                           hint="the server is out of processes or memory") from None
        with proc:
            try:
                while True:
                    try:
                        out, err = proc.communicate(timeout=interrupts.INTERVAL)
                        break
                    except subprocess.TimeoutExpired:
                        interrupts.check_interrupts()
            except BaseException:
                proc.kill()
                raise
    if proc.returncode == _OUT_OF_MEMORY:
        raise LimitExceeded(f"rag.ingest_file: {shown(name)} is a PDF too complex to read: it needs more than "
                            f"{memory >> 20:,} MB of memory",
                            hint="split the PDF, or ask an administrator to raise rag.max_file_memory")
    if proc.returncode == -signal.SIGXCPU:
        raise LimitExceeded(f"rag.ingest_file: {shown(name)} is a PDF too complex to read: it takes more than "
                            f"{seconds:,} second{'s' if seconds != 1 else ''} of CPU time",
                            hint="split the PDF, or ask an administrator to raise rag.max_file_seconds")
    try:
        got = json.loads(out.decode("utf-8", "surrogatepass")) if proc.returncode == 0 else {}
    except ValueError:
        got = {}
    if "pages" in got:
        return got["pages"], got["title"]
    if got.get("error") in _ERRORS:
        raise _ERRORS[got["error"]](got["message"], hint=got["hint"])
    last = (err.decode("utf-8", "replace").strip().splitlines() or [""])[-1][:200]
    raise RagError(f"rag.ingest_file: the process reading {shown(name)} ended with status {proc.returncode}"
                   + (f": {last}" if last else ""), hint="the server's Python must have pypdf; see docs/files.md")


def _reader_main() -> None:
    """The reader process of `_read_apart`: on stdin a JSON line of its settings, then the
    PDF; on stdout its pages and title (or the error) as JSON."""
    import ctypes
    import json
    import os
    import resource
    import sys
    name, max_pages, max_bytes, memory, seconds, parent = json.loads(sys.stdin.buffer.readline())
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)   # PR_SET_PDEATHSIG, SIGKILL: dies with its backend
    if os.getppid() != parent:
        sys.exit(3)   # (the backend was gone before that)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))   # SIGXCPU ends it, else SIGKILL
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # (SIGXCPU's core: none)
    logging.disable(logging.CRITICAL)   # pypdf's complaints: nowhere (the server log had them),
    warnings.simplefilter("ignore")      # not to a pipe the backend holds in memory
    try:
        data = sys.stdin.buffer.read()
        try:
            pages, title = _read_pdf(data, name, max_pages, max_bytes)
            got = {"pages": pages, "title": title}
        except RagError as e:
            got = {"error": type(e).__name__, "message": e.message, "hint": e.hint}
        del data
        for piece in json.JSONEncoder(ensure_ascii=False).iterencode(got):   # (a page at a time)
            sys.stdout.buffer.write(piece.encode("utf-8", "surrogatepass"))
        sys.stdout.flush()
    except MemoryError:
        os._exit(_OUT_OF_MEMORY)   # (whatever was written: the status says it)


def _read_pdf(data: bytes, name: str, max_pages: int, max_bytes: int) -> tuple[list[str], str | None]:
    """A PDF's pages' text and its title, read in this process (in a worker thread that a
    cancel stops, inside Postgres)."""
    import pypdf  # only when a PDF comes (~60 ms the first time)
    _bound_pypdf(pypdf)

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings on odd files would fill the server log

    def visit(*_):  # pypdf calls this per text operator: a long page stops soon after a cancel
        interrupts.stop_if_abandoned()

    def read() -> tuple[list[str], str | None]:
        _decoded_left.set([_MAX_DECODED])
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # permissions-only encryption opens with the empty password
            if not _decrypts(reader):
                raise FileNotSupported(f"rag.ingest_file: {shown(name)} is an encrypted PDF",
                                       hint="decrypt it first (e.g. qpdf --decrypt), then ingest it again")
        n = len(reader.pages)
        if n > max_pages:
            raise LimitExceeded(f"rag.ingest_file: {shown(name)} has {n:,} pages, over the limit of {max_pages:,}",
                                hint="split the PDF, or ask an administrator to raise rag.max_file_pages")
        if n == 0:
            raise FileCorrupt(f"rag.ingest_file: {shown(name)} is a PDF without pages")
        heads = _outline(reader, n)
        pages, size = [], 0

        def check_size(i: int, more: int) -> None:
            if size + more > max_bytes:
                raise LimitExceeded(f"rag.ingest_file: {shown(name)} holds more than {max_bytes:,} "
                                    f"characters of text by page {i + 1:,}",
                                    hint="split the PDF, or ask an administrator to raise rag.max_document_bytes")
        for i, page in enumerate(reader.pages):
            interrupts.stop_if_abandoned()
            _fonts_left.set([_MAX_PAGE_FONTS])
            text = page.extract_text(visitor_text=visit)
            # before _tidy too: each of its passes is one call that no cancel reaches (a
            # 2 KB page that expands to 409 M characters held them for 13 s: review 57)
            check_size(i, len(text))
            text = _tidy(text)
            more = len(text) + sum(len(t) + 4 for _, t in heads.get(i, ()))
            check_size(i, more)
            size += more
            pages.append(_whole(_place_headings(text, heads.get(i, []))))
        return pages, _pdf_title(reader)

    with pypdf.apply_configuration(**_PDF_LIMITS):
        try:
            # every call of pypdf's can run for seconds on a small hostile file (reading the
            # page tree, a 19 MB string, pure-Python RC4, an outline or title of 1 MB
            # strings: reviews 56 and 56b): all of them in a worker thread, stopped at its
            # next line of Python once the statement is cancelled (the result dropped)
            try:
                pages, title = interrupts.wait(read, stop=True)
            except BaseException as e:
                # the worker's frames hold the reader and a page's text (2.5 GB): freed
                # with them now, not kept by the error until a collection (review 57b)
                traceback.clear_frames(e.__traceback__)
                raise
        except RagError:
            raise
        except interrupts.Interrupt:
            raise
        except (RecursionError, pypdf.errors.LimitReachedError, _TooComplex) as e:
            raise LimitExceeded(f"rag.ingest_file: {shown(name)} is a PDF too complex to read: {_reason(e)}",
                                hint="its objects nest too deeply or its streams are too large") from None
        except MemoryError:
            raise
        except Exception as e:  # pypdf raises many kinds on malformed input
            raise FileCorrupt(f"rag.ingest_file: {shown(name)} is a damaged or truncated PDF: {_reason(e)}",
                              hint="check the file is complete; a PDF viewer may repair it") from None
        finally:
            # the reader's objects, in reference cycles, freed now and not at the cyclic
            # collector's next run (3.6 GB stayed after a 3.8 MB PDF's statement: review 57)
            gc.collect()
    return pages, title


def _decrypts(reader) -> bool:
    try:
        return bool(reader.decrypt(""))
    except Exception:  # AES needs a crypto library we do not ship: as good as no password
        return False


def _bound_pypdf(pypdf) -> None:
    """pypdf's decoding of streams, its fonts' character maps and its building of fonts,
    wrapped (once) with the bounds above (`_MAX_DECODED`, `_MAX_CMAP`, `_MAX_CHAR_TEXT`,
    `_MAX_PAGE_FONTS`)."""
    from pypdf import _cmap, filters
    from pypdf.generic import _font
    if getattr(filters.decode_stream_data, "_ragpg", False):
        return
    decode, get_encoding = filters.decode_stream_data, _cmap.get_encoding

    def decode_stream_data(stream):
        data = decode(stream)
        _spend(_decoded_left, len(data), "its streams decode to more than {:,} bytes", _MAX_DECODED)
        return data

    def bounded_encoding(ft):
        tu = ft.get("/ToUnicode")
        tu = tu.get_object() if tu is not None else None
        if isinstance(tu, pypdf.generic.StreamObject) and len(tu.get_data()) > _MAX_CMAP:
            raise _TooComplex(f"a font's /ToUnicode CMap holds {len(tu.get_data()):,} bytes, "
                              f"more than {_MAX_CMAP:,}")
        encoding, map_dict = get_encoding(ft)
        for table in (encoding, map_dict):
            if isinstance(table, dict):
                for code, text in table.items():
                    if isinstance(text, str) and len(text) > _MAX_CHAR_TEXT:
                        table[code] = text[:_MAX_CHAR_TEXT]
        return encoding, map_dict
    build_font = _font.Font.from_font_resource

    def from_font_resource(cls, pdf_font_dict):
        _spend(_fonts_left, 1, "a page names more than {:,} fonts", _MAX_PAGE_FONTS)
        return build_font(pdf_font_dict)
    decode_stream_data._ragpg = True
    filters.decode_stream_data = decode_stream_data
    _cmap.get_encoding = _font.get_encoding = bounded_encoding
    _font.Font.from_font_resource = classmethod(from_font_resource)


def _spend(left: contextvars.ContextVar[list[int] | None], n: int, over: str, bound: int) -> None:
    """n taken from a budget of `_bound_pypdf` (none outside a PDF's reading); past it,
    _TooComplex with `over` naming the bound."""
    rest = left.get()
    if rest is not None:
        rest[0] -= n
        if rest[0] < 0:
            raise _TooComplex(over.format(bound))


def _reason(e: BaseException) -> str:
    msg = " ".join(str(e).split())[:200]
    return msg if isinstance(e, _TooComplex) else f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _tidy(text: str) -> str:
    """A page's text: words hyphenated at a line end joined, trailing blanks and runs of
    blank lines removed, no form feed of its own, and no line that reads as a markdown
    heading (the outline makes the headings: a '#' line of the page is indented by a space)."""
    text = text.replace("\f", "\n").replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"(?<=[a-z])-\n(?=[a-z])", "", text)
    text = re.sub(r"(?<![ \t])[ \t]++\n", "\n", text)   # (from a run's start only: 80,000 spaces took 5 s)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return re.sub(r"(?m)^#", " #", text)


def _outline(reader, n_pages: int) -> dict[int, list[tuple[int, str]]]:
    """Page index -> (depth, title) of the outline entries that point to it, in order
    (depth 1-3; deeper entries are not headings the chunker splits at)."""
    out: dict[int, list[tuple[int, str]]] = {}
    try:
        outline = reader.outline
    except Exception:
        return out  # a broken outline is not a broken document: pages still come

    def walk(items, depth):
        for it in items:
            interrupts.stop_if_abandoned()   # (in _pdf's worker)
            if isinstance(it, list):
                walk(it, depth + 1)
                continue
            if depth > 3:
                continue
            try:
                i = reader.get_destination_page_number(it)
            except Exception:
                continue
            title = " ".join(str(getattr(it, "title", "") or "").split())[:200]
            if title and i is not None and 0 <= i < n_pages:
                out.setdefault(i, []).append((depth, title))
    walk(outline, 1)
    return out


def _place_headings(text: str, heads: list[tuple[int, str]]) -> str:
    """The page's text with its outline entries as markdown headings: each replaces the
    line that shows its title (its last such line after the previous heading's: a contents
    list at the top of the page shows the same titles before the sections); a title not
    found on the page is put where the search stands. Linear: each line is compared once
    (a search per entry over the page's lines took 8,000 entries on a page of 80,000 lines
    18 s without a cancel check: review 47)."""
    lines = text.split("\n")
    last = {" ".join(ln.split()): j for j, ln in enumerate(lines)}   # title -> its last line
    at, found, missing = 0, {}, {}
    for level, title in heads:
        mark = "#" * level + " " + title
        j = last.get(title)
        if j is None or j < at:
            missing.setdefault(at, []).append(mark)
            continue
        found[j] = mark
        at = j + 1
    out = []
    for j, ln in enumerate(lines):
        out.extend(missing.get(j, ()))
        out.append(found.get(j, ln))
    out.extend(missing.get(len(lines), ()))
    return "\n".join(out).strip()


def _pdf_title(reader) -> str | None:
    try:
        t = reader.metadata.title if reader.metadata else None
    except Exception:
        return None
    return found_title(_whole(str(t))) if t else None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole(text: str) -> str:
    """text with its UTF-16 surrogates paired into the characters they make, and one alone
    as U+FFFD: pypdf gives what a font's map says, and Postgres takes no surrogate (a page
    of them was a 38000 error that named nothing: review 58)."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _docx(data: bytes, name: str, max_bytes: int) -> Extracted:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        names = set(zf.namelist())
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise FileCorrupt(f"rag.ingest_file: {shown(name)} is a damaged or truncated ZIP (DOCX) file: {_reason(e)}",
                          hint="check the file is complete") from None
    if "word/document.xml" not in names:
        raise FileNotSupported(f"rag.ingest_file: {shown(name)} is a ZIP file but not a Word document (no word/document.xml)",
                               hint="supported files: PDF, DOCX, HTML, markdown, text")
    styles = _docx_styles(zf, name, max_bytes) if "word/styles.xml" in names else {}
    blocks: list[str] = []
    size = 0
    for parent, el in _xml_elements(zf, "word/document.xml", name, max_bytes, 2):   # document, body, p
        if parent.tag != f"{_W}body":
            continue
        if el.tag == f"{_W}p":
            blocks.append(_paragraph(el, styles))
        elif el.tag == f"{_W}tbl":
            blocks.append(_table(el))
        else:
            continue
        size += len(blocks[-1]) + 2
        if size > max_bytes:
            raise LimitExceeded(f"rag.ingest_file: {shown(name)} holds more than {max_bytes:,} characters of text",
                                hint="split the document, or ask an administrator to raise rag.max_document_bytes")
    text = "\n\n".join(b for b in blocks if b.strip())
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    title = next((b.lstrip("#") for b in blocks if b.startswith("#")), None)  # its first heading
    return Extracted(text, "docx", "markdown", found_title(title), None)


MAX_XML_ITEMS = 1_000_000   # a DOCX part's elements, attributes and namespace declarations held at once
MAX_XML_NAMES = 50_000      # distinct element and attribute names, prefixes and namespaces in a part
MAX_XML_ATTRIBUTES = 10_000  # of one element, namespace declarations included (Word's: a few dozen)
_XML_SLICE = 1 << 16    # text handed to the parser at a time
_XML_WINDOW = 1 << 20   # bytes searched at a time for long tags and runs
# a start tag with more than MAX_XML_ATTRIBUTES attributes (a value holds no '<', and may
# hold '>': review 47c); every quantifier possessive, so a shorter tag fails in one pass
_MANY_ATTRIBUTES = re.compile(rb"""<[^\s/>!?<][^\s/><]*+(?:\s++[^\s=/><]++\s*+=\s*+(?:"[^"<]*+"|'[^'<]*+')){%d}"""
                              % (MAX_XML_ATTRIBUTES + 1))
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _xml_elements(zf: zipfile.ZipFile, part: str, name: str, max_bytes: int, depth: int):
    """A DOCX part's elements `depth` levels below its root, each with its parent, as each
    one ends; each is dropped once the caller has it. The part is read at most
    4 x max_bytes decompressed (a ZIP bomb stops there, whatever sizes the archive
    declares) and parsed in slices with a cancel check between two (`_xml_text`). What the
    parser holds is bounded (review 47: 40 MB of empty elements, 223 KB zipped, took 1 GB
    as one tree; reviews 47b and 47c: 3 M attributes of one element, 1 GB; 650 K prefixes):
    at most MAX_XML_ITEMS elements, attributes and namespace declarations at once,
    MAX_XML_NAMES distinct names and prefixes (the parser keeps each), max_bytes characters
    of text in one paragraph or table (`_xml_text` checks the attributes of a tag)."""
    parser = ElementTree.XMLPullParser(events=("start", "end", "start-ns"))
    path: list = []
    names: set = set()
    started = dropped = mark = declared = 0
    chars = chars_dropped = chars_mark = 0   # characters of text held (a paragraph's runs)

    def too_many(what: str, limit: int, hint: str):
        return LimitExceeded(f"rag.ingest_file: {shown(name)}: {part} has more than {limit:,} {what}", hint=hint)

    try:
        for text in itertools.chain(_xml_text(zf, part, name, max_bytes), [None]):
            if text is None:
                parser.close()
            else:
                parser.feed(text)
            for event, el in parser.read_events():
                if event == "start-ns":   # (prefix, uri): before the start of its element
                    started += 1
                    declared += 1
                    names.update(el)
                elif event == "start":
                    path.append(el)
                    if len(path) == depth + 1:
                        mark, chars_mark = started - declared, chars
                    declared = 0
                    started += 1 + len(el.attrib)
                    names.add(el.tag)
                    names.update(el.attrib)
                else:
                    path.pop()
                    chars += len(el.text or "")
                    if chars - chars_dropped > max_bytes:
                        raise LimitExceeded(f"rag.ingest_file: {shown(name)}: {part} holds more than "
                                            f"{max_bytes:,} characters of text in one paragraph or table",
                                            hint="split the document, or ask an administrator to raise "
                                                 "rag.max_document_bytes")
                    if len(path) == depth:
                        yield path[-1], el
                        path[-1].remove(el)
                        dropped += started - mark
                        chars_dropped += chars - chars_mark
                    continue
                if started - dropped > MAX_XML_ITEMS:
                    raise too_many("XML elements and attributes in one paragraph or table (or outside any)",
                                   MAX_XML_ITEMS, "a Word paragraph has a few hundred at most: split it, or the table")
                if len(names) > MAX_XML_NAMES:
                    raise too_many("distinct XML names and prefixes", MAX_XML_NAMES,
                                   "Word's own parts use a few hundred")
    except ElementTree.ParseError as e:
        raise FileCorrupt(f"rag.ingest_file: {shown(name)}: {part} is not well-formed XML: {_reason(e)}") from None


def _xml_text(zf: zipfile.ZipFile, part: str, name: str, max_bytes: int):
    """The part's text a slice at a time, with a cancel check before each. It is made UTF-8
    here as its byte order mark says (the parser is then given text, so the encoding its
    declaration names is not used), so that what is checked is what is parsed: no DTD
    (none in Office XML: no entity expansions; in UTF-16 the bytes of '<!DOCTYPE' were not
    found before: review 47b), and no tag of more than MAX_XML_ATTRIBUTES attributes (one
    tag is built in one parser step: review 47c). Each check is one pass over the bytes."""
    raw = _xml_bytes(zf, part, name, max_bytes)
    codec = next((c for bom, c in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        if codec not in ("utf-8", "utf-8-sig"):
            raw = raw.decode(codec).encode("utf-8")
        interrupts.check_interrupts()
        if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
            raise FileCorrupt(f"rag.ingest_file: {shown(name)}: {part} declares a DTD, which Word documents never do")
        _check_tags_and_runs(raw, part, name, max_bytes)
        decode = codecs.getincrementaldecoder("utf-8-sig")("strict").decode
        for i in range(0, len(raw) + 1, _XML_SLICE):
            interrupts.check_interrupts()
            # line ends as spaces (Word shows a line end in a run's text as one): the parser
            # hands on a text a line at a time, and holds each line as a string until its
            # element ends (a run of 13 M short lines, +1 GB: review 47c)
            yield decode(raw[i:i + _XML_SLICE], final=i + _XML_SLICE > len(raw)).replace("\r", " ").replace("\n", " ")
    except UnicodeError as e:
        raise FileCorrupt(f"rag.ingest_file: {shown(name)}: {part} is not {codec.upper().replace('-SIG', '')} "
                          f"text: {_reason(e)}") from None


def _check_tags_and_runs(raw: bytes, part: str, name: str, max_bytes: int):
    """Refuse a part with a tag of more than MAX_XML_ATTRIBUTES attributes or a run of more
    than max_bytes bytes without a '<'. The part is searched a window of _XML_WINDOW bytes
    at a time, with a cancel check before each (one search of 40 MB held the backend
    0.4 s: a cancel came late), each window ending at a '<': neither a tag (its values
    hold no '<') nor a run crosses a window's end, so a part is refused as by one search
    (with the other reason where it has both)."""
    run = re.compile(rb"(?:\A|<)[^<]{%d}" % (max_bytes + 1))   # (\A: the part's start only)
    start = 0
    while start < len(raw):
        interrupts.check_interrupts()
        end = raw.find(b"<", start + _XML_WINDOW)
        end = len(raw) if end < 0 else end
        # (a window with more than max_bytes bytes past its first _XML_WINDOW has a run too
        # long: the tag search stops there, so that a window costs at most that many bytes)
        if _MANY_ATTRIBUTES.search(raw, start, min(end, start + _XML_WINDOW + max_bytes + 2)):
            raise LimitExceeded(f"rag.ingest_file: {shown(name)}: {part} has a tag of more than "
                                f"{MAX_XML_ATTRIBUTES:,} attributes", hint="Word's tags have a few dozen at most")
        if run.search(raw, start, end):   # (each run from a '<' once: linear)
            raise LimitExceeded(f"rag.ingest_file: {shown(name)}: {part} has a run of text of more than "
                                f"{max_bytes:,} bytes", hint="rag.max_document_bytes bounds a document's text")
        start = end


def _xml_bytes(zf: zipfile.ZipFile, part: str, name: str, max_bytes: int) -> bytes:
    info = zf.getinfo(part)
    limit = max(4 * max_bytes, 1 << 20)  # markup around the text
    if info.file_size > limit or info.file_size > 200 * max(info.compress_size, 1) + (1 << 20):
        raise LimitExceeded(f"rag.ingest_file: {shown(name)}: {part} expands to {info.file_size:,} bytes from "
                            f"{info.compress_size:,} (a ZIP bomb?); the limit is {limit:,}",
                            hint="rag.max_document_bytes bounds a document's text")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # (bzip2 and LZMA, which no Word writer uses, decompress at ~20 MB/s: review 56)
        raise FileNotSupported(f"rag.ingest_file: {shown(name)}: {part} is compressed with ZIP method "
                               f"{info.compress_type}; Word documents use deflate",
                               hint="save it again from a word processor")
    pieces, got = [], 0
    try:
        with zf.open(info) as f:
            while got <= limit and (piece := f.read(min(_XML_WINDOW, limit + 1 - got))):
                interrupts.check_interrupts()   # (40 MB inflated in one call took 0.2 s)
                pieces.append(piece)
                got += len(piece)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, NotImplementedError) as e:
        raise FileCorrupt(f"rag.ingest_file: {shown(name)}: {part} cannot be read: {_reason(e)}") from None
    raw = b"".join(pieces)
    del pieces
    if len(raw) > limit:
        raise LimitExceeded(f"rag.ingest_file: {shown(name)}: {part} expands past {limit:,} bytes (a ZIP bomb?)",
                            hint="rag.max_document_bytes bounds a document's text")
    return raw


def _docx_styles(zf: zipfile.ZipFile, name: str, max_bytes: int) -> dict[str, int]:
    """style id -> heading level (Title is 1) from word/styles.xml."""
    out = {}
    for _, st in _xml_elements(zf, "word/styles.xml", name, max_bytes, 1):   # styles, style
        if st.tag != f"{_W}style":
            continue
        sid, nm = st.get(f"{_W}styleId"), st.find(f"{_W}name")
        m = _HEADING_STYLE.match((nm.get(f"{_W}val") if nm is not None else "") or "")
        if sid and m:
            out[sid] = int(m.group(1) or 1)
    return out


_SPACES = re.compile(r"\s+")   # (str.split()'s whitespace: both are str.isspace)


def _runs(el) -> str:
    parts = []
    for node in el.iter():
        if node.tag == f"{_W}t" and node.text:
            parts.append(node.text)
        elif node.tag == f"{_W}tab":
            parts.append("\t")
        elif node.tag in (f"{_W}br", f"{_W}cr"):
            parts.append("\n")
    return "".join(parts)


def _paragraph(p, styles: dict[str, int]) -> str:
    # (one string at each step, not a list of its lines or words: a paragraph of 13 M lines
    # took 1 GB so: review 47c)
    text = _runs(p).replace("\n", " ").strip() if p.find(f".//{_W}br") is None else _runs(p).strip()
    if not text:
        return ""
    ppr = p.find(f"{_W}pPr")
    style = ppr.find(f"{_W}pStyle") if ppr is not None else None
    level = styles.get(style.get(f"{_W}val")) if style is not None else None
    if level is None and style is not None:  # a style id that says what it is (no styles.xml)
        m = _HEADING_STYLE.match(style.get(f"{_W}val") or "")
        level = int(m.group(1) or 1) if m else None
    if level:
        return "#" * min(level, 6) + " " + _SPACES.sub(" ", text).strip()
    if ppr is not None and ppr.find(f"{_W}numPr") is not None:
        return "- " + text
    return " " + text if text.startswith("#") else text  # not a heading: only heading styles are


def _table(tbl) -> str:
    rows = []
    for tr in tbl.iter(f"{_W}tr"):
        interrupts.check_interrupts()
        cells = [_SPACES.sub(" ", _runs(tc)).strip() for tc in tr.findall(f"{_W}tc")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
