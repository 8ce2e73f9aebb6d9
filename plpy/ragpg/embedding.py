"""Text -> vectors with a local model, in-process (stage 3 of the data path).

all-MiniLM-L6-v2, exported to ONNX and quantized to int8 (dynamic, per channel) at
install time by scripts/export_model.py; mean pooling and L2 normalisation are inside
the graph, so each batch is one `session.run` returning unit vectors.

One `Embedder` per model per backend (see `get_embedder`): the session loads in ~0.2 s
on first use and stays for the life of the connection. onnxruntime runs with one
intra-op thread by default and without spinning, so backends do not fight over cores.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import interrupts
from .errors import InvalidParameter, ModelUnavailable, shown

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_ENCODE_GROUP = 256  # texts per tokenizer call (each cut at the window): an interrupt check between


def models_dir() -> Path:
    """Where installed models live: $RAGPG_MODELS, else <install dir>/models."""
    env = os.environ.get("RAGPG_MODELS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "models"


def model_path(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise InvalidParameter(f"rag: invalid embedding model name {shown(name)}")
    path = models_dir() / name
    if not (path / "manifest.json").is_file():
        known = sorted(p.name for p in models_dir().glob("*") if (p / "manifest.json").is_file())
        raise ModelUnavailable(
            f"rag: embedding model {shown(name)} is not installed in {models_dir()}",
            hint=f"installed models: {', '.join(known) or 'none'}; run `make install`")
    return path


def load_tokenizer(name: str = DEFAULT_MODEL):
    """The model's own tokenizer, without truncation or padding (for counting tokens)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_path(name) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


@dataclass
class Embedder:
    name: str
    threads: int = 1
    calls: int = 0          # session.run calls (one per batch)
    texts: int = 0          # texts embedded
    tokens: int = 0         # word pieces fed to the model (the usage ledger's input tokens)
    manifest: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = model_path(self.name)
        self.manifest = json.loads((path / "manifest.json").read_text())
        self.dimensions = int(self.manifest["dimensions"])
        self.max_tokens = int(self.manifest["max_tokens"])
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        # the packaged tokenizer.json truncates at 128 and pads to 128: undo both
        tok.enable_truncation(max_length=self.max_tokens)
        tok.enable_padding()
        self.tokenizer = tok
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(self.threads))
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False   # a cached plan per input shape: memory that grows with the lengths seen
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path / "model.int8.onnx"), opts,
                                            providers=["CPUExecutionProvider"])

    def embed(self, texts: list[str], batch_size: int = 16, check=None, on_run=None):
        """Unit vectors (float32, shape n x dimensions) for `texts`, in input order.

        Texts are batched by length, so a batch pads to similar lengths. `check`: the
        interrupt check between batches (default: the session's; a worker thread, which
        must not touch plpy, passes interrupts.no_check); `on_run`, called before each
        model run (which releases Python's lock: see pg._start_query_vector)."""
        import numpy as np

        if batch_size < 1:
            raise InvalidParameter(f"rag: embedding batch size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        check = check or interrupts.check_interrupts
        texts = list(texts)
        # each text's word pieces, unpadded (a single sequence: its attention is all ones and
        # its token types all zeros); not the tokenizer's Encoding objects, which cost ~70 KB
        # a text and made a 10 MB document's embedding peak at 1.4 GB
        ids: list = []
        for g in range(0, len(texts), _ENCODE_GROUP):
            check()
            for e in self.tokenizer.encode_batch(texts[g:g + _ENCODE_GROUP]):
                ids.append(np.asarray(e.ids[:sum(e.attention_mask)], dtype=np.int64))
        lengths = [len(a) for a in ids]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        pad = (self.tokenizer.padding or {}).get("pad_id", 0)

        for b in range(0, len(order), batch_size):
            check()
            idx = order[b:b + batch_size]
            n = max(lengths[i] for i in idx)
            input_ids = np.full((len(idx), n), pad, dtype=np.int64)
            attention = np.zeros((len(idx), n), dtype=np.int64)
            for j, i in enumerate(idx):
                input_ids[j, :lengths[i]] = ids[i]
                attention[j, :lengths[i]] = 1
            feeds = {"input_ids": input_ids, "attention_mask": attention,
                     "token_type_ids": np.zeros((len(idx), n), dtype=np.int64)}
            if on_run is not None:
                on_run()
            out[idx] = self.session.run(["embedding"], feeds)[0]
            self.calls += 1
            self.tokens += int(attention.sum())
        self.texts += len(texts)
        return out


_EMBEDDERS: dict[tuple[str, int], Embedder] = {}


def get_embedder(name: str = DEFAULT_MODEL, threads: int = 1) -> Embedder:
    """The backend's embedder for `name`, loaded on first use."""
    key = (name, int(threads))
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = Embedder(name, int(threads))
    return _EMBEDDERS[key]


def to_vector_literal(row) -> str:
    """pgvector's text form of a float vector: '[-56748223e-9,...]', each element an
    integer with one decimal exponent for the vector (15 significant digits of its
    largest element), which pgvector parses back to the same float32 values. PL/Python
    hands floats to Postgres as printed strings anyway (a real[] of 384 costs ~0.5 ms);
    printing integers with one format string costs a sixth of printing floats."""
    import math

    import numpy as np

    a = np.asarray(row, dtype=np.float64)
    top = float(np.abs(a).max()) if a.size else 0.0
    if not math.isfinite(top):   # pgvector names the problem (NaN or infinity)
        return "[" + ",".join(map(repr, a.tolist())) + "]"
    e = 15 - (math.ceil(math.log10(top)) if top > 0 else 0)
    return "[" + (_int_format(len(a), e) % tuple(np.rint(a * 10.0 ** e).astype(np.int64).tolist()))[:-1] + "]"


@functools.lru_cache(maxsize=64)
def _int_format(n: int, e: int) -> str:
    return ("%d" + f"e{-e},") * n
