"""Fast JPEG decode (Pillow draft / DCT scaling) against the exact decode, for ingestion.

For generated 640x480 and 4000x3000 JPEGs (gradients, noise and shapes, written to a temporary
folder), measures decode + preprocess per image on one core for

- exact: ``load_image(path)`` then ``Preprocess(224)``, the reference pipeline;
- fast:  ``load_image(path, draft_size=224)`` then ``Preprocess(224)``;

and the drift the fast path causes: pixel differences after preprocessing, and the cosine between
the image embeddings of both paths with a ViT-B/32 of random weights (``model.build`` with the
ViT-B/32 config). Writes bench/results/preprocess.md. Takes about a minute on two cores.

    .venv/bin/python -m bench.preprocess [--small 24] [--large 6] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw, features

REPO = Path(__file__).resolve().parent.parent

from clipsearch.model.preprocess import Preprocess, load_image  # noqa: E402

log = logging.getLogger("bench.preprocess")
IMAGE_SIZE = 224


def make_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Photo-like content: smooth colour gradients, soft shapes, texture and sensor noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= width
    y /= height
    base = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        a, b, ph = rng.uniform(40, 120), rng.uniform(-60, 60), rng.uniform(0, 6.28)
        base[..., c] = a + b * x + 50 * np.sin(ph + 3 * y + 2 * x * rng.uniform(0.5, 2))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    scale = min(width, height)
    for _ in range(int(rng.integers(8, 20))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.25) * scale
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        box = (cx - r, cy - r * rng.uniform(0.3, 1.5), cx + r, cy + r)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour, outline=(0, 0, 0), width=max(1, scale // 300))
    for _ in range(int(rng.integers(5, 15))):
        pts = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(2)]
        draw.line(
            pts, fill=tuple(int(v) for v in rng.integers(0, 255, 3)), width=max(1, scale // 200)
        )
    arr = np.asarray(img).astype(np.float32)
    arr += rng.normal(0, 6, size=arr.shape).astype(np.float32)  # sensor noise / texture
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_images(folder: Path, count: int, size: tuple[int, int], seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{size[0]}x{size[1]}_{i:03d}.jpg"
        make_photo(rng, *size).save(path, quality=90)
        paths.append(path)
    return paths


@dataclass
class Timing:
    ms_per_image: float  # median over rounds
    rounds: list[float]

    @property
    def per_second(self) -> float:
        return 1000.0 / self.ms_per_image


def time_paths(
    paths: list[Path], fns: list[Callable[[Path], torch.Tensor]], rounds: int
) -> list[Timing]:
    """Time each function over all paths, interleaved round by round so load changes on a
    shared machine hit both paths alike."""
    for fn in fns:
        fn(paths[0])  # warm-up: imports, allocator
    per_round: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for p in paths:
                fn(p)
            per_round[i].append((time.perf_counter() - t0) * 1000.0 / len(paths))
    return [Timing(statistics.median(r), r) for r in per_round]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=24, help="number of 640x480 JPEGs")
    parser.add_argument("--large", type=int, default=6, help="number of 4000x3000 JPEGs")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over each set")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "preprocess.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]

    prep = Preprocess(IMAGE_SIZE)

    def exact(p: Path) -> torch.Tensor:
        return prep(load_image(p))

    def fast(p: Path) -> torch.Tensor:
        return prep(load_image(p, draft_size=IMAGE_SIZE))

    from clipsearch.model import build
    from clipsearch.model.clip import CLIPConfig

    model = build(CLIPConfig(), seed=0, name="ViT-B-32 (random weights)")  # ViT-B/32 defaults
    assert model.image_size == IMAGE_SIZE

    rows = []
    drift = []
    with tempfile.TemporaryDirectory(prefix="clipsearch-bench-") as tmp:
        for label, size, count, seed in (
            ("640x480", (640, 480), args.small, 1),
            ("4000x3000", (4000, 3000), args.large, 2),
        ):
            log.info("generating %d %s JPEGs", count, label)
            paths = write_images(Path(tmp), count, size, seed)
            mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
            t_exact, t_fast = time_paths(paths, [exact, fast], args.rounds)
            rows.append((label, count, mb, t_exact, t_fast))
            log.info(
                "%s: exact %.1f ms, fast %.1f ms", label, t_exact.ms_per_image, t_fast.ms_per_image
            )
            px_exact = torch.stack([exact(p) for p in paths])
            px_fast = torch.stack([fast(p) for p in paths])
            std = torch.tensor(prep.std).view(1, 3, 1, 1)
            diff255 = ((px_exact - px_fast).abs() * std * 255.0).flatten(1)
            with torch.inference_mode():
                e_exact = model.embed_pixels(px_exact)
                e_fast = model.embed_pixels(px_fast)
            cos = (e_exact * e_fast).sum(axis=1)
            drift.append(
                (
                    label,
                    float(diff255.mean()),
                    float(diff255.max()),
                    float(cos.mean()),
                    float(cos.min()),
                    load_image(paths[0], draft_size=IMAGE_SIZE).size,
                )
            )
    seconds = time.perf_counter() - started
    write_report(args.out, rows, drift, seconds, args.rounds, load_before, os.getloadavg()[0])
    log.info("wrote %s in %.0f s", args.out, seconds)
    return 0


def write_report(
    path: Path, rows: list, drift: list, seconds: float, rounds: int, load0: float, load1: float
) -> None:
    lines = [
        "# Preprocessing: fast JPEG decode (draft) vs exact decode",
        "",
        f"Measured by `bench/preprocess.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" in {seconds:.0f} s.",
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, shared with other work while "
        f"measured (1-min load average {load0:.1f} before, {load1:.1f} after: absolute times are "
        f"noisy, the ratio of the two paths measured side by side is the figure to use); "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, Pillow {PIL.__version__} (libjpeg-turbo "
        f"{features.version('libjpeg_turbo') or 'no'}), torch {torch.__version__}, "
        f"numpy {np.__version__}",
        f"- One thread (torch.set_num_threads(1)); target {IMAGE_SIZE}x{IMAGE_SIZE}; "
        f"median of {rounds} passes over each set, the two paths interleaved pass by pass; JPEG quality 90, generated content "
        "(gradients, shapes, noise).",
        "- exact = `load_image(path)` + `Preprocess(224)` (the reference pipeline);"
        " fast = `load_image(path, draft_size=224)` + `Preprocess(224)`.",
        "",
        "## Decode + preprocess, per core",
        "",
        "| images | count | avg file | exact ms/img | exact img/s | fast ms/img | fast img/s | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, count, mb, te, tf in rows:
        lines.append(
            f"| {label} | {count} | {mb:.2f} MB | {te.ms_per_image:.1f} | {te.per_second:.1f} | "
            f"{tf.ms_per_image:.1f} | {tf.per_second:.1f} | {te.ms_per_image / tf.ms_per_image:.2f}x |"
        )
    lines += [
        "",
        "## Drift of the fast path",
        "",
        "Pixel difference after preprocessing (0-255 scale), and cosine between the L2-normalised",
        "embeddings of the exact and fast paths from a ViT-B/32 with random weights",
        "(`model.build(CLIPConfig())`, seed 0). Random weights are not a trained model: the cosine",
        "shows that the drift is small relative to the image content, not the exact figure a",
        "trained checkpoint would give.",
        "",
        "| images | draft decode size | mean abs pixel diff | max abs pixel diff | cosine mean | cosine min |",
        "|---|---|---|---|---|---|",
    ]
    for label, mean_d, max_d, cmean, cmin, dsize in drift:
        lines.append(
            f"| {label} | {dsize[0]}x{dsize[1]} | {mean_d:.2f} | {max_d:.0f} | {cmean:.6f} | {cmin:.6f} |"
        )
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
