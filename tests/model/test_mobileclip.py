"""MobileCLIP beyond the parity fixture: the training-time form (as stored) and the folded
inference form give the same features, folding leaves no branch behind, our own format keeps
the folded form, and every MCi tower's architecture is inferred from tensor shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clipsearch.model import load, save_pretrained
from clipsearch.model.families import load_open_clip_folder
from clipsearch.model.mobileclip import (
    FastViT,
    FastViTConfig,
    LargeKernelConv,
    MobileCLIP,
    MobileCLIPConfig,
    MobileOneBlock,
    RepCPE,
    RepMixer,
    infer_config,
)
from clipsearch.model.testing import assert_features_match, assert_same_embeddings
from clipsearch.model.towers import TextTowerConfig

_BRANCHY = (MobileOneBlock, LargeKernelConv, RepMixer, RepCPE)


def _zoo(fixture_data: Path) -> Path:
    return fixture_data / "parity-zoo" / "mobileclip"


def _branches(model: torch.nn.Module) -> int:
    """Modules still computing with training-time branches."""
    return sum(1 for m in model.modules() if isinstance(m, _BRANCHY) and m.reparam_conv is None)


def test_both_forms_match_the_reference_and_each_other(fixture_data: Path) -> None:
    expected = load_file(_zoo(fixture_data) / "expected.safetensors")
    branchy = load_open_clip_folder(_zoo(fixture_data), fold=False).eval()
    folded = load(_zoo(fixture_data), device="cpu")  # what users get: folded for inference
    assert isinstance(branchy, MobileCLIP) and isinstance(folded, MobileCLIP)
    assert _branches(branchy) == 20 and not branchy.is_folded
    assert _branches(folded) == 0 and folded.is_folded
    with torch.inference_mode():
        before = branchy.encode_image(expected["pixels"])
        after = folded.encode_image(expected["pixels"])
    assert_features_match(before, expected["image_features"])
    assert_features_match(after, expected["image_features"])
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    assert not any(".conv_kxk." in k or ".large_conv." in k for k in folded.state_dict())


def _perturbed_tower(cfg: FastViTConfig, seed: int = 0) -> FastViT:
    """A random tower whose BatchNorms are not identities (so folding has work to do)."""
    torch.manual_seed(seed)
    tower = FastViT(cfg, 24).eval()
    with torch.no_grad():
        for module in tower.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.normal_(1, 0.1)
                module.bias.normal_(0, 0.1)
            if hasattr(module, "gamma"):
                module.gamma.normal_(0, 0.3)
    return tower


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_folding_a_random_tower_keeps_its_features(norm: str) -> None:
    cfg = FastViTConfig(
        image_size=64, layers=(1, 1, 1, 1, 1), embed_dims=(8, 16, 32, 32, 64),
        token_mixers=("repmixer", "repmixer", "repmixer", "attention", "attention"),
        pos_embs=(False, False, False, True, True),
        se_downsamples=(False, False, True, True, False), attn_norm=norm,
        stem_scale_branch=norm == "batchnorm",
    )  # fmt: skip
    tower = _perturbed_tower(cfg)
    pixels = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        before = tower(pixels)
    tower.fold()
    assert _branches(tower) == 0
    with torch.inference_mode():
        after = tower(pixels)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_our_format_keeps_the_folded_form(fixture_data: Path, tmp_path: Path) -> None:
    model = load(_zoo(fixture_data), device="cpu")
    out = save_pretrained(model, tmp_path / "saved")
    again = load(out, device="cpu")
    assert isinstance(again, MobileCLIP) and again.is_folded and again.config == model.config
    pixels = load_file(_zoo(fixture_data) / "expected.safetensors")["pixels"]
    assert_same_embeddings(again.embed_pixels(pixels), model.embed_pixels(pixels))
    assert_same_embeddings(again.embed_texts(["a dog"]), model.embed_texts(["a dog"]))


# timm's MCi towers (fastvit_mci0..4): layers, widths, mixers, pos embs, SE, norm, stem scale.
_RM, _AT = "repmixer", "attention"
RELEASED = {
    "MobileCLIP2-S0 (fastvit_mci0)": ((2, 6, 10, 2), (64, 128, 256, 512), (_RM, _RM, _RM, _AT),
        (False, False, False, True), (False, False, True, True), "batchnorm", True, 3.0, 512),
    "MobileCLIP-S1 (fastvit_mci1)": ((4, 12, 20, 4), (64, 128, 256, 512), (_RM, _RM, _RM, _AT),
        (False, False, False, True), (False, False, True, True), "batchnorm", True, 3.0, 512),
    "MobileCLIP2-S2 (fastvit_mci2)": ((4, 12, 24, 4), (80, 160, 320, 640), (_RM, _RM, _RM, _AT),
        (False, False, False, True), (False, False, True, True), "batchnorm", True, 3.0, 512),
    "MobileCLIP2-S3 (fastvit_mci3)": ((2, 12, 24, 4, 2), (96, 192, 384, 768, 1536),
        (_RM, _RM, _RM, _AT, _AT), (False, False, False, True, True), (False,) * 5, "layernorm",
        False, 4.0, 768),
    "MobileCLIP2-S4 (fastvit_mci4)": ((2, 12, 24, 4, 4), (128, 256, 512, 1024, 2048),
        (_RM, _RM, _RM, _AT, _AT), (False, False, False, True, True), (False,) * 5, "layernorm",
        False, 4.0, 768),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_tower_is_inferred_from_shapes(name: str) -> None:
    layers, dims, mixers, pos, se, norm, stem_scale, ratio, embed = RELEASED[name]
    vision = FastViTConfig(256, layers, dims, ratio, mixers, pos, se, stem_scale, norm)
    text = TextTowerConfig(77, 49408, 512, 8, 12, 2048, causal=False)
    want = MobileCLIPConfig(embed_dim=embed, vision=vision, text=text)
    with torch.device("meta"):
        state = MobileCLIP(want).state_dict()
    data = {
        "model_cfg": {
            "embed_dim": embed,
            "vision_cfg": {"timm_model_name": name.split("(")[1][:-1], "image_size": 256},
            "text_cfg": {"width": 512, "heads": 8, "layers": 12, "no_causal_mask": True},
        }
    }
    assert infer_config(data, Path("."), state, name) == want
