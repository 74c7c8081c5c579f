"""Which model family a checkpoint folder holds, and loading or saving that family.

An OpenCLIP hub folder (``open_clip_config.json`` + ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin`` + tokenizer files) says what it is in its config:

- ``vision_cfg.timm_model_name`` names a timm image tower: ``vit_*_siglip_*`` is SigLIP / SigLIP 2
  (:mod:`model.siglip`), ``fastvit_mci*`` is MobileCLIP / MobileCLIP2 (:mod:`model.mobileclip`),
  ``vit_base_mci_224`` is MobileCLIP-B / MobileCLIP2-B (:mod:`model.mobileclip_vit`).
  The name may be ``local-dir:PATH``, timm's folder format (:func:`model.hub_config.timm_tower`);
- ``text_cfg.hf_model_name`` names a Hugging Face text tower (:mod:`model.hf_text`, e.g.
  ``xlm-roberta-base``); a path (``./hf_text``) is a folder with its transformers ``config.json``;
  beside a SigLIP image tower it is NLLB-SigLIP (:mod:`model.nllb`);
- neither: a standard CLIP, read by :mod:`model.checkpoints`.

Each family module registers one :class:`~model.family_registry.Family` entry (how to recognise
it, convert the hub's parameter names, infer its config from shapes, build, fold); this module
imports the family modules and looks the entries up. Our own format (``save_pretrained``) is
``config.json`` with ``"family"`` + ``model.safetensors`` + the tokenizer files.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from clipsearch.model import hf_text, mobileclip, mobileclip_vit, nllb, siglip
from clipsearch.model import hub_config as hub
from clipsearch.model.base import EmbeddingModel
from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.family_registry import Family, FamilyConfig, get, registered
from clipsearch.model.files import (
    OPEN_CLIP_CONFIG,
    OUR_CONFIG,
    OUR_FORMAT,
    OUR_WEIGHTS,
    StateDict,
    compare_state_dict,
    load_safetensors,
    load_state_dict_file,
    open_clip_weights,
    read_json,
    save_folder,
)
from clipsearch.model.meta_init import on_meta

log = logging.getLogger(__name__)

# Every family module registers itself on import; these are the ones this loader knows.
_MODULES = (siglip, mobileclip, hf_text, nllb, mobileclip_vit)
FAMILIES = tuple(f.name for f in registered())
# Files a hub folder's tokenizer may consist of; save_pretrained copies those present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
)

# Shared config inference, under the names it had here.
timm_tower = hub.timm_tower
text_tower_config = hub.text_tower_config
siglip_vision_config = siglip.vision_config
_siglip_config = siglip.infer_config


# --------------------------------------------------------------------------------------------
# Recognising a family
# --------------------------------------------------------------------------------------------


def _recognise(data: Mapping[str, object], folder: Path, source: str) -> Family | None:
    _, vision_cfg, text_cfg = hub.model_cfg(data, source)
    arch = (
        hub.timm_tower(vision_cfg, folder, source)[0] if vision_cfg.get("timm_model_name") else None
    )
    found = [f for f in registered() if f.recognises(arch, vision_cfg, text_cfg, source)]
    if len(found) > 1:  # the entries' tests are meant to exclude each other
        raise CheckpointError(
            f"{source}: ambiguous model config: {', '.join(f.name for f in found)} all match"
        )
    if found:
        return found[0]
    if arch is not None:
        raise CheckpointError(
            f"{source}: unsupported timm image tower {arch!r} (vision_cfg.timm_model_name); "
            "supported: " + ", ".join(f.timm_towers for f in registered() if f.timm_towers)
        )
    return None


def open_clip_family(data: Mapping[str, object], folder: Path, source: str) -> str | None:
    """The family of an ``open_clip_config.json``: one of FAMILIES, or None for standard CLIP."""
    family = _recognise(data, folder, source)
    return None if family is None else family.name


def folder_family(folder: Path) -> str | None:
    """The family of a checkpoint folder (open_clip layout or ours), None for standard CLIP."""
    if (folder / OPEN_CLIP_CONFIG).is_file():
        path = folder / OPEN_CLIP_CONFIG
        return open_clip_family(read_json(path), folder, str(path))
    if (folder / OUR_CONFIG).is_file():
        family = read_json(folder / OUR_CONFIG).get("family", "clip")
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
# Loading
# --------------------------------------------------------------------------------------------


def _assemble(
    family: Family, config: FamilyConfig, state: StateDict, tokenizer_dir: Path | None, source: str
) -> EmbeddingModel:
    """Build (on the meta device where nothing but weights is needed), check keys and shapes,
    then take the tensors."""
    what = f"the {family.name} architecture it describes"
    if not family.build_on_meta:
        model = family.build(config, tokenizer_dir)
        expected = model.state_dict()
        # Checkpoints saved with older transformers carry the position ids as a tensor.
        state = {
            k: v
            for k, v in state.items()
            if k in expected or not k.endswith("embeddings.position_ids")
        }
        compare_state_dict(expected, state, source, what)
        model.load_state_dict(state, strict=True)
        return model
    with on_meta():
        model = family.build(config, tokenizer_dir)
    compare_state_dict(model.state_dict(), state, source, what)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_open_clip_folder(folder: Path, fold: bool = True) -> EmbeddingModel:
    """A SigLIP / MobileCLIP / HF-text model from an OpenCLIP hub folder. A MobileCLIP's
    reparameterisable branches are folded for inference unless ``fold=False``."""
    config_path = folder / OPEN_CLIP_CONFIG
    source = str(config_path)
    data = read_json(config_path)
    if _recognise(data, folder, source) is None:
        raise CheckpointError(f"{source}: a standard CLIP; load it with model.load")
    weights = open_clip_weights(folder)
    state = load_state_dict_file(weights, allow_jit=False)
    where = f"{weights} (with {config_path.name})"
    return from_open_clip(data, folder, state, where, fold=fold)


def from_open_clip(
    data: Mapping[str, object],
    folder: Path,
    state: StateDict,
    source: str = "open_clip state dict",
    fold: bool = True,
) -> EmbeddingModel:
    """A model of a family other than CLIP from an ``open_clip_config.json``'s content and an
    open_clip state dict (``model.state_dict()`` of open_clip's model, or its hub weights file).
    ``folder`` is where the config's relative paths (``local-dir:``, ``./hf_text``) and the
    tokenizer files are."""
    family = _recognise(data, folder, source)
    if family is None:
        raise CheckpointError(f"{source}: a standard CLIP; load it with model.load")
    state = family.convert_state(state)
    config = family.infer_config(data, folder, state, source)
    model = _assemble(family, config, state, folder, source)
    hub.apply_preprocess(model, data, source)
    if fold and family.fold is not None:
        family.fold(model)
    return model


def load_our_folder(folder: Path) -> EmbeddingModel:
    """A model of a family other than CLIP from a folder written by :func:`save_pretrained`."""
    config_path = folder / OUR_CONFIG
    data = read_json(config_path)
    if data.get("format") != OUR_FORMAT:
        raise CheckpointError(
            f'{config_path}: not a clipsearch model config (expected "format": "{OUR_FORMAT}")'
        )
    family_name = data.get("family")
    if family_name not in FAMILIES:
        raise CheckpointError(f"{config_path}: unknown model family {str(family_name)!r}")
    family = get(str(family_name))
    try:
        config = family.config_class.from_dict(data.get("model_cfg"))
    except ModelError as exc:
        raise CheckpointError(f"{config_path}: invalid model_cfg: {exc}") from exc
    weights = folder / OUR_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder}: has {OUR_CONFIG} but no {OUR_WEIGHTS}")
    state = load_safetensors(weights)
    model = _assemble(family, config, state, folder, str(weights))
    hub.apply_preprocess(model, data, str(config_path))
    return model


def save_family(model: EmbeddingModel, folder: Path) -> Path:
    """Write a SigLIP / MobileCLIP / HF-text model in our format, tokenizer files included."""
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
    folder.mkdir(parents=True, exist_ok=True)
    source = getattr(model, "tokenizer_dir", None)
    if source is not None and Path(source).resolve() != folder.resolve():
        for name in TOKENIZER_FILES:
            if (Path(source) / name).is_file():
                shutil.copyfile(Path(source) / name, folder / name)
    save_folder(folder, model.state_dict(), config)
    log.info("saved %s model to %s", model.family, folder)
    return folder
