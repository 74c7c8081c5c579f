"""indexer/relevance.py: the rule's arithmetic, the SigLIP path, and when it is measured again."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

from clipsearch.indexer import relevance
from clipsearch.indexer.relevance import BackgroundCache, Calibration, NullFit, calibrate


def _cal(sigmoid: tuple[float, float] | None = None) -> Calibration:
    return Calibration(
        text=NullFit(top=0.30, spread=0.02, n=64, mean=0.25),
        image=NullFit(top=0.80, spread=0.05, n=24, mean=0.70),
        sigmoid=sigmoid,
        library_size=1000,
        made_at=time.monotonic(),
    )


def test_relevance_is_half_at_the_backgrounds_best_and_min_score_inverts_it() -> None:
    cal = _cal()
    r = cal.relevance([0.28, 0.30, 0.32, 0.34])
    assert r[1] == pytest.approx(0.5)
    assert r[2] == pytest.approx(0.8413, abs=1e-3)  # one background deviation above
    assert r[0] == pytest.approx(0.1587, abs=1e-3)
    assert list(r) == sorted(r)
    for want in (0.1, 0.5, 0.9):
        assert cal.relevance([cal.min_score(want)])[0] == pytest.approx(want)
    assert cal.min_score(0) == -np.inf and cal.min_score(1) == np.inf
    # image queries against the image background, a mix in between
    assert cal.relevance([0.80], image_share=1.0)[0] == pytest.approx(0.5)
    assert cal.min_score(0.5, image_share=0.5) == pytest.approx(0.55)


class _SigLIPLike:
    score_kind = "sigmoid"
    logit_scale = torch.tensor(np.log(10.0))
    logit_bias = torch.tensor(-5.0)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        v = rng.normal(size=(len(texts), 8)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_images(self, images: list[Any]) -> np.ndarray:
        return self.embed_texts(["x"] * len(images))


def test_siglip_text_queries_use_the_models_own_sigmoid() -> None:
    cal = calibrate(_SigLIPLike(), lambda v: [0.1] * len(v), 10)
    assert cal.relevance([0.5])[0] == pytest.approx(0.5)  # sigmoid(10 * 0.5 - 5)
    assert cal.min_score(0.5) == pytest.approx(0.5)
    assert cal.relevance([0.1], image_share=1.0)[0] == pytest.approx(0.5)  # images: background
    assert cal.describe()["rule"] == "sigmoid"


def test_a_stale_calibration_answers_while_it_is_measured_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _SigLIPLike()
    cache = BackgroundCache()
    calls: list[int] = []
    release = threading.Event()

    def best(vectors: np.ndarray) -> list[float]:
        calls.append(len(vectors))
        if len(calls) > 2:  # the re-measure waits until the test lets it go
            release.wait(10)
        return [0.2] * len(vectors)

    first = cache.get(1, model, best, 100)
    assert cache.get(1, model, best, 110) is first  # within a quarter: no new measure
    assert len(calls) == 2
    stale = cache.get(1, model, best, 1000)  # grew tenfold: measured again, in the background
    assert stale is first
    release.set()
    for _ in range(100):
        if cache.get(1, model, best, 1000) is not first:
            break
        time.sleep(0.05)
    assert cache.get(1, model, best, 1000).library_size == 1000
    # another served index of the same model (a rebuild): the current one answers at once and
    # the new index's is measured in the background
    monkeypatch.setattr(relevance, "REFRESH_AFTER_S", 3600.0)
    current = cache.get(1, model, best, 1000)
    assert cache.get(2, model, best, 1000) is current
    for _ in range(100):
        if cache.get(2, model, best, 1000) is not current:
            break
        time.sleep(0.05)
    rebuilt = cache.get(2, model, best, 1000)
    assert rebuilt is not current
    assert cache.get(2, model, best, 1000) is rebuilt  # and kept: not measured on every search
    # another model (a re-index with --model): its scores mean something else, measured at once
    other = _SigLIPLike()
    done = len(calls)
    assert cache.get(3, other, best, 1000) is not rebuilt
    assert len(calls) == done + 2
