"""The model layer's entry points: ``load`` a checkpoint by registry name or path, ``build`` a
randomly initialised CLIP from a config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from clipsearch.model import families, registry
from clipsearch.model.base import EmbeddingModel
from clipsearch.model.checkpoints import load_checkpoint
from clipsearch.model.clip import CLIP, CLIPConfig
from clipsearch.model.environment import ENV_ALLOW_JIT, ModelEnvironment
from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.files import OPEN_CLIP_CONFIG
from clipsearch.model.fingerprint import remember_fingerprint, state_fingerprint
from clipsearch.model.lazy_tower import LazyTower
from clipsearch.model.meta_init import on_meta

__all__ = ["ENV_ALLOW_JIT", "IMAGE_TOWER_CHOICES", "build", "load"]
#: When ``load`` reads the image tower: with the model, or on first use (model.lazy_tower).
IMAGE_TOWER_CHOICES = ("now", "on_demand")
_VISUAL = "visual."
log = logging.getLogger(__name__)


def build(config: CLIPConfig | dict[str, object], seed: int = 0, name: str = "random-init") -> CLIP:
    """A CLIP with OpenAI's random initialisation, reproducible from ``seed``, in eval mode.

    The tokenizer and preprocessing are attached lazily (first ``tokenize``/``preprocess`` call).
    ``config`` may be a :class:`CLIPConfig` or its ``to_dict()`` form.
    """
    if isinstance(config, dict):
        config = CLIPConfig.from_dict(config)
    if not isinstance(config, CLIPConfig):
        raise ModelError(f"build() needs a CLIPConfig or a dict, got {type(config).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(config)
    model.name = name
    return model.eval()


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return resolved


def _resolve_spec(
    spec: str | Path, cache_dir: str | os.PathLike[str] | None, offline: bool | None
) -> Path:
    """A registry name -> its (downloaded, verified) local path; otherwise an existing path."""
    if isinstance(spec, str) and spec.strip() in registry.MODELS:
        return Path(registry.resolve(spec.strip(), cache_dir=cache_dir, offline=offline))
    try:
        path = Path(spec).expanduser()
        if path.exists():
            return path
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, names too long, bad ~user
        raise CheckpointError(f"{str(spec)[:200]!r}: not a usable path ({exc})") from exc
    raise CheckpointError(
        f"{str(spec)!r}: neither a known model name nor an existing file or folder "
        f"(known model names: {', '.join(sorted(registry.MODELS))})"
    )


def load(
    spec: str | Path,
    device: str | torch.device | None = None,
    allow_jit: bool | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    image_tower: str = "now",
) -> CLIP | EmbeddingModel:
    """Load a model in eval mode from a registry name (``"ViT-B-32"``, ...) or a checkpoint path.

    Paths may be an OpenAI ``.pt`` (TorchScript archive or state dict), a ``.safetensors`` or
    ``.bin`` state dict, an OpenCLIP hub folder, or a folder written by ``save_pretrained``.
    A hub folder of another family (SigLIP / SigLIP 2, MobileCLIP, a Hugging Face text tower
    such as XLM-RoBERTa CLIP; see model.families) gives that family's model, with the same
    surface (model.base.EmbeddingModel).
    TorchScript archives other than OpenAI's released files run code when opened and are
    refused unless ``allow_jit=True`` (default: ``$CLIPSEARCH_ALLOW_JIT`` is ``1``, which is how
    the CLI, the API and the workers are told). ``device`` defaults to CUDA when available.
    ``cache_dir`` and ``offline`` are handed to the registry for a registry name (defaults:
    ``$CLIPSEARCH_CACHE``, ``$CLIPSEARCH_OFFLINE``; see model.environment).
    ``image_tower="on_demand"`` (a standard CLIP; other families load whole) keeps the image
    tower out of memory until an image is embedded (model.lazy_tower): what a process that
    embeds only query texts needs, such as ``clipsearch search`` on its own.
    Raises :class:`CheckpointError` (or :class:`DownloadError` from the registry) with a
    message naming the file and what was expected.
    """
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise CheckpointError(f"expected a model name or checkpoint path, got {spec!r}")
    if image_tower not in IMAGE_TOWER_CHOICES:
        raise ModelError(f"image_tower must be one of {IMAGE_TOWER_CHOICES}, got {image_tower!r}")
    if allow_jit is None:  # the Python API's door: the environment decides
        allow_jit = ModelEnvironment.read().allow_jit
    target = _resolve_device(device)
    path = _resolve_spec(spec, cache_dir, offline)
    family = _family_of(path)
    if family is not None:
        try:
            if (path / OPEN_CLIP_CONFIG).is_file():
                other = families.load_open_clip_folder(path)
            else:
                other = families.load_our_folder(path)
        except PermissionError as exc:
            raise CheckpointError(f"{path}: permission denied reading the checkpoint") from exc
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read the checkpoint: {exc}") from exc
        other.name = str(spec)
        log.info("loaded %s (%s family) on %s", spec, family, target)
        return other.to(target).eval()
    state, config, preprocess_cfg = load_checkpoint(path, allow_jit=allow_jit)
    on_demand = image_tower == "on_demand"
    if on_demand:  # drop the image tower's tensors now; LazyTower reads them when needed
        digest = state_fingerprint(state, config.embed_dim)  # the whole model's identity
        state = {k: v for k, v in state.items() if not k.startswith(_VISUAL)}
    with on_meta():
        model = CLIP(config)
    try:
        missing, _ = model.load_state_dict(state, strict=not on_demand, assign=True)
    except RuntimeError as exc:  # check_state_dict makes this unreachable for our formats
        raise CheckpointError(
            f"{path}: weights do not fit the inferred architecture: {exc}"
        ) from exc
    if on_demand:
        assert all(k.startswith(_VISUAL) for k in missing), missing  # checked by load_checkpoint
        model.visual = LazyTower(model, lambda: _read_image_tower(path, allow_jit, config))  # type: ignore[assignment]
        remember_fingerprint(model, digest)
    model.use_channels_last()
    model.preprocess_cfg = preprocess_cfg
    model.name = str(spec)
    log.info("loaded %s (%s) on %s", spec, _describe(config), target)
    return model.to(target).eval()


def _read_image_tower(path: Path, allow_jit: bool, config: CLIPConfig) -> torch.nn.Module:
    """The image tower of the checkpoint at ``path`` (LazyTower's loader): read again, on CPU."""
    state, _, _ = load_checkpoint(path, allow_jit=allow_jit)
    with on_meta():
        tower = CLIP(config).visual
    visual = {k[len(_VISUAL) :]: v for k, v in state.items() if k.startswith(_VISUAL)}
    tower.load_state_dict(visual, strict=True, assign=True)
    log.info("read the image tower of %s on first use", path)
    return tower.eval()


def _family_of(path: Path) -> str | None:
    """The family of a checkpoint folder other than standard CLIP, or None."""
    if not path.is_dir():
        return None
    return families.folder_family(path)


def _describe(config: CLIPConfig) -> str:
    v = config.vision
    tower = (
        f"ResNet{list(v.layers)}"
        if isinstance(v.layers, tuple)
        else f"ViT/{v.patch_size}x{v.layers}"
    )
    return f"{tower} width {v.width} @{v.image_size}px, text width {config.text.width}, embed {config.embed_dim}"
