"""Fine-tuning benchmarks -> bench/results/finetune.md.

1. Training throughput (pairs/s) and peak memory for plain, gradient-checkpointed and GradCache
   (accumulated) steps, on the tiny synthetic-set CLIP and on ViT-B/32 with random weights.
   Each (model, mode) runs in its own process so peak memory is its own; the plain step is the
   reference the other two are compared with. CPU: fp32, peak RSS growth during the steps;
   CUDA: bf16 autocast, torch.cuda.max_memory_allocated.
2. What training does (the numbers the tests assert margins on): a small CLIP trained from
   scratch on the synthetic set (recall before/after), then fine-tuned to count objects, and
   WiSE-FT at alpha 0.5.

    nice .venv/bin/python -m bench.finetune                 # CPU, a few minutes
    .venv/bin/python -m bench.finetune --device cuda        # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


TRANSFER_STEPS = 300  # the same as the test in tests/model/finetune/test_finetune_training.py


def _vm(field: str) -> int:
    """A /proc/self/status field in bytes (Linux), 0 elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def child(
    model_name: str, mode: str, device: str, batch: int, steps: int, chunks: int
) -> dict[str, object]:
    import torch

    from clipsearch.model.api import build
    from clipsearch.model.clip import CLIPConfig, TextConfig, VisionConfig
    from clipsearch.model.finetune.loss import ClipLoss
    from clipsearch.model.finetune.train import (
        TrainConfig,
        _autocast,
        configure_optimizers,
        contrastive_backward,
        gradient_checkpointing,
        make_towers,
        resolve_precision,
        small_clip_config,
    )

    if model_name == "ViT-B/32":
        cfg = CLIPConfig(
            embed_dim=512,
            vision=VisionConfig(image_size=224, width=768, layers=12, patch_size=32, heads=12),
            text=TextConfig(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
        )
    else:
        cfg = small_clip_config()
    dev = torch.device(device)
    precision = resolve_precision("auto", dev)
    model = build(cfg, seed=0).to(dev).train()
    opt = configure_optimizers(model, TrainConfig())
    towers, loss_fn = make_towers(model), ClipLoss()
    r = cfg.vision.image_size
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, r, r, generator=g).to(dev)
    tokens = torch.randint(1, 49000, (batch, 20), generator=g)
    tokens[:, 0], tokens[:, -1] = 49406, 49407  # 20-token captions
    tokens = tokens.to(dev)
    n_chunks = chunks if mode == "accumulated" else 1

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        contrastive_backward(
            towers,
            model.logit_scale,
            loss_fn,
            pixels,
            tokens,
            chunks=n_chunks,
            autocast=lambda: _autocast(dev, precision),
        )
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with gradient_checkpointing(model, mode == "checkpointed"):
        step()  # warm-up: allocates the optimizer state
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            _reset_peak_rss()
            base = _vm("VmRSS")
        tic = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        elapsed = time.perf_counter() - tic
        peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else _vm("VmHWM")
    return {
        "model": model_name,
        "mode": mode,
        "device": device,
        "precision": precision,
        "batch": batch,
        "chunks": n_chunks,
        "steps": steps,
        "pairs_per_s": batch * steps / elapsed,
        "s_per_step": elapsed / steps,
        "peak_extra_mib": (peak - base) / 2**20,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "threads": torch.get_num_threads(),
    }


def run_child(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def transfer_numbers() -> dict[str, object]:
    from clipsearch.model.finetune.recipes import skill_transfer, train_from_scratch

    with tempfile.TemporaryDirectory() as work:
        tic = time.perf_counter()
        model, before, after, result = train_from_scratch(work, steps=160)
        scratch_s = time.perf_counter() - tic
        tic = time.perf_counter()
        scores = skill_transfer(model, work, steps=TRANSFER_STEPS, alpha=0.5)
        transfer_s = time.perf_counter() - tic
    return {
        "before": before,
        "after": after,
        "scratch_s": scratch_s,
        "steps": result.step,
        "transfer": scores,
        "transfer_s": transfer_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "finetune.md"))
    parser.add_argument("--vit-batch", type=int, default=16)
    parser.add_argument("--vit-steps", type=int, default=2)
    parser.add_argument("--skip-vit", action="store_true")
    parser.add_argument("--skip-transfer", action="store_true")
    parser.add_argument(
        "--child", nargs=6, metavar=("MODEL", "MODE", "DEVICE", "BATCH", "STEPS", "CHUNKS")
    )
    args = parser.parse_args()
    if args.child:
        m, mode, dev, batch, steps, chunks = args.child
        print(json.dumps(child(m, mode, dev, int(batch), int(steps), int(chunks))))
        return

    import torch

    rows = []
    plans = [("tiny-synthetic", 64, 20, 4)]
    if not args.skip_vit:
        batch = args.vit_batch if args.device == "cpu" else 256
        plans.append(("ViT-B/32", batch, args.vit_steps if args.device == "cpu" else 10, 4))
    for model_name, batch, steps, chunks in plans:
        for mode in ("plain", "checkpointed", "accumulated"):
            row = run_child(model_name, mode, args.device, str(batch), str(steps), str(chunks))
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    transfer = None if args.skip_transfer else transfer_numbers()

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        "# Fine-tuning",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/finetune.py` "
        f"on {cpu}, {os.cpu_count()} logical CPUs (shared with other work: treat as a lower bound), "
        f"Python {platform.python_version()}, torch {torch.__version__}, device {args.device}.",
        "",
        "## Training step throughput",
        "",
        "One optimizer step = forward + backward of the symmetric contrastive loss over the whole "
        "batch + AdamW. Random pixels and 20-token captions. *checkpointed*: every transformer block "
        "recomputed in backward; *accumulated*: GradCache with the batch embedded in 4 chunks "
        "(same gradients as plain). Peak memory: growth of peak RSS (CPU) or peak allocated (CUDA) "
        "over the state after a warm-up step (weights, gradients and AdamW moments are already there). "
        "Relative columns use the plain step of the same model, measured in the same run.",
        "",
        "| model | params (M) | precision | batch | mode | pairs/s | s/step | peak extra MiB | speed vs plain | memory vs plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    plain = {r["model"]: r for r in rows if r["mode"] == "plain"}
    for r in rows:
        ref = plain[r["model"]]
        mem_ratio = (
            (r["peak_extra_mib"] / ref["peak_extra_mib"])
            if ref["peak_extra_mib"] > 0
            else float("nan")
        )
        lines.append(
            f"| {r['model']} | {r['params_m']:.1f} | {r['precision']} | {r['batch']} | {r['mode']} | "
            f"{r['pairs_per_s']:.1f} | {r['s_per_step']:.3f} | {r['peak_extra_mib']:.0f} | "
            f"{r['pairs_per_s'] / ref['pairs_per_s']:.2f}x | {mem_ratio:.2f}x |"
        )
    if args.device == "cpu":
        lines += [
            "",
            "No GPU was available to this run; `bench/finetune.py --device cuda` measures bf16 on one.",
        ]
    if transfer is not None:
        b, a = transfer["before"], transfer["after"]
        lines += [
            "",
            "## Learning on the synthetic set",
            "",
            f"A small CLIP (`small_clip_config()`: 2+2 blocks of width 64, 32 px, real BPE vocabulary) trained "
            f"from scratch for {transfer['steps']} steps of 64 pairs on 960 one-object images "
            f'(6 colours x 4 shapes, captions like "a red square"); held-out 96 pairs '
            f"({transfer['scratch_s']:.0f} s wall here).",
            "",
            "| | t2i R@1 | t2i R@5 | i2t R@1 | i2t R@5 | chance R@1 |",
            "|---|---|---|---|---|---|",
            f"| random init | {b['t2i_r1']:.3f} | {b['t2i_r5']:.3f} | {b['i2t_r1']:.3f} | {b['i2t_r5']:.3f} | {b['chance_r1']:.3f} |",
            f"| trained | {a['t2i_r1']:.3f} | {a['t2i_r5']:.3f} | {a['i2t_r1']:.3f} | {a['i2t_r5']:.3f} | {a['chance_r1']:.3f} |",
            "",
            f"That model never saw more than one object nor the words one/two/three. Fine-tuned for {TRANSFER_STEPS} "
            'steps on 960 images of one to three objects ("two red squares"), then WiSE-FT halfway '
            f"between the two ({transfer['transfer_s']:.0f} s wall). *count*: share of count-set captions whose top "
            "image has the right number of objects (150 held-out pairs); *count t2i R@1*: full-caption recall "
            "there; *old t2i R@1*: recall on held-out one-object images (the base skill).",
            "",
            "| model | count | count t2i R@1 | old t2i R@1 | colour | shape |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in transfer["transfer"].items():
            lines.append(
                f"| {name} | {s['count']:.3f} | {s['count_t2i_r1']:.3f} | {s['old_t2i_r1']:.3f} | {s['colour']:.3f} | {s['shape']:.3f} |"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
