"""Contrastive fine-tuning (or training from scratch) of a CLIP on image/caption pairs.

The loop, top to bottom: learning rate from the schedule, evaluation/checkpoint when due, one
contrastive step over the global batch (plain, or GradCache chunks), gradient clipping, optimizer
step, temperature clamp, logging. Everything the next step depends on (weights, optimizer,
scheduler, scaler, RNG states, step) is in the checkpoint, and the data order is a pure function of
``(seed, epoch)``, so a run resumed from a checkpoint ends with the same weights as one that never
stopped.

Distributed: launched by ``torchrun``, each rank takes its slice of every global batch; the towers
run under DDP, and :class:`~model.finetune.loss.ClipLoss` gathers features with gradients so the
negatives are the whole global batch (see loss.py for why the gradients come out exact).

GradCache (``accum_chunks > 1``): embed the rank's batch in chunks without autograd, compute the
loss over the full batch and its gradient with respect to the features, then re-run each chunk with
autograd and back-propagate the cached feature gradients. Peak activation memory is that of one
chunk; the contrastive batch (the negatives) stays whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clipsearch.model.finetune import FinetuneError
from clipsearch.model.finetune.data import Pair, PairDataset, encode_pairs
from clipsearch.model.finetune.evaluate import evaluate_pairs
from clipsearch.model.finetune.loss import MAX_LOGIT_SCALE, ClipLoss, loss_for

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
_CKPT_RE = re.compile(r"^step-(\d{8})\.pt$")


@dataclass
class TrainConfig:
    """Everything that decides what a run computes (saved in every checkpoint)."""

    epochs: float = (
        1.0  # passes over the training pairs (fractions allowed); unused if max_steps > 0
    )
    max_steps: int = 0  # optimizer steps in total; 0: epochs * steps per epoch
    batch_size: int = 64  # global contrastive batch: all ranks and all GradCache chunks together
    accum_chunks: int = 1  # GradCache chunks per rank (1: embed the rank's batch in one go)
    lr: float = 5e-5  # peak learning rate, reached after warmup
    min_lr_ratio: float = 0.0  # the cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: int = 0  # linear warmup from ~0 to lr; -1: 5% of the run
    weight_decay: float = (
        0.1  # AdamW decay on >=2-D weights only (not gains, biases, embeddings, logit_scale)
    )
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas (CLIP's)
    eps: float = 1e-6  # AdamW epsilon (CLIP's)
    grad_clip: float = 0.0  # clip the global gradient norm to this; 0: no clipping
    precision: str = (
        "auto"  # "fp32", "bf16", "fp16" (autocast; fp16 with a grad scaler); auto: bf16 on CUDA
    )
    grad_checkpointing: bool = (
        False  # recompute each transformer block in backward (less memory, more time)
    )
    lock_image: bool = False  # LiT: freeze the whole image tower (kept in eval mode)
    freeze_image_layers: int = 0  # freeze the image stem and the lowest N image blocks
    freeze_text_layers: int = 0  # freeze the token/position embeddings and the lowest N text blocks
    lock_logit_scale: bool = False  # keep the temperature fixed
    val_fraction: float = (
        0.1  # share of pairs held out for validation (split by a hash of the path)
    )
    split_seed: int = 0  # seed of that split
    seed: int = 0  # seed of the data order (epoch e uses a permutation drawn from (seed, e))
    eval_every: int = 0  # evaluate on the validation pairs every N steps (0: only at the end)
    checkpoint_every: int = 0  # checkpoint every N steps (0: at each epoch end and at the end)
    keep_checkpoints: int = 2  # checkpoints kept on disk (the newest)
    log_every: int = 10  # write a metrics line every N steps
    num_workers: int = 0  # DataLoader worker processes (when pixels are not cached in memory)
    cache_pixels: str = (
        "auto"  # "yes": decode every image into memory first; "no"; "auto": if < 1 GiB
    )
    device: str = "auto"  # "cpu", "cuda", "cuda:1", ...; auto: this rank's GPU if any, else CPU
    stop_after: int = (
        0  # stop (with a checkpoint) once this step is reached, as an interruption would
    )

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = (float(self.betas[0]), float(self.betas[1]))
        checks = [
            (self.batch_size >= 2, "batch_size must be at least 2"),
            (self.accum_chunks >= 1, "accum_chunks must be at least 1"),
            (self.epochs > 0 or self.max_steps > 0, "give epochs > 0 or max_steps > 0"),
            (self.max_steps >= 0 and self.stop_after >= 0, "max_steps and stop_after must be >= 0"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive number"),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (
                self.precision in ("auto", "fp32", "bf16", "fp16"),
                "precision must be auto, fp32, bf16 or fp16",
            ),
            (
                self.freeze_image_layers >= 0 and self.freeze_text_layers >= 0,
                "frozen layer counts must be >= 0",
            ),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.cache_pixels in ("auto", "yes", "no"), "cache_pixels must be auto, yes or no"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise FinetuneError(message)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TrainResult:
    """What a run did."""

    step: int  # optimizer steps done (in total, counting steps before a resume)
    total_steps: int  # steps the full run has
    finished: bool  # False when stopped early by stop_after
    metrics: dict[str, float] = field(default_factory=dict)  # last validation metrics
    checkpoint: Path | None = None  # the last checkpoint written


# --------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed_from_env() -> bool:
    """Join the process group torchrun describes (RANK/WORLD_SIZE/MASTER_ADDR...); False if not launched so."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def _pick_device(spec: str) -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device(
                "cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
            )
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise FinetuneError(f"unknown device {spec!r}; use cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FinetuneError(f"device {spec} asked for but CUDA is not available; use --device cpu")
    return device


# --------------------------------------------------------------------------------------------
# The model as training sees it
# --------------------------------------------------------------------------------------------


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


def _set_train_mode(clip: nn.Module, cfg: TrainConfig) -> None:
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


def _checkpointed(forward: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
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


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
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


# --------------------------------------------------------------------------------------------
# One contrastive step
# --------------------------------------------------------------------------------------------


def contrastive_backward(
    towers: nn.Module,
    logit_scale: torch.Tensor,
    loss_fn: ClipLoss | nn.Module,
    pixels: torch.Tensor,
    tokens: torch.Tensor,
    chunks: int = 1,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
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


# --------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of pair indices for ``epoch``: a pure function of (n, seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class _Batches:
    """Global batches of indices by step: step s is batch s % per_epoch of epoch s // per_epoch."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.n, self.seed, epoch)
        return self._order[i * self.batch_size : (i + 1) * self.batch_size]


class _Source:
    """Pixels and tokens by pair index, from memory or decoded on demand."""

    def __init__(self, pairs: Sequence[Pair], clip: Any, cfg: TrainConfig) -> None:
        r = clip.image_size
        cache = cfg.cache_pixels == "yes" or (
            cfg.cache_pixels == "auto" and len(pairs) * 3 * r * r * 4 < 2**30
        )
        # Trailing padding is dropped only for CLIP (pooled at the end-of-text token); a tower
        # pooled at the last position (SigLIP) needs the full context length.
        trim = getattr(clip, "family", "clip") == "clip"
        self.dataset = PairDataset(
            pairs,
            clip.preprocessor if hasattr(clip, "preprocessor") else clip.preprocess,
            clip.tokenize,
            trim=trim,
        )
        self.tokens = self.dataset.tokens
        self.pixels: torch.Tensor | None = None
        if cache:
            self.pixels, _ = encode_pairs(pairs, self.dataset.preprocess, clip.tokenize, trim=trim)
        self.num_workers = cfg.num_workers

    def batches(
        self, indices_of: Callable[[int], torch.Tensor], start: int, stop: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(pixels, tokens) of steps ``start .. stop-1``; decoded by persistent workers if asked."""
        if self.pixels is not None:
            for step in range(start, stop):
                idx = indices_of(step)
                yield self.pixels[idx], self.tokens[idx]
            return
        if self.num_workers > 0:
            sampler = _StepSampler(indices_of, start, stop)
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=sampler, num_workers=self.num_workers, prefetch_factor=2
            )
            yield from loader
            return
        for step in range(start, stop):
            items = [self.dataset[int(i)] for i in indices_of(step)]
            yield torch.stack([p for p, _ in items]), torch.stack([t for _, t in items])


class _StepSampler:
    """A batch sampler: the index lists of steps ``start .. stop-1``."""

    def __init__(self, indices_of: Callable[[int], torch.Tensor], start: int, stop: int) -> None:
        self.indices_of, self.start, self.stop = indices_of, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.indices_of(step).tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files of a run folder, oldest first."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = sorted(
        (int(m.group(1)), folder / name)
        for name in os.listdir(folder)
        if (m := _CKPT_RE.match(name))
    )
    return [p for _, p in found]


def load_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint (tensors and plain data only: no code is unpickled)."""
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise FinetuneError(f"checkpoint {p} not found") from exc
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise FinetuneError(
            f"checkpoint {p} cannot be read ({exc}); delete it to resume from the previous one"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != "clipsearch-finetune-1":
        raise FinetuneError(f"{p} is not a clipsearch fine-tuning checkpoint")
    return state


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class Trainer:
    """Trains ``clip`` on ``train_pairs``, writing checkpoints and metrics under ``out_dir``.

    Under torchrun every rank builds the same Trainer (same model init, same pairs); rank 0 writes.
    """

    def __init__(
        self,
        clip: nn.Module,
        train_pairs: Sequence[Pair],
        val_pairs: Sequence[Pair],
        cfg: TrainConfig,
        out_dir: str | os.PathLike[str],
        *,
        progress: bool = False,
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.rank, self.world = world()
        self.device = _pick_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.progress = progress and self.rank == 0
        self.extra_state = dict(extra_state or {})
        per_rank, rem = divmod(cfg.batch_size, self.world)
        if rem or per_rank % cfg.accum_chunks:
            raise FinetuneError(
                f"batch_size {cfg.batch_size} must be divisible by world size {self.world} x accum_chunks {cfg.accum_chunks}"
            )
        if len(train_pairs) < cfg.batch_size:
            raise FinetuneError(
                f"only {len(train_pairs)} training pairs for a batch of {cfg.batch_size}; lower --batch-size or add data"
            )
        self.per_rank = per_rank
        self.clip = clip.to(self.device)
        self.frozen = apply_freezing(self.clip, cfg)
        self.towers = make_towers(self.clip)
        self.loss_fn = loss_for(self.clip)  # sigmoid for SigLIP, softmax contrastive for CLIP
        # SigLIP's scale starts at log(10) and is learnt past CLIP's cap of 100
        self.max_logit_scale = MAX_LOGIT_SCALE if not hasattr(self.clip, "logit_bias") else 10.0
        self.optimizer = configure_optimizers(self.clip, cfg)
        self.batches = _Batches(len(train_pairs), cfg.batch_size, cfg.seed)
        per_epoch = self.batches.per_epoch
        self.total_steps = cfg.max_steps or max(1, round(cfg.epochs * per_epoch))
        warmup = cfg.warmup_steps if cfg.warmup_steps >= 0 else max(1, self.total_steps // 20)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            functools.partial(
                lr_factor, total=self.total_steps, warmup=warmup, min_ratio=cfg.min_lr_ratio
            ),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.source = _Source(train_pairs, self.clip, cfg)
        self.trim = getattr(self.clip, "family", "clip") == "clip"
        self.val_pairs = list(val_pairs)
        self._val_cache: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None
        self.step = 0
        self.last_metrics: dict[str, float] = {}
        self.last_checkpoint: Path | None = None

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "clipsearch-finetune-1",
            "step": self.step,
            "model": {k: v.detach().cpu() for k, v in self.clip.state_dict().items()},
            "clip_config": self.clip.config.to_dict(),  # type: ignore[operator, union-attr]
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "train_config": self.cfg.to_dict(),
            "world_size": self.world,
            "metrics": dict(self.last_metrics),
            "extra": self.extra_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.last_metrics = dict(state.get("metrics", {}))

    def resume(self, path: str | os.PathLike[str] | None = None) -> bool:
        """Load ``path`` (or the newest checkpoint under out_dir); False if there is none."""
        if path is None:
            found = list_checkpoints(self.out)
            if not found:
                return False
            path = found[-1]
        state = load_training_checkpoint(path)
        saved = TrainConfig.from_dict(state["train_config"])
        for name in (
            "batch_size",
            "seed",
            "max_steps",
            "epochs",
            "lr",
            "accum_chunks",
            "warmup_steps",
        ):
            if getattr(saved, name) != getattr(self.cfg, name):
                logger.warning(
                    "resuming with %s=%s, the checkpoint was made with %s",
                    name,
                    getattr(self.cfg, name),
                    getattr(saved, name),
                )
        self.load_state_dict(state)
        logger.info("resumed from %s at step %d of %d", path, self.step, self.total_steps)
        return True

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-NNNNNNNN.pt`` atomically (rank 0) and prune old ones."""
        if self.rank != 0:
            return None
        folder = self.out / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{self.step:08d}.pt"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        for old in list_checkpoints(self.out)[: -self.cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)
        self.last_checkpoint = path
        return path

    # -- logging and evaluation ---------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / METRICS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def evaluate(self) -> dict[str, float]:
        """Validation recall (rank 0 computes; others get {})."""
        if self.rank != 0 or not self.val_pairs:
            return {}
        if self._val_cache is None:
            tokenize: Any = self.clip.tokenize
            pixels, tokens = encode_pairs(
                self.val_pairs, self.source.dataset.preprocess, tokenize, trim=self.trim
            )
            self._val_cache = (pixels, tokens, [p.caption for p in self.val_pairs])
        pixels, tokens, captions = self._val_cache
        metrics = evaluate_pairs(self.clip, pixels=pixels, tokens=tokens, captions=captions)
        _set_train_mode(self.clip, self.cfg)
        self.last_metrics = metrics
        return metrics

    # -- the loop -----------------------------------------------------------------------------

    def _rank_slice(self, indices: torch.Tensor) -> torch.Tensor:
        return indices[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]

    def train_step(self, pixels: torch.Tensor, tokens: torch.Tensor) -> float:
        """One optimizer step on this rank's share of the global batch; returns the loss."""
        pixels = pixels.to(self.device, non_blocking=True)
        tokens = tokens.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss = contrastive_backward(
            self.towers,
            self.clip.logit_scale,  # type: ignore[arg-type]
            self.loss_fn,
            pixels,
            tokens,
            chunks=self.cfg.accum_chunks,
            autocast=functools.partial(_autocast, self.device, self.precision),
            scale=self.scaler.scale,
        )
        sync_logit_scale_grad(self.clip)
        scale_param: torch.Tensor = self.clip.logit_scale  # type: ignore[assignment]
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.clip.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        with torch.no_grad():
            scale_param.clamp_(0, self.max_logit_scale)
        self.step += 1
        return float(loss)

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def fit(self) -> TrainResult:
        """Train until total_steps (or stop_after); evaluate and checkpoint along the way."""
        cfg = self.cfg
        _set_train_mode(self.clip, cfg)
        if self.step == 0:
            self.log(
                {
                    "event": "start",
                    "total_steps": self.total_steps,
                    "train_pairs": self.batches.n,
                    "val_pairs": len(self.val_pairs),
                    "world_size": self.world,
                    "config": cfg.to_dict(),
                }
            )
            if cfg.eval_every > 0:
                self.log({"step": 0, "val": self.evaluate()})
        else:
            self.log({"event": "resume", "step": self.step})
        stop_at = self.total_steps if cfg.stop_after <= 0 else min(cfg.stop_after, self.total_steps)
        per_epoch = self.batches.per_epoch
        bar = _ProgressBar(self.total_steps, self.step) if self.progress else None
        tic, pairs_done = time.perf_counter(), 0
        try:
            with gradient_checkpointing(self.clip, cfg.grad_checkpointing):
                data = self.source.batches(
                    lambda step: self._rank_slice(self.batches(step)), self.step, stop_at
                )
                for pixels, tokens in data:
                    lr = self.optimizer.param_groups[0]["lr"]
                    loss = self.train_step(pixels, tokens)
                    pairs_done += cfg.batch_size
                    if not math.isfinite(loss):
                        raise FinetuneError(
                            f"the loss became {loss} at step {self.step}; lower --lr or use --precision fp32"
                        )
                    temperature = float(self.clip.logit_scale.detach().exp())  # type: ignore[operator, union-attr]
                    if bar is not None:
                        bar.update(self.step, loss, lr)
                    if self._due(cfg.log_every) or self.step == stop_at:
                        elapsed = time.perf_counter() - tic
                        self.log(
                            {
                                "step": self.step,
                                "epoch": self.step / per_epoch,
                                "loss": loss,
                                "lr": lr,
                                "logit_scale": temperature,
                                "pairs_per_s": pairs_done / max(elapsed, 1e-9),
                            }
                        )
                        tic, pairs_done = time.perf_counter(), 0
                    if self._due(cfg.eval_every) and self.step < self.total_steps:
                        self.log({"step": self.step, "val": self.evaluate()})
                    epoch_end = cfg.checkpoint_every <= 0 and self.step % per_epoch == 0
                    if (self._due(cfg.checkpoint_every) or epoch_end) and self.step < stop_at:
                        self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        finished = self.step >= self.total_steps
        if finished:
            self.log({"step": self.step, "val": self.evaluate(), "event": "end"})
        self.save_checkpoint()
        if self.world > 1:
            dist.barrier()
        self.clip.eval()
        return TrainResult(
            self.step, self.total_steps, finished, dict(self.last_metrics), self.last_checkpoint
        )


class _ProgressBar:
    """A rich progress bar on stderr: step, loss, lr."""

    def __init__(self, total: int, done: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]fine-tuning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, completed=done, info="")

    def update(self, step: int, loss: float, lr: float) -> None:
        self._progress.update(self._task, completed=step, info=f"loss {loss:.4f} lr {lr:.2e}")

    def close(self) -> None:
        self._progress.stop()


def train(
    clip: nn.Module,
    train_pairs: Sequence[Pair],
    val_pairs: Sequence[Pair],
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool | str | os.PathLike[str] = False,
    progress: bool = False,
    extra_state: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``clip`` in place (see :class:`Trainer`); ``resume=True`` continues from the newest checkpoint."""
    trainer = Trainer(
        clip, train_pairs, val_pairs, cfg, out_dir, progress=progress, extra_state=extra_state
    )
    if resume:
        found = trainer.resume(None if resume is True else resume)  # type: ignore[arg-type]
        if not found:
            logger.info("no checkpoint under %s: starting from step 0", out_dir)
    return trainer.fit()


def small_clip_config(
    image_size: int = 32, width: int = 64, layers: int = 2, embed_dim: int = 64
) -> Any:
    """A small ViT CLIP that trains from scratch on the synthetic set in a minute or two on a CPU
    (the demo and the tests): 8px patches, ``layers`` blocks of ``width`` per tower, real BPE vocab."""
    from clipsearch.model.clip import CLIPConfig, TextConfig, VisionConfig

    heads = max(1, width // 32)
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(
            image_size=image_size, width=width, layers=layers, patch_size=8, heads=heads
        ),
        text=TextConfig(
            context_length=77, vocab_size=49408, width=width, heads=heads, layers=layers
        ),
        quick_gelu=True,
    )
