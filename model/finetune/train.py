"""Contrastive fine-tuning (or training from scratch) of a CLIP on image/caption pairs.

The loop, top to bottom: learning rate from the schedule, evaluation/checkpoint when due, one
contrastive step over the global batch (plain, or GradCache chunks), gradient clipping, optimizer
step, temperature clamp, logging. Everything the next step depends on (weights, optimizer,
scheduler, scaler, RNG states, step) is in the checkpoint, and the data order is a pure function of
``(seed, epoch)``, so a run resumed from a checkpoint ends with the same weights as one that never
stopped.

The pieces, one module each, their public names importable from here too: the run's config
(:mod:`.config`), distributed training and the DDP towers (:mod:`.distributed`), freezing and
gradient checkpointing (:mod:`.freezing`), one step's optimizer, schedule, precision and
GradCache backward (:mod:`.step`), the data order (:mod:`.batches`) and the checkpoint files
(:mod:`.checkpointing`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from clipsearch.model.base import EmbeddingModel
from clipsearch.model.clip import CLIPConfig, TextConfig, VisionConfig
from clipsearch.model.finetune import FinetuneError
from clipsearch.model.finetune.batches import Batches, Source, epoch_order
from clipsearch.model.finetune.checkpointing import (
    CHECKPOINT_DIR,
    TrainingCheckpoint,
    list_checkpoints,
    load_training_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from clipsearch.model.finetune.config import TrainConfig, TrainResult
from clipsearch.model.finetune.data import Pair, encode_pairs
from clipsearch.model.finetune.distributed import (
    Towers,
    init_distributed,
    make_towers,
    pick_device,
    sync_logit_scale_grad,
    world,
)
from clipsearch.model.finetune.evaluate import evaluate_pairs
from clipsearch.model.finetune.freezing import (
    apply_freezing,
    gradient_checkpointing,
    set_train_mode,
)
from clipsearch.model.finetune.loss import MAX_LOGIT_SCALE, loss_for
from clipsearch.model.finetune.step import (
    autocast_for,
    configure_optimizers,
    contrastive_backward,
    lr_factor,
    resolve_precision,
)

__all__ = [
    "CHECKPOINT_DIR",
    "METRICS_FILE",
    "Towers",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "apply_freezing",
    "configure_optimizers",
    "contrastive_backward",
    "epoch_order",
    "gradient_checkpointing",
    "init_distributed",
    "list_checkpoints",
    "load_training_checkpoint",
    "lr_factor",
    "make_towers",
    "resolve_precision",
    "small_clip_config",
    "sync_logit_scale_grad",
    "train",
    "world",
]
_autocast = autocast_for  # the name bench/finetune.py imports

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class Trainer:
    """Trains ``clip`` on ``train_pairs``, writing checkpoints and metrics under ``out_dir``.

    Under torchrun every rank builds the same Trainer (same model init, same pairs); rank 0 writes.
    """

    def __init__(
        self,
        clip: EmbeddingModel,
        train_pairs: Sequence[Pair],
        val_pairs: Sequence[Pair],
        cfg: TrainConfig,
        out_dir: str | os.PathLike[str],
        *,
        progress: bool = False,
        extra_state: dict[str, object] | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.rank, self.world = world()
        self.device = pick_device(cfg.device)
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
        self.batches = Batches(len(train_pairs), cfg.batch_size, cfg.seed)
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
        self.source = Source(train_pairs, self.clip, cfg)
        self.trim = getattr(self.clip, "family", "clip") == "clip"
        self.val_pairs = list(val_pairs)
        self._val_cache: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None
        self.step = 0
        self.last_metrics: dict[str, float] = {}
        self.last_checkpoint: Path | None = None

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> TrainingCheckpoint:
        return {
            "format": "clipsearch-finetune-1",
            "step": self.step,
            "model": {k: v.detach().cpu() for k, v in self.clip.state_dict().items()},
            "clip_config": self.clip.config.to_dict(),  # type: ignore[operator, union-attr]
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "train_config": self.cfg.to_dict(),
            "world_size": self.world,
            "metrics": dict(self.last_metrics),
            "extra": self.extra_state,
        }

    def load_state_dict(self, state: TrainingCheckpoint) -> None:
        self.clip.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
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
        path = write_checkpoint(self.out, self.step, self.state_dict(), self.cfg.keep_checkpoints)
        self.last_checkpoint = path
        return path

    # -- logging and evaluation ---------------------------------------------------------------

    def log(self, record: Mapping[str, object]) -> None:
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
        set_train_mode(self.clip, self.cfg)
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
            autocast=functools.partial(autocast_for, self.device, self.precision),
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
        set_train_mode(self.clip, cfg)
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
    """A rich progress bar on stderr: step, loss, lr. When stderr is not a terminal (a log file,
    a pipe) a bar would print nothing until the end: plain lines instead, one per tenth."""

    def __init__(self, total: int, done: int) -> None:
        import sys

        self._plain = not sys.stderr.isatty()
        self._total = max(1, total)
        self._next = done + max(1, self._total // 10)
        if self._plain:
            print(f"fine-tuning: step {done} of {total}", file=sys.stderr, flush=True)
            return
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
        if self._plain:
            if step >= self._next or step == self._total:
                import sys

                self._next = step + max(1, self._total // 10)
                line = f"fine-tuning: step {step} of {self._total}, loss {loss:.4f}"
                print(line, file=sys.stderr, flush=True)
            return
        self._progress.update(self._task, completed=step, info=f"loss {loss:.4f} lr {lr:.2e}")

    def close(self) -> None:
        if not self._plain:
            self._progress.stop()


def train(
    clip: EmbeddingModel,
    train_pairs: Sequence[Pair],
    val_pairs: Sequence[Pair],
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool | str | os.PathLike[str] = False,
    progress: bool = False,
    extra_state: dict[str, object] | None = None,
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
    image_size: int = 32,
    width: int = 64,
    layers: int = 2,
    embed_dim: int = 64,
    vision_layers: int | None = None,
) -> CLIPConfig:
    """A small ViT CLIP that trains from scratch on the synthetic set in a minute or two on a CPU
    (the demo and the tests): 8px patches, ``layers`` blocks of ``width`` per tower (the image
    tower ``vision_layers`` where given), real BPE vocab."""
    heads = max(1, width // 32)
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(
            image_size=image_size,
            width=width,
            layers=layers if vision_layers is None else vision_layers,
            patch_size=8,
            heads=heads,
        ),
        text=TextConfig(
            context_length=77, vocab_size=49408, width=width, heads=heads, layers=layers
        ),
        quick_gelu=True,
    )
