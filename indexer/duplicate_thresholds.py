"""The near-duplicate thresholds of one library and model, measured on the library's own pictures.

A fixed cosine (0.95) and hash distance (8 of 64 bits) mean different things for different models
and kinds of picture: on flat synthetic pictures every difference hash is 0 and a weak model puts
every picture at 0.96 from every other, so fifteen different pictures became "the same picture".
Here the duplicates job measures what a copy and what a different picture look like *in this
library, to this model*, the way the relevance calibration measures what a meaningless query
scores:

* **copies** (must be found): each picture of a sample of the library's thumbnails re-encoded
  (JPEG q60), resized to 50 %, cropped by 5 % on each side and brightened by 10 %
  (:data:`COPY_KINDS`);
* **different pictures** (must not be grouped): every pair of two sample pictures, and each sample
  picture against its *next shot* (the camera moved by 6 %, the light by a few per cent: a burst
  frame, which people want listed as similar shots, not removed as a duplicate).

Each is embedded by the library's model and hashed as the job does (dHash of the thumbnail). The
thresholds (cosine at least ``near_similarity`` *and* at most ``near_hash_bits`` apart) are the
pair that finds the most copies while keeping the precision measured on that set at or above
:data:`TARGET_PRECISION`; the measured precision and recall are stored with the groups. Where no
pair of thresholds reaches :data:`MIN_RECALL` of the copies at that precision (a weak or untrained
model, pictures without detail), the job says so and groups exact copies only (the same bytes).
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageEnhance

log = logging.getLogger(__name__)

#: Precision the thresholds must reach on the measured copies and different pictures.
TARGET_PRECISION = 0.98
#: Below this share of copies found at the target precision, only exact copies are grouped.
MIN_RECALL = 0.5
#: Pictures of the library sampled for a measurement (each gives 4 copies and a next shot).
SAMPLE_SIZE = 48
#: Fewer ready pictures than this: too few to measure a precision of 98 % on (the fixed defaults
#: are used until the library has them).
MIN_SAMPLE = 24
#: Hash distances tried (bits of 64).
MAX_BITS = 16
COPY_KINDS = ("re-encoded q60", "resized 50 %", "5 % crop", "+10 % brightness")
THUMB_SIDE = 256  # what the ingest keeps and the job hashes

Embed = Callable[[Sequence[PILImage.Image]], np.ndarray]
Hash = Callable[[PILImage.Image], int]


@dataclass(frozen=True)
class DuplicateThresholds:
    """What makes two different files "the same picture" in this library (see the module doc)."""

    near_similarity: float
    near_hash_bits: int
    mode: str  # "measured" | "exact-only" (no near duplicates) | "default" (not measured yet)
    precision: float | None = None  # measured on the copies and different pictures below
    recall: float | None = None  # share of the copies found
    copies: int = 0
    different: int = 0
    sample: int = 0
    model_id: int | None = None
    library_size: int = 0
    reason: str = ""

    @property
    def near_allowed(self) -> bool:
        return self.mode != "exact-only"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> DuplicateThresholds | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


def default_thresholds(near_similarity: float, near_hash_bits: int) -> DuplicateThresholds:
    return DuplicateThresholds(
        near_similarity,
        near_hash_bits,
        "default",
        reason="not measured on this library yet (fewer than "
        f"{MIN_SAMPLE} pictures): the fixed defaults apply",
    )


# --------------------------------------------------------------------------------------------
# Copies and next shots of a picture


def copies_of(im: PILImage.Image) -> dict[str, PILImage.Image]:
    """The copies a person keeps by accident (COPY_KINDS), of an RGB picture."""
    w, h = im.size
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    cx, cy = int(w * 0.05), int(h * 0.05)
    return {
        "re-encoded q60": PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB"),
        "resized 50 %": im.resize((max(1, w // 2), max(1, h // 2)), PILImage.Resampling.BILINEAR),
        "5 % crop": im.crop((cx, cy, w - cx, h - cy)),
        "+10 % brightness": ImageEnhance.Brightness(im).enhance(1.1),
    }


def next_shot(im: PILImage.Image, rng: random.Random) -> PILImage.Image:
    """A burst's next frame: the camera moved by 6 % across and 3 % down, the light changed."""
    arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    h, w, _ = arr.shape
    moved = np.roll(np.roll(arr, max(1, int(w * 0.06)), axis=1), max(1, int(h * 0.03)), axis=0)
    moved = moved * rng.uniform(0.95, 1.05)
    return PILImage.fromarray(moved.clip(0, 255).astype(np.uint8), "RGB")


def as_thumbnail(im: PILImage.Image) -> PILImage.Image:
    """What the ingest keeps of a picture: at most 256 px, JPEG q85 (the hash is taken there)."""
    im = im.convert("RGB")
    im.thumbnail((THUMB_SIDE, THUMB_SIDE), PILImage.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB")


# --------------------------------------------------------------------------------------------
# Choosing the thresholds


@dataclass(frozen=True)
class PairScores:
    """Cosine and hash distance of the copy pairs (positives) and different-picture pairs."""

    copy_sim: np.ndarray
    copy_bits: np.ndarray
    other_sim: np.ndarray
    other_bits: np.ndarray


def choose(scores: PairScores, target: float = TARGET_PRECISION) -> tuple[float, int, float, float]:
    """``(near_similarity, near_hash_bits, precision, recall)``: the most copies found at
    ``target`` precision; ties go to the stricter pair. ``recall`` 0 when none reaches it."""
    best = (1.0, 0, 1.0, 0.0)
    n_copies = len(scores.copy_sim)
    if n_copies == 0:
        return best
    candidates = np.unique(np.round(scores.copy_sim.astype(np.float64), 4))
    for bits in range(MAX_BITS + 1):
        copy_ok = scores.copy_bits <= bits
        other_ok = scores.other_bits <= bits
        for t in candidates[::-1]:  # strictest first
            tp = int(np.count_nonzero(copy_ok & (scores.copy_sim >= t)))
            fp = int(np.count_nonzero(other_ok & (scores.other_sim >= t)))
            if tp == 0:
                continue
            precision = tp / (tp + fp)
            recall = tp / n_copies
            if precision >= target and recall > best[3] + 1e-12:
                best = (float(t), bits, precision, recall)
    return best


def score_pairs(
    pictures: Sequence[PILImage.Image], embed: Embed, dhash: Hash, seed: int = 0
) -> PairScores:
    """Embed and hash each picture, its copies and its next shot (see the module doc)."""
    rng = random.Random(seed)
    originals = [as_thumbnail(p) for p in pictures]
    copies = [copies_of(o) for o in originals]
    shots = [next_shot(o, rng) for o in originals]
    flat_copies = [c for group in copies for c in group.values()]
    vectors = embed([*originals, *flat_copies, *shots])
    n, k = len(originals), len(COPY_KINDS)
    v_orig, v_copy, v_shot = vectors[:n], vectors[n : n + n * k], vectors[n + n * k :]
    h_orig = [dhash(o) for o in originals]
    h_copy = [dhash(as_thumbnail(c)) for c in flat_copies]
    h_shot = [dhash(as_thumbnail(s)) for s in shots]

    copy_sim = np.einsum("ij,ij->i", np.repeat(v_orig, k, axis=0), v_copy)
    copy_bits = np.array([_bits(h_orig[i // k], h_copy[i]) for i in range(n * k)])
    sims = v_orig @ v_orig.T
    iu = np.triu_indices(n, 1)
    pair_sim = sims[iu]
    pair_bits = np.array([_bits(h_orig[a], h_orig[b]) for a, b in zip(*iu, strict=True)])
    shot_sim = np.einsum("ij,ij->i", v_orig, v_shot)
    shot_bits = np.array([_bits(h_orig[i], h_shot[i]) for i in range(n)])
    return PairScores(
        copy_sim=copy_sim.astype(np.float32),
        copy_bits=copy_bits.astype(np.int32),
        other_sim=np.concatenate([pair_sim, shot_sim]).astype(np.float32),
        other_bits=np.concatenate([pair_bits, shot_bits]).astype(np.int32),
    )


def _bits(a: int, b: int) -> int:
    return bin((a ^ b) & 0xFFFFFFFFFFFFFFFF).count("1")


def measure(
    pictures: Sequence[PILImage.Image],
    embed: Embed,
    dhash: Hash,
    *,
    model_id: int | None = None,
    library_size: int = 0,
    target: float = TARGET_PRECISION,
) -> DuplicateThresholds:
    """The thresholds for a library whose sample is ``pictures`` (see the module doc)."""
    scores = score_pairs(pictures, embed, dhash)
    sim, bits, precision, recall = choose(scores, target)

    def result(sim: float, bits: int, mode: str, reason: str) -> DuplicateThresholds:
        return DuplicateThresholds(
            sim, bits, mode, precision, recall, copies=len(scores.copy_sim),
            different=len(scores.other_sim), sample=len(pictures), model_id=model_id,
            library_size=library_size, reason=reason,
        )  # fmt: skip

    if recall < MIN_RECALL:
        reason = (
            f"this model cannot tell copies from different pictures in this library: at "
            f"{target:.0%} precision it finds {recall:.0%} of the measured copies "
            f"({len(scores.copy_sim)} copies, {len(scores.other_sim)} different-picture pairs of "
            f"{len(pictures)} sampled pictures); only exact copies (the same bytes) are grouped"
        )
        return result(1.0, 0, "exact-only", reason)
    reason = (
        f"measured on {len(pictures)} of this library's pictures: vectors at least {sim:.3f} "
        f"alike and picture hashes at most {bits} of 64 bits apart find {recall:.0%} of the "
        f"copies at {precision:.1%} precision"
    )
    return result(sim, bits, "measured", reason)


def sample_thumbnails(
    rows: Sequence[tuple[int, str]], thumb_dir: Path, size: int = SAMPLE_SIZE
) -> list[PILImage.Image]:
    """Up to ``size`` thumbnails, evenly spread over ``rows`` ((image id, thumbnail key) in id
    order); keys that are not ``xx/name`` inside ``thumb_dir`` or do not open are skipped."""
    if not rows:
        return []
    step = max(1, len(rows) // size)
    out: list[PILImage.Image] = []
    for _, key in rows[::step]:
        parts = key.split("/")
        if len(parts) != 2 or not all(p and p not in (".", "..") for p in parts):
            continue
        try:
            with PILImage.open(thumb_dir / parts[0] / parts[1]) as im:
                if im.width * im.height > 4 * THUMB_SIDE * THUMB_SIDE:
                    continue  # not one of ours
                out.append(im.convert("RGB"))
        except (OSError, ValueError) as exc:
            log.debug("no thumbnail %s for the duplicate thresholds: %s", key, exc)
        if len(out) >= size:
            break
    return out
