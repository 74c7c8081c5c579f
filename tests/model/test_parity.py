"""Parity with the reference outputs in tests/fixtures/parity: each checkpoint loaded as a user
would bring it reproduces open_clip's image features, text features and logit_scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from clipsearch.model import CLIP, load

CASES = ["openai_vit_jit", "openai_rn_state_dict", "open_clip_vit_gelu"]


def _case(fixture_data: Path, name: str) -> tuple[dict, Path]:
    folder = fixture_data / "parity" / name
    return json.loads((folder / "case.json").read_text()), folder


_LOADED: dict[str, CLIP] = {}


def _load_case(case: dict, folder: Path) -> CLIP:
    """Each checkpoint is loaded once per test session (tests only read from the model)."""
    if folder.name not in _LOADED:
        _LOADED[folder.name] = _load_uncached(case, folder)
    return _LOADED[folder.name]


def _load_uncached(case: dict, folder: Path) -> CLIP:
    if case["format"] == "open_clip":
        return load(folder, device="cpu")  # the hub folder layout
    # The fixture's TorchScript archive is not one of OpenAI's hashes: the user must opt in.
    return load(folder / case["checkpoint"], device="cpu", allow_jit=case["format"] == "openai-jit")


def test_every_case_in_the_fixture_folder_is_covered(fixture_data: Path) -> None:
    found = sorted(p.parent.name for p in (fixture_data / "parity").glob("*/case.json"))
    assert found == sorted(CASES)


@pytest.mark.parametrize("name", CASES)
def test_features_and_logit_scale_match_the_reference(fixture_data: Path, name: str) -> None:
    case, folder = _case(fixture_data, name)
    expected = load_file(folder / "expected.safetensors")
    tokens = load_file(fixture_data / "parity" / "tokens.safetensors")["tokens"]
    model = _load_case(case, folder)

    with torch.inference_mode():
        image = model.encode_image(expected["pixels"])
        text = model.encode_text(tokens)
    atol = case["atol_features"]
    for got, want in ((image, expected["image_features"]), (text, expected["text_features"])):
        assert got.shape == want.shape
        assert F.cosine_similarity(got, want, dim=-1).min().item() >= 0.99999
        torch.testing.assert_close(got, want, rtol=0, atol=atol)
    assert model.logit_scale.detach().reshape(1).equal(expected["logit_scale"].reshape(1))


@pytest.mark.parametrize("name", CASES)
def test_architecture_matches_the_case_description(fixture_data: Path, name: str) -> None:
    case, folder = _case(fixture_data, name)
    config = _load_case(case, folder).config
    vision, text = case["vision_cfg"], case["text_cfg"]
    assert config.embed_dim == case["embed_dim"]
    assert config.quick_gelu is case["quick_gelu"]
    assert config.vision.image_size == vision["image_size"]
    assert config.vision.width == vision["width"]
    assert config.vision.patch_size == vision["patch_size"]
    layers = vision["layers"]
    assert config.vision.layers == (tuple(layers) if isinstance(layers, list) else layers)
    if "head_width" in vision:
        assert config.vision.heads == vision["width"] // vision["head_width"]
    assert (config.text.width, config.text.heads, config.text.layers) == (
        text["width"],
        text["heads"],
        text["layers"],
    )
    assert (config.text.context_length, config.text.vocab_size) == (
        text["context_length"],
        text["vocab_size"],
    )


def test_embed_helpers_agree_with_the_reference_after_normalisation(fixture_data: Path) -> None:
    case, folder = _case(fixture_data, "openai_rn_state_dict")
    expected = load_file(folder / "expected.safetensors")
    model = _load_case(case, folder)
    got = torch.from_numpy(model.embed_pixels(expected["pixels"], batch_size=4))
    want = F.normalize(expected["image_features"], dim=-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_end_to_end_from_raw_images_and_texts(fixture_data: Path, name: str) -> None:
    """The user's path: raw strings through model.tokenize, raw image files through
    model.preprocess, the embed_* helpers; against the reference features, normalised."""
    from PIL import Image

    case, folder = _case(fixture_data, name)
    expected = load_file(folder / "expected.safetensors")
    texts = json.loads((fixture_data / "parity" / "texts.json").read_text(encoding="utf-8"))
    model = _load_case(case, folder)

    images = []
    for filename in case["images"]:
        with Image.open(fixture_data / "parity" / "images" / filename) as img:
            img.load()
            images.append(img)
    got_images = torch.from_numpy(model.embed_images(images, batch_size=4))
    got_texts = torch.from_numpy(model.embed_texts(texts, batch_size=4))
    for got, want in (
        (got_images, expected["image_features"]),
        (got_texts, expected["text_features"]),
    ):
        cosine = (got * F.normalize(want, dim=-1)).sum(dim=-1)
        assert cosine.min().item() >= 0.99999
