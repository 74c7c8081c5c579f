"""MobileCLIP-B / MobileCLIP2-B: a ViT-B/16 image tower behind a small convolutional stem
(timm's ``vit_base_mci_224``) with open_clip's causal CLIP text tower.

As open_clip builds ``MobileCLIP2-B`` (``CustomTextCLIP``, ``timm_pool: token``, the timm head as
the projection):

- image tower: a convolutional stem in place of the patch convolution: conv 4x4 stride 4 (no
  bias) -> BatchNorm -> GELU -> conv 2x2 stride 2 (no bias) -> BatchNorm -> GELU -> conv 2x2
  stride 2 (biased) to the width: one token per 16x16 pixels. Learnt position embeddings for
  the patch tokens only (timm's ``no_embed_class``), then the class token in front, pre-norm
  blocks (LayerNorm eps 1e-6, exact GELU), a final LayerNorm, the class token's output through
  a biased linear head: the feature. The stem's BatchNorms are folded into its convolutions
  for inference (:meth:`MCiViT.fold`);
- text tower: :class:`~model.towers.TextTransformer` as in OpenAI's CLIP (causal mask, read at
  the end token, no projection bias), 77 tokens, OpenAI's BPE;
- preprocessing: MobileCLIP's (shortest-side resize, bilinear, center crop, mean 0, std 1).

Parameter names: the stem keeps timm's (``visual.patch_embed.backbone.N.conv`` / ``.bn``), the
blocks are named as :class:`~model.clip.Transformer` names them (renamed from timm's by
:func:`from_open_clip_state`, as for SigLIP).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from clipsearch.model import hub_config as hub
from clipsearch.model import siglip
from clipsearch.model.base import TwoTowerModel
from clipsearch.model.clip import LayerNorm, Transformer, check_positive_int, dataclass_from
from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.family_registry import Family, register
from clipsearch.model.fingerprint import FINGERPRINT_ATTR
from clipsearch.model.json_types import JSONObject
from clipsearch.model.reparam import fold_bn
from clipsearch.model.towers import TextTowerConfig, TextTransformer

MOBILECLIP_MEAN = (0.0, 0.0, 0.0)
MOBILECLIP_STD = (1.0, 1.0, 1.0)
PATCH = 16  # the stem's total stride: 4 * 2 * 2


@dataclass
class MCiViTConfig:
    """timm's ``vit_base_mci_224``: a ViT behind a three-convolution stem."""

    image_size: int = 224  # input side R; R // 16 tokens a side
    width: int = 768  # token width D
    layers: int = 12  # transformer blocks
    heads: int = 12  # attention heads
    mlp_dim: int = 3072  # hidden width of each block's MLP
    stem_channels: int = 192  # channels of the stem's first two convolutions (width // 4)
    eps: float = 1e-6  # LayerNorm epsilon
    folded: bool = False  # the stem's BatchNorms folded into its convolutions (inference form)

    def __post_init__(self) -> None:
        for name in ("image_size", "width", "layers", "heads", "mlp_dim", "stem_channels"):
            check_positive_int("vision", name, getattr(self, name))
        if self.width % self.heads:
            raise ModelError(f"vision.heads={self.heads} does not divide width={self.width}")
        if self.image_size < PATCH:
            raise ModelError(f"vision.image_size={self.image_size} is below one 16-pixel token")

    @property
    def grid(self) -> int:
        return self.image_size // PATCH


@dataclass
class MobileCLIPViTConfig:
    """A whole MobileCLIP-B / MobileCLIP2-B."""

    embed_dim: int = 512  # the joint embedding width (the image head's output)
    vision: MCiViTConfig = field(default_factory=MCiViTConfig)
    text: TextTowerConfig = field(default_factory=lambda: TextTowerConfig(mlp_dim=2048))

    def __post_init__(self) -> None:
        check_positive_int("config", "embed_dim", self.embed_dim)

    @property
    def context_length(self) -> int:
        return self.text.context_length

    def to_dict(self) -> JSONObject:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> MobileCLIPViTConfig:
        if not isinstance(data, dict):
            raise ModelError(
                f"a MobileCLIP-B config must be a JSON object, got {type(data).__name__}"
            )
        vision = dataclass_from(MCiViTConfig, data.get("vision", {}), "vision")
        text = dataclass_from(TextTowerConfig, data.get("text", {}), "text")
        unknown = set(data) - {"embed_dim", "vision", "text"}
        if unknown:
            raise ModelError(f"unknown MobileCLIP-B config keys: {sorted(unknown)}")
        return cls(embed_dim=data.get("embed_dim", 512), vision=vision, text=text)


class StemConv(nn.Module):
    """conv -> BatchNorm -> GELU (``last``: a biased conv alone). Names as timm's ConvNormAct."""

    def __init__(self, cin: int, cout: int, kernel: int, last: bool, folded: bool) -> None:
        super().__init__()
        self.last = last
        self.conv = nn.Conv2d(cin, cout, kernel, stride=kernel, bias=last or folded)
        self.bn = None if last or folded else nn.BatchNorm2d(cout)
        self.act = nn.Identity() if last else nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)  # type: ignore[no-any-return]

    def fold(self) -> None:
        """BatchNorm (running statistics) folded into the convolution: one biased conv."""
        if self.bn is None:
            return
        conv = self.conv
        kernel, bias = fold_bn(conv.weight, self.bn)
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0],
                           stride=conv.stride[0], bias=True).to(conv.weight)  # fmt: skip
        folded.weight.copy_(kernel)
        assert folded.bias is not None
        folded.bias.copy_(bias)
        self.conv, self.bn = folded, None


class _Stem(nn.Module):
    def __init__(self, cfg: MCiViTConfig) -> None:
        super().__init__()
        c, fd = cfg.stem_channels, cfg.folded
        self.backbone = nn.Sequential(
            StemConv(3, c, 4, last=False, folded=fd),
            StemConv(c, c, 2, last=False, folded=fd),
            StemConv(c, cfg.width, 2, last=True, folded=fd),
        )


class MCiViT(nn.Module):
    """[N, 3, R, R] -> [N, E]: stem, + position, [class] in front, blocks, LayerNorm, head."""

    def __init__(self, cfg: MCiViTConfig, output_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = _Stem(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid, cfg.width))
        self.transformer = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_dim / cfg.width, nn.GELU, eps=cfg.eps
        )
        self.norm = LayerNorm(cfg.width, eps=cfg.eps)
        self.head = nn.Linear(cfg.width, output_dim)
        if not self.pos_embed.is_meta:
            nn.init.normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.backbone(x)  # [N, D, G, G]
        x = x.flatten(2).transpose(1, 2) + self.pos_embed  # [N, G*G, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # [N, 1+G*G, D]
        x = self.norm(self.transformer(x))
        return self.head(x[:, 0])  # type: ignore[no-any-return]

    def fold(self) -> None:
        for module in self.patch_embed.backbone:
            if isinstance(module, StemConv):
                module.fold()
        self.cfg.folded = True


class MobileCLIPViT(TwoTowerModel):
    """MobileCLIP-B / MobileCLIP2-B; the surface is :class:`~model.base.EmbeddingModel`'s."""

    family = "mobileclip-vit"
    config_class = MobileCLIPViTConfig
    mean = MOBILECLIP_MEAN
    std = MOBILECLIP_STD
    default_interpolation = "bilinear"
    tokenizer_kind = "clip-bpe"
    token_length = "at_most"

    config: MobileCLIPViTConfig
    visual: MCiViT

    def __init__(
        self, config: MobileCLIPViTConfig, tokenizer_dir: str | Path | None = None
    ) -> None:
        super().__init__(config, tokenizer_dir)
        self.visual = MCiViT(config.vision, config.embed_dim)
        self.text = TextTransformer(config.text, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def fold(self) -> MobileCLIPViT:
        """Fold the stem's BatchNorms for inference (in place; returns self)."""
        with torch.no_grad():
            self.visual.fold()
        self.__dict__.pop(FINGERPRINT_ATTR, None)  # the weights changed form
        return self


# --------------------------------------------------------------------------------------------
# From an OpenCLIP hub folder
# --------------------------------------------------------------------------------------------


def from_open_clip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's names (timm's under ``visual.trunk.``) -> :class:`MobileCLIPViT`'s: the
    blocks renamed as SigLIP's are, the rest moved from ``visual.trunk.`` to ``visual.``."""
    out = siglip.from_open_clip_state(
        state
    )  # visual.trunk.blocks.N.* -> visual.transformer.resblocks.N.*
    prefix = "visual.trunk."
    return {
        ("visual." + k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in out.items()
    }


def infer_config(
    data: Mapping[str, object], folder: Path, state: Mapping[str, torch.Tensor], source: str
) -> MobileCLIPViTConfig:
    """The architecture from the weights' shapes; the config's image size and text options."""
    model_cfg, vision_cfg, text_cfg = hub.model_cfg(data, source)
    _, args = hub.timm_tower(vision_cfg, folder, source)
    stem = "visual.patch_embed.backbone."
    c, _, k0, _ = hub.shape(state, stem + "0.conv.weight", source)
    width, _, k2, _ = hub.shape(state, stem + "2.conv.weight", source)
    if (k0, k2) != (4, 2):
        raise CheckpointError(f"{source}: expected the MCi stem's 4x4 and 2x2 convolutions")
    positions = hub.shape(state, "visual.pos_embed", source)[1]
    grid = round(positions**0.5)
    if grid * grid != positions:
        raise CheckpointError(f"{source}: visual.pos_embed has {positions} positions, not a grid")
    image_size = hub.image_size(vision_cfg, args, source) or grid * PATCH
    if image_size // PATCH != grid:
        raise CheckpointError(
            f"{source}: image_size {image_size} gives a {image_size // PATCH}-grid, but the "
            f"position embeddings are for a {grid}-grid"
        )
    layers = hub.count_indices(state, "visual.transformer.resblocks.")
    mlp_dim = hub.shape(state, "visual.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
    heads = args.get("num_heads", max(1, width // 64))
    text, embed_dim = hub.text_tower_config(
        state, text_cfg, bool(model_cfg.get("quick_gelu")), source
    )
    head = hub.shape(state, "visual.head.weight", source)[0]
    if head != embed_dim:
        raise CheckpointError(
            f"{source}: the image head projects to {head}, the text tower to {embed_dim}"
        )
    try:
        vision = MCiViTConfig(
            image_size=image_size,
            width=width,
            layers=layers,
            heads=hub.positive_int(heads, "num_heads", source),
            mlp_dim=mlp_dim,
            stem_channels=c,
        )
        return MobileCLIPViTConfig(embed_dim=embed_dim, vision=vision, text=text)
    except ModelError as exc:
        raise CheckpointError(f"{source}: not an MCi ViT this loader supports: {exc}") from exc


def _recognises(
    arch: str | None, vision_cfg: Mapping[str, object], text_cfg: Mapping[str, object], source: str
) -> bool:
    return arch is not None and arch.startswith("vit_") and "_mci_" in arch


FAMILY = register(
    Family(
        model=MobileCLIPViT,
        recognises=_recognises,
        convert_state=from_open_clip_state,
        infer_config=infer_config,
        timm_towers="the MobileCLIP-B ViT (vit_base_mci_224)",
        fold=MobileCLIPViT.fold,
    )
)
