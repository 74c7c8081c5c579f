"""Two CPU processes (gloo) give the single-process loss and gradients for the same global batch,
and GradCache chunks give the gradients of one big batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from testkit import free_port

from clipsearch.model.finetune.loss import ClipLoss
from clipsearch.model.finetune.train import (
    TrainConfig,
    apply_freezing,
    contrastive_backward,
    make_towers,
    sync_logit_scale_grad,
)
from clipsearch.model.testing import tiny_model

GLOBAL_BATCH = 8


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    pixels = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g)
    tokens = torch.randint(1, 49000, (GLOBAL_BATCH, 9), generator=g)
    tokens[:, 0] = 49406
    ends = torch.randint(3, 9, (GLOBAL_BATCH,), generator=g)
    for i, e in enumerate(
        ends.tolist()
    ):  # texts of different lengths, zero padded after the end id
        tokens[i, e] = 49407
        tokens[i, e + 1 :] = 0
    return pixels, tokens


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _single(chunks: int, cfg: TrainConfig | None = None) -> tuple[float, dict[str, torch.Tensor]]:
    model = tiny_model(seed=3).train()
    if cfg is not None:
        apply_freezing(model, cfg)
    pixels, tokens = _batch()
    loss = contrastive_backward(
        make_towers(model), model.logit_scale, ClipLoss(), pixels, tokens, chunks=chunks
    )
    return float(loss), _grads(model)


def _assert_close(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Equal up to float32 rounding, measured against the tensor's own scale (sums run in other orders)."""
    scale = float(ref.abs().max())
    err = float((got - ref).abs().max())
    assert err <= 1e-5 * scale + 1e-8, f"{what}: max error {err:.3g} for values up to {scale:.3g}"


def _worker(rank: int, world: int, port: int, chunks: int, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = tiny_model(seed=3).train()
        pixels, tokens = _batch()
        per = GLOBAL_BATCH // world
        mine = slice(rank * per, (rank + 1) * per)
        towers = make_towers(model)
        assert isinstance(towers, torch.nn.parallel.DistributedDataParallel)
        loss = contrastive_backward(
            towers, model.logit_scale, ClipLoss(), pixels[mine], tokens[mine], chunks=chunks
        )
        sync_logit_scale_grad(model)
        torch.save({"loss": float(loss), "grads": _grads(model)}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("chunks", [1, 2])
def test_two_gloo_ranks_match_one_process_on_the_global_batch(tmp_path: Path, chunks: int) -> None:
    ref_loss, ref_grads = _single(chunks=1)
    mp.spawn(_worker, args=(2, free_port(), chunks, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        # Every rank sees the loss of the whole global batch, not of its half.
        assert got["loss"] == pytest.approx(ref_loss, rel=1e-5)
        assert set(got["grads"]) == set(ref_grads)
        for name, ref in ref_grads.items():
            _assert_close(got["grads"][name], ref, f"rank {rank}: {name}")


def test_gradcache_chunks_give_the_gradients_of_one_big_batch() -> None:
    ref_loss, ref_grads = _single(chunks=1)
    assert ref_grads["visual.conv1.weight"].abs().sum() > 0  # the image tower is learning
    for chunks in (2, 4, 8):
        loss, grads = _single(chunks=chunks)
        assert loss == pytest.approx(ref_loss, rel=1e-6)
        assert set(grads) == set(ref_grads)
        for name, ref in ref_grads.items():
            _assert_close(grads[name], ref, f"{name} with {chunks} chunks")


def test_gradcache_is_not_the_naive_accumulation_that_shrinks_the_negatives() -> None:
    _, ref_grads = _single(chunks=1)
    # Naive accumulation: the loss of each half on its own (4 negatives, not 8), gradients summed.
    model = tiny_model(seed=3).train()
    pixels, tokens = _batch()
    towers, loss_fn = make_towers(model), ClipLoss()
    for half in (slice(0, 4), slice(4, 8)):
        img, txt = towers(pixels[half], tokens[half])
        (loss_fn(img, txt, model.logit_scale) / 2).backward()
    naive = _grads(model)
    diff = (naive["visual.conv1.weight"] - ref_grads["visual.conv1.weight"]).abs().max()
    assert diff > 1e-3 * ref_grads["visual.conv1.weight"].abs().max()


def test_locked_image_tower_gets_no_gradient_and_text_tower_still_learns() -> None:
    _, grads = _single(chunks=2, cfg=TrainConfig(lock_image=True))
    assert not any(name.startswith("visual.") for name in grads)
    assert grads["text_projection"].abs().sum() > 0
    assert "logit_scale" in grads


def test_freezing_lower_layers_leaves_upper_layers_training() -> None:
    _, grads = _single(chunks=1, cfg=TrainConfig(freeze_image_layers=1, freeze_text_layers=1))
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" not in grads
    assert "visual.conv1.weight" not in grads
    assert "transformer.resblocks.0.mlp.c_fc.weight" not in grads
    assert "token_embedding.weight" not in grads
    assert "visual.transformer.resblocks.1.attn.in_proj_weight" in grads
    assert "transformer.resblocks.1.mlp.c_fc.weight" in grads
