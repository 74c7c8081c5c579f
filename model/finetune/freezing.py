"""Which parameters a run trains: frozen towers and layers (LiT's locked image tower, the lowest
blocks), the train/eval mode of what is frozen, and gradient checkpointing, for every family
model/ builds."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from clipsearch.model.finetune import FinetuneError
from clipsearch.model.finetune.config import TrainConfig

logger = logging.getLogger(__name__)


def _blocks(clip: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(image blocks, text blocks), lowest first, for every family model/ builds."""
    visual: Any = clip.visual
    if hasattr(visual, "transformer"):  # ViT towers (CLIP, SigLIP, MobileCLIP2-B)
        image_blocks = list(visual.transformer.resblocks)
    elif hasattr(visual, "stages"):  # MobileCLIP's FastViT (MCi): its blocks, stage by stage
        image_blocks = [b for stage in visual.stages for b in stage.blocks]
    else:  # ModifiedResNet: its bottlenecks, stage by stage
        image_blocks = [
            b
            for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4)
            for b in stage
        ]
    text: Any = getattr(clip, "text", None)
    if text is None:  # CLIP keeps its text transformer on the model itself
        return image_blocks, list(clip.transformer.resblocks)  # type: ignore[union-attr, arg-type]
    inner = text.transformer
    if hasattr(inner, "resblocks"):  # towers.TextTransformer (SigLIP, MobileCLIP)
        return image_blocks, list(inner.resblocks)
    if hasattr(inner, "encoder"):  # a Hugging Face encoder (XLM-RoBERTa)
        return image_blocks, list(inner.encoder.layer)
    return image_blocks, list(inner.layers)  # NLLB's M2M100 encoder


def _text_embeddings(clip: nn.Module) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """The text tower's token and position embeddings: (modules, bare parameters)."""
    text: Any = getattr(clip, "text", clip)  # SigLIP and the others keep them in .text
    if hasattr(text, "token_embedding"):
        return [text.token_embedding], [text.positional_embedding]
    inner = text.transformer
    if hasattr(inner, "embeddings"):  # XLM-RoBERTa: word, position and type embeddings
        return [inner.embeddings], []
    return [m for m in (inner.embed_tokens, inner.embed_positions) if m is not None], []


def apply_freezing(clip: nn.Module, cfg: TrainConfig) -> list[str]:
    """Set requires_grad=False on what ``cfg`` freezes; returns the frozen parameter names."""
    for p in clip.parameters():
        p.requires_grad_(True)
    frozen: list[nn.Module] = []
    image_blocks, text_blocks = _blocks(clip)
    visual: Any = clip.visual
    if cfg.lock_image:
        frozen.append(visual)
    elif cfg.freeze_image_layers:
        if cfg.freeze_image_layers > len(image_blocks):
            raise FinetuneError(
                f"freeze_image_layers={cfg.freeze_image_layers} but the image tower has {len(image_blocks)} blocks"
            )
        stem = [
            m
            for name, m in visual.named_children()
            if name
            in ("conv1", "ln_pre", "conv2", "conv3", "bn1", "bn2", "bn3", "patch_embed", "stem")
        ]
        frozen += stem + image_blocks[: cfg.freeze_image_layers]
        for name in ("class_embedding", "positional_embedding", "pos_embed"):
            if hasattr(visual, name):
                getattr(visual, name).requires_grad_(False)
    if cfg.freeze_text_layers:
        if cfg.freeze_text_layers > len(text_blocks):
            raise FinetuneError(
                f"freeze_text_layers={cfg.freeze_text_layers} but the text tower has {len(text_blocks)} blocks"
            )
        embed_modules, embed_params = _text_embeddings(clip)
        frozen += [*embed_modules, *text_blocks[: cfg.freeze_text_layers]]
        for param in embed_params:
            param.requires_grad_(False)
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    if cfg.lock_logit_scale:
        clip.logit_scale.requires_grad_(False)  # type: ignore[union-attr]
    names = [n for n, p in clip.named_parameters() if not p.requires_grad]
    if names:
        logger.info("frozen: %d of %d parameter tensors", len(names), len(list(clip.parameters())))
    return names


def set_train_mode(clip: nn.Module, cfg: TrainConfig) -> None:
    clip.train()
    if cfg.lock_image:
        clip.visual.eval()  # type: ignore[union-attr]  # a locked tower keeps its BatchNorm statistics
    if getattr(clip, "family", "clip") == "mobileclip":
        # MobileCLIP's BatchNorms (left after folding the reparameterisable branches) keep the
        # checkpoint's statistics: a fine-tune's batches are too small and too alike to
        # re-estimate them; their scale and shift still train
        for module in clip.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


_P = ParamSpec("_P")


def _checkpointed(
    forward: Callable[_P, torch.Tensor], *args: _P.args, **kwargs: _P.kwargs
) -> torch.Tensor:
    if torch.is_grad_enabled():
        # the keywords bound first: non-reentrant checkpointing calls forward(*args, **kwargs)
        # either way, and torch's own keywords (use_reentrant, ...) stay apart from the block's
        return checkpoint(functools.partial(forward, **kwargs), *args, use_reentrant=False)
    return forward(*args, **kwargs)


@contextlib.contextmanager
def gradient_checkpointing(clip: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Recompute every transformer block / bottleneck in backward while inside the context."""
    if not enabled:
        yield
        return
    image_blocks, text_blocks = _blocks(clip)
    patched = []
    for block in image_blocks + text_blocks:
        if "forward" not in block.__dict__:
            block.forward = functools.partial(_checkpointed, type(block).forward.__get__(block))  # type: ignore[method-assign]
            patched.append(block)
    try:
        yield
    finally:
        for block in patched:
            del block.forward
