"""MobileCLIP / MobileCLIP2: the FastViT "MCi" image towers with reparameterisable branches, and
open_clip's non-causal text tower read at the end token.

The image tower is timm's ``fastvit_mci*`` as open_clip uses it (its classifier head is the
projection into the joint space). Parameter names are timm's, under ``visual.`` (the hub folder
has them under ``visual.trunk.``):

- ``stem``: three :class:`MobileOneBlock` (3x3 stride 2, depthwise 3x3 stride 2, 1x1);
- ``stages.i``: an optional ``downsample`` (:class:`PatchEmbed`: a depthwise 7x7 stride-2
  :class:`LargeKernelConv` with a 3x3 branch and squeeze-excite in the later stages, then a 1x1
  MobileOne block), an optional ``pos_emb`` (:class:`RepCPE`, a 7x7 depthwise conditional
  position encoding), and blocks: :class:`RepMixerBlock` (depthwise mixing) in the early stages,
  :class:`AttentionBlock` (multi-head self-attention over the feature map, head width 32) in the
  last; each with a convolutional MLP and layer scales;
- ``final_conv``: a depthwise MobileOne block doubling the channels, with squeeze-excite;
- ``head.fc``: average pool -> linear to ``embed_dim``.

Every multi-branch module (MobileOne's identity/kxk/scale branches with their BatchNorms, the
large-kernel conv's 7x7 + 3x3 branches, RepMixer's mixer - norm, the position encoding's skip)
computes a linear function of its input that one convolution can compute (:mod:`model.reparam`).
Checkpoints hold the training-time branches; :meth:`MobileCLIP.fold` replaces each module's
branches by that single convolution (``reparam_conv``) for inference: the same features, less
work. ``model.load``
returns folded models; ``model.families.load_open_clip_folder(..., fold=False)`` keeps the
branches.

Preprocessing: shortest-side resize (bilinear) and center crop, mean 0 and std 1. Tokenizer:
OpenAI's BPE (model.tokenizer), 77 tokens, zero padded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clipsearch.model import hub_config as hub
from clipsearch.model.base import TwoTowerModel
from clipsearch.model.clip import check_positive_int, dataclass_from
from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.family_registry import Family, register
from clipsearch.model.fingerprint import FINGERPRINT_ATTR
from clipsearch.model.json_types import JSONObject
from clipsearch.model.reparam import (
    ConvBN,
    LargeKernelConv,
    LayerScale2d,
    MobileOneBlock,
    RepCPE,
    RepMixer,
    SqueezeExcite,
    fold_bn,
    identity_kernel,
)
from clipsearch.model.towers import TextTowerConfig, TextTransformer

# The reparameterisable blocks live in model.reparam; their names stay importable from here.
__all__ = [
    "ConvBN",
    "FastViT",
    "FastViTConfig",
    "LargeKernelConv",
    "LayerScale2d",
    "MobileCLIP",
    "MobileCLIPConfig",
    "MobileOneBlock",
    "RepCPE",
    "RepMixer",
    "SqueezeExcite",
    "fold_bn",
    "from_open_clip_state",
    "identity_kernel",
    "infer_config",
]

MOBILECLIP_MEAN = (0.0, 0.0, 0.0)
MOBILECLIP_STD = (1.0, 1.0, 1.0)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class FastViTConfig:
    """A FastViT MCi image tower (timm ``fastvit_mci0`` .. ``fastvit_mci4``)."""

    image_size: int = 256  # input side R (any size works: the tower is convolutional + pooled)
    layers: tuple[int, ...] = (2, 6, 10, 2)  # blocks per stage
    embed_dims: tuple[int, ...] = (64, 128, 256, 512)  # channels per stage
    mlp_ratio: float = 3.0  # hidden channels of each block's conv MLP, as a multiple
    token_mixers: tuple[str, ...] = ("repmixer", "repmixer", "repmixer", "attention")
    pos_embs: tuple[bool, ...] = (False, False, False, True)  # a RepCPE before the stage's blocks
    se_downsamples: tuple[bool, ...] = (False, False, True, True)  # squeeze-excite in downsample
    stem_scale_branch: bool = True  # the stem's MobileOne blocks have a 1x1 scale branch
    attn_norm: str = (
        "batchnorm"  # norm before attention: "batchnorm" (MCi0-2), "layernorm" (MCi3-4)
    )
    lkc_act: bool = True  # GELU after the downsample's large-kernel conv (all MCi towers)
    folded: bool = False  # branches folded into single convolutions (inference form)

    def __post_init__(self) -> None:
        for name in ("layers", "embed_dims", "token_mixers", "pos_embs", "se_downsamples"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        n = len(self.layers)
        check_positive_int("vision", "image_size", self.image_size)
        if n == 0 or any(
            len(getattr(self, k)) != n
            for k in ("embed_dims", "token_mixers", "pos_embs", "se_downsamples")
        ):
            raise ModelError("vision: layers, embed_dims, token_mixers, pos_embs, se_downsamples "
                             "need one entry per stage")  # fmt: skip
        for d in (*self.layers, *self.embed_dims):
            check_positive_int("vision", "layers/embed_dims[i]", d)
        if any(m not in ("repmixer", "attention") for m in self.token_mixers):
            raise ModelError(f"vision.token_mixers: repmixer or attention, got {self.token_mixers}")
        if self.attn_norm not in ("batchnorm", "layernorm"):
            raise ModelError(f"vision.attn_norm: batchnorm or layernorm, got {self.attn_norm!r}")
        for d, mixer in zip(self.embed_dims, self.token_mixers, strict=True):
            if mixer == "attention" and d % 32:
                raise ModelError(f"vision: attention stages need channels divisible by 32, got {d}")

    @property
    def features(self) -> int:
        return 2 * self.embed_dims[-1]  # final_conv doubles the channels


@dataclass
class MobileCLIPConfig:
    """A whole MobileCLIP."""

    embed_dim: int = 512  # the joint embedding width
    vision: FastViTConfig = field(default_factory=FastViTConfig)
    text: TextTowerConfig = field(default_factory=lambda: TextTowerConfig(mlp_dim=2048))

    def __post_init__(self) -> None:
        check_positive_int("config", "embed_dim", self.embed_dim)

    @property
    def context_length(self) -> int:
        return self.text.context_length

    def to_dict(self) -> JSONObject:
        out = asdict(self)
        for key, value in out["vision"].items():
            if isinstance(value, tuple):
                out["vision"][key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: object) -> MobileCLIPConfig:
        if not isinstance(data, dict):
            raise ModelError(
                f"a MobileCLIP config must be a JSON object, got {type(data).__name__}"
            )
        vision = dataclass_from(FastViTConfig, data.get("vision", {}), "vision")
        text = dataclass_from(TextTowerConfig, data.get("text", {}), "text")
        unknown = set(data) - {"embed_dim", "vision", "text"}
        if unknown:
            raise ModelError(f"unknown MobileCLIP config keys: {sorted(unknown)}")
        return cls(embed_dim=data.get("embed_dim", 512), vision=vision, text=text)


# --------------------------------------------------------------------------------------------
# FastViT
# --------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """A stage's downsampling: large-kernel stride-2 conv, then a 1x1 MobileOne block."""

    def __init__(self, cin: int, cout: int, use_se: bool, lkc_act: bool, folded: bool) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            LargeKernelConv(cin, cout, 7, 2, use_se, lkc_act, folded),
            MobileOneBlock(cout, cout, 1, folded=folded),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # type: ignore[no-any-return]


class ConvMlp(nn.Module):
    """Depthwise 7x7 conv-BN, then 1x1 expand, GELU, 1x1 project."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, 7, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))  # type: ignore[no-any-return]


class RepMixerBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, folded: bool) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim, folded=folded)
        self.mlp = ConvMlp(dim, hidden)
        self.layer_scale = LayerScale2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale(self.mlp(x))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an [N, C, H, W] map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class MapAttention(nn.Module):
    """Multi-head self-attention over the positions of a feature map (head width 32)."""

    def __init__(self, dim: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = dim // head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [N, HW, C]
        qkv = self.qkv(tokens).view(n, h * w, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, H, HW, C/H]
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, h * w, c)
        return self.proj(out).transpose(1, 2).reshape(n, c, h, w)  # type: ignore[no-any-return]


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, norm: str) -> None:
        super().__init__()
        self.norm: nn.Module = nn.BatchNorm2d(dim) if norm == "batchnorm" else LayerNorm2d(dim)
        self.token_mixer = MapAttention(dim)
        self.layer_scale_1 = LayerScale2d(dim)
        self.mlp = ConvMlp(dim, hidden)
        self.layer_scale_2 = LayerScale2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1(self.token_mixer(self.norm(x)))
        return x + self.layer_scale_2(self.mlp(x))


class FastViTStage(nn.Module):
    def __init__(self, cfg: FastViTConfig, i: int, cin: int) -> None:
        super().__init__()
        dim = cfg.embed_dims[i]
        hidden = int(dim * cfg.mlp_ratio)
        self.downsample: nn.Module = nn.Identity()
        if i > 0 or cin != dim:
            self.downsample = PatchEmbed(cin, dim, cfg.se_downsamples[i], cfg.lkc_act, cfg.folded)
        self.pos_emb: nn.Module = (
            RepCPE(dim, folded=cfg.folded) if cfg.pos_embs[i] else nn.Identity()
        )
        blocks: list[nn.Module] = []
        for _ in range(cfg.layers[i]):
            if cfg.token_mixers[i] == "repmixer":
                blocks.append(RepMixerBlock(dim, hidden, cfg.folded))
            else:
                blocks.append(AttentionBlock(dim, hidden, cfg.attn_norm))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pos_emb(self.downsample(x)))  # type: ignore[no-any-return]


class _Head(nn.Module):
    def __init__(self, features: int, output_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, output_dim)


class FastViT(nn.Module):
    """[N, 3, R, R] -> [N, E]: stem, stages, final conv, average pool, linear head."""

    def __init__(self, cfg: FastViTConfig, output_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        d0, sb, fd = cfg.embed_dims[0], cfg.stem_scale_branch, cfg.folded
        self.stem = nn.Sequential(
            MobileOneBlock(3, d0, 3, 2, scale_branch=sb, folded=fd),
            MobileOneBlock(d0, d0, 3, 2, depthwise=True, scale_branch=sb, folded=fd),
            MobileOneBlock(d0, d0, 1, 1, scale_branch=sb, folded=fd),
        )
        stages, cin = [], d0
        for i in range(len(cfg.layers)):
            stages.append(FastViTStage(cfg, i, cin))
            cin = cfg.embed_dims[i]
        self.stages = nn.Sequential(*stages)
        self.final_conv = MobileOneBlock(
            cin, cfg.features, 3, 1, depthwise=True, use_se=True, folded=fd
        )
        self.head = _Head(cfg.features, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_conv(self.stages(self.stem(x)))  # [N, 2C, R/64, R/64]
        return self.head.fc(x.mean(dim=(2, 3)))  # type: ignore[no-any-return]

    def fold(self) -> None:
        """Replace every module's training-time branches by its single equivalent convolution."""
        for module in list(self.modules()):
            if isinstance(module, (MobileOneBlock, LargeKernelConv, RepMixer, RepCPE)):
                module.fold()
        self.cfg.folded = True


# --------------------------------------------------------------------------------------------
# MobileCLIP
# --------------------------------------------------------------------------------------------


class MobileCLIP(TwoTowerModel):
    """MobileCLIP / MobileCLIP2; the surface is :class:`~model.base.EmbeddingModel`'s."""

    family = "mobileclip"
    config_class = MobileCLIPConfig
    mean = MOBILECLIP_MEAN
    std = MOBILECLIP_STD
    default_interpolation = "bilinear"
    tokenizer_kind = "clip-bpe"
    token_length = "at_most"

    config: MobileCLIPConfig
    visual: FastViT

    def __init__(self, config: MobileCLIPConfig, tokenizer_dir: str | Path | None = None) -> None:
        super().__init__(config, tokenizer_dir)
        self.visual = FastViT(config.vision, config.embed_dim)
        self.text = TextTransformer(config.text, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def is_folded(self) -> bool:
        return bool(self.config.vision.folded)

    def fold(self) -> MobileCLIP:
        """Fold the image tower's branches for inference (in place; returns self)."""
        with torch.no_grad():
            self.visual.fold()
        self.__dict__.pop(FINGERPRINT_ATTR, None)  # the weights changed form
        return self


# --------------------------------------------------------------------------------------------
# From an OpenCLIP hub folder
# --------------------------------------------------------------------------------------------


def from_open_clip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's names (timm's under ``visual.trunk.``) -> :class:`MobileCLIP`'s."""
    prefix = "visual.trunk."
    return {
        ("visual." + k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()
    }


def infer_config(
    data: Mapping[str, object], folder: Path, state: Mapping[str, torch.Tensor], source: str
) -> MobileCLIPConfig:
    """The architecture from the weights' shapes (stages, widths, mixers, SE, position
    encodings, norms), the config's image size and text options."""
    model_cfg, vision_cfg, text_cfg = hub.model_cfg(data, source)
    arch, args = hub.timm_tower(vision_cfg, folder, source)
    n_stages = hub.count_indices(state, "visual.stages.")
    if n_stages == 0:
        raise CheckpointError(f"{source}: no FastViT stages (visual.trunk.stages.N)")
    if any(k.endswith("reparam_conv.weight") for k in state):
        raise CheckpointError(
            f"{source}: a reparameterised FastViT; expected the training-time branches"
        )
    layers, dims, mixers, pos, se = [], [], [], [], []
    mlp_ratio = None
    for i in range(n_stages):
        p = f"visual.stages.{i}."
        layers.append(hub.count_indices(state, p + "blocks."))
        fc1 = hub.shape(state, p + "blocks.0.mlp.fc1.weight", source)
        dims.append(fc1[1])
        mlp_ratio = fc1[0] / fc1[1]
        mixers.append("attention" if p + "blocks.0.token_mixer.qkv.weight" in state else "repmixer")
        pos.append(p + "pos_emb.pos_enc.weight" in state)
        se.append(p + "downsample.proj.0.se.fc1.weight" in state)
    attn = [i for i, m in enumerate(mixers) if m == "attention"]
    norm = "batchnorm"
    if attn and f"visual.stages.{attn[0]}.blocks.0.norm.running_mean" not in state:
        norm = "layernorm"
    image_size = hub.image_size(vision_cfg, args, source) or 256
    text, embed_dim = hub.text_tower_config(
        state, text_cfg, bool(model_cfg.get("quick_gelu")), source
    )
    head = hub.shape(state, "visual.head.fc.weight", source)[0]
    if head != embed_dim:
        raise CheckpointError(
            f"{source}: the image head projects to {head}, the text tower to {embed_dim}"
        )
    try:
        vision = FastViTConfig(
            image_size=image_size,
            layers=tuple(layers),
            embed_dims=tuple(dims),
            mlp_ratio=float(mlp_ratio or 3.0),
            token_mixers=tuple(mixers),
            pos_embs=tuple(pos),
            se_downsamples=tuple(se),
            stem_scale_branch="visual.stem.0.conv_scale.conv.weight" in state,
            attn_norm=norm,
            lkc_act=arch.startswith("fastvit_mci"),
        )
        return MobileCLIPConfig(embed_dim=embed_dim, vision=vision, text=text)
    except ModelError as exc:
        raise CheckpointError(f"{source}: not a FastViT this loader supports: {exc}") from exc


def _recognises(
    arch: str | None, vision_cfg: Mapping[str, object], text_cfg: Mapping[str, object], source: str
) -> bool:
    return arch is not None and arch.startswith("fastvit_mci")


FAMILY = register(
    Family(
        model=MobileCLIP,
        recognises=_recognises,
        convert_state=from_open_clip_state,
        infer_config=infer_config,
        timm_towers="MobileCLIP FastViTs (fastvit_mci*)",
        fold=MobileCLIP.fold,
    )
)
