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
  picture against four *next shots* (the camera moved by 6 to 10 %, the light by a few per cent:
  burst frames, which people want listed as similar shots, not removed as duplicates; on
  pictures of plain shapes, the same shape elsewhere: a different picture that looks alike).

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

import numpy as np
from PIL import Image as PILImage
from PIL import ImageEnhance

log = logging.getLogger(__name__)

#: Precision the thresholds must reach on the measured copies and different pictures.
TARGET_PRECISION = 0.98
#: Different pictures of the library a picture may be grouped with, on average (the pair rate
#: measured on PAIR_SAMPLE pictures times the library's size): 1 picture in 1,000.
WRONG_PARTNERS = 0.001
#: Below this share of copies found at the target precision, only exact copies are grouped.
MIN_RECALL = 0.5
#: Pictures of the library sampled for a measurement (each gives 4 copies and a next shot).
SAMPLE_SIZE = 48
#: Pictures whose stored vectors and hashes give the different-picture pairs (~720,000 pairs).
PAIR_SAMPLE = 1200
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

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> DuplicateThresholds | None:
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


#: How a burst's next frames move (across, down; shares of the picture): four per sampled picture,
#: as many as its copies, so that look-alikes weigh in the precision as much as copies do.
SHOT_MOVES = ((0.06, 0.03), (-0.06, 0.04), (0.08, -0.04), (0.10, 0.05))


def next_shot(
    im: PILImage.Image, rng: random.Random, move: tuple[float, float] = (0.06, 0.03)
) -> PILImage.Image:
    """A burst's next frame: the camera moved (by 6 % across and 3 % down unless ``move`` says),
    the light changed by a few per cent. A different picture that looks alike."""
    arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    h, w, _ = arr.shape
    dx, dy = round(w * move[0]) or 1, round(h * move[1])
    moved = np.roll(np.roll(arr, dx, axis=1), dy, axis=0)
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
    """Cosine and hash distance of the copies (must be found), the next shots (look-alikes that
    must not be) and pairs of different pictures of the library (must not be)."""

    copy_sim: np.ndarray
    copy_bits: np.ndarray
    shot_sim: np.ndarray
    shot_bits: np.ndarray
    pair_sim: np.ndarray
    pair_bits: np.ndarray


@dataclass(frozen=True)
class Choice:
    near_similarity: float
    near_hash_bits: int
    recall: float  # share of the copies found
    shot_rate: float  # share of the next shots called the same picture
    wrong_per_picture: float  # different pictures of the library a picture is grouped with
    precision: float  # if each picture had one copy and one look-alike shot (see choose)


def choose(scores: PairScores, library_size: int, target: float = TARGET_PRECISION) -> Choice:
    """The thresholds that find the most copies while (a) at most ``1 - target`` of the next
    shots pass and (b) a picture is expected to be grouped with at most :data:`WRONG_PARTNERS`
    different pictures of a library of ``library_size`` (the pair rate times the library's
    other pictures). Ties go to the stricter pair; recall 0 when nothing qualifies. The precision
    reported is what that gives a library where every picture has one copy and one look-alike:
    ``recall / (recall + shot rate + wrong partners per picture)``."""
    allowed = 1.0 - target
    partners = WRONG_PARTNERS
    others = max(1, library_size - 1)
    n_copies, n_shots, n_pairs = (
        len(scores.copy_sim), max(1, len(scores.shot_sim)), max(1, len(scores.pair_sim)),
    )  # fmt: skip
    best = Choice(1.0, 0, 0.0, 0.0, 0.0, 1.0)
    if n_copies == 0:
        return best
    candidates = np.unique(np.round(scores.copy_sim.astype(np.float64), 4))
    for bits in range(MAX_BITS + 1):
        copy_ok = scores.copy_bits <= bits
        shot_ok = scores.shot_bits <= bits
        pair_ok = scores.pair_bits <= bits
        for t in candidates[::-1]:  # strictest first
            recall = int(np.count_nonzero(copy_ok & (scores.copy_sim >= t))) / n_copies
            if recall <= best.recall + 1e-12:
                continue
            shot_rate = int(np.count_nonzero(shot_ok & (scores.shot_sim >= t))) / n_shots
            wrong = int(np.count_nonzero(pair_ok & (scores.pair_sim >= t))) / n_pairs * others
            if shot_rate <= allowed and wrong <= partners:
                precision = recall / (recall + shot_rate + wrong)
                best = Choice(float(t), bits, recall, shot_rate, wrong, precision)
    return best


def score_pairs(
    pictures: Sequence[PILImage.Image],
    embed: Embed,
    dhash: Hash,
    seed: int = 0,
    others: tuple[np.ndarray, Sequence[int]] | None = None,
) -> PairScores:
    """Embed and hash each picture, its copies and its next shots (see the module doc).
    ``others``: (vectors, picture hashes) of more pictures of the library (their stored
    vectors) for the different-picture pairs; default: the sampled pictures themselves."""
    rng = random.Random(seed)
    originals = [as_thumbnail(p) for p in pictures]
    copies = [copies_of(o) for o in originals]
    shots = [next_shot(o, rng, move) for o in originals for move in SHOT_MOVES]
    flat_copies = [c for group in copies for c in group.values()]
    vectors = embed([*originals, *flat_copies, *shots])
    n, k, m = len(originals), len(COPY_KINDS), len(SHOT_MOVES)
    v_orig, v_copy, v_shot = vectors[:n], vectors[n : n + n * k], vectors[n + n * k :]
    h_orig = [dhash(o) for o in originals]
    h_copy = [dhash(as_thumbnail(c)) for c in flat_copies]
    h_shot = [dhash(as_thumbnail(s)) for s in shots]

    copy_sim = np.einsum("ij,ij->i", np.repeat(v_orig, k, axis=0), v_copy)
    copy_bits = np.array([_bits(h_orig[i // k], h_copy[i]) for i in range(n * k)])
    shot_sim = np.einsum("ij,ij->i", np.repeat(v_orig, m, axis=0), v_shot)
    shot_bits = np.array([_bits(h_orig[i // m], h_shot[i]) for i in range(n * m)])
    pair_vectors, pair_hashes = (v_orig, h_orig) if others is None else others
    pv = np.asarray(pair_vectors, dtype=np.float32)
    iu = np.triu_indices(len(pv), 1)
    pair_sim = (pv @ pv.T)[iu]
    hashes = np.array([h & 0xFFFFFFFFFFFFFFFF for h in pair_hashes], dtype=np.uint64)
    xor = hashes[iu[0]] ^ hashes[iu[1]]
    pair_bits = _POPCOUNT[xor.view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.int32)
    # The library may hold copies of its own pictures: a pair closer than any look-alike shot
    # came (fewer bits apart than the nearest shot, vectors as alike as a copy) is probably one,
    # and is not counted as a pair of different pictures.
    if len(shot_bits) and len(copy_sim):
        probable = (pair_bits < int(shot_bits.min())) & (pair_sim >= float(copy_sim.min()))
        pair_sim, pair_bits = pair_sim[~probable], pair_bits[~probable]
    return PairScores(
        copy_sim=copy_sim.astype(np.float32),
        copy_bits=copy_bits.astype(np.int32),
        shot_sim=shot_sim.astype(np.float32),
        shot_bits=shot_bits.astype(np.int32),
        pair_sim=pair_sim.astype(np.float32),
        pair_bits=pair_bits.astype(np.int32),
    )


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)


def _bits(a: int, b: int) -> int:
    return bin((a ^ b) & 0xFFFFFFFFFFFFFFFF).count("1")


def measure(
    pictures: Sequence[PILImage.Image],
    embed: Embed,
    dhash: Hash,
    *,
    others: tuple[np.ndarray, Sequence[int]] | None = None,
    model_id: int | None = None,
    library_size: int = 0,
    target: float = TARGET_PRECISION,
) -> DuplicateThresholds:
    """The thresholds for a library whose sample is ``pictures`` (see the module doc);
    ``others``: stored vectors and hashes of more of its pictures (the different-picture pairs)."""
    scores = score_pairs(pictures, embed, dhash, others=others)
    size = max(library_size, len(pictures))
    c = choose(scores, size, target)
    counts = (
        f"{len(scores.copy_sim)} copies and {len(scores.shot_sim)} next shots of {len(pictures)} "
        f"sampled pictures, {len(scores.pair_sim)} pairs of different pictures"
    )

    def result(sim: float, bits: int, mode: str, reason: str) -> DuplicateThresholds:
        return DuplicateThresholds(
            sim, bits, mode, round(c.precision, 4), round(c.recall, 4),
            copies=len(scores.copy_sim), different=len(scores.shot_sim) + len(scores.pair_sim),
            sample=len(pictures), model_id=model_id, library_size=library_size, reason=reason,
        )  # fmt: skip

    if c.recall < MIN_RECALL:
        reason = (
            f"this model cannot tell copies from different pictures in this library: keeping "
            f"look-alikes apart ({1 - target:.0%} of next shots, {WRONG_PARTNERS} wrong partners "
            f"per picture at most), it finds {c.recall:.0%} of the copies ({counts}); only exact "
            "copies (the same bytes) are grouped"
        )
        return result(1.0, 0, "exact-only", reason)
    reason = (
        f"measured on this library ({counts}): vectors at least {c.near_similarity:.3f} alike "
        f"and picture hashes at most {c.near_hash_bits} of 64 bits apart find {c.recall:.0%} of "
        f"the copies; {c.shot_rate:.1%} of next shots pass and a picture is grouped with "
        f"{c.wrong_per_picture:.3f} different pictures on average (precision {c.precision:.1%} "
        "if every picture had one copy and one look-alike)"
    )
    return result(c.near_similarity, c.near_hash_bits, "measured", reason)


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
