"""SigLIP / SigLIP 2 beyond the parity fixtures: the sigmoid score, what tells SigLIP 2's
tanh-GELU from exact GELU, our own format, the architecture of every released configuration
inferred from tensor shapes, and clear errors for folders that are not what they claim."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clipsearch.model import CheckpointError, load, save_pretrained
from clipsearch.model.families import _siglip_config
from clipsearch.model.siglip import SigLIP, SigLIPConfig, SigLIPVisionConfig, vision_heads
from clipsearch.model.testing import assert_features_match, assert_same_embeddings, tiny_model
from clipsearch.model.towers import TextTowerConfig


def _zoo(fixture_data: Path, name: str) -> Path:
    return fixture_data / "parity-zoo" / name


def test_score_is_the_sigmoid_match_probability(fixture_data: Path) -> None:
    model = load(_zoo(fixture_data, "siglip"), device="cpu")
    assert isinstance(model, SigLIP) and model.score_kind == "sigmoid"
    expected = load_file(_zoo(fixture_data, "siglip") / "expected.safetensors")
    with torch.inference_mode():
        logits = model(expected["pixels"][:2], expected["tokens"][:3])  # [2, 3]
    image = model.embed_pixels(expected["pixels"][:2])
    text = model.embed_texts(json.loads((fixture_data / "parity" / "texts.json").read_text())[:3])
    cosine = image @ text.T
    probs = model.score(cosine)
    assert probs.dtype == np.float32 and probs.shape == (2, 3)
    assert ((probs > 0) & (probs < 1)).all()
    np.testing.assert_allclose(probs, torch.sigmoid(logits).numpy(), atol=1e-5)
    # A higher cosine is a higher probability; the bias makes cos 0 unlikely.
    low, high = model.score(np.array([0.0, 0.5]))
    assert low < high and low < 0.5


def test_clip_score_is_left_as_the_cosine() -> None:
    model = tiny_model()
    assert model.score_kind == "cosine"
    cosine = np.array([[-0.2, 0.31]], dtype=np.float32)
    np.testing.assert_array_equal(model.score(cosine), cosine)


def test_exact_gelu_in_siglip2_text_tower_misses_the_bound(fixture_data: Path) -> None:
    """The 5e-5 bound is what tells tanh-GELU from exact GELU: the same weights with exact GELU
    fail it, so the parity test would catch a loader that dropped act_kwargs."""
    model = load(_zoo(fixture_data, "siglip2"), device="cpu")
    assert isinstance(model, SigLIP) and model.config.text.act == "gelu_tanh"
    expected = load_file(_zoo(fixture_data, "siglip2") / "expected.safetensors")
    cfg = model.config.to_dict()
    cfg["text"]["act"] = "gelu"
    wrong = SigLIP(SigLIPConfig.from_dict(cfg))
    wrong.load_state_dict(model.state_dict())
    with torch.inference_mode():
        text = wrong.eval().encode_text(expected["tokens"])
    with pytest.raises(AssertionError):
        assert_features_match(text, expected["text_features"])


def test_our_format_round_trips_with_its_tokenizer(fixture_data: Path, tmp_path: Path) -> None:
    model = load(_zoo(fixture_data, "siglip2"), device="cpu")
    out = save_pretrained(model, tmp_path / "saved")
    assert (out / "tokenizer.json").is_file()
    again = load(out, device="cpu")
    assert isinstance(again, SigLIP)
    assert again.config == model.config
    assert (again.resize_mode, again.interpolation) == ("squash", "bicubic")
    texts = ["a photo of a dog", "UPPER lower"]
    assert_same_embeddings(again.embed_texts(texts), model.embed_texts(texts))
    pixels = load_file(_zoo(fixture_data, "siglip2") / "expected.safetensors")["pixels"]
    assert_same_embeddings(again.embed_pixels(pixels), model.embed_pixels(pixels))


# -- architecture inferred from shapes for the released configurations ------------------------

# open_clip name: (image size, patch, vision width, depth, mlp, text width, text layers, text
# heads, text mlp, vocab, tanh-GELU text). Vision heads follow timm's widths (vision_heads).
RELEASED = {
    "ViT-B-16-SigLIP": (224, 16, 768, 12, 3072, 768, 12, 12, 3072, 32000, False),
    "ViT-B-16-SigLIP-256": (256, 16, 768, 12, 3072, 768, 12, 12, 3072, 32000, False),
    "ViT-B-16-SigLIP-i18n-256": (256, 16, 768, 12, 3072, 768, 12, 12, 3072, 250000, False),
    "ViT-B-16-SigLIP-384": (384, 16, 768, 12, 3072, 768, 12, 12, 3072, 32000, False),
    "ViT-B-16-SigLIP-512": (512, 16, 768, 12, 3072, 768, 12, 12, 3072, 32000, False),
    "ViT-L-16-SigLIP-256": (256, 16, 1024, 24, 4096, 1024, 24, 16, 4096, 32000, False),
    "ViT-L-16-SigLIP-384": (384, 16, 1024, 24, 4096, 1024, 24, 16, 4096, 32000, False),
    "ViT-SO400M-14-SigLIP": (224, 14, 1152, 27, 4304, 1152, 27, 16, 4304, 32000, False),
    "ViT-SO400M-14-SigLIP-384": (384, 14, 1152, 27, 4304, 1152, 27, 16, 4304, 32000, False),
    "ViT-B-16-SigLIP2": (224, 16, 768, 12, 3072, 768, 12, 12, 3072, 256000, True),
    "ViT-B-16-SigLIP2-256": (256, 16, 768, 12, 3072, 768, 12, 12, 3072, 256000, True),
    "ViT-B-16-SigLIP2-384": (384, 16, 768, 12, 3072, 768, 12, 12, 3072, 256000, True),
    "ViT-B-32-SigLIP2-256": (256, 32, 768, 12, 3072, 768, 12, 12, 3072, 256000, True),
    "ViT-L-16-SigLIP2-256": (256, 16, 1024, 24, 4096, 1024, 24, 16, 4096, 256000, True),
    "ViT-SO400M-14-SigLIP2-378": (378, 14, 1152, 27, 4304, 1152, 27, 16, 4304, 256000, True),
    "ViT-SO400M-16-SigLIP2-384": (384, 16, 1152, 27, 4304, 1152, 27, 16, 4304, 256000, True),
}


def _open_clip_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> open_clip/timm's: the inverse of model.siglip.from_open_clip_state."""
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith("visual.transformer.resblocks."):
            index, rest = key[len("visual.transformer.resblocks.") :].split(".", 1)
            for ours, theirs in (
                ("ln_1.", "norm1."),
                ("ln_2.", "norm2."),
                ("attn.in_proj_weight", "attn.qkv.weight"),
                ("attn.in_proj_bias", "attn.qkv.bias"),
                ("attn.out_proj.", "attn.proj."),
                ("mlp.c_fc.", "mlp.fc1."),
                ("mlp.c_proj.", "mlp.fc2."),
            ):
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours) :]
            new = f"visual.trunk.blocks.{index}.{rest}"
        elif key.startswith("visual.patch_embed."):
            new = "visual.trunk.patch_embed.proj." + key[len("visual.patch_embed.") :]
        elif key.startswith("visual."):
            new = "visual.trunk." + key[len("visual.") :]
        out[new] = value
    return out


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_configuration_is_inferred_from_shapes(name: str) -> None:
    size, patch, vw, depth, vmlp, tw, tl, th, tmlp, vocab, tanh = RELEASED[name]
    want = SigLIPConfig(
        embed_dim=vw,
        vision=SigLIPVisionConfig(size, patch, vw, depth, vision_heads(vw), vmlp),
        text=TextTowerConfig(64, vocab, tw, th, tl, tmlp, False, "last", True, 1e-6,
                             "gelu_tanh" if tanh else "gelu"),
    )  # fmt: skip
    with torch.device("meta"):
        state = _open_clip_names(SigLIP(want).state_dict())
    from clipsearch.model.siglip import from_open_clip_state

    text_cfg = {
        "context_length": 64,
        "vocab_size": vocab,
        "width": tw,
        "heads": th,
        "layers": tl,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
        "norm_kwargs": {"eps": 1e-6},
        "tokenizer_kwargs": {"clean": "canonicalize"},
    }
    if tanh:
        text_cfg["act_kwargs"] = {"approximate": "tanh"}
    arch = f"vit_{'so400m' if vw == 1152 else 'large' if vw == 1024 else 'base'}_patch{patch}_siglip_{size}"
    data = {
        "model_cfg": {
            "embed_dim": vw,
            "init_logit_bias": -10,
            "custom_text": True,
            "vision_cfg": {"image_size": size, "timm_model_name": arch, "timm_pool": "map",
                           "timm_proj": "none"},
            "text_cfg": text_cfg,
        }
    }  # fmt: skip
    got = _siglip_config(data, Path("."), from_open_clip_state(state), name)
    assert got == want
    assert got.vision.grid == size // patch


# -- broken folders -------------------------------------------------------------------------


def _copy_case(fixture_data: Path, tmp_path: Path, name: str = "siglip") -> Path:
    dst = tmp_path / name
    shutil.copytree(_zoo(fixture_data, name), dst)
    return dst


def test_missing_tokenizer_is_a_clear_error(fixture_data: Path, tmp_path: Path) -> None:
    folder = _copy_case(fixture_data, tmp_path)
    (folder / "tokenizer.json").unlink()
    model = load(folder, device="cpu")  # the weights are fine
    with pytest.raises(CheckpointError, match=r"no tokenizer\.json"):
        model.embed_texts(["a dog"])


def test_weights_of_another_shape_are_refused_naming_the_tensor(
    fixture_data: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    folder = _copy_case(fixture_data, tmp_path)
    state = load_file(folder / "open_clip_model.safetensors")
    del state["visual.trunk.attn_pool.latent"]
    state["visual.trunk.cls_token"] = torch.zeros(1, 1, 64)
    save_file(state, str(folder / "open_clip_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing: visual\.attn_pool\.latent") as err:
        load(folder, device="cpu")
    assert "visual.trunk.cls_token" in str(err.value)


def test_unknown_timm_tower_is_refused(fixture_data: Path, tmp_path: Path) -> None:
    folder = _copy_case(fixture_data, tmp_path)
    cfg = json.loads((folder / "timm_vision" / "config.json").read_text())
    cfg["architecture"] = "convnext_base"
    (folder / "timm_vision" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"unsupported timm image tower 'convnext_base'"):
        load(folder, device="cpu")


def test_folder_without_weights_is_refused(fixture_data: Path, tmp_path: Path) -> None:
    folder = _copy_case(fixture_data, tmp_path)
    (folder / "open_clip_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights"):
        load(folder, device="cpu")


def test_a_huge_text_is_cut_with_the_end_token_kept(fixture_data: Path) -> None:
    model = load(_zoo(fixture_data, "siglip2"), device="cpu")
    tokens = model.tokenize(["a dog " * 200_000])  # 1.2 MB of text
    assert tokens.shape == (1, 64)
    assert tokens[0, -1].item() == 1  # <eos> last, no <pad> (0) anywhere
    assert (tokens != 0).all()


def test_an_nllb_config_over_siglip_weights_is_a_clear_error(
    fixture_data: Path, tmp_path: Path
) -> None:
    """A config naming an NLLB text tower (NLLB-SigLIP, model.nllb) beside a SigLIP text tower's
    weights: the error names the tensor the NLLB encoder needs."""
    folder = _copy_case(fixture_data, tmp_path)
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["hf_model_name"] = "facebook/nllb-200-distilled-600M"
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"text\.transformer\.embed_tokens\.weight"):
        load(folder, device="cpu")


def test_wise_ft_mixes_a_siglip_only_with_a_siglip(fixture_data: Path, tmp_path: Path) -> None:
    from clipsearch.model.finetune import FinetuneError
    from clipsearch.model.finetune.wise import write_wise

    folder = _zoo(fixture_data, "siglip")
    same = load(write_wise(folder, folder, 0.5, tmp_path / "out"), device="cpu")
    original = load(folder, device="cpu")
    assert same.family == "siglip"
    texts = ["a red square"]
    np.testing.assert_allclose(same.embed_texts(texts), original.embed_texts(texts), atol=1e-6)
    with pytest.raises(FinetuneError, match=r"siglip model and .* a mobileclip one"):
        write_wise(folder, _zoo(fixture_data, "mobileclip"), 0.5, tmp_path / "mixed")
