"""Every family model/ loads fine-tunes on the user's pairs, not only CLIP and SigLIP:
MobileCLIP (FastViT image tower, BatchNorm statistics kept), MobileCLIP2-B, XLM-RoBERTa CLIP
(a Hugging Face text tower) and NLLB-SigLIP (sigmoid loss, M2M100 text tower). Each trains with
its family's loss, learns (its loss falls), honours the freezing options on its own kind of
blocks, and saves in our format to load back embedding the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from clipsearch import model
from clipsearch.model.checkpoints import save_pretrained
from clipsearch.model.finetune.data import load_pairs
from clipsearch.model.finetune.loss import ClipLoss, SigLipLoss, loss_for
from clipsearch.model.finetune.recipes import scratch_train_config
from clipsearch.model.finetune.synthetic import SyntheticConfig, write_folder
from clipsearch.model.finetune.train import train
from clipsearch.model.finetune.wise import write_wise

HERE = Path(__file__).resolve().parent
ZOO = HERE.parents[1] / "fixtures" / "parity-zoo"  # tests/fixtures/parity-zoo
# fixture_data fails with the regenerating script named if tests/fixtures lacks a file
pytestmark = pytest.mark.usefixtures("fixture_data")
FIXTURES = HERE.parent / "fixtures"
CASES = {
    "mobileclip": (ZOO / "mobileclip", ClipLoss),
    "mobileclip-vit": (FIXTURES / "mobileclip2_b", ClipLoss),
    "hf-text": (ZOO / "multilingual", ClipLoss),
    "nllb-siglip": (FIXTURES / "nllb_siglip", SigLipLoss),
}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("pairs")
    cfg = SyntheticConfig(attributes=("colour", "shape"), image_size=64, seed=5, templates="varied")
    write_folder(cfg, 96, folder)
    return load_pairs(folder).pairs


def _params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


@pytest.mark.parametrize("family", sorted(CASES))
def test_each_family_fine_tunes_with_its_loss_and_saves(
    family: str, pairs: Any, tmp_path: Path
) -> None:
    path, loss_kind = CASES[family]
    m = model.load(str(path), device="cpu")
    assert m.family == family
    assert isinstance(loss_for(m), loss_kind)
    torch.manual_seed(0)
    before = _params(m)
    stats = {k: v.detach().clone() for k, v in m.named_buffers() if k.endswith("running_mean")}
    cfg = scratch_train_config(
        24, batch_size=16, lr=1e-3, log_every=1, freeze_image_layers=1, freeze_text_layers=1
    )
    result = train(m, pairs, [], cfg, tmp_path / "run")
    assert result.finished

    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) >= 20
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses

    after = _params(m)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = {k for k, p in m.named_parameters() if not p.requires_grad}
    assert frozen and not (changed & frozen)  # what was frozen did not move
    assert any(k.startswith("visual.") for k in changed)  # both towers learnt
    assert any(not k.startswith("visual.") and "logit" not in k for k in changed)
    for k, v in stats.items():  # BatchNorm statistics stay the checkpoint's
        assert torch.equal(dict(m.named_buffers())[k], v), k

    folder = save_pretrained(m, tmp_path / "saved")
    again = model.load(str(folder), device="cpu")
    assert again.family == family
    texts = ["a red square", "two blue circles"]
    np.testing.assert_allclose(again.embed_texts(texts), m.embed_texts(texts), atol=1e-5)
    image = [str(pairs[0].path)]
    np.testing.assert_allclose(again.embed_images(image), m.embed_images(image), atol=1e-5)

    # WiSE-FT: halfway between the checkpoint and its fine-tune, weight by weight
    wise = model.load(str(write_wise(str(path), str(folder), 0.5, tmp_path / "wise")))
    assert wise.family == family
    mixed = dict(wise.named_parameters())
    for k in sorted(changed)[:5]:
        torch.testing.assert_close(mixed[k].detach(), 0.5 * (before[k] + after[k]))
