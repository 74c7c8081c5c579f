"""Tiny models for tests across the project (fast on a CPU, real BPE tokenizer)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from clipsearch.model.api import build
from clipsearch.model.clip import CLIP, CLIPConfig, TextConfig, VisionConfig


def tiny_config(image_size: int = 32) -> CLIPConfig:
    """A small ViT CLIP: 2+2 blocks of width 32. ``image_size`` must be a multiple of 8.

    About 1.7M parameters, nearly all in the 49408-row token embedding the real BPE needs.
    """
    return CLIPConfig(
        embed_dim=32,
        vision=VisionConfig(image_size=image_size, width=32, layers=2, patch_size=8, heads=2),
        text=TextConfig(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
        quick_gelu=True,
    )


def tiny_model(seed: int = 0, image_size: int = 32) -> CLIP:
    """A randomly initialised tiny CLIP (eval mode), the same for the same seed."""
    return build(tiny_config(image_size), seed=seed, name="tiny")


def assert_features_match(got: torch.Tensor, want: torch.Tensor) -> None:
    """The parity standard for features: cosine >= 0.99999 per row and max relative error
    <= 5e-5 (|got - want| over the row's largest |want|), the bound that tells tanh-GELU from
    exact GELU."""
    assert got.shape == want.shape, f"shape {list(got.shape)} != {list(want.shape)}"
    cosine = F.cosine_similarity(got.float(), want.float(), dim=-1).min().item()
    assert cosine >= 0.99999, f"min cosine {cosine:.7f}"
    rel = (got - want).abs().amax(dim=-1) / want.abs().amax(dim=-1)
    assert rel.max().item() <= 5e-5, f"max relative error {rel.max().item():.2e}"


def assert_same_embeddings(a: npt.ArrayLike, b: npt.ArrayLike) -> None:
    """Two loads of the same weights embed alike to float rounding (2e-6): the kernels may split
    a sum differently for buffers at other addresses; a changed weight moves results far more."""
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=2e-6)
