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

Each is embedded by the library's model, hashed as the job does (dHash of the thumbnail) and
reduced to the grey levels the job compares thumbnails by (indexer.duplicates_pixels). Two rules
are measured, each the pair of thresholds that finds the most copies while keeping the precision
measured on that set at or above :data:`TARGET_PRECISION`: cosine at least ``near_similarity``
*and* the thumbnails' pixel match at least ``pixel_match`` (:func:`choose_pixel`; the cosine is
then a permissive pre-cut), or *and* hashes at most ``near_hash_bits`` apart (:func:`choose`).
The pixel rule is taken where it finds at least as many copies as the hash rule; the measured
precision and recall are stored with the groups. Where neither reaches :data:`MIN_RECALL` of the
copies at that precision (a weak or untrained model, pictures without detail), the job says so and
groups exact copies only (the same bytes).

The library may hold copies of its own pictures, which must not count among its different
pictures: pairs closer than any next shot by hash (and as alike as a copy), or, where its copies
match by pixels better than all its next shots, pairs matching as well as its copies do
(:data:`OWN_COPY_SHARE`), are left out. Where copies and next shots overlap by pixels (pictures
of plain shapes), none is left out that way: look-alikes there match as well as copies.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageEnhance

from .duplicates_pixels import SIDE, Grey, grey_of, level_gap, match_matrix, pixel_match

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
#: The library's own copies among its pairs of pictures are told by the pixel match only where its
#: measured copies but this share score above all its next shots, and only above that level.
OWN_COPY_SHARE = 0.01
#: The measurement's version: thresholds measured by an older one are measured again.
MEASURE_VERSION = 2
#: Hash distances tried (bits of 64).
MAX_BITS = 16
COPY_KINDS = ("re-encoded q60", "resized 50 %", "5 % crop", "+10 % brightness")
THUMB_SIDE = 256  # what the ingest keeps and the job hashes

#: (stored vectors, picture hashes, thumbnails' grey levels or None) of pictures of the library.
Others = tuple[np.ndarray, Sequence[int], Sequence[Grey] | None]
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
    #: The thumbnails' pixel match (indexer.duplicates_pixels) a pair needs, with cosine at least
    #: near_similarity; None: the picture hash decides instead (near_hash_bits).
    pixel_match: float | None = None
    #: How it was measured (:data:`MEASURE_VERSION`; 1: before the pixel match was measured).
    version: int = 1

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


def is_near(
    limits: DuplicateThresholds, sim: float, bits: int | None, pixels: float | None
) -> bool:
    """Whether two different files are the same picture: cosine at least the library's
    ``near_similarity``, the picture hashes at most ``near_hash_bits`` apart (unknown: not held
    against it) and, where its thresholds were measured with the thumbnails' pixel match, that
    match at least their ``pixel_match`` (a thumbnail that cannot be read: not the same)."""
    if not limits.near_allowed or sim < limits.near_similarity:
        return False
    if bits is not None and bits > limits.near_hash_bits:
        return False
    if limits.pixel_match is not None:
        return pixels is not None and pixels >= limits.pixel_match
    return True


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
    # the same with the thumbnails' pixel match (indexer.duplicates_pixels); the different
    # pictures' pairs without those that look like the library's own copies by pixels
    copy_pix: np.ndarray | None = None
    shot_pix: np.ndarray | None = None
    pix_pair_sim: np.ndarray | None = None
    pix_pair_pix: np.ndarray | None = None


@dataclass(frozen=True)
class Choice:
    near_similarity: float
    near_hash_bits: int
    recall: float  # share of the copies found
    shot_rate: float  # share of the next shots called the same picture
    wrong_per_picture: float  # different pictures of the library a picture is grouped with
    precision: float  # if each picture had one copy and one look-alike shot (see choose)
    pixel_match: float | None = None  # the pixel cut (choose_pixel); None: the hash decides


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


def choose_pixel(
    scores: PairScores, library_size: int, target: float = TARGET_PRECISION, floor: float = 0.0
) -> Choice:
    """Like :func:`choose`, with the thumbnails' pixel match in place of the picture hash: the
    pixel cut and cosine pre-cut that find the most copies under the same two limits (next shots,
    wrong partners per picture). For each pixel cut, strictest first, the most permissive cosine
    (from ``floor``, then the copies' own) that keeps the limits; the cut then goes half way down
    to the closest different picture or shot below it (copies outside the sample have room, and
    no more different pictures pass). Recall 0 when nothing qualifies or nothing was measured.
    ``near_hash_bits`` is then a loose bound that spares the job reading the thumbnails of pairs
    no two copies can be: twice the farthest copy's hash distance (two copies of a picture are at
    most that far apart), and 4 bits more."""
    best = Choice(1.0, 0, 0.0, 0.0, 0.0, 1.0)
    if (
        scores.copy_pix is None or scores.shot_pix is None or scores.pix_pair_sim is None
        or scores.pix_pair_pix is None or len(scores.copy_pix) == 0
    ):  # fmt: skip
        return best
    copy_sim, copy_pix = scores.copy_sim, scores.copy_pix
    n_copies, n_shots = len(copy_sim), max(1, len(scores.shot_sim))
    n_pairs, others = max(1, len(scores.pix_pair_sim)), max(1, library_size - 1)
    cuts = np.unique(np.round(copy_pix.astype(np.float64), 4))
    cosines = np.unique(np.round(np.append(copy_sim.astype(np.float64), floor), 4))
    keep = (scores.pix_pair_pix >= cuts[0]) & (scores.pix_pair_sim >= cosines[0])
    p_sim, p_pix = scores.pix_pair_sim[keep], scores.pix_pair_pix[keep]
    for cut in cuts[::-1]:  # strictest first
        shot_ok, pair_ok, copy_ok = scores.shot_pix >= cut, p_pix >= cut, copy_pix >= cut
        if int(np.count_nonzero(copy_ok)) / n_copies <= best.recall + 1e-12:
            continue
        for t in cosines:  # most permissive first: the first that keeps the limits is the best
            shot_rate = int(np.count_nonzero(shot_ok & (scores.shot_sim >= t))) / n_shots
            wrong = int(np.count_nonzero(pair_ok & (p_sim >= t))) / n_pairs * others
            if shot_rate <= 1.0 - target and wrong <= WRONG_PARTNERS:
                recall = int(np.count_nonzero(copy_ok & (copy_sim >= t))) / n_copies
                if recall > best.recall + 1e-12:
                    precision = recall / (recall + shot_rate + wrong)
                    bound = min(64, 2 * int(scores.copy_bits.max()) + 4)
                    best = Choice(float(t), bound, recall, shot_rate, wrong, precision, float(cut))
                break
    if best.pixel_match is None:
        return best
    below = np.concatenate([
        scores.shot_pix[(scores.shot_pix < best.pixel_match)
                        & (scores.shot_sim >= best.near_similarity)],
        p_pix[(p_pix < best.pixel_match) & (p_sim >= best.near_similarity)],
    ])  # fmt: skip
    if len(below):
        cut = round((best.pixel_match + float(below.max())) / 2, 4)
        found = (copy_pix >= cut) & (copy_sim >= best.near_similarity)
        recall = int(np.count_nonzero(found)) / n_copies
        precision = recall / (recall + best.shot_rate + best.wrong_per_picture)
        best = dataclasses.replace(best, pixel_match=cut, recall=recall, precision=precision)
    return best


def score_pairs(
    pictures: Sequence[PILImage.Image],
    embed: Embed,
    dhash: Hash,
    seed: int = 0,
    others: Others | None = None,
) -> PairScores:
    """Embed and hash each picture, its copies and its next shots (see the module doc), and take
    the pixel match of each copy and shot with its picture (indexer.duplicates_pixels).
    ``others``: (vectors, picture hashes, grey levels or None) of more pictures of the library
    (their stored vectors and thumbnails) for the different-picture pairs; default: the sampled
    pictures themselves."""
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
    g_orig = [grey_of(o) for o in originals]
    g_copy = [grey_of(as_thumbnail(c)) for c in flat_copies]
    copy_pix = np.array([pixel_match(g_orig[i // k], g) for i, g in enumerate(g_copy)], np.float32)
    copy_gap = np.array([level_gap(g_orig[i // k], g) for i, g in enumerate(g_copy)], np.float32)
    shot_pix = np.array(
        [pixel_match(g_orig[i // m], grey_of(as_thumbnail(s))) for i, s in enumerate(shots)],
        np.float32,
    )
    pair_vectors, pair_hashes, pair_greys = (v_orig, h_orig, g_orig) if others is None else others
    pv = np.asarray(pair_vectors, dtype=np.float32)
    iu = np.triu_indices(len(pv), 1)
    pair_sim = (pv @ pv.T)[iu]
    hashes = np.array([h & 0xFFFFFFFFFFFFFFFF for h in pair_hashes], dtype=np.uint64)
    xor = hashes[iu[0]] ^ hashes[iu[1]]
    pair_bits = _POPCOUNT[xor.view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.int32)
    # The library may hold copies of its own pictures: a pair closer than any look-alike shot
    # came (fewer bits apart than the nearest shot, vectors as alike as a copy) is probably one,
    # and is not counted as a pair of different pictures.
    pix_pair_sim = pix_pair_pix = None
    if pair_greys is not None and len(pair_greys) == len(pv):
        match, gap = match_matrix(list(pair_greys))
        pix = match[iu]
        pix_pair_sim, pix_pair_pix = pair_sim, pix
        # ... and by pixels, where this library's copies match better than all its next shots
        # (all but OWN_COPY_SHARE of them): a pair matching that well, with vectors and a light
        # level as close as two copies of one picture can be (twice a copy's angle, twice a
        # copy's level gap), is one of its own copies
        level = float(np.quantile(copy_pix, OWN_COPY_SHARE)) if len(copy_pix) else 1.0
        if len(shot_pix) and level > float(shot_pix.max()):
            cos_min = float(copy_sim.min())
            probable = (
                (pix >= level)
                & (gap[iu] <= 2 * float(copy_gap.max()))
                & (pair_sim >= 2 * cos_min * cos_min - 1)
            )
            pix_pair_sim, pix_pair_pix = pair_sim[~probable], pix[~probable]
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
        copy_pix=copy_pix,
        shot_pix=shot_pix,
        pix_pair_sim=None if pix_pair_sim is None else pix_pair_sim.astype(np.float32),
        pix_pair_pix=pix_pair_pix,
    )


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)


def _bits(a: int, b: int) -> int:
    return bin((a ^ b) & 0xFFFFFFFFFFFFFFFF).count("1")


def measure(
    pictures: Sequence[PILImage.Image],
    embed: Embed,
    dhash: Hash,
    *,
    others: Others | None = None,
    model_id: int | None = None,
    library_size: int = 0,
    target: float = TARGET_PRECISION,
    floor: float = 0.0,
) -> DuplicateThresholds:
    """The thresholds for a library whose sample is ``pictures`` (see the module doc);
    ``others``: stored vectors, hashes and grey levels of more of its pictures (the
    different-picture pairs); ``floor``: the lowest cosine the job compares. The thumbnails' pixel
    match decides with a cosine pre-cut where it finds at least as many copies as the picture
    hash does (:func:`choose_pixel`), the hash otherwise (:func:`choose`)."""
    scores = score_pairs(pictures, embed, dhash, others=others)
    size = max(library_size, len(pictures))
    by_hash = choose(scores, size, target)
    by_pixels = choose_pixel(scores, size, target, floor)
    c = by_pixels if by_pixels.recall >= max(by_hash.recall, MIN_RECALL) else by_hash
    different = len(scores.shot_sim) + len(
        scores.pair_sim if c.pixel_match is None or scores.pix_pair_sim is None
        else scores.pix_pair_sim
    )  # fmt: skip
    counts = (
        f"{len(scores.copy_sim)} copies and {len(scores.shot_sim)} next shots of {len(pictures)} "
        f"sampled pictures, {different - len(scores.shot_sim)} pairs of different pictures"
    )

    def result(sim: float, bits: int, mode: str, reason: str) -> DuplicateThresholds:
        return DuplicateThresholds(
            sim, bits, mode, round(c.precision, 4), round(c.recall, 4),
            copies=len(scores.copy_sim), different=different,
            sample=len(pictures), model_id=model_id, library_size=library_size, reason=reason,
            pixel_match=c.pixel_match if mode == "measured" else None, version=MEASURE_VERSION,
        )  # fmt: skip

    if c.recall < MIN_RECALL:
        reason = (
            f"this model cannot tell copies from different pictures in this library: keeping "
            f"look-alikes apart ({1 - target:.0%} of next shots, {WRONG_PARTNERS} wrong partners "
            f"per picture at most), it finds {c.recall:.0%} of the copies ({counts}); only exact "
            "copies (the same bytes) are grouped"
        )
        return result(1.0, 0, "exact-only", reason)
    rule = (
        f"picture hashes at most {c.near_hash_bits} of 64 bits apart"
        if c.pixel_match is None
        else f"thumbnails' pixels at least {c.pixel_match:.3f} alike ({SIDE}x{SIDE} grey "
        f"levels, aligned for a 5 % crop; picture hashes at most {c.near_hash_bits} bits apart)"
    )
    reason = (
        f"measured on this library ({counts}): vectors at least {c.near_similarity:.3f} alike "
        f"and {rule} find {c.recall:.0%} of the copies; {c.shot_rate:.1%} of next shots pass "
        f"and a picture is grouped with {c.wrong_per_picture:.3f} different pictures on average "
        f"(precision {c.precision:.1%} if every picture had one copy and one look-alike)"
    )
    if c.pixel_match is None and by_pixels.pixel_match is not None:
        reason += f"; the thumbnails' pixel match would find {by_pixels.recall:.0%} of them"
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
