"""The CLIP module: configs, building, encoders and the batched embed_* helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsearch.model import CLIP, CLIPConfig, ModelError, TextConfig, VisionConfig, build
from clipsearch.model.testing import tiny_config, tiny_model

RESNET = CLIPConfig(
    embed_dim=24,
    vision=VisionConfig(image_size=64, width=8, layers=(1, 1, 2, 1), patch_size=None, heads=4),
    text=TextConfig(width=32, heads=2, layers=1),
)


def _pixels(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- configs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [tiny_config(), RESNET], ids=["vit", "resnet"])
def test_config_round_trips_through_json(config: CLIPConfig) -> None:
    data = json.loads(json.dumps(config.to_dict()))
    assert CLIPConfig.from_dict(data) == config


@pytest.mark.parametrize(
    "change, words",
    [
        ({"embed_dim": 0}, "embed_dim"),
        ({"vision": {"image_size": 30, "patch_size": 8}}, "multiple of patch_size"),
        ({"vision": {"width": 30, "heads": 4}}, "heads=4 does not divide"),
        ({"vision": {"layers": [1, 2, 3]}}, "4 stages"),
        ({"text": {"width": 32, "heads": 3}}, "heads=3"),
        ({"text": {"layers": "12"}}, "text.layers"),
        ({"quick_gelu": "yes"}, "quick_gelu"),
        ({"colour": "red"}, "unknown CLIP config keys"),
        ({"vision": {"depth": 3}}, "unknown keys in config.vision"),
    ],
)
def test_bad_configs_are_rejected_with_the_field_named(change: dict, words: str) -> None:
    data = tiny_config().to_dict()
    for key, value in change.items():
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(ModelError, match=words):
        CLIPConfig.from_dict(data)


# -- building ---------------------------------------------------------------------------------------


def test_build_is_reproducible_per_seed_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = tiny_model(seed=1), tiny_model(seed=1), tiny_model(seed=2)
    assert torch.equal(torch.rand(1), before)  # building did not consume the caller's RNG
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.token_embedding.weight, c.token_embedding.weight)


def test_build_accepts_a_dict_config_and_starts_in_eval_mode() -> None:
    model = build(tiny_config().to_dict(), seed=0)
    assert isinstance(model, CLIP) and not model.training
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert (model.embed_dim, model.image_size, model.device.type) == (32, 32, "cpu")


def test_parameter_names_are_openai_s() -> None:
    vit = set(tiny_model().state_dict())
    for key in [
        "visual.conv1.weight",
        "visual.class_embedding",
        "visual.transformer.resblocks.0.attn.in_proj_weight",
        "visual.transformer.resblocks.1.mlp.c_proj.bias",
        "visual.ln_post.weight",
        "visual.proj",
        "transformer.resblocks.0.attn.out_proj.weight",
        "token_embedding.weight",
        "positional_embedding",
        "ln_final.bias",
        "text_projection",
        "logit_scale",
    ]:
        assert key in vit, key
    assert not [k for k in vit if "mask" in k]
    rn = set(CLIP(RESNET).state_dict())
    for key in [
        "visual.bn1.running_var",
        "visual.layer1.0.downsample.0.weight",
        "visual.layer3.1.conv3.weight",
        "visual.attnpool.q_proj.weight",
        "visual.attnpool.c_proj.bias",
    ]:
        assert key in rn, key


# -- encoders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [tiny_config(), RESNET], ids=["vit", "resnet"])
def test_encoders_return_unnormalised_features(config: CLIPConfig) -> None:
    model = build(config, seed=1)
    with torch.inference_mode():
        image = model.encode_image(_pixels(3, config.vision.image_size))
        text = model.encode_text(model.tokenize(["a dog", "a cat on a mat"]))
    assert image.shape == (3, config.embed_dim) and text.shape == (2, config.embed_dim)
    assert image.dtype == torch.float32
    assert not torch.allclose(image.norm(dim=-1), torch.ones(3))


def test_forward_gives_scaled_cosine_logits() -> None:
    model = tiny_model(seed=2)
    pixels, tokens = _pixels(2), model.tokenize(["one", "two", "three"])
    with torch.inference_mode():
        logits, logits_t = model(pixels, tokens)
        img = F.normalize(model.encode_image(pixels), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, (1 / 0.07) * img @ txt.T)
    torch.testing.assert_close(logits_t, logits.T)


def test_images_in_a_batch_do_not_affect_each_other() -> None:
    model = tiny_model(seed=3)
    pixels = _pixels(4)
    with torch.inference_mode():
        together = model.encode_image(pixels)
        alone = torch.cat([model.encode_image(pixels[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_encoder_input_errors() -> None:
    model = tiny_model()
    with pytest.raises(ModelError, match=r"\[N, 3, 32, 32\]"):
        model.encode_image(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ModelError, match="context_length 77"):
        model.encode_text(torch.zeros(1, 80, dtype=torch.long))
    with pytest.raises(ModelError, match=r"\[N, L\]"):
        model.encode_text(torch.zeros(77, dtype=torch.long))


# -- embed_* ------------------------------------------------------------------------------------------


def test_embed_pixels_is_normalised_float32_and_batch_size_independent() -> None:
    model = tiny_model(seed=4)
    pixels = _pixels(5)
    out = model.embed_pixels(pixels, batch_size=2)
    assert out.dtype == np.float32 and out.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out, model.embed_pixels(pixels, batch_size=64), atol=1e-6)
    with torch.inference_mode():
        reference = F.normalize(model.encode_image(pixels), dim=-1).numpy()
    np.testing.assert_allclose(out, reference, atol=1e-6)


def test_embed_texts_keeps_the_callers_order() -> None:
    model = tiny_model(seed=5)
    texts = [
        "a much longer caption about a brown dog running on a sunny beach at noon",
        "cat",
        "",
        "a red bicycle",
        "two people",
    ]
    out = model.embed_texts(texts, batch_size=2)  # batched by length internally
    assert out.shape == (5, 32) and out.dtype == np.float32
    one_by_one = np.concatenate([model.embed_texts([t]) for t in texts])
    np.testing.assert_allclose(out, one_by_one, atol=1e-6)
    np.testing.assert_allclose(model.embed_texts("cat"), out[1:2], atol=1e-6)
    assert model.embed_texts([]).shape == (0, 32)


def test_embed_helpers_restore_training_mode() -> None:
    model = tiny_model().train()
    model.embed_texts(["x"])
    model.embed_pixels(_pixels(1))
    assert model.training


def test_embed_input_errors() -> None:
    model = tiny_model()
    with pytest.raises(ModelError, match="item 1 is int"):
        model.embed_texts(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(ModelError, match="batch_size"):
        model.embed_texts(["x"], batch_size=0)
    with pytest.raises(ModelError, match="FloatTensor"):
        model.embed_pixels(np.zeros((1, 3, 32, 32)))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="PIL images or paths"):
        model.embed_images([b"bytes"])  # type: ignore[list-item]


def test_embed_images_takes_paths_and_pil_images(fixture_data: Path) -> None:
    from PIL import Image

    model = tiny_model(seed=6)
    paths = [
        fixture_data / "parity" / "images" / name for name in ("img0.png", "img1.jpg", "img5.jpg")
    ]
    from_paths = model.embed_images([str(paths[0]), paths[1], paths[2]], batch_size=2)
    opened = []
    for path in paths:
        with Image.open(path) as img:
            opened.append(img.convert("RGB"))
    from_pil = model.embed_images(opened)
    assert from_paths.shape == (3, 32) and from_paths.dtype == np.float32
    np.testing.assert_allclose(from_paths, from_pil, atol=1e-6)
    assert model.embed_images([]).shape == (0, 32)


def test_embed_images_names_the_file_it_cannot_read(tmp_path: Path) -> None:
    model = tiny_model()
    missing = tmp_path / "missing.jpg"
    with pytest.raises(ModelError, match=r"missing\.jpg"):
        model.embed_images([missing])
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    with pytest.raises(ModelError, match=r"notes\.jpg"):
        model.embed_images([str(not_image)])
