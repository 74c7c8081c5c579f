"""Distributed training: this process's rank, its device, and the towers as DDP wraps them.

Launched by ``torchrun``, each rank takes its slice of every global batch; the towers run under
DDP, and :class:`~model.finetune.loss.ClipLoss` gathers features with gradients so the negatives
are the whole global batch. Which process group to join (torchrun's ``WORLD_SIZE`` and
``LOCAL_RANK``) is read by the CLI, the edge, and passed to :func:`init_distributed`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from clipsearch.model.finetune import FinetuneError


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(world_size: int, local_rank: int = 0) -> bool:
    """Join the process group torchrun describes (``world_size`` processes, this one the
    ``local_rank``-th on its host; MASTER_ADDR/PORT as torch reads them); False if alone."""
    if dist.is_initialized() or world_size <= 1:
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return True


def pick_device(spec: str) -> torch.device:
    """``"auto"``: this rank's GPU (the current CUDA device, which :func:`init_distributed`
    set), else the CPU; otherwise the named device, checked."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise FinetuneError(f"unknown device {spec!r}; use cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FinetuneError(f"device {spec} asked for but CUDA is not available; use --device cpu")
    return device


class Towers(nn.Module):
    """``forward(pixels, tokens) -> (image, text)`` L2-normalised features: what DDP wraps.

    The temperature is read by the loss outside this forward, so DDP is told to ignore it and
    its gradient is averaged by hand (it is the same on every rank anyway).
    """

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(
        self, pixels: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.clip.encode_image(pixels)  # type: ignore[operator]
        text = self.clip.encode_text(tokens)  # type: ignore[operator]
        return F.normalize(image, dim=-1), F.normalize(text, dim=-1)


def make_towers(clip: nn.Module) -> nn.Module:
    """:class:`Towers` of ``clip``, DDP-wrapped when torch.distributed is initialised with >1 rank.

    Call after freezing (DDP registers the parameters that require gradients at wrap time).
    """
    towers: nn.Module = Towers(clip)
    _, size = world()
    if size > 1:
        device = clip.logit_scale.device  # type: ignore[union-attr]
        ddp = nn.parallel.DistributedDataParallel
        ignored = ["clip.logit_scale"] + (
            ["clip.logit_bias"] if hasattr(clip, "logit_bias") else []
        )
        ddp._set_params_and_buffers_to_ignore_for_model(towers, ignored)
        towers = ddp(towers, device_ids=[device.index] if device.type == "cuda" else None)
    return towers


def sync_logit_scale_grad(clip: nn.Module) -> None:
    """Average the temperature's (and SigLIP's bias's) gradient over ranks (DDP ignores them;
    see :class:`Towers`)."""
    _, size = world()
    for name in ("logit_scale", "logit_bias"):
        param: Any = getattr(clip, name, None)
        grad: torch.Tensor | None = None if param is None else param.grad
        if size > 1 and grad is not None:
            dist.all_reduce(grad)
            grad /= size
