"""Towers shared by the model families beside CLIP, built from clip.py's blocks.

:class:`TextTransformer` is open_clip's text tower as SigLIP, SigLIP 2 and MobileCLIP use it
(parameter names as open_clip's under ``text.``): token and position embeddings, the
:class:`~model.clip.Transformer` of CLIP (causal or not), a final LayerNorm, the feature read at
one position (the last one, or the end token found as the largest id), and a projection that is a
bare matrix (``text_projection`` [D, E]) or a biased ``nn.Linear``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from clipsearch.model.clip import (
    Activation,
    LayerNorm,
    QuickGELU,
    ResidualAttentionBlock,
    Transformer,
    check_positive_int,
)
from clipsearch.model.errors import ModelError

ACTIVATIONS: dict[str, Activation] = {
    "gelu": nn.GELU,  # exact (erf) GELU
    "gelu_tanh": functools.partial(nn.GELU, approximate="tanh"),  # SigLIP 2's text MLP
    "quick_gelu": QuickGELU,  # OpenAI's x * sigmoid(1.702 x)
}
TEXT_POOLS = ("argmax", "last")


def activation(name: str) -> Activation:
    if name not in ACTIVATIONS:
        raise ModelError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@dataclass
class TextTowerConfig:
    """open_clip's TextTransformer."""

    context_length: int = 77  # positions (token ids per text)
    vocab_size: int = 49408  # rows of the token embedding
    width: int = 512  # token width D
    heads: int = 8  # attention heads
    layers: int = 12  # transformer blocks
    mlp_dim: int = 2048  # hidden width of each block's MLP
    causal: bool = False  # mask attention to later positions (CLIP: yes; SigLIP, MobileCLIP: no)
    pool: str = "argmax"  # "argmax": at the end token (largest id); "last": the last position
    proj_bias: bool = False  # True: nn.Linear projection with bias (SigLIP); False: a matrix
    eps: float = 1e-5  # LayerNorm epsilon (SigLIP: 1e-6)
    act: str = "gelu"  # key of ACTIVATIONS

    def __post_init__(self) -> None:
        for name in ("context_length", "vocab_size", "width", "heads", "layers", "mlp_dim"):
            check_positive_int("text", name, getattr(self, name))
        if self.width % self.heads:
            raise ModelError(f"text.heads={self.heads} does not divide width={self.width}")
        if self.pool not in TEXT_POOLS:
            raise ModelError(f"text.pool must be one of {TEXT_POOLS}, got {self.pool!r}")
        activation(self.act)
        if not (isinstance(self.eps, float) and 0 < self.eps < 1):
            raise ModelError(f"text.eps must be a small positive float, got {self.eps!r}")


class TextTransformer(nn.Module):
    """Token ids [N, L] -> text features [N, E] (unnormalised)."""

    def __init__(self, cfg: TextTowerConfig, output_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(
            cfg.width,
            cfg.layers,
            cfg.heads,
            cfg.mlp_dim / cfg.width,
            activation(cfg.act),
            causal=cfg.causal,
            eps=cfg.eps,
        )
        self.ln_final = LayerNorm(cfg.width, eps=cfg.eps)
        self.text_projection: Any
        if cfg.proj_bias:
            self.text_projection = nn.Linear(cfg.width, output_dim)
        else:
            self.text_projection = nn.Parameter(torch.empty(cfg.width, output_dim))
        if not self.token_embedding.weight.is_meta:
            self._init_parameters()

    def _init_parameters(self) -> None:
        cfg = self.cfg
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = cfg.width**-0.5 * (2 * cfg.layers) ** -0.5
        for block in self.transformer.resblocks:
            assert isinstance(block, ResidualAttentionBlock)
            nn.init.normal_(block.attn.in_proj_weight, std=cfg.width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(cast(nn.Linear, block.mlp.c_fc).weight, std=(2 * cfg.width) ** -0.5)
            nn.init.normal_(cast(nn.Linear, block.mlp.c_proj).weight, std=proj_std)
        if isinstance(self.text_projection, nn.Linear):
            nn.init.normal_(self.text_projection.weight, std=cfg.width**-0.5)
            nn.init.zeros_(self.text_projection.bias)
        else:
            nn.init.normal_(self.text_projection, std=cfg.width**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, L] -> [N, E]
        n, length = tokens.shape
        if self.cfg.pool == "last":
            select = torch.full((n,), length - 1, dtype=torch.long, device=tokens.device)
        else:
            select = tokens.argmax(dim=-1)  # the end token: the largest id
        if self.cfg.causal:  # nothing after the selected position can change it
            length = int(select.max()) + 1
            tokens = tokens[:, :length]
        dtype = self.positional_embedding.dtype
        x = self.token_embedding(tokens).to(dtype)  # [N, L, D]
        x = x + self.positional_embedding[:length]
        x = self.transformer(x, select=select)  # [N, D]: the pooled position's output
        x = self.ln_final(x)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)  # type: ignore[no-any-return]
        return x @ self.text_projection  # [N, E]
