"""Markdown-aware chunking, sized by the embedding model's own tokenizer.

Stage 2 of the data path (document -> **chunk** -> embed -> store -> search).

How a text becomes chunks:
1. Sections: split at headings of level 1-3 (`#`, `##`, `###`) outside fenced code.
   A chunk never spans two sections, and overlap is never carried across a heading.
   A form feed is a page break (PDF text has one between pages): sections are cut there
   too, so no chunk spans two pages, and each chunk knows its page.
   A section with nothing but its heading line stands alone only as the parent of the
   text that follows (`# Guide` before `## Install` and its text); any other empty one
   (`# A` then `# B`, a run of headings, headings at the end) joins the next section, so
   its heading line opens that section's first chunk, under that section's path.
2. Pieces: each section is split into paragraphs (blank lines; a fenced code block is
   one paragraph). A paragraph longer than the window is split at sentence ends, and a
   sentence still too long at word boundaries (at token boundaries only for a single
   "word" longer than the window). Nothing is dropped.
3. Packing: pieces are packed in order up to `target_tokens`; each new chunk in the same
   section starts with the last ~`overlap_tokens` tokens of the previous one, snapped to
   a word start, when that still fits the window.

Every chunk is an exact slice `text[start:end]` of the input, so the output can be
checked against the input: chunks are in order, cover every non-space character, and
overlap only their direct neighbour. Token counts are the model's word pieces without
the [CLS]/[SEP] pair, and never exceed `max_tokens` (window - 2 for BERT-style models).

Characters are bounded too: no chunk is longer than `max_chars(max_tokens)`, i.e.
MAX_CHARS_PER_TOKEN (16) characters per token of the window (4,064 for MiniLM). Tokens
alone do not bound a chunk: BERT's WordPiece turns any word over 100 characters into one
[UNK], so a 5 MB word is "1 token", and whitespace costs no token at all. Text past the
bound (long words, long runs of blanks) is cut at whitespace, else at the bound. Real
text never reaches it: over the whole PostgreSQL manual a chunk has at most 6.8
characters per token (median 4.3), so 4 per token would cut ordinary prose.

Heading titles longer than MAX_TITLE_CHARS (200) are cut, with "…": the path is
repeated in every chunk of the section.

Hostile input costs linear time and bounded memory: lines are parsed by hand or by
regexes that cannot backtrack past the run they match; lines are iterated, not listed;
the tokenizer sees at most ~32,000 characters per call; every loop calls
`interrupts.check_interrupts()`, so Postgres can cancel it. A document may make at most
`max_chunks` chunks (rag.max_chunks_per_document): LimitExceeded (54000) is raised as
soon as that is certain, from the number of sections before anything is tokenized, then
from the tokens counted so far, then while packing.
"""
from __future__ import annotations

import re
from array import array
from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence

from . import interrupts
from .errors import InvalidParameter, LimitExceeded

MAX_CHARS_PER_TOKEN = 16
MAX_TITLE_CHARS = 200       # a longer heading title is cut (it is repeated in each chunk's path)
DEFAULT_MAX_CHUNKS = 10000  # rag.max_chunks_per_document
# text per encode_batch call: bounds the Encodings held at once, and the time between two
# interrupt checks (the tokenizer's worst case, 100-letter words, runs ~13 us a character)
_BATCH_CHARS = 1 << 15
_BATCH_ITEMS = 2048
_SEGMENT_CHARS = 1 << 15    # a span longer than this is cut at whitespace before it is tokenized

_FENCE = re.compile(r"[ \t]{0,3}(?:```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+")
_EOL = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # the line boundaries of str.splitlines
_LINE = re.compile(f"[^{_EOL}]*(?:\r\n|[{_EOL}])?")
_NONSPACE = re.compile(r"\S")
_BLANKS = re.compile(r"[ \t]*")


class Tokenizer(Protocol):
    """The subset of `tokenizers.Tokenizer` the chunker uses."""

    def encode_batch(self, inputs: Sequence[str], add_special_tokens: bool = ...) -> list: ...


@dataclass(frozen=True)
class Chunk:
    ord: int
    text: str
    tokens: int
    start: int
    end: int
    heading: str | None
    page: int | None = None  # 1-based, when the text has pages (form feeds)


def max_chars(max_tokens: int) -> int:
    """The most characters a chunk may have, for a window of max_tokens tokens."""
    return MAX_CHARS_PER_TOKEN * max_tokens


WIDEST_WINDOW = 8192                       # the most tokens rag.chunk_target_tokens allows, any model
CHUNK_CHARS_MAX = max_chars(WIDEST_WINDOW)  # so the longest chunk: rag._chunks_before_write's limit


def _strip_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    """text[start:end] without leading and trailing whitespace, as (start, end); None if blank."""
    m = _NONSPACE.search(text, start, end)
    if m is None:
        return None
    start, step = m.start(), 64
    while True:  # the tail, in growing slices: O(trailing blanks), never the whole span
        lo = max(start, end - step)
        kept = len(text[lo:end].rstrip())
        if kept:
            return start, lo + kept
        end, step = lo, step * 2


def _lines(text: str, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, end) of each line of text[start:end], its line break included, as
    str.splitlines(keepends=True) would cut it, without building the list of lines."""
    for m in _LINE.finditer(text, start, len(text) if end is None else end):
        if m.end() == m.start():
            return  # the empty match at the very end
        yield m.start(), m.end()


def _heading(text: str, start: int, end: int) -> tuple[int, str] | None:
    """(level, title) if text[start:end] (one line, without its \\r/\\n) is a heading of level
    1-3: 1-3 '#', spaces or tabs, a title; a closing run of '#' after a space or tab is not
    part of the title (CommonMark). Linear in the line, unlike a regex with a lazy title."""
    if not text.startswith("#", start, end):
        return None
    level = 0
    while level < 4 and start + level < end and text[start + level] == "#":
        level += 1
    if level > 3:
        return None
    i = start + level
    j = _BLANKS.match(text, i, end).end()
    if j == i or j == end or text[j].isspace():
        return None
    title = text[j:end].rstrip(" \t")
    head = title.rstrip("#")
    if head and len(head) < len(title) and head[-1] in " \t":
        title = head.rstrip(" \t")
    title = title.strip()
    if len(title) > MAX_TITLE_CHARS:
        title = title[:MAX_TITLE_CHARS].rstrip() + "…"
    return level, title


def _sections(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, heading path) per section; a section starts at its heading line, and a
    heading-only section that is not a parent joins the next one (module docstring)."""
    check = interrupts.check_interrupts
    # per heading line, compactly (a document may be nothing but headings): start, end, level, title
    starts, ends, levels, titles = array("q"), array("q"), bytearray(), []
    in_fence = False
    for s, e in _lines(text):
        check()
        if _FENCE.match(text, s, e):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        body_end = e
        while body_end > s and text[body_end - 1] in "\r\n":
            body_end -= 1
        h = _heading(text, s, body_end)
        if h:
            starts.append(s)
            ends.append(e)
            levels.append(h[0])
            titles.append(h[1])

    # which heading-only sections stand alone: those whose every following heading, up to
    # and including the next section with a body, is deeper (they are its ancestors)
    n = len(starts)
    alone = bytearray(b"\x01") * n
    has_body_after, min_level_after = False, 4
    for i in range(n - 1, -1, -1):
        check()
        level = levels[i]
        if _NONSPACE.search(text, ends[i], starts[i + 1] if i + 1 < n else len(text)):
            has_body_after, min_level_after = True, level
            continue
        if i + 1 < n and not (has_body_after and min_level_after > level):
            alone[i] = 0  # joins the next section
        min_level_after = min(min_level_after, level)

    out: list[tuple[int, int, str | None]] = []
    if n == 0 or starts[0] > 0:
        out.append((0, starts[0] if n else len(text), None))
    path: list[tuple[int, str]] = []  # (level, title) of the open headings
    start = None
    for i in range(n):
        check()
        path = [(lv, t) for lv, t in path if lv < levels[i]] + [(levels[i], titles[i])]
        start = starts[i] if start is None else start
        if alone[i]:
            out.append((start, starts[i + 1] if i + 1 < n else len(text), " > ".join(t for _, t in path)))
            start = None
    return [sec for sec in out if sec[1] > sec[0]]


def _pages(text: str, sections: list[tuple[int, int, str | None]],
           max_chunks: int) -> list[tuple[int, int, str | None, int | None]]:
    """Sections cut at form feeds, each with its page: a form feed is a page break (PDF
    text is stored with one between pages), so no chunk spans two pages. Without a form
    feed in the text, pages are None. A blank piece after a page break is dropped, and
    more than max_chunks pieces with text raise LimitExceeded before more are made (a
    text of form feeds alone makes none)."""
    if "\f" not in text:
        return [(s, e, h, None) for s, e, h in sections]
    out: list[tuple[int, int, str | None, int | None]] = []
    check = interrupts.check_interrupts
    page, pos, filled = 1, 0, 0
    for s, e, h in sections:
        page += text.count("\f", pos, s)
        pos, first = s, True
        while True:
            check()
            ff = text.find("\f", pos, e)
            end = e if ff < 0 else ff
            if end > pos and (first or _NONSPACE.search(text, pos, end)):
                out.append((pos, end, h, page))
                filled += 1
                if filled > max_chunks:
                    raise _too_many(text, max_chunks, f"it has more than {max_chunks:,} pages and sections with text")
            if ff < 0:
                break
            page, pos, first = page + 1, ff + 1, False
        pos = e
    return out


def _paragraphs(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    check = interrupts.check_interrupts
    para_start, in_fence = start, False
    for s, e in _lines(text, start, end):
        check()
        if _FENCE.match(text, s, e):
            in_fence = not in_fence
        if not in_fence and not _NONSPACE.search(text, s, e):
            span = _strip_span(text, para_start, s)
            if span:
                yield span
            para_start = e
    span = _strip_span(text, para_start, end)
    if span:
        yield span


def _sentences(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    check = interrupts.check_interrupts
    cur = start
    for m in _SENTENCE_END.finditer(text, start, end):
        check()
        span = _strip_span(text, cur, m.end())
        if span:
            yield span
        cur = m.end()
    span = _strip_span(text, cur, end)
    if span:
        yield span


def _last_space(text: str, lo: int, hi: int) -> int:
    """Index of the last whitespace character in text[lo:hi], or -1."""
    window = text[lo:hi]
    if not window:
        return -1
    if window[-1].isspace():
        return hi - 1
    tail = window.rsplit(None, 1)[-1]  # the last word: what precedes it, if anything, is a space
    return hi - len(tail) - 1 if len(tail) < len(window) else -1


def _cuts(text: str, start: int, end: int, limit: int) -> Iterator[tuple[int, int]]:
    """Stripped spans of at most `limit` characters that cover text[start:end]: each is cut
    at the last whitespace of its second half, else (one long word) at `limit`."""
    check = interrupts.check_interrupts
    while start < end:
        check()
        cut = end
        if end - start > limit:
            cut = _last_space(text, start + limit // 2, start + limit)
            if cut <= start:
                cut = start + limit
        span = _strip_span(text, start, cut)
        if span:
            yield span
        start = cut


def _window_split(text: str, start: int, end: int, enc, max_tokens: int) -> Iterator[tuple[int, int]]:
    """Windows of at most max_tokens tokens of a span, given its encoding, each cut before
    a word when it can be."""
    check = interrupts.check_interrupts
    offsets, words = enc.offsets, enc.word_ids
    n, i = len(offsets), 0
    if n == 0:  # only characters the tokenizer drops (controls): keep them, as one span
        span = _strip_span(text, start, end)
        if span:
            yield span
    while i < n:
        check()
        j = min(i + max_tokens, n)
        if j < n:
            k = j
            while k > i + 1 and words[k] is not None and words[k] == words[k - 1]:
                k -= 1
            if k > i + 1:
                j = k  # cut before the word that would be split
        s = start + offsets[i][0] if i else start
        e = start + offsets[j][0] if j < n else end
        span = _strip_span(text, s, e)
        if span:
            yield span
        i = j


def _encode(tok: Tokenizer, text: str, spans: Sequence[tuple[int, int]]) -> list:
    return tok.encode_batch([text[s:e] for s, e in spans], add_special_tokens=False) if spans else []


def _batches(spans, budget: int = _BATCH_CHARS) -> Iterator[list]:
    """Consecutive groups of spans of about `budget` characters (one encode_batch call each)."""
    batch, size = [], 0
    for sp in spans:
        batch.append(sp)
        size += sp[1] - sp[0]
        if size >= budget or len(batch) >= _BATCH_ITEMS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _windows(text: str, start: int, end: int, enc, tok: Tokenizer, max_tokens: int):
    """Token windows of a span; one longer than _SEGMENT_CHARS is first cut at whitespace,
    so the tokenizer never sees more than that at once."""
    if enc is not None:
        yield from _window_split(text, start, end, enc, max_tokens)
        return
    for s, e in _cuts(text, start, end, _SEGMENT_CHARS):
        yield from _window_split(text, s, e, _encode(tok, text, [(s, e)])[0], max_tokens)


def _fit(text: str, spans, tok: Tokenizer, max_tokens: int, limit: int, depth: int = 0):
    """(start, end, section, tokens) of pieces of at most max_tokens tokens and `limit`
    characters, in order. A span that does not fit is split by the next level: sentences,
    token windows, character cuts, token windows again (of spans now within `limit`, so
    they stay within it); the last level takes what it gets (the tokenizer is not
    always additive; chunk_text re-splits such a chunk). Spans over `limit` characters
    are never tokenized whole."""
    check = interrupts.check_interrupts
    for batch in _batches(spans):
        check()
        encs = iter(_encode(tok, text, [(s, e) for s, e, _ in batch if e - s <= limit]))
        for s, e, sec in batch:
            enc = next(encs) if e - s <= limit else None
            if enc is not None and (len(enc.ids) <= max_tokens or depth >= 4):
                yield s, e, sec, len(enc.ids)
                continue
            if depth == 0:
                sub = _sentences(text, s, e)
            elif depth == 2 or (enc is None and depth >= 4):
                sub = _cuts(text, s, e, limit)
            else:
                sub = _windows(text, s, e, enc, tok, max_tokens)
            yield from _fit(text, ((a, b, sec) for a, b in sub), tok, max_tokens, limit, depth + 1)


@dataclass
class _Packing:
    """The chunk being packed: its pieces, after the overlap it starts with (if any)."""
    start: int       # of the chunk, overlap included
    end: int
    tokens: int      # overlap included
    section: int
    own_start: int   # of its first piece
    own_tokens: int
    pieces: int = 1

    def add(self, end: int, tokens: int) -> None:
        self.end = end
        self.tokens += tokens
        self.own_tokens += tokens
        self.pieces += 1

    def span(self) -> tuple[int, int, int, int | None]:
        """(start, end, section, tokens when already known: one piece, counted alone, no overlap)."""
        known = self.pieces == 1 and self.start == self.own_start
        return self.start, self.end, self.section, self.tokens if known else None


def _too_many(text: str, max_chunks: int, why: str) -> LimitExceeded:
    return LimitExceeded(
        f"chunk_text: the text ({len(text):,} characters) makes more than {max_chunks:,} chunks: {why}; "
        f"the limit is rag.max_chunks_per_document ({max_chunks:,})",
        hint="split the document, or raise the limit with SET rag.max_chunks_per_document or "
             "rag.configure('max_chunks_per_document', ...)")


def chunk_text(
    text: str,
    tokenizer: Tokenizer,
    target_tokens: int = 254,
    overlap_tokens: int = 32,
    max_tokens: int = 254,
    max_chunks: int = DEFAULT_MAX_CHUNKS,
) -> list[Chunk]:
    """Split `text` (markdown or plain text) into chunks; see the module docstring.
    Raises LimitExceeded (54000) when the text makes more than `max_chunks` chunks."""
    if max_tokens < 8:
        raise InvalidParameter(f"chunk_text: max_tokens must be at least 8, got {max_tokens}")
    if not 1 <= target_tokens <= max_tokens:
        raise InvalidParameter(
            f"chunk_text: target_tokens must be between 1 and max_tokens ({max_tokens}), got {target_tokens}",
            hint="the model's window bounds every chunk; lower rag.chunk_target_tokens")
    if not 0 <= overlap_tokens < target_tokens:
        raise InvalidParameter(
            f"chunk_text: overlap_tokens must be between 0 and target_tokens - 1, got {overlap_tokens}")
    if max_chunks < 1:
        raise InvalidParameter(f"chunk_text: max_chunks must be at least 1, got {max_chunks}",
                               hint="RESET rag.max_chunks_per_document")
    check = interrupts.check_interrupts
    limit = max_chars(max_tokens)

    sections = _pages(text, _sections(text), max_chunks)
    headings = [h for _, _, h, _ in sections]
    pages = [p for _, _, _, p in sections]
    filled = sum(1 for s, e, h, _ in sections if h is not None or _NONSPACE.search(text, s, e))
    if filled > max_chunks:  # each section with any text is at least one chunk
        raise _too_many(text, max_chunks, f"it has {filled:,} sections, each one chunk at least")

    pieces: list[tuple[int, int, int, int]] = []  # start, end, section, tokens
    floor = 0  # a chunk holds at most max_tokens of its own pieces' tokens
    paragraphs = ((ps, pe, sec) for sec, (s, e, _, _) in enumerate(sections) for ps, pe in _paragraphs(text, s, e))
    for p in _fit(text, paragraphs, tokenizer, max_tokens, limit):
        pieces.append(p)
        floor += min(p[3], max_tokens)
        if floor > max_chunks * max_tokens:
            raise _too_many(text, max_chunks, f"its first {p[1]:,} characters hold {floor:,} tokens, "
                                                 f"more than {max_chunks:,} full chunks of {max_tokens}")

    spans: list[tuple[int, int, int, int | None]] = []  # start, end, section, tokens if known
    cur: _Packing | None = None
    for ps, pe, sec, n in pieces:
        check()
        if cur and cur.section == sec and cur.tokens + n <= target_tokens and pe - cur.start <= limit:
            cur.add(pe, n)
            continue
        start, tokens = ps, n
        if cur and cur.section == sec and overlap_tokens and cur.own_tokens > overlap_tokens:
            # from the previous chunk's own text only, so a chunk overlaps its neighbours only
            # (own text of overlap_tokens or fewer has no tail to give: not tokenized again)
            tail = _overlap(text, cur.own_start, cur.end, tokenizer, overlap_tokens)
            if tail and tail[1] + n <= max_tokens and pe - tail[0] <= limit:
                start, tokens = tail[0], tail[1] + n
        if cur:
            spans.append(cur.span())
            if len(spans) >= max_chunks:
                raise _too_many(text, max_chunks, f"chunk {max_chunks + 1:,} starts at character {ps:,}")
        cur = _Packing(start, pe, tokens, sec, ps, n)
    if cur:
        spans.append(cur.span())
    del pieces

    chunks: list[Chunk] = []

    def emit(s: int, e: int, sec: int, n: int | None = None) -> None:
        if chunks and s <= chunks[-1].start:
            # only after a fallback re-split below: start after the previous chunk instead
            span = _strip_span(text, chunks[-1].end, e)
            if not span:
                return
            s, e, n = span[0], span[1], None
        body = text[s:e]
        if n is None:
            n = len(tokenizer.encode_batch([body], add_special_tokens=False)[0].ids)
        chunks.append(Chunk(len(chunks), body, n, s, e, headings[sec], pages[sec]))

    for batch in _batches(spans):
        check()
        known = [n is not None and n <= max_tokens for _, _, _, n in batch]  # one piece, counted alone
        encs = iter(_encode(tokenizer, text, [(s, e) for (s, e, _, _), k in zip(batch, known) if not k]))
        for (s, e, sec, n), k in zip(batch, known):
            if k:
                emit(s, e, sec, n)
                continue
            enc = next(encs)
            if len(enc.ids) <= max_tokens:
                emit(s, e, sec, len(enc.ids))
                continue
            # tokenization was not additive across pieces here (rare): fall back to windows
            for ws, we in _window_split(text, s, e, enc, max_tokens):
                emit(ws, we, sec)
    if len(chunks) > max_chunks:
        raise _too_many(text, max_chunks, f"it makes {len(chunks):,}")
    return chunks


def _overlap(text: str, start: int, end: int, tok: Tokenizer, overlap_tokens: int):
    """(start, tokens) of the last ~overlap_tokens tokens of text[start:end], at a word start."""
    enc = tok.encode_batch([text[start:end]], add_special_tokens=False)[0]
    n = len(enc.ids)
    if n <= overlap_tokens:
        return None
    words, j = enc.word_ids, n - overlap_tokens
    while j < n and j > 0 and words[j] is not None and words[j] == words[j - 1]:
        j += 1
    if j >= n:
        return None
    return start + enc.offsets[j][0], n - j


WINDOW_WORDS = 64   # a window's most words: ~90 word pieces, inside the 128 MiniLM was trained on
MAX_WINDOWS = 12    # a chunk's most windows (rag.chunks' CHECK): real chunks of 254 tokens have up to ~8
WINDOW_TEXT_CHARS = 2 * max_chars(254)   # the most of a chunk's text read for windows


def windows(text: str, max_words: int = WINDOW_WORDS, max_windows: int = MAX_WINDOWS) -> list[str]:
    """A chunk's windows, each embedded beside the whole chunk (rag.chunks.window_embeddings):
    its sentences packed in order into runs of at most `max_words` words (a longer sentence
    is cut at word boundaries), whitespace collapsed; at most `max_windows`. [] when the
    chunk is one window: then its own embedding stands for it. Bounded whatever the text:
    only its first WINDOW_TEXT_CHARS characters are read (a chunk of the chunker has at
    most half that; a writer may insert longer ones), and words that cost the model no
    token (a run of zero-width characters) still count, so the cap on windows holds."""
    if max_words < 1 or max_windows < 1:
        raise InvalidParameter(f"windows: max_words and max_windows must be at least 1, got {max_words}, {max_windows}")
    text = text[:WINDOW_TEXT_CHARS]
    out: list[str] = []
    cur: list[str] = []
    for s, e in _sentences(text, 0, len(text)):
        words = text[s:e].split()
        for i in range(0, len(words), max_words):
            piece = words[i:i + max_words]
            if cur and len(cur) + len(piece) > max_words:
                out.append(" ".join(cur))
                cur = []
                if len(out) == max_windows:
                    return out
            cur += piece
    if cur:
        out.append(" ".join(cur))
    return out if len(out) > 1 else []
