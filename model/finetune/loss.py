"""The CLIP contrastive loss, and the all-gather that lets it see every rank's batch.

Every rank computes the same loss over the *global* batch: its own features enter through an
all-gather whose backward sums the gradient that every rank computed for each slice. Since each
rank's loss is the same function, the gradient reaching a rank's features is ``world_size`` times
the true one, and DDP's gradient averaging divides it back: the parameters see exactly the
gradient of one process training on the whole global batch.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = math.log(100.0)  # the CLIP paper clips the temperature at 100


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward all-reduces (sums) the gradient and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.batch
        return grad[start : start + ctx.batch]


def gather_features(features: torch.Tensor) -> torch.Tensor:
    """Concatenate ``features`` of all ranks (rank order), keeping gradients; identity when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    return _GatherWithGrad.apply(features)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over an image/text batch: pair i is the positive of row and column i.

    ``forward(image_features, text_features, logit_scale)`` takes L2-normalised features of this
    rank and the raw (log-space) ``logit_scale`` parameter; the scale used is
    ``exp(min(logit_scale, ln 100))``. With ``gather=True`` under torch.distributed the features of
    every rank are gathered (with gradients) first, so the negatives are the whole global batch.
    """

    def __init__(self, gather: bool = True) -> None:
        super().__init__()
        self.gather = gather

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        if image_features.shape != text_features.shape:
            raise ValueError(
                f"image and text features must have the same shape, got {tuple(image_features.shape)} "
                f"and {tuple(text_features.shape)}"
            )
        if self.gather:
            image_features = gather_features(image_features)
            text_features = gather_features(text_features)
        image_features = image_features.float()
        text_features = text_features.float()
        scale = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
        logits_per_image = scale * image_features @ text_features.t()
        labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
        return (
            F.cross_entropy(logits_per_image, labels)
            + F.cross_entropy(logits_per_image.t(), labels)
        ) / 2


class SigLipLoss(nn.Module):
    """SigLIP's pairwise sigmoid loss: every image/text pair of the batch is a binary
    classification, positive on the diagonal, negative elsewhere, with the model's learnt scale
    and bias: ``-mean_i sum_j log sigmoid(z_ij * (exp(logit_scale) * <img_i, txt_j> + logit_bias))``
    with ``z_ij = 1`` if ``i == j`` else ``-1`` (Zhai et al. 2023, eq. 1; divided by the batch
    size as there).

    ``forward(image_features, text_features, logit_scale)`` matches :class:`ClipLoss`; the bias is
    the ``logit_bias`` parameter given here (the model's own, so the optimizer trains it). With
    ``gather=True`` under torch.distributed, every rank's features are gathered first (the
    all-gather variant of the paper, not its chunked ring).
    """

    def __init__(self, logit_bias: torch.Tensor, gather: bool = True) -> None:
        super().__init__()
        self.gather = gather
        self.__dict__["_bias"] = logit_bias  # the model's parameter, not one of this module's

    @property
    def logit_bias(self) -> torch.Tensor:
        return self.__dict__["_bias"]

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        if image_features.shape != text_features.shape:
            raise ValueError(
                f"image and text features must have the same shape, got "
                f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
            )
        if self.gather:
            image_features = gather_features(image_features)
            text_features = gather_features(text_features)
        image_features = image_features.float()
        text_features = text_features.float()
        logits = logit_scale.float().exp() * image_features @ text_features.t()
        logits = logits + self.logit_bias.float()
        n = logits.shape[0]
        signs = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1
        return -F.logsigmoid(signs * logits).sum() / n


def loss_for(model: nn.Module, gather: bool = True) -> nn.Module:
    """The loss a model family was trained with: sigmoid for SigLIP (a model with a
    ``logit_bias``), the softmax contrastive loss otherwise."""
    bias = getattr(model, "logit_bias", None)
    if isinstance(bias, torch.Tensor):
        return SigLipLoss(bias, gather=gather)
    return ClipLoss(gather=gather)
