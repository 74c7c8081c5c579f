"""Training checkpoints: ``checkpoints/step-NNNNNNNN.pt`` in a run folder, holding everything
the next step depends on (weights, optimizer, scheduler, scaler, RNG states, step); written
atomically, read with ``weights_only=True`` (no code is unpickled)."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, TypedDict, TypeGuard

import torch

from clipsearch.model.finetune import FinetuneError

CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^step-(\d{8})\.pt$")


class RngState(TypedDict, total=False):
    """The random generators' states: torch's, Python's (its tuples come back from a checkpoint
    as lists) and, with CUDA, each device's."""

    torch: torch.Tensor
    python: tuple[object, ...] | list[object]
    cuda: list[torch.Tensor]


class TrainingCheckpoint(TypedDict):
    """What a training checkpoint holds (``Trainer.state_dict``); the optimizer's, scheduler's
    and scaler's states are PyTorch's own dicts."""

    format: str
    step: int
    model: dict[str, torch.Tensor]
    clip_config: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rng: RngState
    train_config: dict[str, Any]
    world_size: int
    metrics: dict[str, float]
    extra: dict[str, object] | None


def rng_state() -> RngState:
    state: RngState = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: RngState) -> None:
    torch.set_rng_state(state["torch"])
    python = _as_tuple(state["python"])
    if not isinstance(python, tuple):
        raise FinetuneError("the checkpoint's Python random state is damaged")
    random.setstate(python)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: object) -> object:
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


def load_training_checkpoint(path: str | os.PathLike[str]) -> TrainingCheckpoint:
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
    if not _is_checkpoint(state):
        raise FinetuneError(f"{p} is not a clipsearch fine-tuning checkpoint")
    return state


def _is_checkpoint(state: object) -> TypeGuard[TrainingCheckpoint]:
    """Whether what ``torch.load`` read is one of our training checkpoints (its format mark)."""
    return isinstance(state, dict) and state.get("format") == "clipsearch-finetune-1"


def write_checkpoint(out_dir: Path, step: int, state: TrainingCheckpoint, keep: int) -> Path:
    """``state`` as ``checkpoints/step-NNNNNNNN.pt`` under ``out_dir`` (atomically); only the
    ``keep`` newest checkpoints are kept."""
    folder = out_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in list_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path
