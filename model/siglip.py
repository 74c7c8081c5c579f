"""SigLIP and SigLIP 2: a ViT without class token pooled by attention, a non-causal text tower
read at its last position, and a sigmoid score.

As open_clip builds ``ViT-B-16-SigLIP`` / ``ViT-B-16-SigLIP2`` (``CustomTextCLIP``):

- image tower: timm's ``vit_*_siglip_*`` ViT. Patches (a biased conv) plus learnt position
  embeddings, pre-norm blocks (LayerNorm eps 1e-6, exact GELU), a final LayerNorm, then the
  multi-head attention-pooling ("MAP") head: one learnt latent query attends over every patch
  token, followed by a residual MLP. No projection: the feature is the head's output, so
  ``embed_dim`` is the tower's width.
- text tower: :class:`~model.towers.TextTransformer` without causal mask, the feature read at
  the last position (texts are padded to the full 64 tokens, so that is always the same slot),
  LayerNorm eps 1e-6, a biased linear projection; SigLIP 2 uses tanh-approximate GELU in it.
- ``logit_scale`` and ``logit_bias``: the probability that an image and a text match is
  ``sigmoid(exp(logit_scale) * cos + logit_bias)`` (:meth:`SigLIP.score`).
- preprocessing: the whole image squashed to R x R (bicubic), mean = std = 0.5.
- tokenizer: the hub folder's ``tokenizer.json`` (T5 SentencePiece for SigLIP, Gemma for
  SigLIP 2) with open_clip's "canonicalize" cleaning (:mod:`model.hub_tokenizer`).

Parameters are named as :class:`~model.clip.Transformer` names them (``visual.transformer.
resblocks.N.ln_1`` ...); :func:`from_open_clip_state` renames timm's (``visual.trunk.blocks.N.
norm1``, ``attn.qkv``, ``mlp.fc1`` ...), which is how open_clip hub folders store them.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipsearch.model import hub_config as hub
from clipsearch.model.base import TwoTowerModel
from clipsearch.model.clip import (
    Activation,
    LayerNorm,
    Transformer,
    check_positive_int,
    dataclass_from,
)
from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.family_registry import Family, register
from clipsearch.model.json_types import JSONObject
from clipsearch.model.towers import TextTowerConfig, TextTransformer, activation

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass
class SigLIPVisionConfig:
    """timm's SigLIP ViT with the MAP head."""

    image_size: int = 224  # input side R
    patch_size: int = 16  # patch side P; the grid is R // P (384 / 14 -> 27: the rest is unused)
    width: int = 768  # token width D (also the feature width: no projection)
    layers: int = 12  # transformer blocks
    heads: int = 12  # attention heads of the blocks and of the MAP head
    mlp_dim: int = 3072  # hidden width of each block's MLP and of the MAP head's MLP
    eps: float = 1e-6  # LayerNorm epsilon
    act: str = "gelu"  # key of model.towers.ACTIVATIONS

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "width", "layers", "heads", "mlp_dim"):
            check_positive_int("vision", name, getattr(self, name))
        if self.width % self.heads:
            raise ModelError(f"vision.heads={self.heads} does not divide width={self.width}")
        if self.image_size < self.patch_size:
            raise ModelError(
                f"vision.image_size={self.image_size} is smaller than a patch ({self.patch_size})"
            )
        activation(self.act)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def _siglip_text_default() -> TextTowerConfig:
    return TextTowerConfig(
        context_length=64,
        vocab_size=32000,
        width=768,
        heads=12,
        layers=12,
        mlp_dim=3072,
        causal=False,
        pool="last",
        proj_bias=True,
        eps=1e-6,
    )


@dataclass
class SigLIPConfig:
    """A whole SigLIP (or SigLIP 2: ``text.act == "gelu_tanh"``)."""

    embed_dim: int = 768  # the joint space: the image tower's width, the text projection's output
    vision: SigLIPVisionConfig = field(default_factory=SigLIPVisionConfig)
    text: TextTowerConfig = field(default_factory=_siglip_text_default)
    text_clean: str = "canonicalize"  # open_clip's tokenizer_kwargs.clean

    def __post_init__(self) -> None:
        check_positive_int("config", "embed_dim", self.embed_dim)
        if self.embed_dim != self.vision.width:
            raise ModelError(
                f"a SigLIP image feature is its tower's width ({self.vision.width}); "
                f"embed_dim={self.embed_dim} differs"
            )

    @property
    def context_length(self) -> int:
        return self.text.context_length

    def to_dict(self) -> JSONObject:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> SigLIPConfig:
        if not isinstance(data, dict):
            raise ModelError(f"a SigLIP config must be a JSON object, got {type(data).__name__}")
        vision = dataclass_from(SigLIPVisionConfig, data.get("vision", {}), "vision")
        text = dataclass_from(TextTowerConfig, data.get("text", {}), "text")
        rest = {k: v for k, v in data.items() if k not in ("vision", "text")}
        unknown = set(rest) - {"embed_dim", "text_clean"}
        if unknown:
            raise ModelError(f"unknown SigLIP config keys: {sorted(unknown)}")
        return cls(vision=vision, text=text, **rest)


class MAPHead(nn.Module):
    """Multi-head attention pooling: a learnt latent query attends over the tokens, then a
    residual MLP on the pooled vector. [N, L, D] -> [N, D]."""

    def __init__(self, width: int, heads: int, mlp_dim: int, act: Activation, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.latent = nn.Parameter(torch.zeros(1, 1, width))
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.norm = LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(width, mlp_dim)),
                    ("act", act()),
                    ("fc2", nn.Linear(mlp_dim, width)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape  # [N, L, D]
        head_dim = width // self.heads
        q = (
            self.q(self.latent).view(1, self.heads, 1, head_dim).expand(n, -1, -1, -1)
        )  # [N, H, 1, D/H]
        kv = self.kv(x).view(n, length, 2, self.heads, head_dim)  # [N, L, 2, H, D/H]
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, H, L, D/H]
        pooled = F.scaled_dot_product_attention(q, k, v)  # [N, H, 1, D/H]
        pooled = self.proj(pooled.reshape(n, width))  # [N, D]
        return pooled + self.mlp(self.norm(pooled))


class SigLIPVisionTransformer(nn.Module):
    """Patches + position embeddings -> transformer -> LayerNorm -> MAP head. [N, 3, R, R] -> [N, D]."""

    def __init__(self, cfg: SigLIPVisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        act = activation(cfg.act)
        self.patch_embed = nn.Conv2d(
            3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.grid * cfg.grid, cfg.width))
        self.transformer = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_dim / cfg.width, act, eps=cfg.eps
        )
        self.norm = LayerNorm(cfg.width, eps=cfg.eps)
        self.attn_pool = MAPHead(cfg.width, cfg.heads, cfg.mlp_dim, act, cfg.eps)
        if not self.pos_embed.is_meta:
            nn.init.normal_(self.pos_embed, std=cfg.width**-0.5)
            nn.init.normal_(self.attn_pool.latent, std=cfg.width**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # [N, D, G, G]
        x = x.flatten(2).transpose(1, 2) + self.pos_embed  # [N, G*G, D]
        x = self.transformer(x)
        return self.attn_pool(self.norm(x))  # [N, D]


class SigmoidScoring(TwoTowerModel):
    """Pair logits and match probabilities from ``logit_scale`` and ``logit_bias``: what every
    sigmoid-trained model (SigLIP, NLLB-SigLIP) shares, with SigLIP's preprocessing (the whole
    image squashed to R x R, bicubic, mean = std = 0.5)."""

    score_kind = "sigmoid"
    mean = SIGLIP_MEAN
    std = SIGLIP_STD
    default_resize_mode = "squash"
    logit_scale: nn.Parameter
    logit_bias: nn.Parameter

    def _init_logits(self) -> None:
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Pair logits [N_img, N_txt]: exp(logit_scale) * cos + logit_bias (sigmoid -> probability)."""
        img = F.normalize(self.encode_image(pixels), dim=-1)
        txt = F.normalize(self.encode_text(tokens), dim=-1)
        return self.logit_scale.exp() * img @ txt.t() + self.logit_bias

    def score(self, cosine: np.ndarray | torch.Tensor | float) -> np.ndarray:
        """The probability that pairs with these cosines match: sigmoid(exp(scale) * cos + bias)."""
        values = torch.as_tensor(np.asarray(cosine, dtype=np.float32))
        scale = float(self.logit_scale.detach().float().exp())
        bias = float(self.logit_bias.detach().float())
        return torch.sigmoid(values * scale + bias).numpy().astype(np.float32, copy=False)


class SigLIP(SigmoidScoring):
    """SigLIP / SigLIP 2; the public surface is :class:`~model.base.EmbeddingModel`'s."""

    family = "siglip"
    config_class = SigLIPConfig
    token_length = "exact"  # read at the last position: texts padded to context_length

    def __init__(self, config: SigLIPConfig, tokenizer_dir: str | Path | None = None) -> None:
        super().__init__(config, tokenizer_dir)
        self.visual = SigLIPVisionTransformer(config.vision)
        self.text = TextTransformer(config.text, config.embed_dim)
        self._init_logits()


# --------------------------------------------------------------------------------------------
# open_clip / timm parameter names
# --------------------------------------------------------------------------------------------

_BLOCK_RENAMES = (
    ("norm1.", "ln_1."),
    ("norm2.", "ln_2."),
    ("attn.qkv.weight", "attn.in_proj_weight"),
    ("attn.qkv.bias", "attn.in_proj_bias"),
    ("attn.proj.", "attn.out_proj."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
)
_BLOCK_KEY = re.compile(r"^visual\.trunk\.blocks\.(\d+)\.(.*)$")


def from_open_clip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's names (timm's under ``visual.trunk.``) -> :class:`SigLIP`'s. Keys it does not
    know are kept as they are, so a strict comparison reports them."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        match = _BLOCK_KEY.match(key)
        if match:
            rest = match.group(2)
            for old, repl in _BLOCK_RENAMES:
                if rest.startswith(old):
                    rest = repl + rest[len(old) :]
                    break
            new = f"visual.transformer.resblocks.{match.group(1)}.{rest}"
        elif key.startswith("visual.trunk.patch_embed.proj."):
            new = "visual.patch_embed." + key[len("visual.trunk.patch_embed.proj.") :]
        elif key.startswith("visual.trunk.") and key.split(".")[2] in (
            "pos_embed",
            "norm",
            "attn_pool",
        ):
            new = "visual." + key[len("visual.trunk.") :]
        out[new] = value
    return out


def vision_heads(width: int) -> int:
    """The head count of timm's SigLIP ViTs of this width (not in a state dict): B 768 -> 12,
    L 1024 -> 16, SO400M 1152 -> 16, g-opt 1536 -> 16; otherwise width // 64."""
    return {768: 12, 1024: 16, 1152: 16, 1536: 16}.get(width, max(1, width // 64))


# --------------------------------------------------------------------------------------------
# From an OpenCLIP hub folder
# --------------------------------------------------------------------------------------------


def check_map_pool(arch: str, vision_cfg: Mapping[str, object], source: str) -> None:
    """Refuse a SigLIP tower pooled by global average: only the attention-pool head is built."""
    if "_gap_" in arch or vision_cfg.get("timm_pool", "map") not in ("map", None, ""):
        raise CheckpointError(
            f"{source}: {arch} with global average pooling is not supported; SigLIP "
            "towers with the attention-pool ('map') head are"
        )


def _recognises(
    arch: str | None, vision_cfg: Mapping[str, object], text_cfg: Mapping[str, object], source: str
) -> bool:
    if arch is None or "siglip" not in arch or text_cfg.get("hf_model_name"):
        return False  # beside a Hugging Face text tower: NLLB-SigLIP (model.nllb)
    check_map_pool(arch, vision_cfg, source)
    return True


def vision_config(
    vision_cfg: Mapping[str, object], folder: Path, state: Mapping[str, torch.Tensor], source: str
) -> SigLIPVisionConfig:
    """timm's SigLIP ViT (renamed to our keys) from shapes + config."""
    _, args = hub.timm_tower(vision_cfg, folder, source)
    width, _, patch, _ = hub.shape(state, "visual.patch_embed.weight", source)
    positions = hub.shape(state, "visual.pos_embed", source)[1]
    grid = round(positions**0.5)
    if grid * grid != positions:
        raise CheckpointError(f"{source}: visual.pos_embed has {positions} positions, not a grid")
    image_size = hub.image_size(vision_cfg, args, source) or grid * patch
    if image_size // patch != grid:
        raise CheckpointError(
            f"{source}: image_size {image_size} with patch {patch} gives a {image_size // patch}"
            f"-grid, but the position embeddings are for a {grid}-grid"
        )
    layers = hub.count_indices(state, "visual.transformer.resblocks.")
    mlp_dim = hub.shape(state, "visual.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
    heads = args.get("num_heads", vision_heads(width))
    try:
        return SigLIPVisionConfig(
            image_size=image_size,
            patch_size=patch,
            width=width,
            layers=layers,
            heads=hub.positive_int(heads, "num_heads", source),
            mlp_dim=mlp_dim,
        )
    except ModelError as exc:
        raise CheckpointError(
            f"{source}: not a SigLIP image tower this loader supports: {exc}"
        ) from exc


def infer_config(
    data: Mapping[str, object], folder: Path, state: Mapping[str, torch.Tensor], source: str
) -> SigLIPConfig:
    """The architecture of an open_clip SigLIP (keys renamed by :func:`from_open_clip_state`):
    shapes, plus the config's head counts, image size, activation and text cleaning."""
    model_cfg, vision_cfg, text_cfg = hub.model_cfg(data, source)
    vision = vision_config(vision_cfg, folder, state, source)
    quick_gelu = bool(model_cfg.get("quick_gelu", False))
    text, embed_dim = hub.text_tower_config(state, text_cfg, quick_gelu, source)
    clean = hub.tokenizer_clean(text_cfg, source)
    try:
        return SigLIPConfig(embed_dim=embed_dim, vision=vision, text=text, text_clean=clean)
    except ModelError as exc:
        raise CheckpointError(f"{source}: not a SigLIP this loader supports: {exc}") from exc


FAMILY = register(
    Family(
        model=SigLIP,
        recognises=_recognises,
        convert_state=from_open_clip_state,
        infer_config=infer_config,
        timm_towers="SigLIP ViTs (vit_*_siglip_*)",
    )
)
