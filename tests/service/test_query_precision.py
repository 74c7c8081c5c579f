"""CLIPSEARCH_QUERY_PRECISION picks the path query texts are encoded with (model/quantize.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from clipsearch.service.deps import ServiceState
from clipsearch.service.metrics import Metrics
from clipsearch.service.query import EmbeddingCache
from clipsearch.service.settings import Settings

QUERIES = ["a red bicycle against a brick wall", "snow"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CLIPSEARCH_") and key != "CLIPSEARCH_ALLOWED_HOSTS":
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def model():
    from clipsearch.model.testing import tiny_model

    return tiny_model(seed=1)


def test_the_variable_sets_the_precision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for value in ("exact", "int8", "fp16"):
        monkeypatch.setenv("CLIPSEARCH_QUERY_PRECISION", value)
        assert Settings(data_dir=tmp_path).query_precision == value
    monkeypatch.setenv("CLIPSEARCH_QUERY_PRECISION", "int4")
    with pytest.raises(ValidationError, match="query_precision"):
        Settings(data_dir=tmp_path)


@pytest.mark.parametrize("precision", ["exact", "int8", "fp16"])
def test_the_api_encoder_uses_the_chosen_path(model, precision: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, query_precision=precision)
    state = ServiceState(settings, SimpleNamespace(model=model), Metrics(), EmbeddingCache())
    try:
        got = state.text_encoder().encode(QUERIES)
    finally:
        state.close()
    # the encoder runs the model on its own thread, where torch may split a product over
    # another number of threads: the same computation, equal to float rounding, not bit for bit
    same = {"rtol": 0, "atol": 1e-5}
    np.testing.assert_allclose(got, model.text_embedder(precision)(QUERIES), **same)
    exact = model.embed_texts(QUERIES)
    if precision == "exact":
        np.testing.assert_allclose(got, exact, **same)
    else:
        assert (
            np.abs(got - exact).max() > 5 * same["atol"]
        )  # the switch changes the computation ...
        assert (got * exact).sum(axis=1).min() >= 0.995  # ... within the drift bound
