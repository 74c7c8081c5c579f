"""A model loaded for text queries (``image_tower="on_demand"``): the text tower gives the whole
model's numbers, nothing of the image tower is in memory until an image is embedded, and then
the image vectors are the whole model's too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch import model as clip_model
from clipsearch.model.errors import ModelError
from clipsearch.model.fingerprint import model_fingerprint
from clipsearch.model.lazy_tower import LazyTower

TEXTS = ["a red bicycle against a brick wall", "two cats", "an invoice"]


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)) for _ in range(2)]


def test_text_queries_need_no_image_tower(tiny_model_dir: Path) -> None:
    whole = clip_model.load(str(tiny_model_dir), device="cpu")
    lazy = clip_model.load(str(tiny_model_dir), device="cpu", image_tower="on_demand")

    assert isinstance(lazy.visual, LazyTower) and not lazy.visual.loaded
    whole_params = sum(p.numel() for p in whole.parameters())
    lazy_params = sum(p.numel() for p in lazy.parameters())
    visual_params = sum(p.numel() for p in whole.visual.parameters())
    assert lazy_params == whole_params - visual_params  # the image tower is not held

    np.testing.assert_array_equal(lazy.embed_texts(TEXTS), whole.embed_texts(TEXTS))
    assert isinstance(lazy.visual, LazyTower) and not lazy.visual.loaded  # texts did not read it
    # the same model for the catalog: the library's vectors are found under it
    assert model_fingerprint(lazy) == model_fingerprint(whole)
    assert isinstance(lazy.visual, LazyTower) and not lazy.visual.loaded


def test_the_image_tower_is_read_on_first_use(tiny_model_dir: Path) -> None:
    whole = clip_model.load(str(tiny_model_dir), device="cpu")
    lazy = clip_model.load(str(tiny_model_dir), device="cpu", image_tower="on_demand")

    got = lazy.embed_images(_images())
    np.testing.assert_allclose(got, whole.embed_images(_images()), rtol=0, atol=1e-6)
    assert not isinstance(lazy.visual, LazyTower)  # the real tower took its place
    assert sum(p.numel() for p in lazy.parameters()) == sum(p.numel() for p in whole.parameters())


def test_an_unknown_choice_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="image_tower must be one of"):
        clip_model.load(str(tiny_model_dir), device="cpu", image_tower="later")
