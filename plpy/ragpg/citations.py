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

from . import interrupts

# "[3]", "[1, 2]", "[1,2,3]"; the group is checked number by number. Numbers of any length:
# "[12345]" left as text read as a marker with no citation (hostile review 44). At most
# 32 numbers: a longer group is text (one of 2 M numbers took 1.2 s and +690 MB: review 57)
MAX_GROUP = 32
MARKER = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+){0,%d})\s*\]" % (MAX_GROUP - 1))
# markers handled between two cancel checks (4 MB of "[1]" took 2.3 s without one: review 57)
_CHECK_EVERY = 4096
# The start of a marker the stream may still complete: '[', '[1', '[1, 2', '[1,'. One way
# to match any text (each run of spaces belongs to exactly one \s*), so a non-marker fails
# in linear time: "[1" + " ,  " * 30 made a pattern with an optional number after each
# comma backtrack for hours, in one C call that no cancel reaches.
_PARTIAL = re.compile(r"\[\s*(?:\d+(?:\s*,\s*\d+)*\s*(?:,\s*)?)?")
# a marker is a few numbers: text held back longer than this is not one
_MAX_PARTIAL = 100


def _fix_marker(m: re.Match, n_chunks: int, used: list[int]) -> tuple[str, int]:
    # (a number past 9 digits names no chunk; int() of a long one is refused past 4,300 digits)
    nums = [int(x) if len(x) <= 9 else 0 for x in re.findall(r"\d+", m.group(1))]
    keep = list(dict.fromkeys(x for x in nums if 1 <= x <= n_chunks))   # each once
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


def strip_markers(text: str) -> str:
    """The text without citation markers (a quoted source's own "[7]" is not one of ours)."""
    return _tidy(MARKER.sub("", text)).strip()


def clean(text: str, n_chunks: int) -> tuple[str, int, list[int]]:
    """(text with only valid markers, number of references removed, chunk numbers cited in
    order of first use)."""
    used: list[int] = []
    removed = 0

    seen = 0

    def sub(m):
        nonlocal removed, seen
        seen += 1
        if seen % _CHECK_EVERY == 0:
            interrupts.check_interrupts()
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
        # read by position: cutting the text after each "[" copied the rest each time,
        # quadratic in a piece of 4,000,000 "[" (549 s, no cancel: review 44b)
        buf = self.pending + piece
        out = []
        at = 0
        turns = 0
        while True:
            turns += 1
            if turns % _CHECK_EVERY == 0:   # (every turn, markers too: review 57)
                interrupts.check_interrupts()
            i = buf.find("[", at)
            if i < 0:
                out.append(buf[at:])
                at = len(buf)
                break
            out.append(buf[at:i])
            at = i
            m = MARKER.match(buf, at)
            if m:
                fixed, r = _fix_marker(m, self.n, self.used)
                self.removed += r
                out.append(fixed)
                at = m.end()
                continue
            if len(buf) - at <= _MAX_PARTIAL and _PARTIAL.fullmatch(buf, at):  # may still become a marker: wait
                break
            out.append("[")              # not a marker
            at += 1
        self.pending = buf[at:]
        return self._release("".join(out))

    def finish(self) -> str:
        rest, self.pending = self.pending, ""
        return self._release(rest)
