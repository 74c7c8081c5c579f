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
computes a linear function of its input that one convolution can compute. Checkpoints hold the
training-time branches; :meth:`MobileCLIP.fold` replaces each module's branches by that single
convolution (``reparam_conv``) for inference: the same features, less work. ``model.load``
returns folded models; ``model.families.load_open_clip_folder(..., fold=False)`` keeps the
branches.

Preprocessing: shortest-side resize (bilinear) and center crop, mean 0 and std 1. Tokenizer:
OpenAI's BPE (model.tokenizer), 77 tokens, zero padded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipsearch.model.base import EmbeddingModel
from clipsearch.model.clip import _check_positive_int, _dataclass_from
from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.towers import TextTowerConfig, TextTransformer

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
        _check_positive_int("vision", "image_size", self.image_size)
        if n == 0 or any(
            len(getattr(self, k)) != n
            for k in ("embed_dims", "token_mixers", "pos_embs", "se_downsamples")
        ):
            raise ModelError("vision: layers, embed_dims, token_mixers, pos_embs, se_downsamples "
                             "need one entry per stage")  # fmt: skip
        for d in (*self.layers, *self.embed_dims):
            _check_positive_int("vision", "layers/embed_dims[i]", d)
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
        _check_positive_int("config", "embed_dim", self.embed_dim)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out["vision"].items():
            if isinstance(value, tuple):
                out["vision"][key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MobileCLIPConfig:
        if not isinstance(data, dict):
            raise ModelError(
                f"a MobileCLIP config must be a JSON object, got {type(data).__name__}"
            )
        vision = _dataclass_from(FastViTConfig, data.get("vision", {}), "vision")
        text = _dataclass_from(TextTowerConfig, data.get("text", {}), "text")
        unknown = set(data) - {"embed_dim", "vision", "text"}
        if unknown:
            raise ModelError(f"unknown MobileCLIP config keys: {sorted(unknown)}")
        return cls(embed_dim=data.get("embed_dim", 512), vision=vision, text=text)


# --------------------------------------------------------------------------------------------
# Reparameterisable blocks
# --------------------------------------------------------------------------------------------


class ConvBN(nn.Module):
    """A bias-free convolution followed by BatchNorm ('same' padding for odd kernels)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (kernel, bias) of one convolution equal to conv -> BN (eval statistics)."""
        return fold_bn(self.conv.weight, self.bn)


def fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv(kernel) -> bn  ==  conv(kernel * g / s) + (b - mean * g / s),  s = sqrt(var + eps)."""
    assert bn.running_var is not None and bn.running_mean is not None
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def identity_kernel(channels: int, groups: int, kernel: int, like: torch.Tensor) -> torch.Tensor:
    """The kernel of a convolution that returns its input (a 1 at each channel's centre)."""
    per_group = channels // groups
    out = torch.zeros(channels, per_group, kernel, kernel, dtype=like.dtype, device=like.device)
    idx = torch.arange(channels)
    out[idx, idx % per_group, kernel // 2, kernel // 2] = 1
    return out


def _pad_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad] * 4)


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean over space))))."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # [N, C, 1, 1]
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


def _make_divisible(value: float, divisor: int) -> int:
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class MobileOneBlock(nn.Module):
    """act(se(identity BN + kxk conv-BN + 1x1 conv-BN)); folded: act(se(one kxk conv))."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        depthwise: bool = False,
        use_se: bool = False,
        use_act: bool = True,
        scale_branch: bool = True,
        conv_branch: bool = True,
        folded: bool = False,
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.kernel, self.stride = cin, cout, kernel, stride
        self.groups = cin if depthwise else 1
        self.se = SqueezeExcite(cout, _make_divisible(cout / 16, 1)) if use_se else nn.Identity()
        self.act = nn.GELU() if use_act else nn.Identity()
        self.reparam_conv: nn.Conv2d | None = None
        self.identity: nn.BatchNorm2d | None = None
        self.conv_kxk: nn.ModuleList | None = None
        self.conv_scale: ConvBN | None = None
        if folded:
            self.reparam_conv = self._conv()
            return
        if cin == cout and stride == 1:
            self.identity = nn.BatchNorm2d(cin)
        if conv_branch:
            self.conv_kxk = nn.ModuleList([ConvBN(cin, cout, kernel, stride, self.groups)])
        if kernel > 1 and scale_branch:
            self.conv_scale = ConvBN(cin, cout, 1, stride, self.groups)

    def _conv(self) -> nn.Conv2d:
        k = self.kernel
        return nn.Conv2d(self.cin, self.cout, k, self.stride, k // 2, groups=self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = torch.zeros((), dtype=x.dtype, device=x.device)
        if self.identity is not None:
            out = out + self.identity(x)
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        if self.conv_kxk is not None:
            for branch in self.conv_kxk:
                out = out + branch(x)
        return self.act(self.se(out))

    def folded_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kernel, bias) of the one convolution equal to the sum of the branches."""
        if self.reparam_conv is not None:
            assert self.reparam_conv.bias is not None
            return self.reparam_conv.weight, self.reparam_conv.bias
        like = next(self.parameters())
        shape = (self.cout, self.cin // self.groups, self.kernel, self.kernel)
        kernel = torch.zeros(shape, dtype=like.dtype, device=like.device)
        bias = torch.zeros(self.cout, dtype=like.dtype, device=like.device)
        if self.identity is not None:
            k, b = fold_bn(identity_kernel(self.cin, self.groups, self.kernel, like), self.identity)
            kernel, bias = kernel + k, bias + b
        if self.conv_scale is not None:
            k, b = self.conv_scale.folded()
            kernel, bias = kernel + _pad_to(k, self.kernel), bias + b
        if self.conv_kxk is not None:
            for branch in self.conv_kxk:
                k, b = branch.folded()  # type: ignore[operator]
                kernel, bias = kernel + k, bias + b
        return kernel, bias

    def fold(self) -> None:
        if self.reparam_conv is not None:
            return
        kernel, bias = self.folded_kernel()
        conv = self._conv().to(kernel.device, kernel.dtype)
        conv.weight.data.copy_(kernel.detach())
        assert conv.bias is not None
        conv.bias.data.copy_(bias.detach())
        self.reparam_conv = conv
        self.identity, self.conv_kxk, self.conv_scale = None, None, None


class LargeKernelConv(nn.Module):
    """act(se(kxk conv-BN + 3x3 conv-BN)), grouped by input channel; folded: one kxk conv."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, use_se: bool, act: bool, folded: bool
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.kernel, self.stride = cin, cout, kernel, stride
        self.reparam_conv: nn.Conv2d | None = None
        self.large_conv: ConvBN | None = None
        self.small_conv: ConvBN | None = None
        if folded:
            self.reparam_conv = self._conv()
        else:
            self.large_conv = ConvBN(cin, cout, kernel, stride, groups=cin)
            self.small_conv = ConvBN(cin, cout, 3, stride, groups=cin)
        self.se = SqueezeExcite(cout, _make_divisible(cout * 0.25, 8)) if use_se else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()

    def _conv(self) -> nn.Conv2d:
        k = self.kernel
        return nn.Conv2d(self.cin, self.cout, k, self.stride, k // 2, groups=self.cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            assert self.large_conv is not None and self.small_conv is not None
            out = self.large_conv(x) + self.small_conv(x)
        return self.act(self.se(out))

    def fold(self) -> None:
        if self.reparam_conv is not None:
            return
        assert self.large_conv is not None and self.small_conv is not None
        k_large, b_large = self.large_conv.folded()
        k_small, b_small = self.small_conv.folded()
        conv = self._conv().to(k_large.device, k_large.dtype)
        conv.weight.data.copy_((k_large + _pad_to(k_small, self.kernel)).detach())
        assert conv.bias is not None
        conv.bias.data.copy_((b_large + b_small).detach())
        self.reparam_conv, self.large_conv, self.small_conv = conv, None, None


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


class LayerScale2d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(1e-5 * torch.ones(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RepMixer(nn.Module):
    """x + gamma * (mixer(x) - norm(x)) with depthwise 3x3 MobileOne blocks; folded: one conv."""

    def __init__(self, dim: int, kernel: int = 3, folded: bool = False) -> None:
        super().__init__()
        self.dim, self.kernel = dim, kernel
        self.reparam_conv: nn.Conv2d | None = None
        self.norm: MobileOneBlock | None = None
        self.mixer: MobileOneBlock | None = None
        self.layer_scale: LayerScale2d | None = None
        if folded:
            self.reparam_conv = self._conv()
            return
        self.norm = MobileOneBlock(
            dim, dim, kernel, depthwise=True, use_act=False, scale_branch=False, conv_branch=False
        )
        self.mixer = MobileOneBlock(dim, dim, kernel, depthwise=True, use_act=False)
        self.layer_scale = LayerScale2d(dim)

    def _conv(self) -> nn.Conv2d:
        k = self.kernel
        return nn.Conv2d(self.dim, self.dim, k, 1, k // 2, groups=self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)  # type: ignore[no-any-return]
        assert self.norm is not None and self.mixer is not None and self.layer_scale is not None
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    def fold(self) -> None:
        if self.reparam_conv is not None:
            return
        assert self.norm is not None and self.mixer is not None and self.layer_scale is not None
        k_mix, b_mix = self.mixer.folded_kernel()
        k_norm, b_norm = self.norm.folded_kernel()
        gamma = self.layer_scale.gamma  # [C, 1, 1]
        kernel = identity_kernel(self.dim, self.dim, self.kernel, k_mix)
        kernel = kernel + gamma.unsqueeze(-1) * (k_mix - k_norm)
        bias = gamma.flatten() * (b_mix - b_norm)
        conv = self._conv().to(kernel.device, kernel.dtype)
        conv.weight.data.copy_(kernel.detach())
        assert conv.bias is not None
        conv.bias.data.copy_(bias.detach())
        self.reparam_conv, self.norm, self.mixer, self.layer_scale = conv, None, None, None


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


class RepCPE(nn.Module):
    """Conditional position encoding x + dwconv7x7(x); folded: one conv."""

    def __init__(self, dim: int, kernel: int = 7, folded: bool = False) -> None:
        super().__init__()
        self.dim, self.kernel = dim, kernel
        self.reparam_conv: nn.Conv2d | None = None
        self.pos_enc: nn.Conv2d | None = None
        if folded:
            self.reparam_conv = self._conv()
        else:
            self.pos_enc = self._conv()

    def _conv(self) -> nn.Conv2d:
        k = self.kernel
        return nn.Conv2d(self.dim, self.dim, k, 1, k // 2, groups=self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)  # type: ignore[no-any-return]
        assert self.pos_enc is not None
        return x + self.pos_enc(x)

    def fold(self) -> None:
        if self.reparam_conv is not None or self.pos_enc is None:
            return
        weight = self.pos_enc.weight
        conv = self._conv().to(weight.device, weight.dtype)
        kernel = identity_kernel(self.dim, self.dim, self.kernel, weight) + weight
        conv.weight.data.copy_(kernel.detach())
        assert conv.bias is not None and self.pos_enc.bias is not None
        conv.bias.data.copy_(self.pos_enc.bias.detach())
        self.reparam_conv, self.pos_enc = conv, None


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


class MobileCLIP(EmbeddingModel):
    """MobileCLIP / MobileCLIP2; the surface is :class:`~model.base.EmbeddingModel`'s."""

    family = "mobileclip"

    def __init__(self, config: MobileCLIPConfig) -> None:
        super().__init__()
        if not isinstance(config, MobileCLIPConfig):
            raise ModelError(f"MobileCLIP needs a MobileCLIPConfig, got {type(config).__name__}")
        self.config = config
        self.preprocess_cfg = {"mean": MOBILECLIP_MEAN, "std": MOBILECLIP_STD}
        self.resize_mode = "shortest"
        self.interpolation = "bilinear"
        self.visual = FastViT(config.vision, config.embed_dim)
        self.text = TextTransformer(config.text, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def context_length(self) -> int:
        return self.config.text.context_length

    @property
    def is_folded(self) -> bool:
        return self.config.vision.folded

    def _make_tokenizer(self) -> Any:
        from clipsearch.model.clip import _default_tokenizer

        return _default_tokenizer()

    def fold(self) -> MobileCLIP:
        """Fold the image tower's branches for inference (in place; returns self)."""
        with torch.no_grad():
            self.visual.fold()
        self.__dict__.pop("_clipsearch_fingerprint", None)  # the weights changed form
        return self

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        self._check_pixels(pixels)
        return self.visual(pixels.to(device=self.device, dtype=self.dtype))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] > self.context_length:
            raise ModelError(
                f"expected token ids of shape [N, <= {self.context_length}], got {list(tokens.shape)}"
            )
        if tokens.shape[0] == 0:
            return torch.zeros(0, self.embed_dim, dtype=self.dtype, device=self.device)
        return self.text(tokens.to(self.device))


# --------------------------------------------------------------------------------------------
# From an OpenCLIP hub folder
# --------------------------------------------------------------------------------------------


def from_open_clip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's names (timm's under ``visual.trunk.``) -> :class:`MobileCLIP`'s."""
    prefix = "visual.trunk."
    return {
        ("visual." + k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()
    }


def infer_config(data: Any, folder: Any, state: dict[str, Any], source: str) -> MobileCLIPConfig:
    """The architecture from the weights' shapes (stages, widths, mixers, SE, position
    encodings, norms), the config's image size and text options."""
    from clipsearch.model.checkpoints import _count_indices, _shape
    from clipsearch.model.families import _image_size, _model_cfg, text_tower_config, timm_tower

    model_cfg, vision_cfg, text_cfg = _model_cfg(data, source)
    arch, args = timm_tower(vision_cfg, folder, source)
    n_stages = _count_indices(state, "visual.stages.")
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
        layers.append(_count_indices(state, p + "blocks."))
        fc1 = _shape(state, p + "blocks.0.mlp.fc1.weight", source)
        dims.append(fc1[1])
        mlp_ratio = fc1[0] / fc1[1]
        mixers.append("attention" if p + "blocks.0.token_mixer.qkv.weight" in state else "repmixer")
        pos.append(p + "pos_emb.pos_enc.weight" in state)
        se.append(p + "downsample.proj.0.se.fc1.weight" in state)
    attn = [i for i, m in enumerate(mixers) if m == "attention"]
    norm = "batchnorm"
    if attn and f"visual.stages.{attn[0]}.blocks.0.norm.running_mean" not in state:
        norm = "layernorm"
    image_size = _image_size(vision_cfg, args, source) or 256
    text, embed_dim = text_tower_config(state, text_cfg, bool(model_cfg.get("quick_gelu")), source)
    head = _shape(state, "visual.head.fc.weight", source)[0]
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
