"""Fine-tuning a SigLIP trains with SigLIP's sigmoid loss: the loss itself against its formula,
and a tiny SigLIP (the parity-zoo case, random weights) learning colour x shape captions on the
CPU: the loss falls, retrieval recall rises, the bias is learnt, and the result saves and loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clipsearch import model
from clipsearch.model.finetune.data import load_pairs
from clipsearch.model.finetune.evaluate import evaluate_pairs
from clipsearch.model.finetune.loss import ClipLoss, SigLipLoss, loss_for
from clipsearch.model.finetune.recipes import scratch_train_config
from clipsearch.model.finetune.synthetic import SyntheticConfig, write_folder
from clipsearch.model.finetune.train import train
from clipsearch.model.testing import tiny_model

ZOO_SIGLIP = Path(__file__).resolve().parents[2] / "fixtures" / "parity-zoo" / "siglip"
# fixture_data fails with the regenerating script named if tests/fixtures lacks a file
pytestmark = pytest.mark.usefixtures("fixture_data")


def test_sigmoid_loss_is_the_papers_formula_and_trains_the_bias() -> None:
    torch.manual_seed(0)
    img = F.normalize(torch.randn(5, 8), dim=-1)
    txt = F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(math.log(10.0), requires_grad=True)
    bias = torch.tensor(-3.0, requires_grad=True)
    loss = SigLipLoss(bias)(img, txt, scale)
    expected = 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            logit = 10.0 * float(img[i] @ txt[j]) - 3.0
            expected += -math.log(1 / (1 + math.exp(-z * logit)))
    assert float(loss.detach()) == pytest.approx(expected / 5, rel=1e-5)
    loss.backward()
    assert bias.grad is not None and float(bias.grad) != 0.0
    assert scale.grad is not None
    # matching pairs far apart from the rest: the loss goes to zero
    eye = torch.eye(4)
    tiny = SigLipLoss(torch.tensor(-5.0))(eye, eye, torch.tensor(math.log(20.0)))
    assert float(tiny) < 0.1
    with pytest.raises(ValueError):
        SigLipLoss(bias)(img, txt[:3], scale)


def test_the_loss_follows_the_family() -> None:
    siglip = model.load(str(ZOO_SIGLIP), device="cpu")
    assert isinstance(loss_for(siglip), SigLipLoss)
    assert loss_for(siglip).logit_bias is siglip.logit_bias  # the model's own parameter
    assert isinstance(loss_for(tiny_model()), ClipLoss)


@pytest.mark.slow
def test_a_tiny_siglip_learns_captions_with_the_sigmoid_loss(tmp_path: Path) -> None:
    cfg = SyntheticConfig(
        attributes=("colour", "shape"), image_size=64, seed=11, templates="varied"
    )
    write_folder(cfg, 640, tmp_path / "train")
    write_folder(SyntheticConfig(**{**cfg.__dict__, "seed": 12}), 96, tmp_path / "val")
    train_pairs = load_pairs(tmp_path / "train").pairs
    val_pairs = load_pairs(tmp_path / "val").pairs
    siglip = model.load(str(ZOO_SIGLIP), device="cpu")
    bias_before = float(siglip.logit_bias.detach())
    before = evaluate_pairs(siglip, val_pairs)
    steps = 150
    result = train(
        siglip,
        train_pairs,
        [],
        scratch_train_config(steps, batch_size=32, lr=2e-3, log_every=10),
        tmp_path / "run",
    )
    assert result.finished
    after = evaluate_pairs(siglip, val_pairs)
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.5 * losses[0], losses
    assert after["t2i_r1"] >= before["t2i_r1"] + 0.2, (before, after)
    assert after["t2i_r5"] > before["t2i_r5"], (before, after)
    assert float(siglip.logit_bias.detach()) != pytest.approx(bias_before)  # the bias was learnt

    # it saves in our format and loads back as a SigLIP scoring the same
    from clipsearch.model.checkpoints import save_pretrained

    folder = save_pretrained(siglip, tmp_path / "saved")
    again = model.load(str(folder), device="cpu")
    assert again.family == "siglip" and again.score_kind == "sigmoid"
    texts = ["a red square", "a blue circle"]
    assert torch.allclose(
        torch.from_numpy(again.embed_texts(texts)), torch.from_numpy(siglip.embed_texts(texts))
    )
