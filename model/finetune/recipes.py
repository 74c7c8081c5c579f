"""Small end-to-end recipes on the synthetic set, shared by the tests and bench/finetune.py.

- :func:`train_from_scratch`: a small CLIP learns colours and shapes (one object per image).
- :func:`skill_transfer`: that model is fine-tuned on images with one, two or three objects and
  captions that say how many; counting recall before and after, and what WiSE-FT keeps.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clipsearch.model.api import build
from clipsearch.model.base import EmbeddingModel
from clipsearch.model.clip import CLIP
from clipsearch.model.finetune.data import Pair, encode_pairs, load_pairs
from clipsearch.model.finetune.evaluate import attribute_accuracy, evaluate_pairs
from clipsearch.model.finetune.synthetic import SyntheticConfig, read_manifest, write_folder
from clipsearch.model.finetune.train import TrainConfig, TrainResult, small_clip_config, train
from clipsearch.model.finetune.wise import wise_ft

logger = logging.getLogger(__name__)

COLOURS = ("red", "green", "blue", "yellow", "purple", "white")

BASE_SET = SyntheticConfig(
    attributes=("colour", "shape"), image_size=32, seed=0, templates="plain", colours=COLOURS
)
COUNT_SET = SyntheticConfig(
    attributes=("colour", "shape", "count"),
    image_size=32,
    seed=1,
    templates="plain",
    colours=COLOURS,
)


@dataclass
class Encoded:
    """A held-out set, decoded once: pixels, tokens, captions and attribute values."""

    pixels: torch.Tensor
    tokens: torch.Tensor
    captions: list[str]
    attributes: list[dict[str, object]] = field(default_factory=list)


def synthetic_pairs(cfg: SyntheticConfig, n: int, folder: str | os.PathLike[str]) -> list[Pair]:
    write_folder(cfg, n, folder)
    return load_pairs(folder, verify=False).pairs


def encode(model: EmbeddingModel, pairs: list[Pair], folder: str | os.PathLike[str]) -> Encoded:
    manifest = read_manifest(folder)
    pixels, tokens = encode_pairs(pairs, model.preprocess, model.tokenize)
    return Encoded(
        pixels, tokens, [p.caption for p in pairs], [manifest[p.path.name] for p in pairs]
    )


def scratch_train_config(steps: int, **overrides: object) -> TrainConfig:
    values: dict[str, Any] = {
        "max_steps": steps,
        "batch_size": 64,
        "lr": 2e-3,
        "warmup_steps": max(1, steps // 10),
        "weight_decay": 0.05,
        "grad_clip": 1.0,
        "val_fraction": 0.0,
        "cache_pixels": "yes",
        "log_every": 50,
        "checkpoint_every": 10**9,
        "keep_checkpoints": 1,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainConfig(**values)


def train_from_scratch(
    workdir: str | os.PathLike[str],
    *,
    n_train: int = 960,
    n_val: int = 96,
    steps: int = 250,
    width: int = 64,
) -> tuple[CLIP, dict[str, float], dict[str, float], TrainResult]:
    """Train a small CLIP on colour x shape; returns (model, val recall before, after, result)."""
    work = Path(workdir)
    train_pairs = synthetic_pairs(BASE_SET, n_train, work / "base-train")
    val_cfg = SyntheticConfig(**{**BASE_SET.__dict__, "seed": BASE_SET.seed + 1000})
    val_pairs = synthetic_pairs(val_cfg, n_val, work / "base-val")
    model = build(small_clip_config(width=width, embed_dim=width), seed=0, name="synthetic-base")
    before = evaluate_pairs(model, val_pairs)
    result = train(model, train_pairs, [], scratch_train_config(steps), work / "base-run")
    after = evaluate_pairs(model, val_pairs)
    return model, before, after, result


def skill_transfer(
    base: EmbeddingModel,
    workdir: str | os.PathLike[str],
    *,
    n_train: int = 960,
    n_val: int = 150,
    steps: int = 300,
    alpha: float = 0.5,
    lr: float = 1e-3,
) -> dict[str, dict[str, float]]:
    """Fine-tune ``base`` on the counting set; score base, fine-tuned and WiSE-FT(alpha).

    For each model: ``count`` (top text->image hit has the right number of objects, on the
    counting set), ``count_t2i_r1`` (full-caption recall there) and ``old_t2i_r1`` (recall on
    the one-object colour x shape set the base learned).
    """
    work = Path(workdir)
    ft_pairs = synthetic_pairs(COUNT_SET, n_train, work / "count-train")
    count_val_cfg = SyntheticConfig(**{**COUNT_SET.__dict__, "seed": COUNT_SET.seed + 1000})
    count_val = encode(
        base, synthetic_pairs(count_val_cfg, n_val, work / "count-val"), work / "count-val"
    )
    old_val_cfg = SyntheticConfig(**{**BASE_SET.__dict__, "seed": BASE_SET.seed + 2000})
    old_val = encode(base, synthetic_pairs(old_val_cfg, n_val, work / "old-val"), work / "old-val")

    finetuned = copy.deepcopy(base)
    train(finetuned, ft_pairs, [], scratch_train_config(steps, lr=lr), work / "count-run")
    wise = wise_ft(base, finetuned, alpha)

    def score(model: EmbeddingModel) -> dict[str, float]:
        acc = attribute_accuracy(
            model,
            count_val.pixels,
            count_val.tokens,
            count_val.attributes,
            ["count", "colour", "shape"],
        )
        return {
            "count": acc["count"],
            "count_t2i_r1": evaluate_pairs(
                model, pixels=count_val.pixels, tokens=count_val.tokens, captions=count_val.captions
            )["t2i_r1"],
            "old_t2i_r1": evaluate_pairs(
                model, pixels=old_val.pixels, tokens=old_val.tokens, captions=old_val.captions
            )["t2i_r1"],
            "colour": acc["colour"],
            "shape": acc["shape"],
        }

    return {"base": score(base), "finetuned": score(finetuned), f"wise{alpha:g}": score(wise)}
