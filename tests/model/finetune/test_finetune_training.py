"""Training on the synthetic set: from chance to recall, learning a new skill, WiSE-FT, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from clipsearch.model.finetune.data import load_pairs
from clipsearch.model.finetune.recipes import skill_transfer, train_from_scratch
from clipsearch.model.finetune.synthetic import SyntheticConfig, write_folder
from clipsearch.model.finetune.train import (
    TrainConfig,
    Trainer,
    list_checkpoints,
    load_training_checkpoint,
    train,
)
from clipsearch.model.testing import tiny_model


@pytest.fixture(scope="module")
def scratch(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Any, dict[str, float], dict[str, float], Path]:
    work = tmp_path_factory.mktemp("scratch")
    model, before, after, _ = train_from_scratch(work, steps=160)
    return model, before, after, work


@pytest.mark.slow
def test_training_from_scratch_lifts_recall_from_chance_to_above_080(scratch: Any) -> None:
    _, before, after, work = scratch
    assert before["n"] == 96
    assert before["t2i_r1"] < 3 * before["chance_r1"] + 0.05  # random weights: about chance
    assert after["t2i_r1"] >= 0.8
    assert after["i2t_r1"] >= 0.6
    log = [
        json.loads(line) for line in (work / "base-run" / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in log if "loss" in r]
    # A batch of 64 at random scores ln(64) = 4.16; identical captions in a batch keep a floor above 0.
    assert losses[-1] < 0.5 * math.log(64)


@pytest.mark.slow
def test_finetuning_teaches_counting_and_wise_keeps_the_old_skill(
    scratch: Any, tmp_path: Path
) -> None:
    base, _, _, _ = scratch
    scores = skill_transfer(base, tmp_path, steps=300, alpha=0.5)
    b, ft, wise = scores["base"], scores["finetuned"], scores["wise0.5"]
    # The new attribute: the top image for "two red squares" has two objects far more often.
    assert ft["count"] >= b["count"] + 0.15, scores
    assert ft["count_t2i_r1"] >= b["count_t2i_r1"] + 0.25, scores
    # WiSE-FT halfway keeps most of what the base model could do, and some of the new skill.
    assert wise["old_t2i_r1"] >= 0.9 * b["old_t2i_r1"], scores
    assert wise["count_t2i_r1"] > b["count_t2i_r1"], scores


def _small_set(tmp_path: Path) -> tuple[list[Any], list[Any]]:
    cfg = SyntheticConfig(attributes=("colour", "shape"), image_size=32, seed=5, templates="varied")
    write_folder(cfg, 72, tmp_path / "data")
    return load_pairs(tmp_path / "data").split(0.15, seed=0)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_after_interruption_ends_with_the_same_weights(tmp_path: Path) -> None:
    train_pairs, val_pairs = _small_set(tmp_path)
    cfg = TrainConfig(
        max_steps=7,
        batch_size=16,
        lr=1e-3,
        warmup_steps=2,
        checkpoint_every=3,
        eval_every=5,
        log_every=1,
    )

    whole = tiny_model(seed=1)
    result = train(whole, train_pairs, val_pairs, cfg, tmp_path / "whole")
    assert result.finished and result.step == 7

    part = tiny_model(seed=1)
    first = train(
        part,
        train_pairs,
        val_pairs,
        TrainConfig(**{**cfg.to_dict(), "stop_after": 4}),
        tmp_path / "split",
    )
    assert not first.finished and first.step == 4
    assert [p.name for p in list_checkpoints(tmp_path / "split")] == [
        "step-00000003.pt",
        "step-00000004.pt",
    ]
    # A fresh process would start from a fresh model: the checkpoint must carry everything.
    resumed = tiny_model(seed=99)
    second = train(resumed, train_pairs, val_pairs, cfg, tmp_path / "split", resume=True)
    assert second.finished and second.step == 7

    a, b = _weights(whole), _weights(resumed)
    changed = [k for k in a if not torch.equal(a[k], tiny_model(seed=1).state_dict()[k])]
    assert "visual.conv1.weight" in changed and "logit_scale" in changed
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_checkpoint_holds_optimizer_scheduler_rng_step_and_config(tmp_path: Path) -> None:
    train_pairs, val_pairs = _small_set(tmp_path)
    cfg = TrainConfig(max_steps=2, batch_size=16, lr=1e-3, grad_checkpointing=True, accum_chunks=2)
    train(tiny_model(), train_pairs, val_pairs, cfg, tmp_path / "run")
    state = load_training_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert state["step"] == 2
    assert state["train_config"]["accum_chunks"] == 2
    assert state["optimizer"]["state"]  # AdamW moments are saved
    assert state["scheduler"]["last_epoch"] == 2
    assert "torch" in state["rng"]
    assert set(state["model"]) == set(tiny_model().state_dict())


def test_metrics_log_has_loss_lr_temperature_and_validation_recall(tmp_path: Path) -> None:
    train_pairs, val_pairs = _small_set(tmp_path)
    cfg = TrainConfig(
        max_steps=4, batch_size=16, lr=1e-3, warmup_steps=2, log_every=1, eval_every=2
    )
    train(tiny_model(), train_pairs, val_pairs, cfg, tmp_path / "run")
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert steps[0]["lr"] == pytest.approx(
        0.5e-3
    )  # warmup: half of the peak after one of two steps
    assert steps[1]["lr"] == pytest.approx(1e-3)
    assert steps[3]["lr"] < steps[2]["lr"]  # then the cosine decays
    assert all(0 < r["logit_scale"] <= 100.0001 for r in steps)
    vals = [r for r in records if "val" in r]
    assert [r["step"] for r in vals] == [0, 2, 4]
    assert all(0 <= r["val"]["t2i_r1"] <= 1 for r in vals)


def test_temperature_never_exceeds_100(tmp_path: Path) -> None:
    train_pairs, _ = _small_set(tmp_path)
    model = tiny_model()
    with torch.no_grad():
        model.logit_scale.fill_(5.0)  # exp(5) = 148 > 100
    train(
        model, train_pairs, [], TrainConfig(max_steps=1, batch_size=16, lr=1e-3), tmp_path / "run"
    )
    assert float(model.logit_scale.detach().exp()) <= 100.0 + 1e-3


def test_bad_batch_settings_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    from clipsearch.model.finetune import FinetuneError

    train_pairs, _ = _small_set(tmp_path)
    with pytest.raises(FinetuneError, match="divisible"):
        Trainer(
            tiny_model(),
            train_pairs,
            [],
            TrainConfig(batch_size=16, accum_chunks=3),
            tmp_path / "a",
        )
    with pytest.raises(FinetuneError, match="lower --batch-size"):
        Trainer(tiny_model(), train_pairs, [], TrainConfig(batch_size=512), tmp_path / "b")
    with pytest.raises(FinetuneError, match="text tower has 2 blocks"):
        Trainer(
            tiny_model(),
            train_pairs,
            [],
            TrainConfig(batch_size=16, freeze_text_layers=5),
            tmp_path / "c",
        )


def test_decoding_in_worker_processes_trains_exactly_like_cached_pixels(tmp_path: Path) -> None:
    train_pairs, _ = _small_set(tmp_path)
    base = {"max_steps": 3, "batch_size": 16, "lr": 1e-3}
    cached, streamed = tiny_model(seed=4), tiny_model(seed=4)
    train(cached, train_pairs, [], TrainConfig(**base, cache_pixels="yes"), tmp_path / "a")
    train(
        streamed,
        train_pairs,
        [],
        TrainConfig(**base, cache_pixels="no", num_workers=1),
        tmp_path / "b",
    )
    a, b = _weights(cached), _weights(streamed)
    assert not torch.equal(a["visual.conv1.weight"], tiny_model(seed=4).visual.conv1.weight)
    for key in a:
        assert torch.equal(a[key], b[key]), key
