"""``clipsearch demo``: search working in one command, fully offline.

1. Generate the synthetic captioned set (coloured shapes in different places and numbers) into
   ``<data>/synthetic``;
2. train a small CLIP on it from scratch with the vendored BPE tokenizer, into ``<data>/model``
   (cached: a second run with the same settings reuses it at once);
3. hand over to ``clipsearch serve --images <data>/synthetic --model <data>/model``; with
   ``--no-serve`` ingest the images, show one search, and stop instead.

The data folder defaults to ``<CLIPSEARCH_DATA_DIR>/demo`` so the demo never mixes with a real library.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .first_run import demo_dir

if TYPE_CHECKING:  # the model layer imports torch (seconds): imported where used
    from clipsearch.indexer.facade import JobsApi
    from clipsearch.indexer.types import JobInfo
    from clipsearch.model.clip import CLIPConfig
    from clipsearch.model.finetune.synthetic import SyntheticConfig
    from clipsearch.model.finetune.train import TrainConfig

log = logging.getLogger(__name__)

# 2: background pairs (model.finetune.background) mixed into training; 3: 1,200 steps, 4 image blocks
DEMO_VERSION = 3
DEMO_IMAGES = 1500
# Steps and the image tower's depth were chosen with bench/tags.py's zero-shot measures (issue
# 27): 500 steps of a 2+2-block model told colours apart but hardly where a shape is (zero-shot
# position top-1 0.39); 1,200 steps with 4 image blocks learn the position too (0.91), at 3.5
# times the training time (bench/results/demo.md). 1,500 steps learn it better (0.97) but
# rank "a red circle" (README) worse: no right picture in its top 10 (tests/service/
# test_relevance_demo.py). Shapes stayed hard for every candidate (top-1 0.41-0.61 of 4); wider
# towers, 48-96 px input and larger batches did no better in about the same time (the candidates
# are listed in the commit that set these).
DEMO_STEPS = 1200
# Meaningless pairs (noise images captioned with random letters) per synthetic image: they teach the
# small model where a meaningless query belongs, so its best matches score low (see relevance).
DEMO_BACKGROUND_SHARE = 0.25
DEMO_QUERIES = (
    "two red circles",
    "a blue square on the left",
    "three yellow triangles",
    "a green cross at the top",
)
_MARKER = "demo.json"
# Torch threads while training. The demo's steps are small (batches of 64 pictures of 32 px, a
# 64-wide model): two threads gain little even on idle cores, and on a busy machine a team of two
# spends most of its CPU waiting for its partner (measured for issue 24 with the 500-step recipe:
# 141 CPU-s with two threads, 22 with one). One thread also trains the same model, to the last
# bit, whatever the core count (torch's default is one thread per core, and the sums it splits
# round differently).
DEMO_TRAIN_THREADS = 1


@dataclass
class DemoAssets:
    """Where the demo's images and model are, and what training scored."""

    images: Path
    model: Path
    trained_now: bool
    metrics: dict[str, Any] = field(default_factory=dict)


def _synthetic_config() -> SyntheticConfig:
    from clipsearch.model.finetune.synthetic import SyntheticConfig

    return SyntheticConfig(
        attributes=("colour", "shape", "position", "count"),
        image_size=96,
        seed=0,
        templates="varied",
        colours=("red", "green", "blue", "yellow", "purple", "white"),
    )


def _train_config(steps: int) -> TrainConfig:
    from clipsearch.model.finetune.train import TrainConfig

    return TrainConfig(
        max_steps=steps,
        batch_size=64,
        lr=2e-3,
        warmup_steps=max(1, steps // 10),
        weight_decay=0.05,
        grad_clip=1.0,
        val_fraction=0.1,
        cache_pixels="yes",
        log_every=50,
        keep_checkpoints=1,
        checkpoint_every=max(1, steps // 4),
        device="cpu",
    )


def _clip_config() -> CLIPConfig:
    from clipsearch.model.finetune.train import small_clip_config

    return small_clip_config(image_size=32, width=64, layers=2, vision_layers=4)


def _wanted(images: int, steps: int) -> dict[str, Any]:
    """What the cached model must have been made from (images, set, training, model settings)."""
    return {
        "version": DEMO_VERSION,
        "background": round(images * DEMO_BACKGROUND_SHARE),
        "synthetic": _synthetic_config().to_dict(),
        "images": images,
        "train": _train_config(steps).to_dict(),
        "clip": _clip_config().to_dict(),
    }


def cached_demo(
    data_dir: Path, *, images: int = DEMO_IMAGES, steps: int = DEMO_STEPS
) -> DemoAssets | None:
    """The demo's assets if ``data_dir`` holds a model trained with exactly these settings, else
    None (nothing is written)."""
    images_dir, model_dir = data_dir / "synthetic", data_dir / "model"
    marker = model_dir / _MARKER
    if not (marker.is_file() and (model_dir / "model.safetensors").is_file()):
        return None
    try:
        cached = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    wanted = _wanted(images, steps)
    if not isinstance(cached, dict) or {k: cached.get(k) for k in wanted} != wanted:
        return None
    return DemoAssets(images_dir, model_dir, False, cached.get("metrics", {}))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepare_demo(
    data_dir: Path,
    *,
    images: int = DEMO_IMAGES,
    steps: int = DEMO_STEPS,
    retrain: bool = False,
    progress: bool = True,
) -> DemoAssets:
    """Generate the set and train the model unless an identical one is cached under ``data_dir``."""
    from clipsearch.model.api import build
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.finetune.background import write_background
    from clipsearch.model.finetune.data import load_pairs
    from clipsearch.model.finetune.synthetic import write_folder
    from clipsearch.model.finetune.train import train

    if steps < 1:
        raise ValueError(f"--steps {steps}: give at least 1 training step")
    if images < 200:
        raise ValueError(
            f"--images {images} is too few for the demo to learn anything; use at least 200"
        )
    images_dir, model_dir = data_dir / "synthetic", data_dir / "model"
    syn = _synthetic_config()
    write_folder(syn, images, images_dir)
    if not retrain:
        cached = cached_demo(data_dir, images=images, steps=steps)
        if cached is not None:
            log.info("reusing the demo model in %s", model_dir)
            return cached
    wanted = _wanted(images, steps)
    tcfg = _train_config(steps)
    clip_cfg = _clip_config()
    pairs = load_pairs(images_dir)
    train_pairs, val_pairs = pairs.split(tcfg.val_fraction, tcfg.split_seed)
    # training only: validation recall stays measured on the synthetic captions alone
    train_pairs += write_background(data_dir / "background", wanted["background"], syn.image_size)
    model = build(clip_cfg, seed=0, name="clipsearch-demo")
    run_dir = data_dir / "training"
    # an interrupted earlier demo training continues where it stopped, if it had these settings
    # (the checkpoints of another recipe, or of other --images/--steps, are started over)
    run_marker = run_dir / _MARKER
    try:
        same = json.loads(run_marker.read_text()) == wanted
    except (OSError, ValueError):
        same = False
    resume = same and not retrain
    if run_dir.exists() and not resume:
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_marker.write_text(json.dumps(wanted, indent=1))
    with _torch_threads(DEMO_TRAIN_THREADS):
        result = train(
            model, train_pairs, val_pairs, tcfg, run_dir, resume=resume, progress=progress
        )
    model.name = str(model_dir)
    save_pretrained(model, model_dir)
    wanted["metrics"] = result.metrics
    marker = model_dir / _MARKER
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(wanted, indent=1))
    os.replace(tmp, marker)
    return DemoAssets(images_dir, model_dir, True, result.metrics)


def _default_demo_dir() -> Path:
    return demo_dir()


def _wait_plainly(lib: JobsApi, job_id: int, timeout: float | None) -> JobInfo:
    """Wait for the demo's ingest, saying how far it got in plain lines (one per tenth): what a
    log file or a pipe can show, where a progress bar shows nothing."""
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = -1
    while True:
        job = lib.get_job(job_id)
        total = job.total or 0
        tenth = (job.done + job.failed) * 10 // total if total else -1
        if tenth > shown:
            shown = tenth
            print(f"clipsearch demo: ingesting, {job.done} of {total} pictures", flush=True)
        if job.state in ("done", "failed", "cancelled"):
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def cmd_demo(args: argparse.Namespace) -> int:
    from .cli_common import (
        CLIError,
        cli_settings,
        maybe_worker,
        open_library,
        report_job,
        wait_for_job,
    )

    if args.data_dir is not None and "\0" in str(args.data_dir):
        raise CLIError("the data folder name contains a NUL byte")
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else _default_demo_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise CLIError(f"--data-dir {data_dir} exists and is not a folder")
    data_dir.mkdir(parents=True, exist_ok=True)
    args.data_dir = str(data_dir)
    tic = time.perf_counter()
    plain = not args.quiet and not sys.stdout.isatty()
    if plain:  # a log file or a pipe: say what is happening, in lines
        if not args.retrain and cached_demo(data_dir, images=args.demo_images, steps=args.steps):
            said = f"reusing the small CLIP trained before in {data_dir / 'model'}"
        else:
            said = (
                f"making {args.demo_images} pictures and training a small CLIP on them in "
                f"{data_dir} (a minute or two the first time, cached after)"
            )
        print(f"clipsearch demo: {said}", flush=True)
    try:
        assets = prepare_demo(
            data_dir,
            images=args.demo_images,
            steps=args.steps,
            retrain=args.retrain,
            progress=not args.quiet,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    what = "trained" if assets.trained_now else "cached"
    r1 = assets.metrics.get("t2i_r1")
    print(
        f"clipsearch demo: {what} model in {assets.model}"
        + (f" (validation text->image recall@1 {r1:.2f})" if r1 is not None else "")
        + f", images in {assets.images} ({time.perf_counter() - tic:.0f}s)",
        file=sys.stderr,
        flush=True,
    )
    args.model = str(assets.model)
    folder = shlex.quote(str(data_dir))
    print(
        f"clipsearch demo: the same library from the command line: clipsearch search "
        f"--data-dir {folder} 'a red circle' (status, ingest, duplicates ... take the same "
        "--data-dir)",
        file=sys.stderr,
        flush=True,
    )
    if args.no_serve:
        settings = cli_settings(args)
        lib = open_library(settings)
        job = lib.submit_ingest(str(assets.images.resolve()), recursive=True)
        worker = maybe_worker(settings, not settings.catalog.broker_url)
        try:
            if plain:
                job = _wait_plainly(lib, job.id, args.timeout)
            else:
                job = wait_for_job(lib, job.id, quiet=args.quiet, timeout=args.timeout)
        finally:
            if worker is not None:
                worker.stop()
        rc = report_job(job)
        if rc == 0:
            lib.refresh_index()
            for query in DEMO_QUERIES[:2]:
                hits = lib.search(lib.model.embed_texts([query])[0], k=3)
                print(
                    f"{query!r}: " + ", ".join(f"{Path(h.path).name} ({h.score:.2f})" for h in hits)
                )
        return rc
    from .serve import run

    settings = cli_settings(args, images=[assets.images.resolve()])
    run(settings)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the ``clipsearch`` sub-commands."""
    p = subparsers.add_parser(
        "demo",
        help="offline demo: train a small CLIP on a synthetic set and serve it",
        description="Generates a synthetic captioned image set, trains a small CLIP on it from scratch "
        "(a minute or two on a CPU; cached for the next run), ingests the images and serves the gallery. "
        "No download needed.",
    )
    p.add_argument("--data-dir", help="demo data folder (default: <CLIPSEARCH_DATA_DIR>/demo)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--device", help="device for serving (training runs on the CPU)")
    p.add_argument(
        "--images",
        dest="demo_images",  # not the settings' `images` folders (service.settings.FLAG_SETTINGS)
        type=int,
        default=DEMO_IMAGES,
        help=f"synthetic images (default {DEMO_IMAGES})",
    )
    p.add_argument(
        "--steps", type=int, default=DEMO_STEPS, help=f"training steps (default {DEMO_STEPS})"
    )
    p.add_argument(
        "--retrain", action="store_true", help="train again even if a cached model exists"
    )
    p.add_argument(
        "--no-serve", action="store_true", help="stop after training and ingesting (show a search)"
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="with --no-serve: give up waiting for ingestion"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
