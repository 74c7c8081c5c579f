"""``clipsearch finetune``, ``clipsearch eval`` and ``clipsearch wise``.

``register(subparsers)`` adds the three commands to the ``clipsearch`` CLI (service/cli.py).
For several processes or GPUs, launch this module with torchrun (same flags)::

    torchrun --nproc_per_node 2 -m clipsearch.model.finetune.cli finetune --model ViT-B-32 --data pairs.csv --out run/
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clipsearch.model.api import build, load
from clipsearch.model.base import EmbeddingModel
from clipsearch.model.checkpoints import save_pretrained
from clipsearch.model.clip import CLIP
from clipsearch.model.errors import ModelError
from clipsearch.model.finetune import FinetuneError
from clipsearch.model.finetune.data import Pair, load_pairs
from clipsearch.model.finetune.evaluate import (
    DEFAULT_TEMPLATES,
    evaluate_pairs,
    zero_shot_accuracy,
)
from clipsearch.model.finetune.train import TrainConfig, init_distributed, train, world
from clipsearch.model.finetune.wise import wise_ft, write_wise

logger = logging.getLogger(__name__)

SUMMARY_FILE = "finetune.json"
_RUN_FILES = {"checkpoints", "metrics.jsonl", SUMMARY_FILE, "config.json", "model.safetensors"}


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _alpha(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"alpha must be in [0, 1], got {text}")
    return value


def _add_finetune(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune CLIP on your own image/caption pairs",
        description="Contrastive fine-tuning on a folder of images with .txt captions, a CSV or a JSONL. "
        "Writes a model folder (loadable with --model DIR by serve, reindex and model.load), "
        "checkpoints, metrics.jsonl, and finetune.json with recall before and after.",
    )
    p.add_argument(
        "--model", required=True, help="starting model: registry name or checkpoint path"
    )
    p.add_argument(
        "--data",
        required=True,
        help="folder with photo.jpg + photo.txt, or a .csv/.tsv/.jsonl of path,caption",
    )
    p.add_argument(
        "--out", required=True, help="output folder (new or empty, or a previous run with --resume)"
    )
    p.add_argument(
        "--epochs", type=float, default=1.0, help="passes over the training pairs (default 1)"
    )
    p.add_argument(
        "--max-steps", type=int, default=0, help="stop after this many steps (overrides --epochs)"
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=64, help="global contrastive batch (default 64)"
    )
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    p.add_argument(
        "--warmup-steps", type=int, default=-1, help="linear warmup steps (default: 5%% of the run)"
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.1,
        help="AdamW weight decay on >=2-D weights (default 0.1)",
    )
    p.add_argument(
        "--grad-clip", type=float, default=1.0, help="clip the gradient norm (0: off; default 1)"
    )
    p.add_argument(
        "--accum-chunks",
        type=_positive_int,
        default=1,
        help="GradCache chunks: same batch, less memory",
    )
    p.add_argument(
        "--grad-checkpointing", action="store_true", help="recompute activations in backward"
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="autocast (default: bf16 on GPU, fp32 on CPU)",
    )
    p.add_argument("--lock-image", action="store_true", help="LiT: freeze the whole image tower")
    p.add_argument(
        "--freeze-layers",
        type=int,
        default=0,
        metavar="N",
        help="freeze the lowest N blocks of both towers",
    )
    p.add_argument(
        "--freeze-image-layers",
        type=int,
        default=None,
        metavar="N",
        help="freeze the lowest N image blocks",
    )
    p.add_argument(
        "--freeze-text-layers",
        type=int,
        default=None,
        metavar="N",
        help="freeze the lowest N text blocks",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="train --model's architecture from random weights",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="pairs held out for validation (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data order and of the split")
    p.add_argument(
        "--eval-every", type=int, default=0, help="validate every N steps (default: at the end)"
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="checkpoint every N steps (default: each epoch)",
    )
    p.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="image decoding processes"
    )
    p.add_argument(
        "--zero-shot",
        metavar="DIR",
        help="also report zero-shot accuracy on a folder-per-class dataset",
    )
    p.add_argument(
        "--wise-alpha",
        type=_alpha,
        action="append",
        metavar="A",
        help="also write OUT/wise-A: WiSE-FT at alpha A (repeatable)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: automatic)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)


def _add_eval(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model: retrieval recall and zero-shot accuracy",
        description="Text->image and image->text recall@1/5/10 on image/caption pairs, and optionally "
        "zero-shot accuracy on a folder with one sub-folder of images per class.",
    )
    p.add_argument("--model", required=True, help="registry name or checkpoint path")
    p.add_argument("--data", help="pairs: folder with .txt captions, or .csv/.tsv/.jsonl")
    p.add_argument(
        "--split",
        choices=("val", "all"),
        default="val",
        help="evaluate the validation split (as finetune makes it) or every pair",
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.1, help="as given to finetune (default 0.1)"
    )
    p.add_argument("--seed", type=int, default=0, help="as given to finetune (default 0)")
    p.add_argument(
        "--zero-shot", metavar="DIR", help="folder-per-class dataset for zero-shot accuracy"
    )
    p.add_argument(
        "--template",
        action="append",
        help="prompt template with {} (repeatable; default: six photo templates)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: automatic)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_eval)


def _add_wise(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("wise", help="WiSE-FT: interpolate a starting and a fine-tuned model")
    p.add_argument("--start", required=True, help="the model fine-tuning started from")
    p.add_argument("--finetuned", required=True, help="the fine-tuned model folder")
    p.add_argument("--alpha", required=True, type=_alpha, help="0: start, 1: fine-tuned")
    p.add_argument("--out", required=True, help="folder to write the interpolated model to")
    p.set_defaults(func=cmd_wise)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``finetune``, ``eval`` and ``wise`` to an argparse sub-parsers object."""
    _add_finetune(subparsers)
    _add_eval(subparsers)
    _add_wise(subparsers)


# --------------------------------------------------------------------------------------------


def _check_out_dir(out: Path, resume: bool) -> None:
    if "\0" in str(out):
        raise FinetuneError("the output folder name contains a NUL character")
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--out {out} exists and is not a folder")
    if out.is_dir():
        entries = {e.name for e in os.scandir(out)}
        if entries and not resume:
            raise FinetuneError(
                f"--out {out} is not empty; choose a new folder, or add --resume to continue a run there"
            )
        if (
            entries
            - _RUN_FILES
            - {n for n in entries if n.startswith("wise-") or n.startswith(".")}
        ):
            raise FinetuneError(
                f"--out {out} holds files that are not from a fine-tuning run; choose another folder"
            )


def _echo(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _format_metrics(label: str, m: Mapping[str, object]) -> str:
    keys = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")
    text = f"{label:<12}" + "  ".join(f"{k} {m[k]:.3f}" for k in keys if k in m)
    if "zero_shot" in m:
        text += f"  zero-shot {m['zero_shot']:.3f}"
    return text


def _evaluate(
    model: EmbeddingModel,
    val: Sequence[Pair],
    zero_shot: str | None,
    templates: Sequence[str] | None = None,
) -> dict[str, object]:
    out: dict[str, object] = {}
    if val:
        out.update(evaluate_pairs(model, list(val)))
    if zero_shot:
        zs = zero_shot_accuracy(model, zero_shot, templates or DEFAULT_TEMPLATES)
        out["zero_shot"] = zs["accuracy"]
        out["zero_shot_detail"] = zs
    return out


def cmd_finetune(args: argparse.Namespace) -> int:
    # torchrun describes the process group in the environment: read here, at the edge
    init_distributed(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0")))
    rank, size = world()
    out = Path(args.out).expanduser()
    if rank == 0:
        _check_out_dir(out, args.resume)
    cfg = TrainConfig(
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        accum_chunks=args.accum_chunks,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        precision=args.precision,
        grad_checkpointing=args.grad_checkpointing,
        lock_image=args.lock_image,
        freeze_image_layers=args.freeze_image_layers
        if args.freeze_image_layers is not None
        else args.freeze_layers,
        freeze_text_layers=args.freeze_text_layers
        if args.freeze_text_layers is not None
        else args.freeze_layers,
        val_fraction=args.val_fraction,
        split_seed=args.seed,
        seed=args.seed,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        num_workers=max(0, args.workers),
        device=args.device,
    )
    start = load(args.model, device="cpu")
    if args.from_scratch:
        if not isinstance(start, CLIP):
            raise FinetuneError(
                f"--from-scratch builds a CLIP; start a {start.family} model from its weights"
            )
        start = build(start.config, seed=args.seed, name=f"{args.model} (from scratch)")
    pairs = load_pairs(args.data)
    train_pairs, val_pairs = pairs.split(cfg.val_fraction, cfg.split_seed)
    if rank == 0:
        _echo(
            f"data: {len(train_pairs)} training pairs, {len(val_pairs)} validation pairs, {len(pairs.problems)} skipped"
        )
    summary: dict[str, Any] = {
        "base_model": str(args.model),
        "from_scratch": bool(args.from_scratch),
        "data": str(args.data),
        "train_pairs": len(train_pairs),
        "val_pairs": len(val_pairs),
        "skipped": [{"where": p.where, "reason": p.reason} for p in pairs.problems[:1000]],
        "world_size": size,
        "train_config": cfg.to_dict(),
    }
    before: dict[str, Any] = {}
    if rank == 0 and not args.resume:
        before = _evaluate(start, val_pairs, args.zero_shot)
        _echo(_format_metrics("before", before))
    model = copy.deepcopy(start)
    result = train(
        model,
        train_pairs,
        val_pairs,
        cfg,
        out,
        resume=args.resume,
        progress=not args.quiet,
        extra_state={"base_model": str(args.model)},
    )
    if rank != 0:
        return 0
    model.name = str(out)
    save_pretrained(model.cpu(), out)
    after = _evaluate(model, val_pairs, args.zero_shot)
    summary_path = out / SUMMARY_FILE
    if args.resume and summary_path.is_file():
        with contextlib.suppress(ValueError):
            before = json.loads(summary_path.read_text()).get("before", {}) or before
    summary.update(
        {
            "steps": result.step,
            "total_steps": result.total_steps,
            "before": before,
            "after": after,
            "wise": {},
        }
    )
    _echo(_format_metrics("after", after))
    for alpha in args.wise_alpha or []:
        folder = out / f"wise-{alpha:g}"
        mixed = wise_ft(start, model.cpu(), alpha)
        mixed.name = str(folder)
        save_pretrained(mixed, folder)
        summary["wise"][f"{alpha:g}"] = _evaluate(mixed, val_pairs, args.zero_shot)
        _echo(_format_metrics(f"wise {alpha:g}", summary["wise"][f"{alpha:g}"]))
    summary_path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    _echo(f"model written to {out} (use --model {out} with serve, reindex or eval)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if not args.data and not args.zero_shot:
        raise FinetuneError(
            "give --data (image/caption pairs) and/or --zero-shot (folder per class)"
        )
    model = load(args.model, device=args.device)
    val: list[Any] = []
    if args.data:
        pairs = load_pairs(args.data)
        val = pairs.pairs if args.split == "all" else pairs.split(args.val_fraction, args.seed)[1]
    metrics = _evaluate(model, val, args.zero_shot, args.template)
    if args.json:
        print(json.dumps(metrics, indent=1, default=str))
    else:
        print(_format_metrics(str(args.model), metrics))
        if val:
            print(f"{len(val)} pairs; chance t2i_r1 {metrics['chance_r1']:.3f}")
    return 0


def cmd_wise(args: argparse.Namespace) -> int:
    folder = write_wise(args.start, args.finetuned, args.alpha, args.out)
    print(f"wrote {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m model.finetune.cli`` (and torchrun)."""
    parser = argparse.ArgumentParser(prog="python -m clipsearch.model.finetune.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
