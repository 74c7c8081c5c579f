"""Which model family a checkpoint folder holds, and building that family from it.

An OpenCLIP hub folder (``open_clip_config.json`` + ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin`` + tokenizer files) says what it is in its config:

- ``vision_cfg.timm_model_name`` names a timm image tower: ``vit_*_siglip_*`` is SigLIP / SigLIP 2
  (:mod:`model.siglip`), ``fastvit_mci*`` is MobileCLIP / MobileCLIP2 (:mod:`model.mobileclip`),
  ``vit_base_mci_224`` is MobileCLIP-B / MobileCLIP2-B (:mod:`model.mobileclip_vit`).
  The name may be ``local-dir:PATH``, timm's folder format: ``PATH/config.json`` gives the real
  ``architecture`` and the ``model_args`` overriding its defaults;
- ``text_cfg.hf_model_name`` names a Hugging Face text tower (:mod:`model.hf_text`, e.g.
  ``xlm-roberta-base``); a path (``./hf_text``) is a folder with its transformers ``config.json``;
  beside a SigLIP image tower it is NLLB-SigLIP (:mod:`model.nllb`);
- neither: a standard CLIP, read by :mod:`model.checkpoints`.

Every hyper-parameter that tensor shapes carry is read from the shapes (as ``infer_config`` does
for CLIP); the config supplies only what shapes cannot (head counts, image size, pooling,
activations, LayerNorm epsilon, text cleaning). Our own format (``save_pretrained``) is
``config.json`` with ``"family"`` + ``model.safetensors`` + the tokenizer files.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch

from clipsearch.model.base import EmbeddingModel
from clipsearch.model.checkpoints import (
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHTS,
    OUR_CONFIG,
    OUR_FORMAT,
    OUR_WEIGHTS,
    StateDict,
    _atomic_write,
    _count_indices,
    _load_safetensors,
    _read_json,
    _shape,
    compare_state_dict,
    load_state_dict_file,
)
from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.towers import TextTowerConfig

log = logging.getLogger(__name__)

FAMILIES = ("siglip", "mobileclip", "hf-text", "nllb-siglip", "mobileclip-vit")
# Files a hub folder's tokenizer may consist of; save_pretrained copies those present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
)


# --------------------------------------------------------------------------------------------
# Recognising a family
# --------------------------------------------------------------------------------------------


def _model_cfg(data: Mapping[str, Any], source: str) -> tuple[dict, dict, dict]:
    model_cfg = data.get("model_cfg", data)
    if not isinstance(model_cfg, dict):
        raise CheckpointError(f"{source}: model_cfg must be an object")
    vision_cfg, text_cfg = model_cfg.get("vision_cfg"), model_cfg.get("text_cfg")
    if not isinstance(vision_cfg, dict) or not isinstance(text_cfg, dict):
        raise CheckpointError(
            f"{source}: expected model_cfg.vision_cfg and model_cfg.text_cfg objects"
        )
    return model_cfg, vision_cfg, text_cfg


def timm_tower(vision_cfg: Mapping[str, Any], folder: Path, source: str) -> tuple[str, dict]:
    """``(architecture, model_args)`` of the timm image tower a config names."""
    name = vision_cfg.get("timm_model_name")
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{source}: vision_cfg.timm_model_name must be a model name")
    if name.startswith("local-dir:"):
        tower = (folder / name[len("local-dir:") :]).resolve()
        cfg = _read_json(tower / "config.json")
        arch = cfg.get("architecture")
        args = cfg.get("model_args") or {}
        if not isinstance(arch, str) or not isinstance(args, dict):
            raise CheckpointError(
                f"{tower / 'config.json'}: expected timm's folder format: an 'architecture' name "
                "and optional 'model_args'"
            )
        return arch, args
    if ":" in name:
        raise CheckpointError(
            f"{source}: timm_model_name {name!r} points elsewhere; only timm model names and "
            "local-dir: folders are read"
        )
    return name, {}


def open_clip_family(data: Mapping[str, Any], folder: Path, source: str) -> str | None:
    """The family of an ``open_clip_config.json``: one of FAMILIES, or None for standard CLIP."""
    _, vision_cfg, text_cfg = _model_cfg(data, source)
    if vision_cfg.get("timm_model_name"):
        arch, _ = timm_tower(vision_cfg, folder, source)
        if "siglip" in arch:
            if "_gap_" in arch or vision_cfg.get("timm_pool", "map") not in ("map", None, ""):
                raise CheckpointError(
                    f"{source}: {arch} with global average pooling is not supported; SigLIP "
                    "towers with the attention-pool ('map') head are"
                )
            # A Hugging Face text tower beside it: NLLB-SigLIP (model.nllb).
            return "nllb-siglip" if text_cfg.get("hf_model_name") else "siglip"
        if arch.startswith("fastvit_mci"):
            return "mobileclip"
        if arch.startswith("vit_") and "_mci_" in arch:  # MobileCLIP-B / MobileCLIP2-B
            return "mobileclip-vit"
        raise CheckpointError(
            f"{source}: unsupported timm image tower {arch!r} (vision_cfg.timm_model_name); "
            "supported: SigLIP ViTs (vit_*_siglip_*), MobileCLIP FastViTs (fastvit_mci*) and "
            "the MobileCLIP-B ViT (vit_base_mci_224)"
        )
    if text_cfg.get("hf_model_name"):
        return "hf-text"
    return None


def folder_family(folder: Path) -> str | None:
    """The family of a checkpoint folder (open_clip layout or ours), None for standard CLIP."""
    if (folder / OPEN_CLIP_CONFIG).is_file():
        path = folder / OPEN_CLIP_CONFIG
        return open_clip_family(_read_json(path), folder, str(path))
    if (folder / OUR_CONFIG).is_file():
        family = _read_json(folder / OUR_CONFIG).get("family", "clip")
        if family == "clip":
            return None
        if family not in FAMILIES:
            raise CheckpointError(
                f"{folder / OUR_CONFIG}: unknown model family {family!r}; known: clip, "
                + ", ".join(FAMILIES)
            )
        return str(family)
    return None


# --------------------------------------------------------------------------------------------
# Shared pieces of config inference
# --------------------------------------------------------------------------------------------


def _weights_file(folder: Path) -> Path:
    for name in OPEN_CLIP_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"{folder}: has {OPEN_CLIP_CONFIG} but no weights; expected "
        f"{' or '.join(OPEN_CLIP_WEIGHTS)}"
    )


def _int(value: Any, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CheckpointError(f"{source}: {what} must be a positive integer, got {value!r}")
    return value


def _image_size(vision_cfg: Mapping[str, Any], args: Mapping[str, Any], source: str) -> int | None:
    size = args.get("img_size", vision_cfg.get("image_size"))
    if size is None:
        return None
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise CheckpointError(f"{source}: only square images are supported, got {size}")
        size = size[0]
    return _int(size, "image_size", source)


def _act(cfg: Mapping[str, Any], quick_gelu: bool) -> str:
    act_kwargs = cfg.get("act_kwargs") or {}
    if isinstance(act_kwargs, dict) and act_kwargs.get("approximate") == "tanh":
        return "gelu_tanh"
    return "quick_gelu" if quick_gelu else "gelu"


def text_tower_config(
    state: Mapping[str, Any], text_cfg: Mapping[str, Any], quick_gelu: bool, source: str
) -> tuple[TextTowerConfig, int]:
    """open_clip's TextTransformer (under ``text.``) from shapes + config; and embed_dim."""
    context_length, width = _shape(state, "text.positional_embedding", source)
    vocab_size = _shape(state, "text.token_embedding.weight", source)[0]
    layers = _count_indices(state, "text.transformer.resblocks.")
    if layers == 0:
        raise CheckpointError(
            f"{source}: no text transformer blocks (text.transformer.resblocks.N)"
        )
    mlp_dim = _shape(state, "text.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
    proj_bias = "text.text_projection.bias" in state
    if proj_bias:
        embed_dim = _shape(state, "text.text_projection.weight", source)[0]
    else:
        embed_dim = _shape(state, "text.text_projection", source)[1]
    norm_kwargs = text_cfg.get("norm_kwargs") or {}
    eps = norm_kwargs.get("eps", 1e-5) if isinstance(norm_kwargs, dict) else 1e-5
    heads = text_cfg.get("heads", max(1, width // 64))
    try:
        cfg = TextTowerConfig(
            context_length=context_length,
            vocab_size=vocab_size,
            width=width,
            heads=_int(heads, "text_cfg.heads", source),
            layers=layers,
            mlp_dim=mlp_dim,
            causal=not bool(text_cfg.get("no_causal_mask", False)),
            pool=str(text_cfg.get("pool_type", "argmax")),
            proj_bias=proj_bias,
            eps=float(eps),
            act=_act(text_cfg, quick_gelu),
        )
    except ModelError as exc:
        raise CheckpointError(f"{source}: unsupported text tower: {exc}") from exc
    return cfg, embed_dim


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _build(family: str, config: Any, tokenizer_dir: Path | None) -> EmbeddingModel:
    if family == "siglip":
        from clipsearch.model.siglip import SigLIP

        return SigLIP(config, tokenizer_dir=tokenizer_dir)
    if family == "mobileclip":
        from clipsearch.model.mobileclip import MobileCLIP

        return MobileCLIP(config)
    if family == "hf-text":
        from clipsearch.model.hf_text import HFTextCLIP

        return HFTextCLIP(config, tokenizer_dir=tokenizer_dir)
    if family == "nllb-siglip":
        from clipsearch.model.nllb import NLLBSigLIP

        return NLLBSigLIP(config, tokenizer_dir=tokenizer_dir)
    if family == "mobileclip-vit":
        from clipsearch.model.mobileclip_vit import MobileCLIPViT

        return MobileCLIPViT(config)
    raise CheckpointError(f"unknown model family {family!r}")


def _config_class(family: str) -> Any:
    if family == "siglip":
        from clipsearch.model.siglip import SigLIPConfig

        return SigLIPConfig
    if family == "mobileclip":
        from clipsearch.model.mobileclip import MobileCLIPConfig

        return MobileCLIPConfig
    if family == "nllb-siglip":
        from clipsearch.model.nllb import NLLBSigLIPConfig

        return NLLBSigLIPConfig
    if family == "mobileclip-vit":
        from clipsearch.model.mobileclip_vit import MobileCLIPViTConfig

        return MobileCLIPViTConfig
    from clipsearch.model.hf_text import HFTextCLIPConfig

    return HFTextCLIPConfig


def _assemble(
    family: str, config: Any, state: StateDict, tokenizer_dir: Path | None, source: str
) -> EmbeddingModel:
    """Build (on the meta device where nothing but weights is needed), check keys and shapes,
    then take the tensors."""
    if family in ("hf-text", "nllb-siglip"):
        # transformers models keep buffers outside the state dict (position ids): build for real.
        model = _build(family, config, tokenizer_dir)
        expected = model.state_dict()
        # Checkpoints saved with older transformers carry the position ids as a tensor.
        state = {
            k: v
            for k, v in state.items()
            if k in expected or not k.endswith("embeddings.position_ids")
        }
        compare_state_dict(expected, state, source, f"the {family} architecture it describes")
        model.load_state_dict(state, strict=True)
        return model
    with torch.device("meta"):
        model = _build(family, config, tokenizer_dir)
    compare_state_dict(model.state_dict(), state, source, f"the {family} architecture it describes")
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _open_clip_preprocess(model: EmbeddingModel, data: Mapping[str, Any], source: str) -> None:
    from clipsearch.model.checkpoints import _preprocess_cfg
    from clipsearch.model.preprocess import INTERPOLATIONS, RESIZE_MODES

    pre = data.get("preprocess_cfg") or {}
    if not isinstance(pre, dict):
        raise CheckpointError(f"{source}: preprocess_cfg must be an object")
    defaults = model.preprocess_cfg
    model.preprocess_cfg = _preprocess_cfg(
        {"mean": pre.get("mean", defaults["mean"]), "std": pre.get("std", defaults["std"])}, source
    )
    resize_mode = pre.get("resize_mode", model.resize_mode)
    interpolation = pre.get("interpolation", model.interpolation)
    if resize_mode not in RESIZE_MODES:
        raise CheckpointError(
            f"{source}: preprocess_cfg.resize_mode {resize_mode!r} is not supported "
            f"({', '.join(RESIZE_MODES)})"
        )
    if interpolation not in INTERPOLATIONS:
        raise CheckpointError(
            f"{source}: preprocess_cfg.interpolation {interpolation!r} is not supported "
            f"({', '.join(INTERPOLATIONS)})"
        )
    model.resize_mode, model.interpolation = resize_mode, interpolation


def load_open_clip_folder(folder: Path, fold: bool = True) -> EmbeddingModel:
    """A SigLIP / MobileCLIP / HF-text model from an OpenCLIP hub folder. A MobileCLIP's
    reparameterisable branches are folded for inference unless ``fold=False``."""
    config_path = folder / OPEN_CLIP_CONFIG
    source = str(config_path)
    data = _read_json(config_path)
    if open_clip_family(data, folder, source) is None:
        raise CheckpointError(f"{source}: a standard CLIP; load it with model.load")
    weights = _weights_file(folder)
    state = load_state_dict_file(weights, allow_jit=False)
    where = f"{weights} (with {config_path.name})"
    return from_open_clip(data, folder, state, where, fold=fold)


def from_open_clip(
    data: Mapping[str, Any],
    folder: Path,
    state: StateDict,
    source: str = "open_clip state dict",
    fold: bool = True,
) -> EmbeddingModel:
    """A model of a family other than CLIP from an ``open_clip_config.json``'s content and an
    open_clip state dict (``model.state_dict()`` of open_clip's model, or its hub weights file).
    ``folder`` is where the config's relative paths (``local-dir:``, ``./hf_text``) and the
    tokenizer files are."""
    family = open_clip_family(data, folder, source)
    if family is None:
        raise CheckpointError(f"{source}: a standard CLIP; load it with model.load")
    tokenizer_dir: Path | None = folder
    if family == "siglip":
        from clipsearch.model.siglip import from_open_clip_state

        state = from_open_clip_state(state)
        config = _siglip_config(data, folder, state, source)
    elif family == "mobileclip":
        from clipsearch.model.mobileclip import from_open_clip_state as mobile_state

        state = mobile_state(state)
        config = _mobileclip_config(data, folder, state, source)
        tokenizer_dir = None
    elif family == "nllb-siglip":
        from clipsearch.model.siglip import from_open_clip_state as siglip_state

        state = siglip_state(state)
        config = _nllb_config(data, folder, state, source)
    elif family == "mobileclip-vit":
        from clipsearch.model.mobileclip_vit import from_open_clip_state as mci_vit_state
        from clipsearch.model.mobileclip_vit import infer_config as mci_vit_config

        state = mci_vit_state(state)
        config = mci_vit_config(data, folder, state, source)
        tokenizer_dir = None
    else:
        config = _hf_text_config(data, folder, state, source)
    model = _assemble(family, config, state, tokenizer_dir, source)
    _open_clip_preprocess(model, data, source)
    if fold and family in ("mobileclip", "mobileclip-vit"):
        model.fold()  # type: ignore[operator]
    return model


def load_our_folder(folder: Path) -> EmbeddingModel:
    """A model of a family other than CLIP from a folder written by :func:`save_pretrained`."""
    config_path = folder / OUR_CONFIG
    data = _read_json(config_path)
    if data.get("format") != OUR_FORMAT:
        raise CheckpointError(
            f'{config_path}: not a clipsearch model config (expected "format": "{OUR_FORMAT}")'
        )
    family = str(data.get("family"))
    if family not in FAMILIES:
        raise CheckpointError(f"{config_path}: unknown model family {family!r}")
    try:
        config = _config_class(family).from_dict(data.get("model_cfg"))
    except ModelError as exc:
        raise CheckpointError(f"{config_path}: invalid model_cfg: {exc}") from exc
    weights = folder / OUR_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder}: has {OUR_CONFIG} but no {OUR_WEIGHTS}")
    state = _load_safetensors(weights)
    model = _assemble(family, config, state, folder, str(weights))
    _open_clip_preprocess(model, data, str(config_path))
    return model


def save_family(model: EmbeddingModel, folder: Path) -> Path:
    """Write a SigLIP / MobileCLIP / HF-text model in our format, tokenizer files included."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    config = {
        "format": OUR_FORMAT,
        "version": 1,
        "family": model.family,
        "name": str(getattr(model, "name", "")),
        "model_cfg": cast(Any, model).config.to_dict(),
        "preprocess_cfg": {
            **{k: list(v) for k, v in model.preprocess_cfg.items()},
            "resize_mode": model.resize_mode,
            "interpolation": model.interpolation,
        },
    }
    source = getattr(model, "tokenizer_dir", None)
    if source is not None and Path(source).resolve() != folder.resolve():
        for name in TOKENIZER_FILES:
            if (Path(source) / name).is_file():
                shutil.copyfile(Path(source) / name, folder / name)
    _atomic_write(
        folder / OUR_WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"})
    )
    _atomic_write(
        folder / OUR_CONFIG,
        lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"),
    )
    log.info("saved %s model to %s", model.family, folder)
    return folder


# --------------------------------------------------------------------------------------------
# Per-family config inference
# --------------------------------------------------------------------------------------------


def siglip_vision_config(
    vision_cfg: Mapping[str, Any], folder: Path, state: Mapping[str, Any], source: str
) -> Any:
    """timm's SigLIP ViT (renamed to our keys) from shapes + config: a SigLIPVisionConfig."""
    from clipsearch.model.siglip import SigLIPVisionConfig, vision_heads

    _, args = timm_tower(vision_cfg, folder, source)
    width, _, patch, _ = _shape(state, "visual.patch_embed.weight", source)
    positions = _shape(state, "visual.pos_embed", source)[1]
    grid = round(positions**0.5)
    if grid * grid != positions:
        raise CheckpointError(f"{source}: visual.pos_embed has {positions} positions, not a grid")
    image_size = _image_size(vision_cfg, args, source) or grid * patch
    if image_size // patch != grid:
        raise CheckpointError(
            f"{source}: image_size {image_size} with patch {patch} gives a {image_size // patch}"
            f"-grid, but the position embeddings are for a {grid}-grid"
        )
    layers = _count_indices(state, "visual.transformer.resblocks.")
    mlp_dim = _shape(state, "visual.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
    heads = args.get("num_heads", vision_heads(width))
    try:
        return SigLIPVisionConfig(
            image_size=image_size,
            patch_size=patch,
            width=width,
            layers=layers,
            heads=_int(heads, "num_heads", source),
            mlp_dim=mlp_dim,
        )
    except ModelError as exc:
        raise CheckpointError(
            f"{source}: not a SigLIP image tower this loader supports: {exc}"
        ) from exc


def _siglip_config(data: Mapping[str, Any], folder: Path, state: StateDict, source: str) -> Any:
    from clipsearch.model.siglip import SigLIPConfig

    model_cfg, vision_cfg, text_cfg = _model_cfg(data, source)
    vision = siglip_vision_config(vision_cfg, folder, state, source)
    quick_gelu = bool(model_cfg.get("quick_gelu", False))
    text, embed_dim = text_tower_config(state, text_cfg, quick_gelu, source)
    clean = (text_cfg.get("tokenizer_kwargs") or {}).get("clean", "whitespace")
    try:
        return SigLIPConfig(embed_dim=embed_dim, vision=vision, text=text, text_clean=clean)
    except ModelError as exc:
        raise CheckpointError(f"{source}: not a SigLIP this loader supports: {exc}") from exc


def _mobileclip_config(data: Mapping[str, Any], folder: Path, state: StateDict, source: str) -> Any:
    from clipsearch.model.mobileclip import infer_config

    return infer_config(data, folder, state, source)


def _hf_text_config(data: Mapping[str, Any], folder: Path, state: StateDict, source: str) -> Any:
    from clipsearch.model.hf_text import infer_config

    return infer_config(data, folder, state, source)


def _nllb_config(data: Mapping[str, Any], folder: Path, state: StateDict, source: str) -> Any:
    from clipsearch.model.nllb import infer_config

    return infer_config(data, folder, state, source)
