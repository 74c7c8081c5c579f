"""NLLB-SigLIP (open_clip's nllb-clip-base-siglip): parity with open_clip 3.3.0 on the shrunk
random-weight hub folder in tests/model/fixtures/nllb_siglip (made by make_nllb_fixture.py in the
same folder), language codes as NLLB's tokenizer puts them, the released architectures inferred
from shapes, our own format, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from clipsearch.model import CheckpointError, ModelError, load, save_pretrained
from clipsearch.model.base import EmbeddingModel
from clipsearch.model.hf_text import build_text_model
from clipsearch.model.nllb import NLLBSigLIP, NLLBSigLIPConfig, infer_config
from clipsearch.model.siglip import SigLIPVisionConfig, SigLIPVisionTransformer
from clipsearch.model.testing import assert_features_match, assert_same_embeddings

CASE = Path(__file__).parent / "fixtures" / "nllb_siglip"
_LOADED: dict[str, EmbeddingModel] = {}


def _model() -> EmbeddingModel:
    if "case" not in _LOADED:
        _LOADED["case"] = load(CASE, device="cpu")
    return _LOADED["case"]


def _expected() -> dict[str, torch.Tensor]:
    return load_file(CASE / "expected.safetensors")


def _texts() -> list[str]:
    return json.loads((CASE / "texts.json").read_text(encoding="utf-8"))


def _images(fixture_data: Path) -> list:
    from PIL import Image

    case = json.loads((CASE / "case.json").read_text(encoding="utf-8"))
    images = []
    for name in case["images"]:
        with Image.open(fixture_data / "parity" / "images" / name) as img:
            img.load()
            images.append(img)
    return images


def test_the_folder_is_recognised_as_nllb_siglip() -> None:
    model = _model()
    assert isinstance(model, NLLBSigLIP) and model.family == "nllb-siglip"
    assert model.score_kind == "sigmoid"
    assert model.context_length == 77


def test_tokens_are_the_reference_ids() -> None:
    tokens = _model().tokenize(_texts())
    assert torch.equal(tokens, _expected()["tokens"])


@pytest.mark.parametrize("language", ["fra_Latn", "zho_Hans", "rus_Cyrl"])
def test_a_chosen_language_code_gives_the_reference_ids(language: str) -> None:
    from clipsearch.model.hub_tokenizer import HubTokenizer

    tokenizer = HubTokenizer(CASE, clean="whitespace", language=language)
    tokens = tokenizer(_texts(), context_length=77)
    expected = _expected()
    assert torch.equal(tokens, expected[f"tokens_{language}"])
    # The code is the first token, the text after it the same as in English mode.
    assert torch.equal(tokens[:, 1:], expected["tokens"][:, 1:])
    assert tokenizer.language == language and language in tokenizer.languages
    assert len(tokenizer.languages) == 202


def test_an_unknown_language_code_is_a_clear_error() -> None:
    from clipsearch.model.hub_tokenizer import HubTokenizer

    with pytest.raises(ModelError, match=r"unknown language code 'french'.*fra_Latn"):
        HubTokenizer(CASE, language="french")


def test_preprocessing_matches_the_reference_pixels(fixture_data: Path) -> None:
    model = _model()
    pixels = torch.stack([model.preprocess(img) for img in _images(fixture_data)])
    torch.testing.assert_close(pixels, _expected()["pixels"], rtol=0, atol=1e-4)


def test_features_and_logit_parameters_match_the_reference() -> None:
    model = _model()
    expected = _expected()
    with torch.inference_mode():
        image = model.encode_image(expected["pixels"])
        text = model.encode_text(expected["tokens"])
        text_fr = model.encode_text(expected["tokens_fra_Latn"])
    assert_features_match(image, expected["image_features"])
    assert_features_match(text, expected["text_features"])
    # The language code is what the text tower pools: another code, other features.
    assert not torch.allclose(text_fr, text, atol=1e-3)
    scale = getattr(model, "logit_scale").detach().float()  # noqa: B009
    bias = getattr(model, "logit_bias").detach().float()  # noqa: B009
    assert abs(scale.item() - expected["logit_scale"].item()) <= 1e-4
    assert abs(bias.item() - expected["logit_bias"].item()) <= 1e-4


def test_end_to_end_from_raw_images_and_texts(fixture_data: Path) -> None:
    model = _model()
    expected = _expected()
    got_images = torch.from_numpy(model.embed_images(_images(fixture_data), batch_size=4))
    got_texts = torch.from_numpy(model.embed_texts(_texts(), batch_size=4))
    for got, want in (
        (got_images, expected["image_features"]),
        (got_texts, expected["text_features"]),
    ):
        cosine = (got * F.normalize(want, dim=-1)).sum(dim=-1)
        assert cosine.min().item() >= 0.99999
    # The score is SigLIP's match probability from the learnt scale and bias.
    cos = float(got_images[0] @ got_texts[0])
    want_p = 1 / (1 + np.exp(-(np.exp(expected["logit_scale"].item()) * cos
                               + expected["logit_bias"].item())))  # fmt: skip
    assert float(model.score(cos)) == pytest.approx(want_p, rel=1e-5)


def test_our_format_round_trips(tmp_path: Path) -> None:
    model = _model()
    out = save_pretrained(model, tmp_path / "saved")
    again = load(out, device="cpu")
    assert isinstance(again, NLLBSigLIP) and again.config == model.config
    texts = ["a photo of a dog", "un chien sur la plage", "海滩上奔跑的狗"]
    assert_same_embeddings(again.embed_texts(texts), model.embed_texts(texts))


def test_a_text_tower_without_its_config_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(CASE, folder)
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["hf_model_name"] = "some-org/some-encoder"
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"'some-org/some-encoder' needs its transformers"):
        load(folder, device="cpu")


def test_the_released_folder_layout_loads_without_a_text_config(tmp_path: Path) -> None:
    """The hub folder names facebook/nllb-200-distilled-600M and has no transformers config:
    the encoder's config comes from the weights' shapes."""
    folder = tmp_path / "m"
    shutil.copytree(CASE, folder)
    shutil.rmtree(folder / "hf_text")
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["hf_model_name"] = "facebook/nllb-200-distilled-600M"
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    model = load(folder, device="cpu")
    assert isinstance(model, NLLBSigLIP)
    hf = model.config.hf_config
    assert (hf["model_type"], hf["d_model"], hf["encoder_layers"], hf["encoder_ffn_dim"]) == (
        "m2m_100",
        48,
        2,
        96,
    )
    from clipsearch.model.hub_tokenizer import HubTokenizer

    assert hf["vocab_size"] == HubTokenizer(CASE).vocab_size  # every id the tokenizer makes
    vectors = model.embed_texts(["a dog on the beach"])
    assert vectors.shape == (1, 32)


def _meta_state(config: NLLBSigLIPConfig) -> dict[str, torch.Tensor]:
    """The state dict shapes of a configuration (our key names), without allocating weights."""
    with torch.device("meta"):
        visual = SigLIPVisionTransformer(config.vision)
        text = build_text_model(config.hf_config)
    state = {f"visual.{k}": t for k, t in visual.state_dict().items()}
    state.update({f"text.transformer.{k}": t for k, t in text.state_dict().items()})
    state["text.proj.weight"] = torch.empty((config.embed_dim, config.text_width), device="meta")
    state["logit_scale"] = torch.empty((), device="meta")
    state["logit_bias"] = torch.empty((), device="meta")
    return state


# open_clip name: (timm tower, (patch, width, layers, heads, mlp), NLLB text tower,
# (d_model, layers, FFN)); image size 384 and a 256206-id vocabulary for both.
RELEASED = {
    "nllb-clip-base-siglip": (
        "vit_base_patch16_siglip_384", (16, 768, 12, 12, 3072),
        "facebook/nllb-200-distilled-600M", (1024, 12, 4096),
    ),
    "nllb-clip-large-siglip": (
        "vit_so400m_patch14_siglip_384", (14, 1152, 27, 16, 4304),
        "facebook/nllb-200-distilled-1.3B", (1024, 24, 8192),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_configuration_is_inferred_from_shapes(name: str) -> None:
    timm_name, (patch, width, layers, heads, mlp), hf_name, (d, text_layers, ffn) = RELEASED[name]
    hf_config = {
        "model_type": "m2m_100", "vocab_size": 256206, "d_model": d,
        "encoder_layers": text_layers, "encoder_attention_heads": 16, "encoder_ffn_dim": ffn,
        "decoder_layers": 0, "max_position_embeddings": 1024, "scale_embedding": True,
        "activation_function": "relu", "pad_token_id": 1, "is_encoder_decoder": True,
    }  # fmt: skip
    want = NLLBSigLIPConfig(
        embed_dim=width,
        vision=SigLIPVisionConfig(384, patch, width, layers, heads, mlp),
        hf_config=hf_config,
    )
    # open_clip's model config for it (model_configs/<name>.json), as the hub folder has it
    data = {
        "model_cfg": {
            "embed_dim": width, "custom_text": True, "init_logit_bias": -10,
            "vision_cfg": {"image_size": 384, "timm_model_name": timm_name,
                           "timm_model_pretrained": False, "timm_pool": "map",
                           "timm_proj": "none"},
            "text_cfg": {"hf_model_name": hf_name, "hf_tokenizer_name": hf_name,
                         "hf_proj_type": "linear", "hf_pooler_type": "cls_pooler"},
        }
    }  # fmt: skip
    state = _meta_state(want)
    got = infer_config(data, Path("."), state, name)
    assert got.vision == want.vision and got.embed_dim == width
    assert (got.pooler, got.proj, got.context_length) == ("cls_pooler", "linear", 77)
    for key in ("vocab_size", "d_model", "encoder_layers", "encoder_attention_heads",
                "encoder_ffn_dim", "max_position_embeddings", "scale_embedding",
                "activation_function", "pad_token_id"):  # fmt: skip
        assert got.hf_config[key] == hf_config[key], key
    # What it infers builds exactly the tensors the checkpoint has.
    rebuilt = _meta_state(got)
    assert {k: tuple(v.shape) for k, v in rebuilt.items()} == {
        k: tuple(v.shape) for k, v in state.items()
    }
