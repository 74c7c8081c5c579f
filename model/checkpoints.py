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

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from clipsearch.model import families
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
from clipsearch.model.files import (
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHTS,
    OPENAI_SHA256,
    OUR_CONFIG,
    OUR_FORMAT,
    OUR_WEIGHTS,
    StateDict,
    atomic_write,
    compare_state_dict,
    file_sha256,
    load_safetensors,
    load_state_dict_file,
    open_clip_weights,
    read_json,
    save_folder,
)
from clipsearch.model.hub_config import PreprocessCfg, count_indices, preprocess_cfg, shape
from clipsearch.model.meta_init import on_meta

# File reading and writing live in model.files, the shared config pieces in model.hub_config;
# their names stay importable from here.
__all__ = [
    "OPENAI_SHA256",
    "OPEN_CLIP_CONFIG",
    "OPEN_CLIP_WEIGHTS",
    "OUR_CONFIG",
    "OUR_FORMAT",
    "OUR_WEIGHTS",
    "PreprocessCfg",
    "StateDict",
    "check_state_dict",
    "compare_state_dict",
    "file_sha256",
    "infer_config",
    "load_checkpoint",
    "load_state_dict_file",
    "save_pretrained",
]
_count_indices, _shape, _preprocess_cfg = count_indices, shape, preprocess_cfg
_read_json, _load_safetensors, _atomic_write = read_json, load_safetensors, atomic_write

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Architecture inference
# --------------------------------------------------------------------------------------------


def _square_side(count: int, what: str, source: str) -> int:
    side = round(count**0.5)
    if side * side != count:
        raise CheckpointError(f"{source}: {what} has {count} positions, not a square grid")
    return side


def infer_config(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> CLIPConfig:
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
        context_length, text_width = shape(state_dict, "positional_embedding", source)
        vocab_size = shape(state_dict, "token_embedding.weight", source)[0]
        embed_dim = shape(state_dict, "text_projection", source)[1]
        text_layers = count_indices(state_dict, "transformer.resblocks.")
        if text_layers == 0:
            raise CheckpointError(
                f"{source}: no text transformer blocks (transformer.resblocks.N.*)"
            )
        text_hidden = shape(state_dict, "transformer.resblocks.0.mlp.c_fc.weight", source)[0]
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
            width, _, patch, _ = shape(state_dict, "visual.conv1.weight", source)
            positions = shape(state_dict, "visual.positional_embedding", source)[0]
            grid = _square_side(
                positions - 1, "visual.positional_embedding (minus the class token)", source
            )
            layers = count_indices(state_dict, "visual.transformer.resblocks.")
            hidden = shape(state_dict, "visual.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
            vision = VisionConfig(
                image_size=grid * patch,
                width=width,
                layers=layers,
                patch_size=patch,
                heads=max(1, width // 64),
                mlp_ratio=hidden / width,
            )
        elif "visual.attnpool.positional_embedding" in state_dict:  # ModifiedResNet
            stages = tuple(count_indices(state_dict, f"visual.layer{i}.") for i in (1, 2, 3, 4))
            if 0 in stages:
                raise CheckpointError(
                    f"{source}: ResNet stages visual.layer1..4 incomplete: {stages}"
                )
            width = shape(state_dict, "visual.layer1.0.conv1.weight", source)[0]
            positions = shape(state_dict, "visual.attnpool.positional_embedding", source)[0]
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
    with on_meta():
        expected = CLIP(config).state_dict()
    compare_state_dict(expected, state_dict, source, "the CLIP architecture they describe")


# --------------------------------------------------------------------------------------------
# Reading a standard CLIP's folders
# --------------------------------------------------------------------------------------------


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


def _open_clip_config(data: Mapping[str, object], source: str) -> tuple[CLIPConfig, PreprocessCfg]:
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
    return config, preprocess_cfg(data.get("preprocess_cfg"), source)


def _load_open_clip_folder(folder: Path) -> tuple[StateDict, CLIPConfig, PreprocessCfg]:
    config_path = folder / OPEN_CLIP_CONFIG
    config, preprocess = _open_clip_config(read_json(config_path), str(config_path))
    weights = open_clip_weights(folder)
    state = load_state_dict_file(weights, allow_jit=False)
    check_state_dict(state, config, f"{weights} (with {config_path.name})")
    return state, config, preprocess


def _load_our_folder(folder: Path) -> tuple[StateDict, CLIPConfig, PreprocessCfg]:
    config_path = folder / OUR_CONFIG
    data = read_json(config_path)
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
    state = load_safetensors(weights)
    check_state_dict(state, config, str(weights))
    return state, config, preprocess_cfg(data.get("preprocess_cfg"), str(config_path))


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
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder}: exists and is not a folder; cannot save a model there")
    if not isinstance(model, CLIP):
        return families.save_family(model, folder)
    config = {
        "format": OUR_FORMAT,
        "version": 1,
        "name": str(getattr(model, "name", "")),
        "model_cfg": model.config.to_dict(),
        "preprocess_cfg": {k: list(v) for k, v in model.preprocess_cfg.items()},
    }
    save_folder(folder, model.state_dict(), config)
    log.info("saved model to %s", folder)
    return folder
