"""CLIP with a Hugging Face text tower (XLM-RoBERTa CLIP) beyond the parity fixture: a query in
another language, the released architectures inferred from shapes, our own format, and clear
errors when transformers or the text tower's config is missing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clipsearch.model import CheckpointError, ModelError, load, save_pretrained
from clipsearch.model.clip import VisionConfig, VisionTransformer
from clipsearch.model.hf_text import HFTextCLIP, HFTextCLIPConfig, build_text_model, infer_config
from clipsearch.model.testing import assert_same_embeddings


def _zoo(fixture_data: Path) -> Path:
    return fixture_data / "parity-zoo" / "multilingual"


def test_text_in_any_script_is_embedded_and_pad_tokens_do_not_count(fixture_data: Path) -> None:
    model = load(_zoo(fixture_data), device="cpu")
    assert isinstance(model, HFTextCLIP) and model.family == "hf-text"
    tokens = model.tokenize(["一只在海滩上的狗", "café crème"])
    assert tokens[:, 0].tolist() == [0, 0] and (tokens == 1).any()  # <s> ... </s> <pad>...
    with torch.inference_mode():
        full = model.encode_text(tokens)
        # Mean pooling ignores padding: the same texts padded to a shorter length agree.
        short = model.encode_text(tokens[:, :20])
    torch.testing.assert_close(full, short, rtol=0, atol=1e-5)
    vectors = model.embed_texts(["一只在海滩上的狗"])
    assert vectors.shape == (1, model.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_our_format_round_trips(fixture_data: Path, tmp_path: Path) -> None:
    model = load(_zoo(fixture_data), device="cpu")
    out = save_pretrained(model, tmp_path / "saved")
    again = load(out, device="cpu")
    assert isinstance(again, HFTextCLIP) and again.config == model.config
    texts = ["a photo of a dog", "un chien sur la plage"]
    assert_same_embeddings(again.embed_texts(texts), model.embed_texts(texts))


def _meta_state(config: HFTextCLIPConfig) -> dict[str, torch.Tensor]:
    """The open_clip state dict shapes of a configuration, without allocating weights."""
    from torch import nn

    with torch.device("meta"):
        v = config.vision
        visual = VisionTransformer(
            v.image_size, v.patch_size or 0, v.width, int(v.layers), v.heads, config.embed_dim,
            v.mlp_ratio, nn.GELU,
        )  # fmt: skip
        text = build_text_model(config.hf_config)
    state = {f"visual.{k}": t for k, t in visual.state_dict().items()}
    state.update({f"text.transformer.{k}": t for k, t in text.state_dict().items()})
    d, e = config.text_width, config.embed_dim
    state["text.proj.0.weight"] = torch.empty(((d + e) // 2, d), device="meta")
    state["text.proj.2.weight"] = torch.empty((e, (d + e) // 2), device="meta")
    state["logit_scale"] = torch.empty((), device="meta")
    return state


# open_clip name: (image tower, text: hidden, layers, FFN, embed_dim, head_width)
RELEASED = {
    "xlm-roberta-base-ViT-B-32": ((224, 768, 12, 32), (768, 12, 3072), 512, 64),
    "xlm-roberta-large-ViT-H-14": ((224, 1280, 32, 14), (1024, 24, 4096), 1024, 80),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_configuration_is_inferred_from_shapes(name: str) -> None:
    (size, width, layers, patch), (hidden, text_layers, ffn), embed_dim, head_width = RELEASED[name]
    hf_name = "xlm-roberta-large" if hidden == 1024 else "xlm-roberta-base"
    hf_config = {
        "model_type": "xlm-roberta", "vocab_size": 250002, "hidden_size": hidden,
        "num_hidden_layers": text_layers, "num_attention_heads": hidden // 64,
        "intermediate_size": ffn, "max_position_embeddings": 514, "type_vocab_size": 1,
        "hidden_act": "gelu", "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0,
        "eos_token_id": 2,
    }  # fmt: skip
    want = HFTextCLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(size, width, layers, patch, width // head_width, 4.0),
        hf_config=hf_config,
    )
    data = {
        "model_cfg": {
            "embed_dim": embed_dim,
            "quick_gelu": False,
            "vision_cfg": {"image_size": size, "layers": layers, "width": width,
                           "head_width": head_width, "patch_size": patch},
            "text_cfg": {"hf_model_name": hf_name, "hf_tokenizer_name": hf_name,
                         "hf_proj_type": "mlp", "hf_pooler_type": "mean_pooler"},
        }
    }  # fmt: skip
    got = infer_config(data, Path("."), _meta_state(want), name)
    assert got == want


def test_unknown_text_tower_without_its_config_is_a_clear_error(
    fixture_data: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(_zoo(fixture_data), folder)
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["hf_model_name"] = "some-org/some-bert"
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"'some-org/some-bert' needs its transformers config"
    ):
        load(folder, device="cpu")


def test_without_transformers_the_error_names_the_extra(
    fixture_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ModelError, match=r"clipsearch\[multilingual\]"):
        load(_zoo(fixture_data), device="cpu")
