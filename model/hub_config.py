"""Reading an OpenCLIP hub config and the weights' shapes: the pieces every family's config
inference shares.

Every hyper-parameter that tensor shapes carry is read from the shapes (:func:`shape`,
:func:`count_indices`); the config (``open_clip_config.json``) supplies only what shapes cannot
(head counts, image size, pooling, activations, LayerNorm epsilon, text cleaning).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from clipsearch.model.base import OPENAI_MEAN, OPENAI_STD, EmbeddingModel
from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.files import read_json
from clipsearch.model.json_types import JSON, JSONObject
from clipsearch.model.preprocess import INTERPOLATIONS, RESIZE_MODES
from clipsearch.model.towers import TextTowerConfig

PreprocessCfg = dict[str, tuple[float, ...]]


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def count_indices(state_dict: Mapping[str, object], prefix: str) -> int:
    """How many distinct ``<prefix><i>.`` indices appear among the keys."""
    found = set()
    for key in state_dict:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return len(found)


def shape(state_dict: Mapping[str, object], key: str, source: str) -> tuple[int, ...]:
    """The shape of ``state_dict[key]``; CheckpointError naming the key if it is missing."""
    if key not in state_dict:
        raise CheckpointError(f"{source}: not a CLIP state dict in OpenAI's layout: no {key!r}")
    value = state_dict[key]
    dims = getattr(value, "shape", None)
    if dims is None:
        raise CheckpointError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor")
    return tuple(int(s) for s in dims)


def positive_int(value: object, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CheckpointError(f"{source}: {what} must be a positive integer, got {value!r}")
    return value


def config_int(value: object) -> int:
    """``int(value)`` of a config value: a number or a numeric string; TypeError for anything
    else (a list, an object, null), as ``int()`` raises."""
    if isinstance(value, (int, float, str)):
        return int(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------


def model_cfg(data: Mapping[str, object], source: str) -> tuple[JSONObject, JSONObject, JSONObject]:
    """``(model_cfg, vision_cfg, text_cfg)`` of an ``open_clip_config.json``'s content."""
    cfg = data.get("model_cfg", data)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: model_cfg must be an object")
    vision_cfg, text_cfg = cfg.get("vision_cfg"), cfg.get("text_cfg")
    if not isinstance(vision_cfg, dict) or not isinstance(text_cfg, dict):
        raise CheckpointError(
            f"{source}: expected model_cfg.vision_cfg and model_cfg.text_cfg objects"
        )
    return cfg, vision_cfg, text_cfg


def timm_tower(
    vision_cfg: Mapping[str, object], folder: Path, source: str
) -> tuple[str, JSONObject]:
    """``(architecture, model_args)`` of the timm image tower a config names. The name may be
    ``local-dir:PATH``, timm's folder format: ``PATH/config.json`` gives the real
    ``architecture`` and the ``model_args`` overriding its defaults."""
    name = vision_cfg.get("timm_model_name")
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{source}: vision_cfg.timm_model_name must be a model name")
    if name.startswith("local-dir:"):
        tower = (folder / name[len("local-dir:") :]).resolve()
        cfg = read_json(tower / "config.json")
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


def image_size(
    vision_cfg: Mapping[str, object], args: Mapping[str, object], source: str
) -> int | None:
    """The (square) input side a config or timm's ``model_args`` give; None if neither does."""
    size = args.get("img_size", vision_cfg.get("image_size"))
    if size is None:
        return None
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise CheckpointError(f"{source}: only square images are supported, got {size}")
        size = size[0]
    return positive_int(size, "image_size", source)


def tokenizer_clean(text_cfg: Mapping[str, object], source: str) -> str:
    """``text_cfg.tokenizer_kwargs.clean``, open_clip's text cleaning ("whitespace" by default)."""
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(f"{source}: text_cfg.tokenizer_kwargs must be an object")
    return str(kwargs.get("clean", "whitespace"))


def activation_name(cfg: Mapping[str, object], quick_gelu: bool) -> str:
    act_kwargs = cfg.get("act_kwargs") or {}
    if isinstance(act_kwargs, dict) and act_kwargs.get("approximate") == "tanh":
        return "gelu_tanh"
    return "quick_gelu" if quick_gelu else "gelu"


def text_tower_config(
    state: Mapping[str, object], text_cfg: Mapping[str, object], quick_gelu: bool, source: str
) -> tuple[TextTowerConfig, int]:
    """open_clip's TextTransformer (under ``text.``) from shapes + config; and embed_dim."""
    context_length, width = shape(state, "text.positional_embedding", source)
    vocab_size = shape(state, "text.token_embedding.weight", source)[0]
    layers = count_indices(state, "text.transformer.resblocks.")
    if layers == 0:
        raise CheckpointError(
            f"{source}: no text transformer blocks (text.transformer.resblocks.N)"
        )
    mlp_dim = shape(state, "text.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
    proj_bias = "text.text_projection.bias" in state
    if proj_bias:
        embed_dim = shape(state, "text.text_projection.weight", source)[0]
    else:
        embed_dim = shape(state, "text.text_projection", source)[1]
    norm_kwargs = text_cfg.get("norm_kwargs") or {}
    eps = norm_kwargs.get("eps", 1e-5) if isinstance(norm_kwargs, dict) else 1e-5
    heads = text_cfg.get("heads", max(1, width // 64))
    try:
        cfg = TextTowerConfig(
            context_length=context_length,
            vocab_size=vocab_size,
            width=width,
            heads=positive_int(heads, "text_cfg.heads", source),
            layers=layers,
            mlp_dim=mlp_dim,
            causal=not bool(text_cfg.get("no_causal_mask", False)),
            pool=str(text_cfg.get("pool_type", "argmax")),
            proj_bias=proj_bias,
            eps=float(eps),
            act=activation_name(text_cfg, quick_gelu),
        )
    except ModelError as exc:
        raise CheckpointError(f"{source}: unsupported text tower: {exc}") from exc
    return cfg, embed_dim


def hf_text_config(
    folder: Path,
    name: object,
    source: str,
    from_shapes: Callable[[], Mapping[str, JSON] | None],
    known: str,
) -> JSONObject:
    """The transformers ``config.json`` of the text tower ``text_cfg.hf_model_name`` names: the
    file in the folder it points to, else ``from_shapes()`` (a config rebuilt from the weights,
    or None where the name is not one of ``known``)."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{source}: text_cfg.hf_model_name must name a transformers model")
    hf_dir = (folder / name).resolve()
    if (hf_dir / "config.json").is_file():
        return read_json(hf_dir / "config.json")
    config = from_shapes()
    if config is None:
        raise CheckpointError(
            f"{source}: the text tower {name!r} needs its transformers config.json: put the "
            f"model's config.json in a folder beside the weights and set hf_model_name to it "
            f"(known without one: {known})"
        )
    return dict(config)


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def preprocess_cfg(data: object, source: str) -> PreprocessCfg:
    """``{"mean", "std"}`` of a config's ``preprocess_cfg`` (OpenAI's where absent), checked."""
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


def apply_preprocess(model: EmbeddingModel, data: Mapping[str, object], source: str) -> None:
    """Set the model's mean/std, resize mode and filter from a config's ``preprocess_cfg``
    (the family's own where the config is silent)."""
    pre = data.get("preprocess_cfg") or {}
    if not isinstance(pre, dict):
        raise CheckpointError(f"{source}: preprocess_cfg must be an object")
    defaults = model.preprocess_cfg
    model.preprocess_cfg = preprocess_cfg(
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
