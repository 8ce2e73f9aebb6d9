"""embedding.py: the in-process ONNX embedder and the model lookup."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from ragpg import embedding
from ragpg.errors import InvalidParameter, ModelUnavailable

DIM = 384

MIXED = [
    "index",
    "How do I create an index concurrently without blocking writes on a busy table?",
    "Vacuum reclaims storage occupied by dead tuples.",
    " ".join(["The planner chooses between sequential scans and index scans."] * 12),
    "ok",
    "A B-tree index can handle equality and range queries on data that can be sorted.",
    "GIN indexes are inverted indexes which are appropriate for data values that contain "
    "multiple component values, such as arrays.",
]


def cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.needs_model
def test_models_dir_from_env():
    assert embedding.models_dir() == Path(os.environ["RAGPG_MODELS"])
    assert embedding.model_path("all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"


@pytest.mark.parametrize("name", ["", "../all-MiniLM-L6-v2", ".hidden", "a/b"])
def test_model_path_rejects_bad_names(name):
    with pytest.raises(InvalidParameter):
        embedding.model_path(name)


@pytest.mark.needs_model
def test_model_path_unknown_model():
    with pytest.raises(ModelUnavailable) as e:
        embedding.model_path("no-such-model")
    assert e.value.sqlstate == "58P01"
    assert "all-MiniLM-L6-v2" in e.value.hint  # lists what is installed


def test_models_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGPG_MODELS", str(tmp_path))
    assert embedding.models_dir() == tmp_path
    with pytest.raises(ModelUnavailable) as e:
        embedding.load_tokenizer("all-MiniLM-L6-v2")
    assert "none" in e.value.hint


def test_tokenizer_does_not_truncate(tokenizer):
    text = " ".join(["word"] * 1000)
    assert len(tokenizer.encode(text, add_special_tokens=False).ids) == 1000
    # no padding either
    assert len(tokenizer.encode("word", add_special_tokens=False).ids) == 1


def test_manifest(embedder):
    assert embedder.dimensions == DIM
    assert embedder.max_tokens == 256


def test_unit_vectors_and_shape(embedder):
    vecs = embedder.embed(MIXED)
    assert vecs.shape == (len(MIXED), DIM)
    assert vecs.dtype == np.float32
    assert np.all(np.isfinite(vecs))
    norms = np.linalg.norm(vecs, axis=1)
    assert np.all(np.abs(norms - 1.0) < 1e-3), norms
    # distinct texts give distinct vectors
    assert len({v.tobytes() for v in vecs}) == len(MIXED)


def test_empty_list(embedder):
    calls = embedder.calls
    out = embedder.embed([])
    assert out.shape == (0, DIM)
    assert embedder.calls == calls


def test_order_preserved_when_batching_by_length(embedder):
    # MIXED is not sorted by length, so batching by length reorders it internally
    batched = embedder.embed(MIXED, batch_size=2)
    alone = np.vstack([embedder.embed([t], batch_size=1) for t in MIXED])
    for i, t in enumerate(MIXED):
        sims = [cos(batched[i], alone[j]) for j in range(len(MIXED))]
        # each row is its own text's vector (up to int8 batch noise, see the xfail below) ...
        assert sims[i] > 0.95, (i, t[:40], sims[i])
        # ... and clearly not another text's: every other text is far away
        assert sims[i] - max(sims[:i] + sims[i + 1:]) > 0.4, (i, t[:40], sims)


def test_batch_size_one_is_exact_and_batches_are_close(embedder):
    """The int8 graph quantizes activations with one scale per batch tensor, so a text's
    vector depends a little on its batch-mates. That is why rag.embedding_batch_size
    defaults to 1 (also the fastest here, see README): the stored vector of a text is
    then always the same. Larger batches stay close."""
    alone = np.vstack([embedder.embed([t], batch_size=1) for t in MIXED])
    again = embedder.embed(MIXED, batch_size=1)
    assert np.array_equal(alone, again)
    for bs in (2, 16):
        batched = embedder.embed(MIXED, batch_size=bs)
        for i, t in enumerate(MIXED):
            assert cos(batched[i], alone[i]) > 0.95, (bs, i, t[:40])


def test_duplicates_get_equal_vectors(embedder):
    vecs = embedder.embed(["same text here", "other", "same text here"], batch_size=3)
    assert cos(vecs[0], vecs[2]) > 0.9999


def test_paraphrase_closer_than_unrelated(embedder):
    a, b, c, d = embedder.embed([
        "How do I create an index on a table?",
        "What is the way to build an index for a table?",
        "My cat likes to sleep in the sun all afternoon.",
        "The recipe needs two eggs and a cup of flour.",
    ])
    assert cos(a, b) > 0.6
    assert cos(a, b) > cos(a, c) + 0.3
    assert cos(a, b) > cos(a, d) + 0.3
    assert cos(a, b) > cos(c, d)


def test_long_text_is_truncated_not_an_error(embedder, tokenizer):
    long = " ".join(f"sentence number {i} talks about tables and indexes." for i in range(120))
    assert len(tokenizer.encode(long).ids) > 1000
    more = long + " " + "completely different trailing words about cooking pasta. " * 50
    vecs = embedder.embed([long, more, "short"], batch_size=3)
    assert vecs.shape == (3, DIM)
    assert abs(np.linalg.norm(vecs[0]) - 1) < 1e-3
    # only the first 256 tokens are seen, so a different tail changes nothing
    assert cos(vecs[0], vecs[1]) > 0.999


@pytest.mark.parametrize("n,batch_size", [(1, 1), (5, 2), (7, 3), (7, 7), (7, 16), (16, 16), (17, 16)])
def test_calls_counter(embedder, n, batch_size):
    texts = [f"text number {i} " + "pad " * (i % 5) for i in range(n)]
    calls, count = embedder.calls, embedder.texts
    vecs = embedder.embed(texts, batch_size=batch_size)
    assert vecs.shape == (n, DIM)
    assert embedder.calls - calls == math.ceil(n / batch_size)
    assert embedder.texts - count == n


def test_bad_batch_size(embedder):
    with pytest.raises(InvalidParameter):
        embedder.embed(["x"], batch_size=0)


def test_get_embedder_is_cached(embedder):
    assert embedding.get_embedder("all-MiniLM-L6-v2") is embedder
    assert embedding.get_embedder() is embedder


def test_to_vector_literal():
    lit = embedding.to_vector_literal(np.array([0.5, -1.25, 3.0], dtype=np.float32))
    assert lit == "[50000000000000e-14,-125000000000000e-14,300000000000000e-14]"
    # every float32 comes back exactly, whatever the vector's scale; pgvector parses the
    # elements with strtof, as numpy does here
    rng = np.random.default_rng(0)
    for scale in (1e-6, 1e-2, 1.0, 37.5, 1e6):
        v = (rng.standard_normal(384) * scale).astype(np.float32)
        back = np.array([np.float32(x) for x in embedding.to_vector_literal(v)[1:-1].split(",")])
        assert (back == v).all()
    assert embedding.to_vector_literal(np.zeros(2, dtype=np.float32)) == "[0e-15,0e-15]"
    assert embedding.to_vector_literal(np.array([np.nan], dtype=np.float32)) == "[nan]"
