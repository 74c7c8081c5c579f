"""WiSE-FT: interpolate the weights of a starting model and its fine-tuned version.

``theta(alpha) = (1 - alpha) * theta_start + alpha * theta_finetuned``: alpha 0 is the starting model,
alpha 1 the fine-tuned one. Values in between often keep most of what the start knew while gaining
most of what fine-tuning taught (Wortsman et al., "Robust fine-tuning of zero-shot models").
"""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Any, cast

import torch

from clipsearch.model.api import load
from clipsearch.model.base import EmbeddingModel
from clipsearch.model.checkpoints import save_pretrained
from clipsearch.model.finetune import FinetuneError

logger = logging.getLogger(__name__)


def interpolate_state_dicts(
    start: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """Float tensors interpolated; integer buffers (BatchNorm counters) taken from the fine-tuned side."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise FinetuneError(f"WiSE-FT alpha must be a number in [0, 1], got {alpha!r}")
    if set(start) != set(finetuned):
        missing = sorted(set(start) ^ set(finetuned))[:5]
        raise FinetuneError(
            f"the two models do not have the same parameters (differing: {missing}); WiSE-FT needs one architecture"
        )
    out = {}
    for name, a in start.items():
        b = finetuned[name]
        if a.shape != b.shape:
            raise FinetuneError(
                f"parameter {name} has shape {tuple(a.shape)} in one model and {tuple(b.shape)} in the other"
            )
        if a.is_floating_point():
            out[name] = ((1.0 - alpha) * a.float() + alpha * b.float()).to(b.dtype)
        else:
            out[name] = b.clone()
    return out


def wise_ft(start: EmbeddingModel, finetuned: EmbeddingModel, alpha: float) -> EmbeddingModel:
    """A new model (a copy of ``finetuned``'s structure) with the interpolated weights, in eval mode."""
    state = interpolate_state_dicts(
        {k: v.detach().cpu() for k, v in start.state_dict().items()},
        {k: v.detach().cpu() for k, v in finetuned.state_dict().items()},
        alpha,
    )
    model = copy.deepcopy(finetuned)
    model.load_state_dict(state)
    model.name = f"{getattr(finetuned, 'name', 'model')}-wise{alpha:g}"
    return model.eval()


def write_wise(
    start_spec: str | os.PathLike[str],
    finetuned_spec: str | os.PathLike[str],
    alpha: float,
    out: str | os.PathLike[str],
) -> Path:
    """Load both models (any spec ``model.load`` takes), interpolate at ``alpha``, save our format to ``out``."""
    start = load(str(start_spec), device="cpu")
    finetuned = load(str(finetuned_spec), device="cpu")
    families = (getattr(start, "family", "clip"), getattr(finetuned, "family", "clip"))
    if families[0] != families[1]:
        raise FinetuneError(
            f"{start_spec} is a {families[0]} model and {finetuned_spec} a {families[1]} one; "
            "WiSE-FT interpolates a model and its own fine-tune"
        )
    configs = [cast(Any, m).config.to_dict() for m in (start, finetuned)]
    if configs[0] != configs[1]:
        raise FinetuneError(
            f"{start_spec} and {finetuned_spec} have different architectures; WiSE-FT needs one"
        )
    model = wise_ft(start, finetuned, alpha)
    folder = save_pretrained(model, Path(out))
    logger.info("wrote the WiSE-FT model (alpha %.2f) to %s", alpha, folder)
    return folder
