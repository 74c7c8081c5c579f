"""Ingestion benchmark: files/s end to end and decoding images/s per core, against a naive loop.

Generates a folder of 640x480 JPEGs, then in one run measures:

* decoding per core (one process): ``indexer.decode.decode_file`` (read + sha256 + decode +
  EXIF + preprocess + thumbnail) with the fast JPEG path (draft) and the exact path, against the
  reference ``PIL.Image.open(p).convert("RGB")`` + the model's ``Preprocess``;
* decoding with the process pool (all cores);
* end to end (``plan_ingest`` + ``process_batch`` into a SQLite catalog, process pool, batches of
  64) with the tiny test model (draft and exact) and with a randomly initialised ViT-B/32,
  against the naive sequential loop: open, preprocess, ``embed_pixels`` one image at a time.

Writes bench/results/ingest.md. Run: ``nice .venv/bin/python -m bench.ingest`` (about 3 minutes
on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import sqlalchemy
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

from clipsearch.indexer.catalog import create_job, ensure_model, init_db, session_factory  # noqa: E402
from clipsearch.indexer.decode import decode_file  # noqa: E402
from clipsearch.indexer.decode_pool import DecodePool, decode_many, default_workers  # noqa: E402
from clipsearch.indexer.ingest import job_progress, plan_ingest, process_batch  # noqa: E402
from clipsearch.model.api import build  # noqa: E402
from clipsearch.model.clip import CLIPConfig, TextConfig, VisionConfig  # noqa: E402
from clipsearch.model.preprocess import Preprocess  # noqa: E402
from clipsearch.model.testing import tiny_model  # noqa: E402


def vit_b32_config() -> CLIPConfig:
    return CLIPConfig(
        embed_dim=512,
        vision=VisionConfig(image_size=224, width=768, layers=12, patch_size=32, heads=12),
        text=TextConfig(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
        quick_gelu=True,
    )


def make_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Photo-like 640x480 JPEGs: smooth gradients, blobs and sensor noise, all distinct."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    paths = []
    for i in range(n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / 800.0 + 0.5
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
        for _ in range(6):
            cx, cy, r = rng.uniform(0, 640), rng.uniform(0, 480), rng.uniform(20, 150)
            mask = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
            img[mask] = img[mask] * 0.4 + rng.uniform(0, 255, 3) * 0.6
        img += rng.normal(0, 6, img.shape)
        p = folder / f"photo_{i:04d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def naive_decode(paths: list[Path], pre: Preprocess) -> None:
    for p in paths:
        with Image.open(p) as im:
            pre(im.convert("RGB"))


def naive_pipeline(paths: list[Path], model: Any) -> None:
    for p in paths:
        with Image.open(p) as im:
            px = model.preprocess(im.convert("RGB"))
        model.embed_pixels(px[None])


def pipeline(
    paths_dir: Path, model: Any, work: Path, pool: DecodePool, draft: bool, tag: str
) -> tuple[float, int]:
    db = work / f"catalog-{tag}.db"
    thumbs = work / f"thumbs-{tag}"
    engine = init_db(f"sqlite:///{db}")
    sessions = session_factory(engine)
    model_id = ensure_model(sessions, model)
    with sessions() as s:
        job_id = create_job(s, "ingest", {"path": str(paths_dir)}).id
    t0 = time.perf_counter()
    plan = plan_ingest(sessions, job_id, model_id=model_id, batch_size=64, thumb_dir=thumbs)
    for batch in plan.batches:
        process_batch(
            sessions, model, job_id, batch, thumbs, pool=pool, model_id=model_id, draft=draft
        )
    elapsed = time.perf_counter() - t0
    job = job_progress(sessions, job_id)
    assert job.state == "done" and job.done == plan.total, job
    engine.dispose()
    return elapsed, job.done


def machine() -> str:
    lines = []
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.split(":")[0] in ("CPU(s)", "Model name", "Thread(s) per core", "L3 cache"):
                lines.append(line)
    except OSError:
        pass
    lines.append(f"Load average at start: {os.getloadavg()}")
    lines.append(
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), Pillow {PIL.__version__}, numpy {np.__version__}, SQLAlchemy {sqlalchemy.__version__}"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=240, help="JPEGs for the tiny-model runs")
    ap.add_argument("--vit-files", type=int, default=32, help="JPEGs for the ViT-B/32 runs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.md")
    args = ap.parse_args()
    started = time.perf_counter()
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    mach = machine()
    work = Path(tempfile.mkdtemp(prefix="clipsearch-bench-ingest-"))
    rows: list[tuple[str, str, float, str]] = []
    try:
        photos = work / "photos"
        paths = make_photos(photos, args.files)
        vit_dir = work / "photos-vit"
        vit_dir.mkdir()
        for p in paths[: args.vit_files]:
            os.link(p, vit_dir / p.name)
        n = len(paths)

        # -- decoding per core (this process, 224 px input, 256 px thumbnail) -----------------
        pre = Preprocess(224)
        naive_decode(paths[:10], pre)  # warm-up
        t, _ = timed(lambda: naive_decode(paths, pre))
        ref_decode = n / t
        rows.append(
            (
                "decode, 1 core",
                "reference: PIL open + convert + Preprocess(224)",
                ref_decode,
                "images/s",
            )
        )
        for draft in (False, True):
            thumbs = work / f"th-1core-{draft}"
            t, res = timed(
                lambda d=draft, th=thumbs: [
                    decode_file(p, 224, th, draft=d, preprocess=pre) for p in paths
                ]
            )
            assert all(r.ok for r in res)
            rows.append(
                (
                    "decode, 1 core",
                    f"decode_file {'fast (draft) JPEG' if draft else 'exact JPEG'} (+ sha256, EXIF, thumbnail)",
                    n / t,
                    "images/s",
                )
            )
        workers = default_workers()
        with DecodePool(workers, kind="process") as pool:
            decode_many(paths[: workers * 2], 224, None, pool=pool, preprocess=pre)  # start workers
            for draft in (False, True):
                thumbs = work / f"th-pool-{draft}"
                t, res = timed(
                    lambda d=draft, th=thumbs: decode_many(
                        paths, 224, th, draft=d, pool=pool, preprocess=pre
                    )
                )
                assert all(r.ok for r in res)
                rows.append(
                    (
                        f"decode, pool of {workers} processes",
                        f"decode_many {'fast (draft)' if draft else 'exact'}",
                        n / t,
                        "images/s",
                    )
                )

            # -- end to end, tiny model --------------------------------------------------------
            tiny = tiny_model(image_size=32)
            naive_pipeline(paths[:5], tiny)
            t, _ = timed(lambda: naive_pipeline(paths, tiny))
            rows.append(
                (
                    "end to end, tiny model (32 px)",
                    "reference: naive loop, one image at a time",
                    n / t,
                    "files/s",
                )
            )
            for draft in (False, True):
                t, done = pipeline(photos, tiny, work, pool, draft, f"tiny-{draft}")
                rows.append(
                    (
                        "end to end, tiny model (32 px)",
                        f"plan_ingest + process_batch, {'fast (draft)' if draft else 'exact'} JPEG, pool, SQLite",
                        done / t,
                        "files/s",
                    )
                )

            # -- end to end, ViT-B/32 with random weights -----------------------------------------
            vit = build(vit_b32_config(), seed=0, name="ViT-B/32 random")
            vit_paths = sorted(vit_dir.iterdir())
            naive_pipeline(vit_paths[:3], vit)
            t, _ = timed(lambda: naive_pipeline(vit_paths, vit))
            rows.append(
                (
                    "end to end, ViT-B/32 (224 px, random weights)",
                    "reference: naive loop, one image at a time",
                    len(vit_paths) / t,
                    "files/s",
                )
            )
            t, done = pipeline(vit_dir, vit, work, pool, True, "vit")
            rows.append(
                (
                    "end to end, ViT-B/32 (224 px, random weights)",
                    "plan_ingest + process_batch, fast (draft) JPEG, pool, SQLite",
                    done / t,
                    "files/s",
                )
            )
            t_embed, _ = timed(lambda: vit.embed_pixels(torch.randn(64, 3, 224, 224)))
            rows.append(
                (
                    "ViT-B/32 alone",
                    "embed_pixels, batch of 64 (no decoding)",
                    64 / t_embed,
                    "images/s",
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    write(args.out, when, total, mach, rows, args.files, args.vit_files)


def write(
    out: Path,
    when: str,
    total: float,
    mach: str,
    rows: list[tuple[str, str, float, str]],
    n: int,
    n_vit: int,
) -> None:
    lines = [
        "# Ingestion benchmark",
        "",
        f"Run {when} by `bench/ingest.py` ({total:.0f} s in all), under `nice`, on a machine shared with other work "
        "(figures move with the load; compare rows of the same run).",
        "",
        "## Machine and versions",
        "",
        "```",
        mach,
        "```",
        "",
        "## Method",
        "",
        f"{n} generated 640x480 JPEGs (quality 90, photo-like gradients, blobs and noise; {n_vit} of them for ViT-B/32). "
        "Decoding rows produce the 224 px model input; `decode_file` also hashes the file (sha256), reads EXIF and writes "
        "a 256 px JPEG thumbnail (fsync + atomic rename). The fast path decodes JPEGs with Pillow's draft mode (DCT scaling) "
        "at the smallest scale still covering 256 px. End-to-end rows time `plan_ingest` (scan, catalog upsert) plus every "
        "`process_batch` (decode in the process pool, embed in batches of 64, one SQLite transaction per batch) on a fresh "
        "catalog; the pool is started before timing (a worker keeps it). The reference is the naive sequential loop: "
        "`Image.open(p).convert('RGB')`, the model's preprocess, `embed_pixels` on one image, for each file (no catalog, "
        "no thumbnail). Decoding and embedding alternate per batch (not overlapped).",
        "",
        "## Results",
        "",
        "| what | variant | rate | unit |",
        "|---|---|---|---|",
    ]
    for what, variant, rate, unit in rows:
        lines.append(f"| {what} | {variant} | {rate:,.1f} | {unit} |")
    lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
