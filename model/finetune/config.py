"""What a fine-tuning run computes (:class:`TrainConfig`, saved in every checkpoint) and what it
did (:class:`TrainResult`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.model.finetune import FinetuneError
from clipsearch.model.json_types import JSONObject


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

    def to_dict(self) -> JSONObject:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        known: dict[str, Any] = {
            k: v for k, v in data.items() if k in names
        }  # __post_init__ checks
        return cls(**known)


@dataclass
class TrainResult:
    """What a run did."""

    step: int  # optimizer steps done (in total, counting steps before a resume)
    total_steps: int  # steps the full run has
    finished: bool  # False when stopped early by stop_after
    metrics: dict[str, float] = field(default_factory=dict)  # last validation metrics
    checkpoint: Path | None = None  # the last checkpoint written
