"""MobileCLIP2-B (timm's vit_base_mci_224 image tower): parity with open_clip 3.3.0 on the shrunk
random-weight hub folder in tests/model/fixtures/mobileclip2_b (made by
make_mobileclip_b_fixture.py there), with the stem's BatchNorms folded and unfolded, our own
format, and the released architectures inferred from shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from clipsearch.model import load, save_pretrained
from clipsearch.model.families import load_open_clip_folder
from clipsearch.model.mobileclip_vit import (
    MCiViT,
    MCiViTConfig,
    MobileCLIPViT,
    MobileCLIPViTConfig,
    infer_config,
)
from clipsearch.model.testing import assert_features_match, assert_same_embeddings
from clipsearch.model.towers import TextTowerConfig, TextTransformer

CASE = Path(__file__).parent / "fixtures" / "mobileclip2_b"


def _expected() -> dict[str, torch.Tensor]:
    return load_file(CASE / "expected.safetensors")


def _texts(fixture_data: Path) -> list[str]:
    return json.loads((fixture_data / "parity" / "texts.json").read_text(encoding="utf-8"))


def _images(fixture_data: Path) -> list:
    from PIL import Image

    case = json.loads((CASE / "case.json").read_text(encoding="utf-8"))
    images = []
    for name in case["images"]:
        with Image.open(fixture_data / "parity" / "images" / name) as img:
            img.load()
            images.append(img)
    return images


def test_load_recognises_the_family_and_folds_the_stem() -> None:
    model = load(CASE, device="cpu")
    assert isinstance(model, MobileCLIPViT) and model.family == "mobileclip-vit"
    assert model.config.vision.folded
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    unfolded = load_open_clip_folder(CASE, fold=False)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.modules()) == 2


def test_tokens_and_pixels_are_the_reference(fixture_data: Path) -> None:
    model = load(CASE, device="cpu")
    expected = _expected()
    assert torch.equal(model.tokenize(_texts(fixture_data)), expected["tokens"])
    pixels = torch.stack([model.preprocess(img) for img in _images(fixture_data)])
    torch.testing.assert_close(pixels, expected["pixels"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("fold", [False, True])
def test_features_match_the_reference_in_both_forms(fold: bool) -> None:
    model = load_open_clip_folder(CASE, fold=fold).eval()
    expected = _expected()
    with torch.inference_mode():
        image = model.encode_image(expected["pixels"])
        text = model.encode_text(expected["tokens"])
    assert_features_match(image, expected["image_features"])
    assert_features_match(text, expected["text_features"])
    scale = model.logit_scale.detach().float()
    assert abs(scale.item() - expected["logit_scale"].item()) <= 1e-4


def test_end_to_end_from_raw_images_and_texts(fixture_data: Path) -> None:
    model = load(CASE, device="cpu")
    expected = _expected()
    got_images = torch.from_numpy(model.embed_images(_images(fixture_data), batch_size=4))
    got_texts = torch.from_numpy(model.embed_texts(_texts(fixture_data), batch_size=4))
    for got, want in (
        (got_images, expected["image_features"]),
        (got_texts, expected["text_features"]),
    ):
        cosine = (got * F.normalize(want, dim=-1)).sum(dim=-1)
        assert cosine.min().item() >= 0.99999


def test_our_format_round_trips(tmp_path: Path) -> None:
    model = load(CASE, device="cpu")
    again = load(save_pretrained(model, tmp_path / "saved"), device="cpu")
    assert isinstance(again, MobileCLIPViT) and again.config == model.config
    pixels = _expected()["pixels"]
    with torch.inference_mode():
        torch.testing.assert_close(again.encode_image(pixels), model.encode_image(pixels))
    texts = ["a photo of a dog", "two cats"]
    assert_same_embeddings(again.embed_texts(texts), model.embed_texts(texts))


# open_clip name: (image size, ViT width, layers, heads, MLP, stem channels)
RELEASED = {
    "MobileCLIP2-B": (224, 768, 12, 12, 3072, 192),
    "MobileCLIP-B": (224, 768, 12, 12, 3072, 192),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_configuration_is_inferred_from_shapes(name: str) -> None:
    size, width, layers, heads, mlp, stem = RELEASED[name]
    text = TextTowerConfig(77, 49408, 512, 8, 12, 2048, True, "argmax", False, 1e-5, "gelu")
    want = MobileCLIPViTConfig(
        embed_dim=512,
        vision=MCiViTConfig(size, width, layers, heads, mlp, stem),
        text=text,
    )
    with torch.device("meta"):
        visual = MCiViT(want.vision, want.embed_dim)
        text_tower = TextTransformer(want.text, want.embed_dim)
    state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    state.update({f"text.{k}": v for k, v in text_tower.state_dict().items()})
    state["logit_scale"] = torch.empty((), device="meta")
    # open_clip's model config (model_configs/<name>.json)
    data = {
        "model_cfg": {
            "embed_dim": 512,
            "vision_cfg": {"timm_model_name": "vit_base_mci_224", "timm_pool": "token",
                           "timm_proj": None, "image_size": size},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                         "layers": 12, "no_causal_mask": False},
            "custom_text": True,
        }
    }  # fmt: skip
    assert infer_config(data, Path("."), state, name) == want
