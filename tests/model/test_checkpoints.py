"""Checkpoint formats: architecture inference for OpenAI's family, our save/load round trip, and
every kind of bad input raising CheckpointError with the file named."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clipsearch.model import CheckpointError, CLIPConfig, ModelError, TextConfig, VisionConfig, load
from clipsearch.model.checkpoints import infer_config, load_checkpoint, save_pretrained
from clipsearch.model.clip import CLIP
from clipsearch.model.testing import assert_same_embeddings, tiny_model

# OpenAI's published hyper-parameters (CLIP paper, tables 19 and 20; model card), and parameter
# counts in millions as listed by OpenCLIP's model profile for the same checkpoints.
# name: (embed_dim, image_size, vision layers, vision width, patch, text width, text heads, M params)
OPENAI_FAMILY = {
    "RN50": (1024, 224, (3, 4, 6, 3), 64, None, 512, 8, 102.01),
    "RN101": (512, 224, (3, 4, 23, 3), 64, None, 512, 8, 119.69),
    "RN50x4": (640, 288, (4, 6, 10, 6), 80, None, 640, 10, 178.30),
    "RN50x16": (768, 384, (6, 8, 18, 8), 96, None, 768, 12, 290.98),
    "RN50x64": (1024, 448, (3, 15, 36, 10), 128, None, 1024, 16, 623.26),
    "ViT-B/32": (512, 224, 12, 768, 32, 512, 8, 151.28),
    "ViT-B/16": (512, 224, 12, 768, 16, 512, 8, 149.62),
    "ViT-L/14": (768, 224, 24, 1024, 14, 768, 12, 427.62),
    "ViT-L/14@336px": (768, 336, 24, 1024, 14, 768, 12, 427.94),
}
# Vision heads: 64-wide heads; the ResNet attention pool works on width*32 channels.
VISION_HEADS = {"RN50": 32, "RN101": 32, "RN50x4": 40, "RN50x16": 48, "RN50x64": 64,
                "ViT-B/32": 12, "ViT-B/16": 12, "ViT-L/14": 16, "ViT-L/14@336px": 16}  # fmt: skip
# A few tensor shapes from the released checkpoints.
KNOWN_SHAPES = {
    "RN50": {"visual.attnpool.positional_embedding": (50, 2048), "visual.conv1.weight": (32, 3, 3, 3),
             "text_projection": (512, 1024), "visual.layer4.2.conv3.weight": (2048, 512, 1, 1)},
    "RN50x64": {"visual.attnpool.positional_embedding": (197, 4096), "visual.attnpool.c_proj.weight": (1024, 4096)},
    "ViT-B/32": {"visual.positional_embedding": (50, 768), "visual.conv1.weight": (768, 3, 32, 32),
                 "visual.proj": (768, 512), "token_embedding.weight": (49408, 512)},
    "ViT-L/14@336px": {"visual.positional_embedding": (577, 1024), "visual.proj": (1024, 768),
                       "positional_embedding": (77, 768)},
}  # fmt: skip


def _published_config(name: str) -> CLIPConfig:
    embed, size, layers, width, patch, twidth, theads, _ = OPENAI_FAMILY[name]
    return CLIPConfig(
        embed_dim=embed,
        vision=VisionConfig(
            image_size=size, width=width, layers=layers, patch_size=patch, heads=VISION_HEADS[name]
        ),
        text=TextConfig(context_length=77, vocab_size=49408, width=twidth, heads=theads, layers=12),
        quick_gelu=True,
    )


@pytest.mark.parametrize("name", list(OPENAI_FAMILY))
def test_architecture_inferred_from_shapes_for_every_openai_model(name: str) -> None:
    config = _published_config(name)
    with torch.device("meta"):  # shapes only: no 600M-parameter allocation
        model = CLIP(config)
    n_params = sum(p.numel() for p in model.parameters())
    assert round(n_params / 1e6, 2) == OPENAI_FAMILY[name][-1]
    state = model.state_dict()
    for key, shape in KNOWN_SHAPES.get(name, {}).items():
        assert tuple(state[key].shape) == shape, key
    inferred = infer_config(state)
    assert inferred == config


def test_an_openai_jit_state_dict_with_its_extra_entries_is_inferred(tmp_path: Path) -> None:
    with torch.device("meta"):
        state = dict(CLIP(_published_config("ViT-B/16")).state_dict())
    state.update(
        input_resolution=torch.tensor(224),
        context_length=torch.tensor(77),
        vocab_size=torch.tensor(49408),
    )
    # infer_config must not mistake the extra scalars for weights
    assert infer_config(state).vision.image_size == 224


# -- our format ---------------------------------------------------------------------------------


def test_save_pretrained_round_trip_keeps_weights_config_and_features(tmp_path: Path) -> None:
    model = tiny_model(seed=11)
    model.preprocess_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    folder = save_pretrained(model, tmp_path / "ft")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load(folder, device="cpu")
    assert loaded.config == model.config
    assert loaded.preprocess_cfg == model.preprocess_cfg
    assert loaded.name == str(folder)
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert_same_embeddings(loaded.embed_pixels(pixels), model.embed_pixels(pixels))


def test_save_pretrained_round_trip_for_a_resnet(tmp_path: Path) -> None:
    config = CLIPConfig(
        embed_dim=24,
        vision=VisionConfig(image_size=64, width=8, layers=(1, 2, 1, 1), patch_size=None, heads=4),
        text=TextConfig(width=32, heads=2, layers=1),
    )
    model = CLIP(config).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so they must round-trip too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    save_pretrained(model, tmp_path / "rn")
    loaded = load(tmp_path / "rn", device="cpu")
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded.encode_image(pixels), model.encode_image(pixels), rtol=0, atol=0
        )


def test_saving_over_an_existing_model_replaces_it(tmp_path: Path) -> None:
    save_pretrained(tiny_model(seed=1), tmp_path / "m")
    save_pretrained(tiny_model(seed=2), tmp_path / "m")
    reloaded = load(tmp_path / "m", device="cpu")
    assert torch.equal(reloaded.logit_scale, tiny_model(seed=2).logit_scale)
    assert torch.equal(reloaded.token_embedding.weight, tiny_model(seed=2).token_embedding.weight)
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.endswith(".tmp")]


def test_saving_onto_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        save_pretrained(tiny_model(), target)


# -- hash-gated TorchScript -------------------------------------------------------------------------


def test_unknown_torchscript_is_refused_unless_allowed(fixture_data: Path) -> None:
    path = fixture_data / "parity" / "openai_vit_jit" / "model.pt"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "allow_jit" in str(err.value)
    state, config, _ = load_checkpoint(path, allow_jit=True)
    assert "input_resolution" not in state and config.vision.patch_size == 16


def test_torchscript_with_a_published_openai_hash_opens_without_allow_jit(
    fixture_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clipsearch.model.checkpoints as checkpoints

    path = fixture_data / "parity" / "openai_vit_jit" / "model.pt"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(checkpoints.OPENAI_SHA256, sha, "ViT-test")
    state, config, _ = load_checkpoint(path)
    assert config.embed_dim == 64 and state["logit_scale"].dtype == torch.float32


def test_the_cli_opt_in_for_torchscript_is_the_environment_variable(
    fixture_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`clipsearch embed/serve/worker` load through model.load: CLIPSEARCH_ALLOW_JIT=1 opts in."""
    from clipsearch import model

    path = fixture_data / "parity" / "openai_vit_jit" / "model.pt"
    monkeypatch.delenv("CLIPSEARCH_ALLOW_JIT", raising=False)
    with pytest.raises(CheckpointError, match="CLIPSEARCH_ALLOW_JIT=1"):
        model.load(path, device="cpu")
    monkeypatch.setenv("CLIPSEARCH_ALLOW_JIT", "1")
    loaded = model.load(path, device="cpu")
    assert loaded.config.vision.patch_size == 16
    # An explicit argument still wins over the environment.
    with pytest.raises(CheckpointError):
        model.load(path, device="cpu", allow_jit=False)


# -- bad input --------------------------------------------------------------------------------------


def _fail(path: Path, *words: str, **kwargs) -> str:
    with pytest.raises(CheckpointError) as err:
        load(path, device="cpu", **kwargs)
    message = str(err.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, message
    return message


def test_missing_path(tmp_path: Path) -> None:
    _fail(tmp_path / "nope.pt", "neither a known model name nor an existing file")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "nope.pt")


def test_empty_and_garbage_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _fail(empty, "empty")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    _fail(garbage, "state dict")
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    _fail(text)


@pytest.mark.parametrize(
    "source",
    [
        "openai_rn_state_dict/model.pt",
        "openai_vit_jit/model.pt",
        "open_clip_vit_gelu/open_clip_model.safetensors",
    ],
)
def test_truncated_checkpoints(fixture_data: Path, tmp_path: Path, source: str) -> None:
    data = (fixture_data / "parity" / source).read_bytes()
    cut = tmp_path / Path(source).name
    cut.write_bytes(data[: len(data) // 2])
    _fail(cut, allow_jit=True)


def test_a_truncated_open_clip_folder_names_the_weights_file(
    fixture_data: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "oc"
    shutil.copytree(fixture_data / "parity" / "open_clip_vit_gelu", folder)
    weights = folder / "open_clip_model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:1000])
    _fail(weights.parent, "open_clip_model.safetensors")


def test_pickle_with_arbitrary_objects_is_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2, 2), "callback": Path("/etc/passwd")}, path)
    _fail(path, "state dict")


def test_unknown_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pt"
    torch.save(torch.nn.Linear(4, 3).state_dict(), path)
    _fail(path, "not a CLIP state dict")
    hf = tmp_path / "hf.safetensors"
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(10, 4)}, str(hf))
    _fail(hf, "Hugging Face")


def test_mismatched_keys_are_listed(fixture_data: Path, tmp_path: Path) -> None:
    state = torch.load(
        fixture_data / "parity" / "openai_rn_state_dict" / "model.pt", weights_only=True
    )
    del state["visual.attnpool.k_proj.bias"]
    state["visual.extra.weight"] = torch.zeros(3)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    _fail(path, "visual.attnpool.k_proj.bias", "visual.extra.weight")


def test_wrong_shape_is_reported(tmp_path: Path) -> None:
    model = tiny_model()
    state = dict(model.state_dict())
    state["ln_final.weight"] = torch.ones(7)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    _fail(path, "ln_final.weight")


def test_folder_without_a_known_layout(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    _fail(tmp_path, "open_clip_config.json", "config.json")


def test_open_clip_folder_problems(fixture_data: Path, tmp_path: Path) -> None:
    src = fixture_data / "parity" / "open_clip_vit_gelu"
    folder = tmp_path / "oc"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{not json")
    _fail(folder, "not valid JSON")

    config = json.loads((src / "open_clip_config.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    _fail(folder, "no weights")

    shutil.copy(src / "open_clip_model.safetensors", folder / "open_clip_model.safetensors")
    width = config["model_cfg"]["text_cfg"]["width"]
    config["model_cfg"]["text_cfg"]["width"] = 2 * width  # contradicts the weights
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    _fail(folder, "wrong shape", f"positional_embedding [77, {width}] (expected [77, {2 * width}])")

    config["model_cfg"]["text_cfg"]["width"] = width
    config["model_cfg"]["vision_cfg"]["timm_model_name"] = "vit_base_patch16_224"
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    _fail(folder, "timm_model_name")


def test_our_folder_problems(tmp_path: Path) -> None:
    folder = save_pretrained(tiny_model(), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format": "something-else"}))
    _fail(folder, "clipsearch model config")
    config["model_cfg"]["vision"]["patch_size"] = 5  # 32 is not a multiple of 5
    (folder / "config.json").write_text(json.dumps(config))
    _fail(folder, "patch_size")
    (folder / "config.json").write_text(
        json.dumps({**config, "model_cfg": {"vision": {"bogus": 1}}})
    )
    _fail(folder, "bogus")


def test_bad_spec_and_device() -> None:
    with pytest.raises(CheckpointError, match="nonexistent-model-name"):
        load("nonexistent-model-name")
    with pytest.raises(CheckpointError):
        load("")
    for hostile in ("a\x00b", "x" * 5000, "~no-such-user-here/model.pt"):
        with pytest.raises(CheckpointError):
            load(hostile, device="cpu")
    with pytest.raises(ModelError, match="device"):
        load("whatever", device="tpu:0")


def test_a_registry_name_goes_through_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsearch.model import DownloadError

    monkeypatch.setenv("CLIPSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "1")
    with pytest.raises(DownloadError) as err:
        load("ViT-B-32", device="cpu")
    assert str(tmp_path / "cache") in str(err.value)  # says where to put the file


def test_a_registry_name_loads_from_a_verified_cache(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry entry whose cached file verifies is loaded by name, TorchScript included
    (its hash is the published one), without allow_jit."""
    from clipsearch.model import registry

    jit = fixture_data / "parity" / "openai_vit_jit" / "model.pt"
    sha = hashlib.sha256(jit.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIPSEARCH_CACHE", str(cache))
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "1")
    fake = registry.ModelSpec(
        name="test-vit", url=f"https://openaipublic.azureedge.net/clip/models/{sha}/test-vit.pt", sha256=sha,
        format="openai-jit",
    )  # fmt: skip
    monkeypatch.setitem(registry.MODELS, "test-vit", fake)
    monkeypatch.setattr(registry, "KNOWN_JIT_SHA256", registry.KNOWN_JIT_SHA256 | {sha})
    with pytest.raises(ModelError):  # not cached yet, and offline
        load("test-vit", device="cpu")
    target = cache / "test-vit" / "test-vit.pt"
    target.parent.mkdir(parents=True)
    shutil.copy(jit, target)
    model = load("test-vit", device="cpu")
    assert model.name == "test-vit" and model.config.vision.patch_size == 16
