"""Benchmark: how well the duplicates job's picture hash tells copies from other pictures.

A generated set of photo-like pictures (smooth colour fields, discs, stripes, noise: each its own
scene), and of each original four copies the issue names: re-encoded (JPEG q60), resized to 50 %,
cropped by 5 % on each side, +10 % brightness; plus, for a burst, the next frame (the scene moved
by 6 % and changed slightly). Pairs are then labelled:

- positive: an original and one of its copies (the same picture);
- negative: two different pictures (two originals, or a copy of one and another original);
- burst: an original and its next frame (must not be a duplicate: listed as similar shots).

For each dHash threshold (bits of 64, measured on 256 px thumbnails as the job does) precision and
recall of "same picture" are reported, and how many burst pairs it would wrongly call duplicates.
The job's embedding condition (cosine >= NEAR_SIMILARITY) depends on the model: with no real
weights here it is not measured; the hash is what keeps bursts and look-alikes apart, and this
is where its threshold comes from.

    .venv/bin/python -m bench.duplicates     # writes bench/results/duplicates.md
"""

from __future__ import annotations

import argparse
import io
import itertools
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402

from clipsearch.indexer.duplicates import NEAR_HASH_BITS, dhash, hash_distance  # noqa: E402

VARIANTS = ("re-encoded q60", "resized 50 %", "5 % crop", "+10 % brightness")


def scene(rng: np.random.Generator, size: int = 640) -> np.ndarray:
    """A float [H, W, 3] picture: a smooth colour field with discs, a stripe band and grain."""
    h, w = size * 3 // 4, size
    y, x = np.mgrid[0:h, 0:w] / w
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, p = rng.uniform(-3, 3, 3)
        img[..., c] = 0.5 + 0.35 * np.sin(a * x + b * y + p)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 0.75), rng.uniform(0.03, 0.15)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    if rng.random() < 0.5:
        f, ph = rng.uniform(10, 40), rng.uniform(0, 6)
        band = (np.sin(f * (x + y) + ph) > 0.6) & (y > rng.uniform(0, 0.5))
        img[band] = img[band] * 0.6 + 0.4 * rng.uniform(0, 1, 3)
    img += rng.normal(0, 0.02, img.shape)
    return img.clip(0, 1)


def to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray((arr * 255).astype(np.uint8), "RGB")


def thumb(im: Image.Image) -> Image.Image:
    """What the ingest stores and the job hashes: at most 256 px on the long side."""
    im = im.copy()
    im.thumbnail((256, 256), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return Image.open(io.BytesIO(buf.getvalue()))


def variants(im: Image.Image) -> dict[str, Image.Image]:
    w, h = im.size
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    cx, cy = int(w * 0.05), int(h * 0.05)
    return {
        "re-encoded q60": Image.open(io.BytesIO(buf.getvalue())),
        "resized 50 %": im.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
        "5 % crop": im.crop((cx, cy, w - cx, h - cy)),
        "+10 % brightness": ImageEnhance.Brightness(im).enhance(1.1),
    }


def burst_frame(arr: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The next shot: the camera moved by 6 % and the light changed a little."""
    h, w, _ = arr.shape
    dx, dy = int(w * 0.06), int(h * 0.03)
    moved = np.roll(np.roll(arr, dx, axis=1), dy, axis=0)
    return to_image((moved * rng.uniform(0.95, 1.05)).clip(0, 1))


def run(n: int, out: Path) -> None:
    began = time.perf_counter()
    rng = np.random.default_rng(0)
    orig_hash: list[int] = []
    copy_hash: list[dict[str, int]] = []
    burst_hash: list[int] = []
    for _ in range(n):
        arr = scene(rng)
        im = to_image(arr)
        orig_hash.append(dhash(thumb(im)))
        copy_hash.append({k: dhash(thumb(v)) for k, v in variants(im).items()})
        burst_hash.append(dhash(thumb(burst_frame(arr, rng))))
    pos = {k: [hash_distance(orig_hash[i], copy_hash[i][k]) for i in range(n)] for k in VARIANTS}
    neg = [hash_distance(a, b) for a, b in itertools.combinations(orig_hash, 2)]
    neg += [
        hash_distance(copy_hash[i][k], orig_hash[j])
        for i in range(n)
        for j in range(n)
        if i != j and (i + j) % 7 == 0
        for k in VARIANTS
    ]
    burst = [hash_distance(orig_hash[i], burst_hash[i]) for i in range(n)]
    all_pos = [d for ds in pos.values() for d in ds]
    rows = []
    for bits in range(0, 25, 2):
        tp = sum(d <= bits for d in all_pos)
        fp = sum(d <= bits for d in neg)
        rows.append(
            (
                bits,
                tp / len(all_pos),
                tp / max(1, tp + fp),
                {k: sum(d <= bits for d in v) / n for k, v in pos.items()},
                sum(d <= bits for d in burst) / n,
                fp,
            )
        )
    lines = [
        "# duplicates: the picture hash on a generated set",
        "",
        f"- Run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, `bench/duplicates.py`, "
        f"{time.perf_counter() - began:.0f} s; Python {platform.python_version()}",
        f"- Set: {n} generated photo-like scenes (640x480), each with 4 copies ({', '.join(VARIANTS)}) "
        f"and a burst frame (moved 6 %, light +-5 %): {len(all_pos)} same-picture pairs, "
        f"{len(neg)} different-picture pairs (originals against each other and copies against "
        f"other originals), {n} burst pairs",
        "- Hash: 64-bit dHash of the 256 px JPEG thumbnail the ingest keeps (indexer/duplicates.py)",
        f"- The job's threshold: at most {NEAR_HASH_BITS} bits, together with the vectors' cosine "
        ">= 0.95 (model-dependent, not measured here: no real weights)",
        "",
        "| bits <= | recall (all copies) | precision | re-encoded | resized 50 % | 5 % crop | "
        "+10 % bright | bursts called duplicates | false pairs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for bits, recall, precision, per, burst_rate, fp in rows:
        mark = " **(used)**" if bits == NEAR_HASH_BITS else ""
        lines.append(
            f"| {bits}{mark} | {recall:.3f} | {precision:.4f} | "
            + " | ".join(f"{per[k]:.2f}" for k in VARIANTS)
            + f" | {burst_rate:.2f} | {fp} |"
        )
    dist = {k: (int(np.median(v)), int(max(v))) for k, v in pos.items()}
    lines += [
        "",
        f"Median / max bits apart per copy kind: {dist}; different pictures: median "
        f"{int(np.median(neg))}, min {min(neg)}; bursts: median {int(np.median(burst))}, "
        f"min {min(burst)}.",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="originals (default 200)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "duplicates.md")
    args = parser.parse_args(argv)
    run(args.n, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
