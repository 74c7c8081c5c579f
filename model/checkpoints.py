"""Checkpoint formats: read the ones users bring, write our own.

Read (:func:`load_checkpoint`):

- OpenAI's TorchScript archive (their released ``.pt`` files). Loading TorchScript runs code from
  the file, so it is only opened when its SHA256 is one OpenAI published, or ``allow_jit=True``.
- A plain state dict (``torch.save``; loaded with ``weights_only=True``) or a ``.safetensors``
  file, in OpenAI's parameter layout (OpenAI converted checkpoints, OpenCLIP ``.bin`` files).
- An OpenCLIP hub folder: ``open_clip_config.json`` with ``open_clip_model.safetensors`` or
  ``open_clip_pytorch_model.bin``.
- Our own folder (:func:`save_pretrained`): ``config.json`` + ``model.safetensors``.

For OpenAI layouts the architecture is inferred from tensor shapes (:func:`infer_config`), as
OpenAI's ``build_model`` does. Every failure is a :class:`~model.errors.CheckpointError` naming the
file and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clipsearch.model.base import EmbeddingModel
from clipsearch.model.clip import (
    CLIP,
    OPENAI_MEAN,
    OPENAI_STD,
    CLIPConfig,
    TextConfig,
    VisionConfig,
)
from clipsearch.model.errors import CheckpointError, ModelError

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
PreprocessCfg = dict[str, tuple[float, ...]]

# SHA256 of OpenAI's released TorchScript archives (the hash is part of each download URL).
OPENAI_SHA256: dict[str, str] = {
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762": "RN50",
    "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599": "RN101",
    "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd": "RN50x4",
    "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa": "RN50x16",
    "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c": "RN50x64",
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af": "ViT-B/32",
    "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f": "ViT-B/16",
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836": "ViT-L/14",
    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02": "ViT-L/14@336px",
}

# Extra entries a TorchScript CLIP's state_dict carries that are not weights.
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OUR_CONFIG = "config.json"
OUR_WEIGHTS = "model.safetensors"
OUR_FORMAT = "clipsearch-clip"
_MAX_JSON_BYTES = 1 << 20  # a config is a few hundred bytes; refuse anything absurd


# --------------------------------------------------------------------------------------------
# Architecture inference
# --------------------------------------------------------------------------------------------


def _count_indices(state_dict: Mapping[str, Any], prefix: str) -> int:
    """How many distinct ``<prefix><i>.`` indices appear among the keys."""
    found = set()
    for key in state_dict:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return len(found)


def _shape(state_dict: Mapping[str, Any], key: str, source: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointError(f"{source}: not a CLIP state dict in OpenAI's layout: no {key!r}")
    value = state_dict[key]
    shape = getattr(value, "shape", None)
    if shape is None:
        raise CheckpointError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor")
    return tuple(int(s) for s in shape)


def _square_side(count: int, what: str, source: str) -> int:
    side = round(count**0.5)
    if side * side != count:
        raise CheckpointError(f"{source}: {what} has {count} positions, not a square grid")
    return side


def infer_config(state_dict: Mapping[str, Any], source: str = "state dict") -> CLIPConfig:
    """Every hyper-parameter of an OpenAI-layout CLIP from its tensor shapes.

    Head counts are not in a state dict; OpenAI's convention is used: width // 64 for the
    transformers, width * 32 // 64 for the ResNet attention pool. QuickGELU, as OpenAI trained.
    """
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise CheckpointError(
            f"{source}: expected a non-empty state dict (parameter name -> tensor)"
        )
    if any(k.startswith(("text_model.", "vision_model.")) for k in state_dict):
        raise CheckpointError(
            f"{source}: this is a Hugging Face transformers CLIP checkpoint; expected OpenAI's "
            "parameter names (visual.*, transformer.*, token_embedding.weight, ...)"
        )
    try:
        # Text tower
        context_length, text_width = _shape(state_dict, "positional_embedding", source)
        vocab_size = _shape(state_dict, "token_embedding.weight", source)[0]
        embed_dim = _shape(state_dict, "text_projection", source)[1]
        text_layers = _count_indices(state_dict, "transformer.resblocks.")
        if text_layers == 0:
            raise CheckpointError(
                f"{source}: no text transformer blocks (transformer.resblocks.N.*)"
            )
        text_hidden = _shape(state_dict, "transformer.resblocks.0.mlp.c_fc.weight", source)[0]
        text = TextConfig(
            context_length=context_length,
            vocab_size=vocab_size,
            width=text_width,
            heads=max(1, text_width // 64),
            layers=text_layers,
            mlp_ratio=text_hidden / text_width,
        )
        # Image tower
        if "visual.proj" in state_dict:  # ViT
            width, _, patch, _ = _shape(state_dict, "visual.conv1.weight", source)
            positions = _shape(state_dict, "visual.positional_embedding", source)[0]
            grid = _square_side(
                positions - 1, "visual.positional_embedding (minus the class token)", source
            )
            layers = _count_indices(state_dict, "visual.transformer.resblocks.")
            hidden = _shape(state_dict, "visual.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
            vision = VisionConfig(
                image_size=grid * patch,
                width=width,
                layers=layers,
                patch_size=patch,
                heads=max(1, width // 64),
                mlp_ratio=hidden / width,
            )
        elif "visual.attnpool.positional_embedding" in state_dict:  # ModifiedResNet
            stages = tuple(_count_indices(state_dict, f"visual.layer{i}.") for i in (1, 2, 3, 4))
            if 0 in stages:
                raise CheckpointError(
                    f"{source}: ResNet stages visual.layer1..4 incomplete: {stages}"
                )
            width = _shape(state_dict, "visual.layer1.0.conv1.weight", source)[0]
            positions = _shape(state_dict, "visual.attnpool.positional_embedding", source)[0]
            side = _square_side(positions - 1, "visual.attnpool.positional_embedding", source)
            vision = VisionConfig(
                image_size=side * 32,
                width=width,
                layers=stages,  # type: ignore[arg-type]
                patch_size=None,
                heads=max(1, width * 32 // 64),
            )
        else:
            raise CheckpointError(
                f"{source}: unknown image tower: expected 'visual.proj' (ViT) or "
                "'visual.attnpool.positional_embedding' (ResNet)"
            )
        return CLIPConfig(embed_dim=embed_dim, vision=vision, text=text, quick_gelu=True)
    except CheckpointError:
        raise
    except (ModelError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: tensor shapes do not describe a CLIP: {exc}") from exc


def check_state_dict(state_dict: StateDict, config: CLIPConfig, source: str) -> None:
    """Raise CheckpointError unless ``state_dict`` has exactly the keys and shapes of ``config``."""
    with torch.device("meta"):
        expected = CLIP(config).state_dict()
    compare_state_dict(expected, state_dict, source, "the CLIP architecture they describe")


def compare_state_dict(
    expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, Any], source: str, what: str
) -> None:
    """Raise CheckpointError unless ``state_dict`` has exactly ``expected``'s keys and shapes."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {list(state_dict[k].shape)} (expected {list(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{label}: {', '.join(items[:5])}{more}")
    if problems:
        raise CheckpointError(f"{source}: the weights do not match {what}; " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _known_openai_hashes() -> set[str]:
    """OpenAI's published hashes: ours above plus the model registry's TorchScript entries."""
    from clipsearch.model.registry import KNOWN_JIT_SHA256

    return set(OPENAI_SHA256) | {str(sha).lower() for sha in KNOWN_JIT_SHA256}


def _is_torchscript(names: list[str]) -> bool:
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


def _to_float32(state_dict: Mapping[str, Any], source: str) -> StateDict:
    out: StateDict = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: expected a state dict of named tensors; entry {key!r} is a {type(value).__name__}"
            )
        out[key] = value.float() if value.is_floating_point() else value
    return out


def _unwrap(obj: Any, source: str) -> Mapping[str, Any]:
    """Accept a bare state dict, or a training checkpoint holding one under 'state_dict'/'model'."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and "logit_scale" not in obj:
                obj = inner
                break
        if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
            obj = {
                k[len("module.") :]: v for k, v in obj.items()
            }  # saved from DistributedDataParallel
        return obj
    raise CheckpointError(f"{source}: expected a state dict, found a {type(obj).__name__}")


def _load_jit(path: Path, allow_jit: bool) -> StateDict:
    # Hash and load through one open file, so the bytes that were checked are the bytes loaded
    # (swapping the path in between cannot smuggle another archive in).
    with open(path, "rb") as fh:
        digest = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        sha = digest.hexdigest()
        if sha not in _known_openai_hashes() and not allow_jit:
            raise CheckpointError(
                f"{path}: is a TorchScript archive, and loading one runs code stored in the file. "
                f"It is not one of OpenAI's released checkpoints (sha256 {sha}); if you trust it, "
                "load it with allow_jit=True (CLI, API and workers: set CLIPSEARCH_ALLOW_JIT=1), or convert it to a state dict or "
                "safetensors file"
            )
        log.info(
            "loading TorchScript archive %s (%s)",
            path,
            OPENAI_SHA256.get(sha, "allowed by the caller"),
        )
        fh.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # "switch to torch.export"
                module = torch.jit.load(fh, map_location="cpu")
            state = dict(module.state_dict())
        except Exception as exc:
            raise CheckpointError(
                f"{path}: cannot read the TorchScript archive (truncated or damaged?): {exc}"
            ) from exc
    for key in _JIT_EXTRA_KEYS:
        state.pop(key, None)
    return _to_float32(state, str(path))


def _load_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, Exception) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or damaged?): {exc}"
        ) from exc
    return _to_float32(state, str(path))


def _load_torch(path: Path) -> StateDict:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises anything on garbage (IndexError, ...)
        raise CheckpointError(
            f"{path}: not a loadable PyTorch state dict (expected a torch.save'd dict of tensors; "
            f"file truncated, damaged, or holding arbitrary objects?): {exc}"
        ) from exc
    return _to_float32(_unwrap(obj, str(path)), str(path))


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len < path.stat().st_size and head[8:9] == b"{"


def load_state_dict_file(path: str | Path, allow_jit: bool = False) -> StateDict:
    """Tensors of one weights file (TorchScript archive, torch.save'd state dict, safetensors),
    floating point converted to float32."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty; expected CLIP weights")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(f"{path}: damaged zip archive: {exc}") from exc
        if _is_torchscript(names):
            return _load_jit(path, allow_jit)
        return _load_torch(path)
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        return _load_safetensors(path)
    return _load_torch(path)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: too large for a model config ({path.stat().st_size} bytes)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _preprocess_cfg(data: Any, source: str) -> PreprocessCfg:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: preprocess_cfg must be an object")
    out: PreprocessCfg = {}
    for key, default in (("mean", OPENAI_MEAN), ("std", OPENAI_STD)):
        value = data.get(key, default)
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
        ):
            raise CheckpointError(
                f"{source}: preprocess_cfg.{key} must be 3 numbers, got {value!r}"
            )
        if key == "std" and any(x <= 0 for x in value):
            raise CheckpointError(f"{source}: preprocess_cfg.std must be positive, got {value!r}")
        out[key] = tuple(float(x) for x in value)
    return out


# OpenCLIP options that do not change the inference graph of a standard CLIP, and the value each
# other option must have for the model to be one we implement.
_OC_IGNORED = {
    "patch_dropout",
    "output_tokens",
    "embed_cls",
    "pad_id",
    "freeze_ln",
    "hf_tokenizer_name",
    "tokenizer_kwargs",
    "pos_embed_type",
    "input_patchnorm",
    "norm_kwargs",
    "act_kwargs",
}
_OC_REQUIRED_DEFAULTS = {
    "vision_cfg": {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False,
                   "final_ln_after_pool": False, "pool_type": "tok", "global_average_pool": False,
                   "timm_model_name": None, "output_dim": None, "attn_pooler_queries": None},
    "text_cfg": {"ls_init_value": None, "hf_model_name": None, "proj_type": "linear",
                 "pool_type": "argmax", "proj_bias": False, "no_causal_mask": False,
                 "final_ln_after_pool": False, "embed_cls": False},
}  # fmt: skip
_OC_TOP_IGNORED = {
    "custom_text",
    "cast_dtype",
    "init_logit_scale",
    "init_logit_bias",
    "multimodal_cfg",
}


def _open_clip_config(data: dict[str, Any], source: str) -> tuple[CLIPConfig, PreprocessCfg]:
    model_cfg = data.get("model_cfg", data)
    if not isinstance(model_cfg, dict):
        raise CheckpointError(f"{source}: model_cfg must be an object")
    vision_cfg, text_cfg = model_cfg.get("vision_cfg"), model_cfg.get("text_cfg")
    if not isinstance(vision_cfg, dict) or not isinstance(text_cfg, dict):
        raise CheckpointError(
            f"{source}: expected model_cfg.vision_cfg and model_cfg.text_cfg objects"
        )
    if "init_logit_bias" in model_cfg and model_cfg["init_logit_bias"] is not None:
        raise CheckpointError(f"{source}: SigLIP-style models (logit_bias) are not supported")
    if model_cfg.get("multimodal_cfg"):
        raise CheckpointError(f"{source}: CoCa-style models (multimodal_cfg) are not supported")
    for section, cfg in (("vision_cfg", vision_cfg), ("text_cfg", text_cfg)):
        for key, required in _OC_REQUIRED_DEFAULTS[section].items():
            if key in cfg and cfg[key] != required and not (required is False and cfg[key] is None):
                raise CheckpointError(
                    f"{source}: unsupported OpenCLIP option {section}.{key}={cfg[key]!r} "
                    f"(only standard CLIP towers are implemented)"
                )
    known_v = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
    known_t = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
    for section, cfg, known in (
        ("vision_cfg", vision_cfg, known_v),
        ("text_cfg", text_cfg, known_t),
    ):
        unknown = set(cfg) - known - set(_OC_REQUIRED_DEFAULTS[section]) - _OC_IGNORED
        if unknown:
            raise CheckpointError(
                f"{source}: unsupported OpenCLIP {section} options {sorted(unknown)}"
            )
    unknown_top = (
        set(model_cfg) - {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"} - _OC_TOP_IGNORED
    )
    if unknown_top:
        raise CheckpointError(
            f"{source}: unsupported OpenCLIP model_cfg options {sorted(unknown_top)}"
        )
    try:
        image_size = vision_cfg.get("image_size", 224)
        if isinstance(image_size, (list, tuple)):
            if len(image_size) != 2 or image_size[0] != image_size[1]:
                raise CheckpointError(
                    f"{source}: only square images are supported, got {image_size}"
                )
            image_size = image_size[0]
        layers = vision_cfg.get("layers", 12)
        width = vision_cfg.get("width", 768)
        head_width = vision_cfg.get("head_width", 64)
        resnet = isinstance(layers, (list, tuple))
        if not isinstance(width, int) or not isinstance(head_width, int) or head_width <= 0:
            raise CheckpointError(f"{source}: vision_cfg.width and head_width must be integers")
        vision = VisionConfig(
            image_size=image_size,
            width=width,
            layers=tuple(layers) if resnet else layers,
            patch_size=None if resnet else vision_cfg.get("patch_size", 16),
            heads=(width * 32 // head_width) if resnet else (width // head_width),
            mlp_ratio=vision_cfg.get("mlp_ratio", 4.0),
        )
        text = TextConfig(
            context_length=text_cfg.get("context_length", 77),
            vocab_size=text_cfg.get("vocab_size", 49408),
            width=text_cfg.get("width", 512),
            heads=text_cfg.get("heads", 8),
            layers=text_cfg.get("layers", 12),
            mlp_ratio=text_cfg.get("mlp_ratio", 4.0),
        )
        config = CLIPConfig(
            embed_dim=model_cfg.get("embed_dim", 512),
            vision=vision,
            text=text,
            quick_gelu=bool(model_cfg.get("quick_gelu", False)),
        )
    except ModelError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{source}: invalid OpenCLIP model config: {exc}") from exc
    return config, _preprocess_cfg(data.get("preprocess_cfg"), source)


def _load_open_clip_folder(folder: Path) -> tuple[StateDict, CLIPConfig, PreprocessCfg]:
    config_path = folder / OPEN_CLIP_CONFIG
    config, preprocess = _open_clip_config(_read_json(config_path), str(config_path))
    for name in OPEN_CLIP_WEIGHTS:
        weights = folder / name
        if weights.is_file():
            break
    else:
        raise CheckpointError(
            f"{folder}: has {OPEN_CLIP_CONFIG} but no weights; expected {' or '.join(OPEN_CLIP_WEIGHTS)}"
        )
    state = load_state_dict_file(weights, allow_jit=False)
    check_state_dict(state, config, f"{weights} (with {config_path.name})")
    return state, config, preprocess


def _load_our_folder(folder: Path) -> tuple[StateDict, CLIPConfig, PreprocessCfg]:
    config_path = folder / OUR_CONFIG
    data = _read_json(config_path)
    if data.get("format") != OUR_FORMAT:
        raise CheckpointError(
            f'{config_path}: not a clipsearch model config (expected "format": "{OUR_FORMAT}")'
        )
    try:
        config = CLIPConfig.from_dict(data.get("model_cfg"))  # type: ignore[arg-type]
    except ModelError as exc:
        raise CheckpointError(f"{config_path}: invalid model_cfg: {exc}") from exc
    weights = folder / OUR_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder}: has {OUR_CONFIG} but no {OUR_WEIGHTS}")
    state = _load_safetensors(weights)
    check_state_dict(state, config, str(weights))
    return state, config, _preprocess_cfg(data.get("preprocess_cfg"), str(config_path))


def load_checkpoint(
    path: str | Path, allow_jit: bool = False
) -> tuple[StateDict, CLIPConfig, PreprocessCfg]:
    """Read a checkpoint file or folder: ``(float32 state dict, config, {"mean", "std"})``.

    The state dict matches ``CLIP(config)`` exactly (checked), so ``load_state_dict(strict=True)``
    succeeds. Raises :class:`CheckpointError` naming the file and what was expected.
    """
    if not isinstance(path, (str, Path)) or not str(path):
        raise CheckpointError(f"expected a checkpoint path, got {path!r}")
    path = Path(path)
    try:
        if path.is_dir():
            if (path / OPEN_CLIP_CONFIG).is_file():
                return _load_open_clip_folder(path)
            if (path / OUR_CONFIG).is_file():
                return _load_our_folder(path)
            raise CheckpointError(
                f"{path}: folder holds no known checkpoint; expected {OPEN_CLIP_CONFIG} with "
                f"{' or '.join(OPEN_CLIP_WEIGHTS)} (OpenCLIP), or {OUR_CONFIG} with {OUR_WEIGHTS} "
                "(clipsearch)"
            )
        if not path.exists():
            raise CheckpointError(f"{path}: no such file or folder")
        state = load_state_dict_file(path, allow_jit=allow_jit)
        config = infer_config(state, str(path))
        _fill_batchnorm_counters(state, config)
        check_state_dict(state, config, str(path))
        return state, config, {"mean": OPENAI_MEAN, "std": OPENAI_STD}
    except PermissionError as exc:
        raise CheckpointError(f"{path}: permission denied reading the checkpoint") from exc
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {exc}") from exc


def _fill_batchnorm_counters(state: StateDict, config: CLIPConfig) -> None:
    """Some converted ResNet checkpoints drop BatchNorm's num_batches_tracked (unused at
    inference); put zeros back so strict loading works."""
    if not config.vision.is_resnet:
        return
    for key in [k for k in state if k.endswith(".running_mean")]:
        state.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0))


# --------------------------------------------------------------------------------------------
# Writing our format
# --------------------------------------------------------------------------------------------


def save_pretrained(model: EmbeddingModel, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``folder`` (created if needed); for
    another family than CLIP also its ``"family"`` and its tokenizer files.

    Each file is written to a temporary name and renamed into place, so a crash never leaves a
    half-written model that loads.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder}: exists and is not a folder; cannot save a model there")
    if not isinstance(model, CLIP):
        from clipsearch.model.families import save_family

        return save_family(model, folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    config = {
        "format": OUR_FORMAT,
        "version": 1,
        "name": str(getattr(model, "name", "")),
        "model_cfg": model.config.to_dict(),
        "preprocess_cfg": {k: list(v) for k, v in model.preprocess_cfg.items()},
    }
    _atomic_write(
        folder / OUR_WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"})
    )
    _atomic_write(
        folder / OUR_CONFIG,
        lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"),
    )
    log.info("saved model to %s", folder)
    return folder


def _atomic_write(dest: Path, write: Any) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
