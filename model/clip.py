"""CLIP: the image towers (ModifiedResNet, VisionTransformer), the causal text transformer, and the
`CLIP` module that joins them with projections and a learned temperature.

Parameter names follow OpenAI's release (``visual.conv1.weight``,
``transformer.resblocks.0.attn.in_proj_weight``, ``token_embedding.weight``, ``ln_final``,
``text_projection``, ``logit_scale``, ...), so OpenAI and OpenCLIP state dicts load with
``strict=True``. Internally every sequence is batch-first, ``[N, L, D]``; attention runs through
``F.scaled_dot_product_attention``.

Shapes below: N batch, L sequence length, D width, H heads, R image side, C channels.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipsearch.model.base import (
    OPENAI_MEAN,
    OPENAI_STD,
    EmbeddingModel,
    TextTokenizer,
    check_batch_size,
    default_tokenizer,
)
from clipsearch.model.errors import ModelError
from clipsearch.model.json_types import JSONObject
from clipsearch.model.lazy_tower import LazyTower

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Config = TypeVar("_Config", bound="DataclassInstance")

log = logging.getLogger(__name__)

__all__ = ["CLIP", "OPENAI_MEAN", "OPENAI_STD", "CLIPConfig", "TextConfig", "VisionConfig"]

# A module factory for the MLP activation: QuickGELU, nn.GELU, partial(nn.GELU, approximate="tanh").
Activation = Callable[[], nn.Module]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def check_positive_int(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"{owner}.{name} must be a positive integer, got {value!r}")


@dataclass
class VisionConfig:
    """The image tower. A ResNet when ``layers`` is a 4-tuple, a ViT when it is an int."""

    image_size: int = 224  # input side R: pixels are [N, 3, R, R]
    width: int = 768  # ViT: token width; ResNet: channels after the stem (stage widths are 4x..32x)
    layers: int | tuple[int, int, int, int] = 12  # ViT: blocks; ResNet: bottlenecks per stage
    patch_size: int | None = 32  # ViT: side of a square patch; None for a ResNet
    heads: int = 12  # ViT: attention heads; ResNet: heads of the attention pool (width*32//64)
    mlp_ratio: float = 4.0  # ViT: hidden width of each block's MLP, as a multiple of width

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)  # type: ignore[assignment]
        check_positive_int("vision", "image_size", self.image_size)
        check_positive_int("vision", "width", self.width)
        check_positive_int("vision", "heads", self.heads)
        if isinstance(self.layers, tuple):
            if len(self.layers) != 4:
                raise ModelError(f"vision.layers of a ResNet needs 4 stages, got {self.layers!r}")
            for n in self.layers:
                check_positive_int("vision", "layers[i]", n)
            if self.image_size % 32:
                raise ModelError(
                    f"a ResNet image_size must be a multiple of 32, got {self.image_size}"
                )
            if (self.width * 32) % self.heads:
                raise ModelError(
                    f"vision.heads={self.heads} does not divide the attention pool width {self.width * 32}"
                )
        else:
            check_positive_int("vision", "layers", self.layers)
            check_positive_int("vision", "patch_size", self.patch_size)
            assert self.patch_size is not None
            if self.image_size % self.patch_size:
                raise ModelError(
                    f"vision.image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
                )
            if self.width % self.heads:
                raise ModelError(f"vision.heads={self.heads} does not divide width={self.width}")
        if not (isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0):
            raise ModelError(f"vision.mlp_ratio must be positive, got {self.mlp_ratio!r}")

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.layers, tuple)


@dataclass
class TextConfig:
    """The causal text transformer."""

    context_length: int = 77  # positions the model has embeddings for (token ids per text)
    vocab_size: int = 49408  # rows of the token embedding (CLIP's BPE: 49406 start, 49407 end)
    width: int = 512  # token width D
    heads: int = 8  # attention heads (OpenAI: width // 64)
    layers: int = 12  # transformer blocks
    mlp_ratio: float = 4.0  # hidden width of each block's MLP, as a multiple of width

    def __post_init__(self) -> None:
        for name in ("context_length", "vocab_size", "width", "heads", "layers"):
            check_positive_int("text", name, getattr(self, name))
        if self.width % self.heads:
            raise ModelError(f"text.heads={self.heads} does not divide width={self.width}")
        if not (isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0):
            raise ModelError(f"text.mlp_ratio must be positive, got {self.mlp_ratio!r}")


@dataclass
class CLIPConfig:
    """A whole CLIP: both towers, the shared embedding width and the activation."""

    embed_dim: int = 512  # width of the joint image/text embedding space
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    quick_gelu: bool = True  # OpenAI's x*sigmoid(1.702x); False: exact GELU (many OpenCLIP models)

    def __post_init__(self) -> None:
        check_positive_int("config", "embed_dim", self.embed_dim)
        if not isinstance(self.quick_gelu, bool):
            raise ModelError(f"config.quick_gelu must be true or false, got {self.quick_gelu!r}")

    def to_dict(self) -> JSONObject:
        out = asdict(self)
        if isinstance(self.vision.layers, tuple):
            out["vision"]["layers"] = list(self.vision.layers)
        return out

    @classmethod
    def from_dict(cls, data: object) -> CLIPConfig:
        """Build from :meth:`to_dict` output; unknown or mistyped keys raise :class:`ModelError`."""
        if not isinstance(data, dict):
            raise ModelError(f"a CLIP config must be a JSON object, got {type(data).__name__}")
        vision = dataclass_from(VisionConfig, data.get("vision", {}), "vision")
        text = dataclass_from(TextConfig, data.get("text", {}), "text")
        rest = {k: v for k, v in data.items() if k not in ("vision", "text")}
        unknown = set(rest) - {"embed_dim", "quick_gelu"}
        if unknown:
            raise ModelError(f"unknown CLIP config keys: {sorted(unknown)}")
        return cls(vision=vision, text=text, **rest)


def dataclass_from(kind: type[_Config], data: object, where: str) -> _Config:
    if not isinstance(data, dict):
        raise ModelError(f"config.{where} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(kind)}
    unknown = set(data) - names
    if unknown:
        raise ModelError(f"unknown keys in config.{where}: {sorted(unknown)}")
    try:
        return kind(**data)
    except TypeError as exc:  # e.g. a list where a number belongs
        raise ModelError(f"bad config.{where}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _scaled_randn(scale: float, *shape: int, divide: bool = False) -> torch.Tensor:
    """``scale * randn(shape)`` (``randn / scale`` with ``divide``); on the meta device (a
    checkpoint's weights are assigned next) only the shape: arithmetic on meta tensors imports
    TorchDynamo, seconds of a CLI's start."""
    t = torch.randn(*shape)
    if t.is_meta:
        return t
    return t.div_(scale) if divide else t.mul_(scale)


class QuickGELU(nn.Module):
    """OpenAI's GELU approximation: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype, returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)
        return out.to(dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter layout
    (``in_proj_weight`` [3D, D] holding q, k, v stacked; ``in_proj_bias``; ``out_proj``),
    computed with scaled_dot_product_attention on batch-first input."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        n, length, width = x.shape  # [N, L, D]
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [N, L, 3D]
        qkv = qkv.view(n, length, 3, self.heads, width // self.heads)  # [N, L, 3, H, D/H]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, H, L, D/H]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [N, H, L, D/H]
        out = out.transpose(1, 2).reshape(n, length, width)  # [N, L, D]
        return self.out_proj(out)

    def forward_at(
        self, x: torch.Tensor, select: torch.Tensor, causal: bool = False
    ) -> torch.Tensor:
        """Attention output at one position per sequence (``select``: [N] indices) -> [N, D].

        Keys and values come from every position (up to the selected one when causal); only the
        selected query is computed, which is all a final block needs.
        """
        n, length, width = x.shape  # [N, L, D]
        head_dim = width // self.heads
        rows = torch.arange(n, device=x.device)
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(x[rows, select], w[:width], b[:width])  # [N, D]
        kv = F.linear(x, w[width:], b[width:]).view(
            n, length, 2, self.heads, head_dim
        )  # [N, L, 2, H, D/H]
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, H, L, D/H]
        q = q.view(n, self.heads, 1, head_dim)  # [N, H, 1, D/H]
        mask = None
        if causal:  # the query at position s sees keys 0..s
            mask = (torch.arange(length, device=x.device) <= select[:, None]).view(n, 1, 1, length)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [N, H, 1, D/H]
        return self.out_proj(out.reshape(n, width))  # [N, D]


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    ``mlp_ratio`` * width is rounded to the MLP's hidden width (SO400M's 4304 / 1152 is not a
    round ratio); ``eps`` is the LayerNorms' (1e-5 for CLIP, 1e-6 for SigLIP's towers)."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: float, act: Activation, eps: float = 1e-5
    ) -> None:
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.ln_1 = LayerNorm(width, eps=eps)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, hidden)),
                    ("gelu", act()),
                    ("c_proj", nn.Linear(hidden, width)),
                ]
            )
        )

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:  # [N, L, D]
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))

    def forward_at(
        self, x: torch.Tensor, select: torch.Tensor, causal: bool = False
    ) -> torch.Tensor:
        """The block's output at one position per sequence: [N, L, D] -> [N, D]."""
        rows = torch.arange(x.shape[0], device=x.device)
        y = x[rows, select] + self.attn.forward_at(self.ln_1(x), select, causal=causal)  # [N, D]
        return y + self.mlp(self.ln_2(y))


class Transformer(nn.Module):
    """A stack of residual attention blocks; ``causal`` masks attention to later positions."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float = 4.0,
        act: Activation = QuickGELU,
        causal: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.width = width
        self.causal = causal
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, act, eps) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        """[N, L, D] -> [N, L, D]; with ``select`` ([N] positions), only those outputs: [N, D].

        Selecting lets the last block skip every position nobody reads (the class token of a
        ViT, the end token of a text): the same numbers for less work.
        """
        blocks = list(self.resblocks)
        last = len(blocks) - 1 if select is not None else len(blocks)
        for block in blocks[:last]:
            x = block(x, causal=self.causal)
        if select is not None:
            x = cast(ResidualAttentionBlock, blocks[-1]).forward_at(x, select, causal=self.causal)
        return x


class VisionTransformer(nn.Module):
    """ViT image tower: patches -> [class] + patch tokens -> transformer -> class token -> proj."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        output_dim: int,
        mlp_ratio: float = 4.0,
        act: Activation = QuickGELU,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        grid = image_size // patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(_scaled_randn(scale, width))
        self.positional_embedding = nn.Parameter(_scaled_randn(scale, grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio, act)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(_scaled_randn(scale, width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 3, R, R] -> [N, E]
        x = self.conv1(x)  # [N, D, G, G]
        x = x.flatten(2).transpose(1, 2)  # [N, G*G, D]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [N, 1, D]
        x = torch.cat([cls, x], dim=1)  # [N, G*G+1, D]
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        cls_index = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        x = self.transformer(x, select=cls_index)  # [N, D]: the class token's output
        x = self.ln_post(x)
        return x @ self.proj.to(x.dtype)  # [N, E]


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3, 1x1) with anti-aliased downsampling: stride is an average
    pool before the last conv, and the shortcut is avgpool -> 1x1 conv -> BN."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != out:
            # Named "-1", "0", "1" as in OpenAI's checkpoints (keys downsample.0.*, downsample.1.*).
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, out, 1, bias=False)),
                        ("1", nn.BatchNorm2d(out)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, Cin, h, w] -> [N, 4P, h/s, w/s]
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu(out + identity)


class AttentionPool2d(nn.Module):
    """Pools a feature map with one attention query: the mean of the map, attending over the
    mean and every position (with a learned positional embedding), then projected."""

    def __init__(self, spatial_dim: int, embed_dim: int, heads: int, output_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(
            _scaled_randn(embed_dim**0.5, spatial_dim * spatial_dim + 1, embed_dim, divide=True)
        )
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, S, S] -> [N, E]
        n, c = x.shape[:2]
        x = x.flatten(2).transpose(1, 2)  # [N, S*S, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # [N, S*S+1, C]
        x = x + self.positional_embedding.to(x.dtype)
        head_dim = c // self.heads
        q = self.q_proj(x[:, :1]).view(n, 1, self.heads, head_dim).transpose(1, 2)  # [N, H, 1, C/H]
        k = self.k_proj(x).view(n, -1, self.heads, head_dim).transpose(1, 2)  # [N, H, S*S+1, C/H]
        v = self.v_proj(x).view(n, -1, self.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # [N, H, 1, C/H]
        return self.c_proj(out.transpose(1, 2).reshape(n, c))  # [N, E]


class ModifiedResNet(nn.Module):
    """OpenAI's ResNet: a 3-conv stem with an average pool, anti-aliased strided bottlenecks, and
    an attention pool instead of global average pooling."""

    def __init__(
        self,
        layers: Sequence[int],
        output_dim: int,
        heads: int,
        image_size: int = 224,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        # Stem: [N, 3, R, R] -> [N, width, R/4, R/4]
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        # Stages: channels 4w, 8w, 16w, 32w; spatial /1, /2, /2, /2 -> [N, 32w, R/32, R/32]
        self._inplanes = width
        self.layer1 = self._make_stage(width, layers[0])
        self.layer2 = self._make_stage(width * 2, layers[1], stride=2)
        self.layer3 = self._make_stage(width * 4, layers[2], stride=2)
        self.layer4 = self._make_stage(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(image_size // 32, width * 32, heads, output_dim)

    def _make_stage(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        stage = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        stage += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 3, R, R] -> [N, E]
        x = x.to(self.conv1.weight.dtype)
        if self.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # match the weights' layout
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)  # [N, w, R/4, R/4]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [N, 32w, R/32, R/32]
        return self.attnpool(x)


# --------------------------------------------------------------------------------------------
# CLIP
# --------------------------------------------------------------------------------------------


_default_tokenizer = default_tokenizer  # the name it had here


class CLIP(EmbeddingModel):
    """Image and text towers projected into one embedding space.

    ``encode_image``/``encode_text`` return unnormalised features as OpenAI's do; the ``embed_*``
    helpers batch, run under inference mode (bf16 autocast on CUDA) and return L2-normalised
    float32 numpy arrays.
    """

    has_compact_text_path = True  # model.quantize.compact_text_tower

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        if not isinstance(config, CLIPConfig):
            raise ModelError(f"CLIP needs a CLIPConfig, got {type(config).__name__}")
        self.config = config
        act: Activation = QuickGELU if config.quick_gelu else nn.GELU
        v, t = config.vision, config.text

        self.visual: ModifiedResNet | VisionTransformer
        if isinstance(v.layers, tuple):
            self.visual = ModifiedResNet(v.layers, config.embed_dim, v.heads, v.image_size, v.width)
        else:
            assert v.patch_size is not None
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
        self.transformer = Transformer(t.width, t.layers, t.heads, t.mlp_ratio, act, causal=True)
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(torch.empty(t.context_length, t.width))
        self.ln_final = LayerNorm(t.width)
        self.text_projection = nn.Parameter(torch.empty(t.width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._init_parameters()
        self.use_channels_last()

    def use_channels_last(self) -> None:
        """Keep a ResNet tower's conv weights channels-last (NHWC): oneDNN (CPU) and cuDNN (GPU)
        run these convolutions faster without layout reorders; the numbers are the same.
        ``load`` calls this again after assigning checkpoint tensors."""
        if isinstance(self.visual, ModifiedResNet) and not self.token_embedding.weight.is_meta:
            self.visual.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _init_parameters(self) -> None:
        """OpenAI's initialisation (only matters for training from scratch and random baselines)."""
        if self.token_embedding.weight.is_meta:
            return
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features**-0.5
            for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(proj.weight, std=std)
            for module in self.visual.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)  # each residual branch starts as identity
        width, layers = self.transformer.width, len(self.transformer.resblocks)
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        attn_std = width**-0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            assert isinstance(block, ResidualAttentionBlock)
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(cast(nn.Linear, block.mlp.c_fc).weight, std=fc_std)
            nn.init.normal_(cast(nn.Linear, block.mlp.c_proj).weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    # -- properties ---------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        visual = self.visual
        if isinstance(visual, LazyTower) and not visual.loaded:  # not read yet: the text tower's
            return self.token_embedding.weight.dtype
        return visual.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def context_length(self) -> int:
        return self.config.text.context_length

    def _make_tokenizer(self) -> TextTokenizer:
        """The packaged BPE tokenizer (model.tokenizer.Tokenizer), shared by every CLIP."""
        return default_tokenizer()

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Texts -> LongTensor [N, context_length] (start id, BPE ids, end id, zero padding)."""
        return self.tokenizer(texts, context_length=self.context_length)

    # -- encoders -----------------------------------------------------------------------------

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, R, R] normalised pixels -> [N, E] unnormalised image features."""
        self._check_pixels(pixels)
        return self.visual(pixels.to(device=self.device, dtype=self.dtype))

    def encode_text(self, tokens: torch.Tensor, trim: bool = True) -> torch.Tensor:
        """[N, L] token ids (L <= context_length) -> [N, E] unnormalised text features.

        The feature is read at each text's end token, the largest id (argmax). With a causal mask
        nothing after the end token can change it, so by default only the first
        ``max(end position) + 1`` positions are computed: a short query costs a few positions,
        not 77. ``trim=False`` runs every given position (same numbers, more work).
        """
        if tokens.ndim != 2:
            raise ModelError(f"expected token ids of shape [N, L], got {list(tokens.shape)}")
        n, length = tokens.shape
        if length > self.context_length:
            raise ModelError(
                f"token sequences of length {length} exceed context_length {self.context_length}"
            )
        if n == 0 or length == 0:
            return torch.zeros(n, self.embed_dim, dtype=self.dtype, device=self.device)
        tokens = tokens.to(self.device)
        end = tokens.argmax(dim=-1)  # [N]: position of each end token
        if trim:
            length = int(end.max()) + 1
            tokens = tokens[:, :length]  # [N, L'] with L' <= L
        x = self.token_embedding(tokens).to(self.dtype)  # [N, L', D]
        x = x + self.positional_embedding[:length].to(self.dtype)
        x = self.transformer(x, select=end)  # causal; [N, D]: the end token's output
        x = self.ln_final(x)
        return x @ self.text_projection.to(x.dtype)  # [N, E]

    def forward(
        self, pixels: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N_img, N_txt] and their transpose, from normalised features."""
        img = F.normalize(self.encode_image(pixels), dim=-1)
        txt = F.normalize(self.encode_text(tokens), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()

    # -- batched inference helpers -------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> float32 [N, E], L2-normalised. A single str is taken as one text."""
        check_batch_size(batch_size)
        texts = self._check_texts(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        tokens = self.tokenize(texts)  # [N, context_length]
        # Batch texts of similar length together so each batch trims to its own longest text.
        order = torch.argsort(tokens.argmax(dim=-1), stable=True)
        out = np.empty((len(texts), self.embed_dim), dtype=np.float32)
        with self._inference():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                out[idx.numpy()] = self._normalised(self.encode_text(tokens[idx]))
        return out
