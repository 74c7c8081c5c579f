"""`clipsearch finetune`, `eval` and `wise` through the real CLI, and a torchrun run with 2 ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipsearch.model.api import load
from clipsearch.model.checkpoints import save_pretrained
from clipsearch.model.finetune.synthetic import SyntheticConfig, write_folder
from clipsearch.model.testing import tiny_model
from clipsearch.service.cli import main

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    start = save_pretrained(tiny_model(seed=2), root / "start")
    cfg = SyntheticConfig(attributes=("colour", "shape"), image_size=32, seed=3, templates="plain")
    write_folder(cfg, 80, root / "data")
    return start, root / "data"


def _finetune_args(start: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune", "--model", str(start), "--data", str(data), "--out", str(out),
        "--max-steps", "3", "--batch-size", "16", "--lr", "1e-4", "--warmup-steps", "1",
        "--workers", "0", "-q", *extra,
    ]  # fmt: skip


def test_finetune_writes_a_loadable_model_with_before_after_and_wise(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start, data = setup
    out = tmp_path / "run"
    rc = main(
        _finetune_args(
            start, data, out, "--wise-alpha", "0.5", "--accum-chunks", "2", "--grad-checkpointing"
        )
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "before" in err and "after" in err and "t2i_r1" in err
    tuned = load(out, device="cpu")
    base = load(start, device="cpu")
    assert not torch.equal(tuned.visual.conv1.weight, base.visual.conv1.weight)
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["steps"] == 3 and summary["train_pairs"] + summary["val_pairs"] == 80
    assert 0 <= summary["before"]["t2i_r1"] <= 1 and 0 <= summary["after"]["t2i_r1"] <= 1
    assert "0.5" in summary["wise"]
    wise = load(out / "wise-0.5", device="cpu")
    mid = (base.visual.conv1.weight + tuned.visual.conv1.weight) / 2
    torch.testing.assert_close(wise.visual.conv1.weight, mid)
    assert (out / "metrics.jsonl").is_file() and list((out / "checkpoints").glob("step-*.pt"))


def test_finetune_refuses_a_non_empty_out_folder_unless_resuming(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start, data = setup
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("precious")
    assert main(_finetune_args(start, data, tmp_path / "mine")) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.docx").read_text() == "precious"
    assert main(_finetune_args(start, tmp_path / "nothing-here", tmp_path / "new")) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_resume_flag_continues_a_stopped_run(setup: tuple[Path, Path], tmp_path: Path) -> None:
    start, data = setup
    out = tmp_path / "run"
    assert main(_finetune_args(start, data, out, "--checkpoint-every", "1")) == 0
    assert main(_finetune_args(start, data, out, "--max-steps", "5", "--resume")) == 0
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["steps"] == 5


def test_eval_prints_recall_and_zero_shot_accuracy(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start, data = setup
    for name in ("red", "blue", "green"):
        cls = tmp_path / "classes" / name
        cls.mkdir(parents=True)
        for i, item in enumerate(json.loads((data / "synthetic.json").read_text())["items"]):
            if item["colour"] == name and i < 40:
                (cls / item["file"]).write_bytes((data / item["file"]).read_bytes())
    rc = main(
        [
            "eval",
            "--model",
            str(start),
            "--data",
            str(data),
            "--split",
            "all",
            "--zero-shot",
            str(tmp_path / "classes"),
            "--json",
        ]
    )
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 80
    assert {"t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10"} <= set(metrics)
    assert metrics["t2i_r1"] <= metrics["t2i_r5"] <= metrics["t2i_r10"]
    assert metrics["zero_shot_detail"]["classes"] == 3
    assert 0 <= metrics["zero_shot"] <= 1


def test_wise_command_interpolates(setup: tuple[Path, Path], tmp_path: Path) -> None:
    start, _ = setup
    other = save_pretrained(tiny_model(seed=9), tmp_path / "other")
    assert (
        main(
            [
                "wise",
                "--start",
                str(start),
                "--finetuned",
                str(other),
                "--alpha",
                "0.25",
                "--out",
                str(tmp_path / "w"),
            ]
        )
        == 0
    )
    a, b, w = (load(p, device="cpu").state_dict() for p in (start, other, tmp_path / "w"))
    for key in ("text_projection", "visual.proj", "logit_scale"):
        torch.testing.assert_close(w[key], 0.75 * a[key] + 0.25 * b[key])


@pytest.mark.slow
def test_torchrun_two_ranks_train_like_one_process(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    start, data = setup
    single = tmp_path / "single"
    assert main(_finetune_args(start, data, single)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
        "-m", "clipsearch.model.finetune.cli", *_finetune_args(start, data, tmp_path / "ddp"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "finetune.json").read_text())
    assert summary["world_size"] == 2
    a = load(single, device="cpu").state_dict()
    b = load(tmp_path / "ddp", device="cpu").state_dict()
    s = load(start, device="cpu").state_dict()
    assert not torch.equal(a["visual.conv1.weight"], s["visual.conv1.weight"])
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=2e-6, msg=key)
