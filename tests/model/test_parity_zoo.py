"""Parity with the reference outputs in tests/fixtures/parity-zoo (open_clip 3.3.0 on shrunk
SigLIP, SigLIP 2, MobileCLIP2 and XLM-RoBERTa CLIP models): each hub folder loaded with
``model.load`` as a user would bring it reproduces the token ids, the preprocessed pixels, the
image and text features and the logit scale/bias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from clipsearch.model import load
from clipsearch.model.base import EmbeddingModel
from clipsearch.model.testing import assert_features_match

CASES = ["siglip", "siglip2", "mobileclip", "multilingual"]
_LOADED: dict[str, EmbeddingModel] = {}


def _folder(fixture_data: Path, name: str) -> Path:
    return fixture_data / "parity-zoo" / name


def _model(fixture_data: Path, name: str) -> EmbeddingModel:
    """Each case is loaded once per session (the tests only read from the model)."""
    if name not in _LOADED:
        _LOADED[name] = load(_folder(fixture_data, name), device="cpu")
    return _LOADED[name]


def _expected(fixture_data: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(_folder(fixture_data, name) / "expected.safetensors")


def _texts(fixture_data: Path) -> list[str]:
    return json.loads((fixture_data / "parity" / "texts.json").read_text(encoding="utf-8"))


def _images(fixture_data: Path, name: str) -> list:
    from PIL import Image

    case = json.loads((_folder(fixture_data, name) / "case.json").read_text())
    images = []
    for filename in case["images"]:
        with Image.open(fixture_data / "parity" / "images" / filename) as img:
            img.load()
            images.append(img)
    return images


@pytest.mark.parametrize("name", CASES)
def test_tokens_are_the_reference_ids(fixture_data: Path, name: str) -> None:
    model = _model(fixture_data, name)
    tokens = model.tokenize(_texts(fixture_data))
    assert torch.equal(tokens, _expected(fixture_data, name)["tokens"])


@pytest.mark.parametrize("name", CASES)
def test_preprocessing_matches_the_reference_pixels(fixture_data: Path, name: str) -> None:
    model = _model(fixture_data, name)
    pixels = torch.stack([model.preprocess(img) for img in _images(fixture_data, name)])
    torch.testing.assert_close(pixels, _expected(fixture_data, name)["pixels"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_features_and_logit_parameters_match_the_reference(fixture_data: Path, name: str) -> None:
    model = _model(fixture_data, name)
    expected = _expected(fixture_data, name)
    with torch.inference_mode():
        image = model.encode_image(expected["pixels"])
        text = model.encode_text(expected["tokens"])
    assert_features_match(image, expected["image_features"])
    assert_features_match(text, expected["text_features"])
    scale = getattr(model, "logit_scale").detach().float()  # noqa: B009
    assert abs(scale.item() - expected["logit_scale"].item()) <= 1e-4
    if "logit_bias" in expected:
        bias = getattr(model, "logit_bias").detach().float()  # noqa: B009
        assert abs(bias.item() - expected["logit_bias"].item()) <= 1e-4


@pytest.mark.parametrize("name", CASES)
def test_end_to_end_from_raw_images_and_texts(fixture_data: Path, name: str) -> None:
    """The user's path: raw strings and PIL images through the embed_* helpers."""
    model = _model(fixture_data, name)
    expected = _expected(fixture_data, name)
    got_images = torch.from_numpy(model.embed_images(_images(fixture_data, name), batch_size=4))
    got_texts = torch.from_numpy(model.embed_texts(_texts(fixture_data), batch_size=4))
    for got, want in (
        (got_images, expected["image_features"]),
        (got_texts, expected["text_features"]),
    ):
        cosine = (got * F.normalize(want, dim=-1)).sum(dim=-1)
        assert cosine.min().item() >= 0.99999
    assert model.embed_dim == got_images.shape[1]


def test_every_case_in_the_fixture_folder_is_covered(fixture_data: Path) -> None:
    found = sorted(p.parent.name for p in (fixture_data / "parity-zoo").glob("*/case.json"))
    assert found == sorted(CASES)
