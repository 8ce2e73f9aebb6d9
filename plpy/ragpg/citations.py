"""Citation markers in an LLM's answer: keep those that name a retrieved chunk, drop the rest.

The prompt numbers the context chunks [1]..[n]. A model may cite [9] with 3 chunks, or
make up a URL; we keep only markers 1..n (also in groups, "[1, 2]" or "[1][2]"), count
the ones removed, and build the citation list from the database rows of the chunks
actually cited, never from the model's text.

`StreamCleaner` does the same on a token stream: text is released as it arrives, except
a possible marker, which is held until it is complete and checked.
"""
from __future__ import annotations

import re

# "[3]", "[1, 2]", "[1,2,3]"; the group is checked number by number
MARKER = re.compile(r"\[\s*(\d{1,4}(?:\s*,\s*\d{1,4})*)\s*\]")
# The start of a marker the stream may still complete: '[', '[1', '[1, 2', '[1,'. One way
# to match any text (each run of spaces belongs to exactly one \s*), so a non-marker fails
# in linear time: "[1" + " ,  " * 30 made a pattern with an optional number after each
# comma backtrack for hours, in one C call that no cancel reaches.
_PARTIAL = re.compile(r"\[\s*(?:\d{1,4}(?:\s*,\s*\d{1,4})*\s*(?:,\s*)?)?")
# a marker is a few numbers: text held back longer than this is not one
_MAX_PARTIAL = 100


def _fix_marker(m: re.Match, n_chunks: int, used: list[int]) -> tuple[str, int]:
    nums = [int(x) for x in re.findall(r"\d+", m.group(1))]
    keep = [x for x in nums if 1 <= x <= n_chunks]
    for x in keep:
        if x not in used:
            used.append(x)
    return ("[" + ", ".join(map(str, keep)) + "]" if keep else ""), len(nums) - len(keep)


# a run of spaces is matched from its start only, and once (possessive): linear in the text
# ("[ \t]+(?=[.,])" alone tries every position of a run and is quadratic in its length)
_SPACE_BEFORE_PUNCT = re.compile(r"(?<![ \t])[ \t]++([.,;:!?])")
_SPACES = re.compile(r"(?<![ \t])[ \t]{2,}+")


def _tidy(text: str) -> str:
    # a removed marker leaves "word ." or a double space behind
    return _SPACES.sub(" ", _SPACE_BEFORE_PUNCT.sub(r"\1", text))


def clean(text: str, n_chunks: int) -> tuple[str, int, list[int]]:
    """(text with only valid markers, number of references removed, chunk numbers cited in
    order of first use)."""
    used: list[int] = []
    removed = 0

    def sub(m):
        nonlocal removed
        out, r = _fix_marker(m, n_chunks, used)
        removed += r
        return out
    return _tidy(MARKER.sub(sub, text)).strip(), removed, used


class StreamCleaner:
    """Feed pieces of a streamed answer; get back the pieces safe to show."""

    def __init__(self, n_chunks: int):
        self.n = n_chunks
        self.pending = ""
        self.removed = 0
        self.used: list[int] = []
        self._released: list[str] = []

    @property
    def text(self) -> str:
        """Everything released so far."""
        return "".join(self._released)

    def _release(self, s: str) -> str:
        self._released.append(s)   # (a list: `str +=` on an attribute copies the whole text each time)
        return s

    def feed(self, piece: str) -> str:
        buf = self.pending + piece
        out = []
        while True:
            i = buf.find("[")
            if i < 0:
                out.append(buf)
                buf = ""
                break
            out.append(buf[:i])
            buf = buf[i:]
            m = MARKER.match(buf)
            if m:
                fixed, r = _fix_marker(m, self.n, self.used)
                self.removed += r
                out.append(fixed)
                buf = buf[m.end():]
                continue
            if len(buf) <= _MAX_PARTIAL and _PARTIAL.fullmatch(buf):  # may still become a marker: wait
                break
            out.append("[")              # not a marker
            buf = buf[1:]
        self.pending = buf
        return self._release("".join(out))

    def finish(self) -> str:
        rest, self.pending = self.pending, ""
        return self._release(rest)
