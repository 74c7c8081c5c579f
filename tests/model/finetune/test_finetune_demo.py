"""`clipsearch demo --no-serve`: synthetic set, training from scratch, ingestion, a search; cached rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipsearch.service.cli import main


@pytest.mark.slow
def test_demo_trains_ingests_and_searches_offline_then_reuses_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "demo"
    args = [
        "demo",
        "--data-dir",
        str(data),
        "--no-serve",
        "-q",
        "--images",
        "200",
        "--steps",
        "10",
        "--timeout",
        "240",
    ]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "trained model" in first.err
    assert len(list((data / "synthetic").glob("*.png"))) == 200
    assert (data / "model" / "config.json").is_file() and (
        data / "model" / "model.safetensors"
    ).is_file()
    # Ingestion finished and searching returns synthetic images.
    assert "job" in first.out and "done" in first.out
    assert "two red circles" in first.out and ".png" in first.out
    weights = (data / "model" / "model.safetensors").read_bytes()

    assert main(args) == 0
    second = capsys.readouterr()
    assert "cached model" in second.err
    assert (data / "model" / "model.safetensors").read_bytes() == weights
    marker = json.loads((data / "model" / "demo.json").read_text())
    assert marker["images"] == 200 and marker["train"]["max_steps"] == 10


def test_demo_refuses_too_few_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--data-dir", str(tmp_path / "d"), "--no-serve", "--images", "5"]) == 2
    assert "at least 200" in capsys.readouterr().err


def test_a_demo_training_left_by_other_settings_is_started_over_not_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsearch import model as clip_model
    from clipsearch.model.finetune.train import small_clip_config
    from clipsearch.service import demo

    data = tmp_path / "demo"
    # an earlier recipe (one image block) trained here, its checkpoints kept in <data>/training
    monkeypatch.setattr(demo, "_clip_config", lambda: small_clip_config(vision_layers=1))
    demo.prepare_demo(data, images=200, steps=4, progress=False)
    monkeypatch.undo()
    # the recipe now, and fewer steps than the earlier run's last checkpoint: trained afresh
    assets = demo.prepare_demo(data, images=200, steps=2, progress=False)
    assert assets.trained_now
    loaded = clip_model.load(str(assets.model), device="cpu")
    assert loaded.config.vision.layers == demo._clip_config().vision.layers
    marker = json.loads((data / "model" / "demo.json").read_text())
    assert marker["train"]["max_steps"] == 2
