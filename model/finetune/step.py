"""One optimizer step's pieces: AdamW with decay on >=2-D weights only, the learning-rate
schedule, mixed precision, and the contrastive forward/backward (plain, or GradCache chunks).

GradCache (``chunks > 1``): embed the rank's batch in chunks without autograd, compute the loss
over the full batch and its gradient with respect to the features, then re-run each chunk with
autograd and back-propagate the cached feature gradients. Peak activation memory is that of one
chunk; the contrastive batch (the negatives) stays whole.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from clipsearch.model.finetune import FinetuneError
from clipsearch.model.finetune.config import TrainConfig
from clipsearch.model.finetune.loss import ClipLoss


def configure_optimizers(clip: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on >=2-D weights only: no decay on gains, biases, embeddings, logit_scale."""
    decay, no_decay = [], []
    for name, p in clip.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "embedding" in name or name == "logit_scale":
            no_decay.append(p)
        else:
            decay.append(p)
    if not decay and not no_decay:
        raise FinetuneError(
            "every parameter is frozen: nothing to train; loosen --lock-image/--freeze-layers"
        )
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = all(
        p.dtype == torch.float32 and p.device.type in ("cpu", "cuda")
        for g in groups
        for p in g["params"]
    )
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused or None)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear warmup, then cosine to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise FinetuneError("fp16 needs a CUDA device; use --precision bf16 or fp32 on the CPU")
    return precision


def contrastive_backward(
    towers: nn.Module,
    logit_scale: torch.Tensor,
    loss_fn: ClipLoss | nn.Module,
    pixels: torch.Tensor,
    tokens: torch.Tensor,
    chunks: int = 1,
    autocast: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
) -> torch.Tensor:
    """Forward and backward of the loss over this rank's batch; gradients land in ``.grad``.

    ``towers`` may be DDP-wrapped. ``chunks > 1`` is GradCache: the same gradients as one big
    batch (up to float rounding), with the activation memory of one chunk. Returns the loss.
    """
    if chunks <= 1:
        with autocast():
            image, text = towers(pixels, tokens)
        loss = loss_fn(image, text, logit_scale)
        scale(loss).backward()
        return loss.detach()
    pixel_chunks, token_chunks = pixels.chunk(chunks), tokens.chunk(chunks)
    if len(pixel_chunks) != chunks:
        raise FinetuneError(
            f"a batch of {pixels.shape[0]} cannot be cut into {chunks} GradCache chunks"
        )
    # 1. Features of the whole batch, without autograd.
    with torch.no_grad(), autocast():
        feats = [towers(p, t) for p, t in zip(pixel_chunks, token_chunks, strict=True)]
    image = torch.cat([f[0] for f in feats]).float().requires_grad_(True)
    text = torch.cat([f[1] for f in feats]).float().requires_grad_(True)
    # 2. The loss over the full batch, and its gradient with respect to the features.
    loss = loss_fn(image, text, logit_scale)
    scale(loss).backward()
    assert image.grad is not None and text.grad is not None
    sizes = [p.shape[0] for p in pixel_chunks]
    image_grads, text_grads = image.grad.split(sizes), text.grad.split(sizes)
    # 3. Re-run each chunk with autograd and back-propagate the cached feature gradients.
    no_sync = getattr(towers, "no_sync", None)
    for j, (p, t) in enumerate(zip(pixel_chunks, token_chunks, strict=True)):
        last = j == chunks - 1
        ctx = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
        with ctx:
            with autocast():
                img_j, txt_j = towers(p, t)
            surrogate = (img_j.float() * image_grads[j]).sum() + (
                txt_j.float() * text_grads[j]
            ).sum()
            if surrogate.requires_grad:
                surrogate.backward()
    return loss.detach()
