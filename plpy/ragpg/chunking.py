"""Markdown-aware chunking, sized by the embedding model's own tokenizer.

Stage 2 of the data path (document -> **chunk** -> embed -> store -> search).

How a text becomes chunks:
1. Sections: split at headings of level 1-3 (`#`, `##`, `###`) outside fenced code.
   A chunk never spans two sections, and overlap is never carried across a heading.
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
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, Sequence

from .errors import InvalidParameter

_HEADING = re.compile(r"^(#{1,3})[ \t]+(\S.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+")


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


@dataclass
class _Piece:
    start: int
    end: int
    section: int
    tokens: int = 0


def _strip_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _lines(text: str):
    pos = 0
    for line in text.splitlines(keepends=True):
        yield pos, line
        pos += len(line)


def _sections(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, heading path) per section; a section starts at its heading line."""
    bounds: list[tuple[int, str | None]] = [(0, None)]
    path: list[tuple[int, str]] = []  # (level, title) of the open headings
    in_fence = False
    for pos, line in _lines(text):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        m = _HEADING.match(line.rstrip("\r\n"))
        if m:
            level = len(m.group(1))
            path = [(lv, t) for lv, t in path if lv < level] + [(level, m.group(2).strip())]
            bounds.append((pos, " > ".join(t for _, t in path)))
    out = []
    for i, (start, heading) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        if end > start:
            out.append((start, end, heading))
    return out


def _paragraphs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, para_start, in_fence = [], start, False
    for pos, line in _lines(text[start:end]):
        pos += start
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and not line.strip():
            span = _strip_span(text, para_start, pos)
            if span:
                spans.append(span)
            para_start = pos + len(line)
    span = _strip_span(text, para_start, end)
    if span:
        spans.append(span)
    return spans


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, cur = [], start
    for m in _SENTENCE_END.finditer(text, start, end):
        span = _strip_span(text, cur, m.end())
        if span:
            spans.append(span)
        cur = m.end()
    span = _strip_span(text, cur, end)
    if span:
        spans.append(span)
    return spans


def _window_split(text: str, start: int, end: int, enc, max_tokens: int) -> list[tuple[int, int]]:
    """Split one span of more than max_tokens tokens, preferring word starts."""
    offsets, words = enc.offsets, enc.word_ids
    n, spans, i = len(offsets), [], 0
    while i < n:
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
            spans.append(span)
        i = j
    return spans


def _pieces(text: str, tok: Tokenizer, max_tokens: int) -> tuple[list[_Piece], list[str | None]]:
    headings: list[str | None] = []
    todo: list[_Piece] = []
    for sec, (s, e, heading) in enumerate(_sections(text)):
        headings.append(heading)
        todo.extend(_Piece(ps, pe, sec) for ps, pe in _paragraphs(text, s, e))

    def count(pieces: list[_Piece]):
        encs = tok.encode_batch([text[p.start:p.end] for p in pieces], add_special_tokens=False)
        for p, enc in zip(pieces, encs):
            p.tokens = len(enc.ids)
        return encs

    out: list[_Piece] = []
    for level in ("sentences", "windows"):
        encs = count(todo)
        nxt: list[_Piece] = []
        for p, enc in zip(todo, encs):
            if p.tokens <= max_tokens:
                nxt.append(p)
            elif level == "sentences":
                nxt.extend(_Piece(s, e, p.section) for s, e in _sentences(text, p.start, p.end))
            else:
                nxt.extend(_Piece(s, e, p.section)
                           for s, e in _window_split(text, p.start, p.end, enc, max_tokens))
        todo = nxt
    count(todo)
    out = [p for p in todo if p.tokens > 0 or text[p.start:p.end].strip()]
    return out, headings


def chunk_text(
    text: str,
    tokenizer: Tokenizer,
    target_tokens: int = 254,
    overlap_tokens: int = 32,
    max_tokens: int = 254,
) -> list[Chunk]:
    """Split `text` (markdown or plain text) into chunks; see the module docstring."""
    if max_tokens < 8:
        raise InvalidParameter(f"chunk_text: max_tokens must be at least 8, got {max_tokens}")
    if not 1 <= target_tokens <= max_tokens:
        raise InvalidParameter(
            f"chunk_text: target_tokens must be between 1 and max_tokens ({max_tokens}), got {target_tokens}",
            hint="the model's window bounds every chunk; lower rag.chunk_target_tokens")
    if not 0 <= overlap_tokens < target_tokens:
        raise InvalidParameter(
            f"chunk_text: overlap_tokens must be between 0 and target_tokens - 1, got {overlap_tokens}")

    pieces, headings = _pieces(text, tokenizer, max_tokens)
    spans: list[tuple[int, int, int, int]] = []  # start, end, tokens, section
    cur: list | None = None  # [start, end, tokens, section, start of its own text]
    for p in pieces:
        if cur and cur[3] == p.section and cur[2] + p.tokens <= target_tokens:
            cur[1], cur[2] = p.end, cur[2] + p.tokens
            continue
        start, tokens = p.start, p.tokens
        if cur and cur[3] == p.section and overlap_tokens:
            # from the previous chunk's own text only, so a chunk overlaps its neighbours only
            tail = _overlap(text, cur[4], cur[1], tokenizer, overlap_tokens)
            if tail and tail[1] + p.tokens <= max_tokens:
                start, tokens = tail[0], tail[1] + p.tokens
        if cur:
            spans.append(tuple(cur[:4]))
        cur = [start, p.end, tokens, p.section, p.start]
    if cur:
        spans.append(tuple(cur[:4]))

    texts = [text[s:e] for s, e, _, _ in spans]
    encs = tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
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
        chunks.append(Chunk(len(chunks), body, n, s, e, headings[sec]))

    for (s, e, _, sec), enc in zip(spans, encs):
        if len(enc.ids) <= max_tokens:
            emit(s, e, sec, len(enc.ids))
            continue
        # tokenization was not additive across pieces here (rare): fall back to windows
        for ws, we in _window_split(text, s, e, enc, max_tokens):
            emit(ws, we, sec)
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
