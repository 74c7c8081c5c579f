"""CLIP with a Hugging Face text tower: multilingual CLIP such as open_clip's
``xlm-roberta-base-ViT-B-32`` (``CustomTextCLIP`` with an ``HFTextEncoder``).

- image tower: CLIP's own :class:`~model.clip.VisionTransformer` (exact GELU unless the config
  asks for QuickGELU), heads from ``vision_cfg.head_width`` (64 by default);
- text tower: the transformers model (XLM-RoBERTa) built with ``transformers`` from its config:
  the ``config.json`` of the folder ``text_cfg.hf_model_name`` points to, or, for a hub name
  such as ``xlm-roberta-base`` (whose config cannot be fetched offline), one inferred from the
  weights' shapes; no pooling layer. Its output is pooled as open_clip's ``hf_pooler_type``
  says: ``mean_pooler`` (the mean over non-pad tokens; pad = the config's ``pad_token_id``),
  ``cls_pooler`` (the first token); then projected by ``hf_proj_type``: ``mlp`` (Linear ->
  GELU -> Linear, no biases, hidden (d + e) // 2) or ``linear`` (no bias);
- tokenizer: the folder's ``tokenizer.json`` with open_clip's "whitespace" cleaning (cased).

``transformers`` is an optional dependency: ``pip install 'clipsearch[multilingual]'``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import torch
from torch import nn

from clipsearch.model import hub_config as hub
from clipsearch.model.base import TwoTowerModel
from clipsearch.model.clip import (
    QuickGELU,
    VisionConfig,
    VisionTransformer,
    check_positive_int,
    dataclass_from,
)
from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.family_registry import Family, register
from clipsearch.model.json_types import JSONObject

POOLERS = ("mean_pooler", "cls_pooler")
PROJECTIONS = ("mlp", "linear")
# transformers model types whose configuration can be rebuilt from tensor shapes.
_SHAPE_CONFIGS = ("xlm-roberta", "roberta")


def _transformers() -> ModuleType:
    try:
        import transformers  # optional (the multilingual extra), and slow to import
    except ImportError as exc:
        raise ModelError(
            "this model's text tower is a Hugging Face transformers model; install the extra: "
            "pip install 'clipsearch[multilingual]' (or pip install transformers)"
        ) from exc
    return transformers


@dataclass
class HFTextCLIPConfig:
    """A CLIP ViT with a transformers text tower."""

    embed_dim: int = 512  # the joint embedding width
    vision: VisionConfig = field(default_factory=VisionConfig)
    quick_gelu: bool = False  # the image tower's activation
    hf_config: dict[str, Any] = field(default_factory=dict)  # the transformers config.json
    pooler: str = "mean_pooler"  # open_clip's hf_pooler_type
    proj: str = "mlp"  # open_clip's hf_proj_type
    text_clean: str = "whitespace"  # open_clip's tokenizer_kwargs.clean
    context_length: int = 77  # tokens per text

    def __post_init__(self) -> None:
        check_positive_int("config", "embed_dim", self.embed_dim)
        check_positive_int("config", "context_length", self.context_length)
        if self.vision.is_resnet:
            raise ModelError("a ResNet image tower with a Hugging Face text tower is not supported")
        if self.pooler not in POOLERS:
            raise ModelError(f"hf pooler must be one of {POOLERS}, got {self.pooler!r}")
        if self.proj not in PROJECTIONS:
            raise ModelError(f"hf projection must be one of {PROJECTIONS}, got {self.proj!r}")
        if not isinstance(self.hf_config, dict) or "model_type" not in self.hf_config:
            raise ModelError("hf_config must be a transformers config with a model_type")

    @property
    def text_width(self) -> int:
        return hf_width(self.hf_config)

    @property
    def pad_id(self) -> int:
        return int(self.hf_config.get("pad_token_id", 1))

    def to_dict(self) -> JSONObject:
        out = asdict(self)
        return out

    @classmethod
    def from_dict(cls, data: object) -> HFTextCLIPConfig:
        if not isinstance(data, dict):
            raise ModelError(f"an HF-text config must be a JSON object, got {type(data).__name__}")
        vision = dataclass_from(VisionConfig, data.get("vision", {}), "vision")
        rest = {k: v for k, v in data.items() if k != "vision"}
        known = {"embed_dim", "quick_gelu", "hf_config", "pooler", "proj", "text_clean"}
        unknown = set(rest) - known - {"context_length"}
        if unknown:
            raise ModelError(f"unknown HF-text config keys: {sorted(unknown)}")
        return cls(vision=vision, **rest)


def hf_width(hf_config: Mapping[str, object]) -> int:
    """The token width of a transformers config (``hidden_size``; ``d_model`` for M2M100/NLLB)."""
    for key in ("hidden_size", "d_model"):
        if key in hf_config:
            return hub.config_int(hf_config[key])
    raise ModelError("the transformers config names no hidden_size or d_model")


def build_text_model(hf_config: Mapping[str, object]) -> nn.Module:
    """The transformers encoder (no pooling layer) for a config dict, randomly initialised.
    For an encoder-decoder config (NLLB's M2M100) the encoder alone, as open_clip keeps it."""
    transformers = _transformers()
    params = {k: v for k, v in hf_config.items() if k not in ("model_type", "transformers_version")}
    try:
        config = transformers.AutoConfig.for_model(str(hf_config["model_type"]), **params)
        if getattr(config, "is_encoder_decoder", False):
            # Only the encoder is kept: build the decoder empty rather than allocate it.
            if hasattr(config, "decoder_layers"):
                config.decoder_layers = 0
            return transformers.AutoModel.from_config(config).get_encoder()  # type: ignore[no-any-return]
        kwargs = {"add_pooling_layer": False} if "roberta" in config.model_type else {}
        return transformers.AutoModel.from_config(config, **kwargs)  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot build the transformers text tower: {exc}") from exc


class HFTextCLIP(TwoTowerModel):
    """CLIP ViT + transformers text tower; the surface is :class:`~model.base.EmbeddingModel`'s."""

    family = "hf-text"
    config_class = HFTextCLIPConfig

    def __init__(self, config: HFTextCLIPConfig, tokenizer_dir: str | Path | None = None) -> None:
        super().__init__(config, tokenizer_dir)
        v = config.vision
        assert v.patch_size is not None and isinstance(v.layers, int)
        act = QuickGELU if config.quick_gelu else nn.GELU
        self.visual = VisionTransformer(
            v.image_size,
            v.patch_size,
            v.width,
            v.layers,
            v.heads,
            config.embed_dim,
            v.mlp_ratio,
            act,
        )
        self.text = HFTextEncoder(config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class HFTextFields(Protocol):
    """The text fields of a config with a transformers text tower."""

    @property
    def hf_config(self) -> Mapping[str, object]: ...
    @property
    def pooler(self) -> str: ...
    @property
    def proj(self) -> str: ...
    @property
    def pad_id(self) -> int: ...
    @property
    def text_width(self) -> int: ...
    @property
    def embed_dim(self) -> int: ...


class HFTextEncoder(nn.Module):
    """transformers encoder -> pooled [N, D] -> projection [N, E]. Names as open_clip's
    (``transformer.*``, ``proj.*``). ``config``: an :class:`HFTextCLIPConfig` or any config with
    its text fields (``hf_config``, ``pooler``, ``proj``, ``pad_id``, ``text_width``,
    ``embed_dim``), such as :class:`model.nllb.NLLBSigLIPConfig`."""

    def __init__(self, config: HFTextFields) -> None:
        super().__init__()
        self.pooler = config.pooler
        self.pad_id = config.pad_id
        self.transformer = build_text_model(config.hf_config)
        d, e = config.text_width, config.embed_dim
        self.proj: nn.Module
        if config.proj == "mlp":
            hidden = (d + e) // 2
            self.proj = nn.Sequential(
                nn.Linear(d, hidden, bias=False), nn.GELU(), nn.Linear(hidden, e, bias=False)
            )
        else:
            self.proj = nn.Linear(d, e, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, L] -> [N, E]
        mask = (tokens != self.pad_id).long()  # [N, L]
        hidden = self.transformer(input_ids=tokens, attention_mask=mask).last_hidden_state
        if self.pooler == "mean_pooler":  # the mean over the text's own (non-pad) tokens
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # [N, L, 1]
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        else:  # cls_pooler: the first token
            pooled = hidden[:, 0]
        return self.proj(pooled)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# From an OpenCLIP hub folder
# --------------------------------------------------------------------------------------------


def _shape_config(model_type: str, state: Mapping[str, torch.Tensor], source: str) -> JSONObject:
    """A RoBERTa-family transformers config from the weights' shapes (XLM-R base/large)."""
    prefix = "text.transformer."
    vocab, hidden = hub.shape(state, prefix + "embeddings.word_embeddings.weight", source)
    positions = hub.shape(state, prefix + "embeddings.position_embeddings.weight", source)[0]
    types = hub.shape(state, prefix + "embeddings.token_type_embeddings.weight", source)[0]
    inter = hub.shape(state, prefix + "encoder.layer.0.intermediate.dense.weight", source)[0]
    return {
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": hub.count_indices(state, prefix + "encoder.layer."),
        "num_attention_heads": max(1, hidden // 64),
        "intermediate_size": inter,
        "max_position_embeddings": positions,
        "type_vocab_size": types,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }


def infer_config(
    data: Mapping[str, object], folder: Path, state: Mapping[str, torch.Tensor], source: str
) -> HFTextCLIPConfig:
    """The architecture of an open_clip CustomTextCLIP with an HF text tower: the vision tower
    from shapes, the text tower from its transformers config (or shapes), projection from keys."""
    model_cfg, vision_cfg, text_cfg = hub.model_cfg(data, source)
    # Image tower: as CLIP's, from shapes; heads from head_width.
    if "visual.proj" not in state:
        raise CheckpointError(f"{source}: expected a CLIP ViT image tower (no 'visual.proj')")
    width, _, patch, _ = hub.shape(state, "visual.conv1.weight", source)
    positions = hub.shape(state, "visual.positional_embedding", source)[0]
    grid = round((positions - 1) ** 0.5)
    if grid * grid != positions - 1:
        raise CheckpointError(f"{source}: visual.positional_embedding is not a square grid + 1")
    head_width = vision_cfg.get("head_width", 64)
    hidden = hub.shape(state, "visual.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
    embed_dim = hub.shape(state, "visual.proj", source)[1]
    # Text tower.
    name = text_cfg.get("hf_model_name")

    def from_shapes() -> JSONObject | None:
        assert isinstance(name, str)
        model_type = next((t for t in _SHAPE_CONFIGS if name.lower().startswith(t)), None)
        return None if model_type is None else _shape_config(model_type, state, source)

    hf_config = hub.hf_text_config(
        folder, name, source, from_shapes, f"{', '.join(_SHAPE_CONFIGS)} models"
    )
    if "text.proj.0.weight" in state:
        proj = "mlp"
    elif "text.proj.weight" in state:
        proj = "linear"
    else:
        raise CheckpointError(f"{source}: no text projection (text.proj.*) in the weights")
    clean = hub.tokenizer_clean(text_cfg, source)
    try:
        vision = VisionConfig(
            image_size=grid * patch,
            width=width,
            layers=hub.count_indices(state, "visual.transformer.resblocks."),
            patch_size=patch,
            heads=width // hub.config_int(head_width),
            mlp_ratio=hidden / width,
        )
        return HFTextCLIPConfig(
            embed_dim=embed_dim,
            vision=vision,
            quick_gelu=bool(model_cfg.get("quick_gelu", False)),
            hf_config=hf_config,
            pooler=str(text_cfg.get("hf_pooler_type", "mean_pooler")),
            proj=str(text_cfg.get("hf_proj_type", proj)),
            text_clean=clean,
            context_length=hub.config_int(text_cfg.get("context_length", 77)),
        )
    except (ModelError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: unsupported HF-text CLIP: {exc}") from exc


def _recognises(
    arch: str | None, vision_cfg: Mapping[str, object], text_cfg: Mapping[str, object], source: str
) -> bool:
    return arch is None and bool(text_cfg.get("hf_model_name"))


def _same_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return state  # open_clip's names are ours


FAMILY = register(
    Family(
        model=HFTextCLIP,
        recognises=_recognises,
        convert_state=_same_names,
        infer_config=infer_config,
        build_on_meta=False,
    )
)
