"""Unit tests for plpy/ragpg: no database, only the engine modules and the installed model.

The model is looked up where `make` installs it for the build tree
(build/pylib/models/all-MiniLM-L6-v2). Tests that need it (via the `tokenizer` or
`embedder` fixtures) are skipped with a clear reason when it is missing; the HTML/text
tests and the pure-Python parts of answer.py still run.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLPY = REPO / "plpy"
MODELS = REPO / "build" / "pylib" / "models"
MODEL = "all-MiniLM-L6-v2"
MODEL_DIR = MODELS / MODEL

if str(PLPY) not in sys.path:
    sys.path.insert(0, str(PLPY))
os.environ["RAGPG_MODELS"] = str(MODELS)

_MODEL_FILES = ("model.int8.onnx", "tokenizer.json", "manifest.json")
MODEL_MISSING = [f for f in _MODEL_FILES if not (MODEL_DIR / f).is_file()]
SKIP_REASON = (f"embedding model not installed: {MODEL_DIR} lacks {', '.join(MODEL_MISSING)} "
               "(build it with `make` / scripts/export_model.py)")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_model: needs the installed embedding model")


def pytest_collection_modifyitems(config, items):
    """Skip every test that needs the model when the model is missing (one clear reason):
    those using the `tokenizer`/`embedder` fixtures or marked `needs_model`."""
    if not MODEL_MISSING:
        return
    here = Path(__file__).resolve().parent
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if Path(str(item.fspath)).resolve().parent != here:
            continue
        if ({"tokenizer", "embedder"} & set(getattr(item, "fixturenames", ()))
                or item.get_closest_marker("needs_model")):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer():
    if MODEL_MISSING:
        pytest.skip(SKIP_REASON)
    from ragpg.embedding import load_tokenizer

    return load_tokenizer(MODEL)


@pytest.fixture(scope="session")
def embedder():
    if MODEL_MISSING:
        pytest.skip(SKIP_REASON)
    from ragpg.embedding import get_embedder

    return get_embedder(MODEL)
