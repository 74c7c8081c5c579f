"""The pixel match of two thumbnails: a near-duplicate signal that tells a copy from a burst frame.

Two frames of a burst have vectors as alike as a copy's and picture hashes as close as a 5 % crop's
(bench/duplicates.py measured no rule on those two that reaches 98 % precision at 90 % recall).
Their pixels differ where a copy's do not: each thumbnail is reduced to :data:`SIDE` x SIDE grey
levels (zero mean, unit length), once as it is and once without :data:`CROP` on every side (so a
5 % crop lines up with its original); the match of two pictures is the best correlation of the
three alignments (as they are, either one's centre against the other). Copies score about 0.99
and above, burst frames moved by 6 % below 0.965, and look-alike pictures of plain shapes come
close: the cut is measured per library (indexer.duplicate_thresholds) like the others.

Thumbnails are our own JPEGs of at most 256 px in the catalog's thumbnail folder; they are read by
a checked key (``ab/name``), refused before decoding when larger than :data:`MAX_THUMB_PIXELS`,
and kept as two SIDE x SIDE vectors in a bounded cache (:class:`GreyCache`) while a job runs.

Why 64 x 64: the grain of a photograph is the same in a copy and differs between two pictures
that look alike; on bench/duplicates.py's generated set, copies match at >= 0.985 and burst
frames at <= 0.964 (at 32 x 32: >= 0.988 and <= 0.974), and the demo's look-alike pictures of
plain shapes at <= 0.965 (at 32 x 32 up to 0.990).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

log = logging.getLogger(__name__)

SIDE = 64
CROP = 0.05
#: A thumbnail larger than this (4 x 256 x 256 pixels) is not one of ours: not decoded.
MAX_THUMB_PIXELS = 4 * 256 * 256
#: Thumbnails whose grey levels a job keeps at once (32 KiB each: 64 MiB).
CACHE_SIZE = 2048


@dataclass(frozen=True)
class Grey:
    """A thumbnail as grey levels: ``full`` and ``centre`` (without CROP on each side), SIDE x SIDE
    each, zero mean and unit length; ``level``: its mean grey level (0-255)."""

    full: np.ndarray
    centre: np.ndarray
    level: float


def _vector(im: PILImage.Image) -> tuple[np.ndarray, float]:
    a = np.asarray(im.resize((SIDE, SIDE), PILImage.Resampling.BOX), np.float32).ravel()
    level = float(a.mean())
    a = a - level
    n = float(np.linalg.norm(a))
    return (a / n if n > 0 else a), level


def grey_of(im: PILImage.Image) -> Grey:
    """The grey levels of a picture (any size; thumbnails in practice)."""
    grey = im.convert("L")
    w, h = grey.size
    cx, cy = int(w * CROP), int(h * CROP)
    full, level = _vector(grey)
    centre, _ = _vector(grey.crop((cx, cy, w - cx, h - cy)) if cx and cy else grey)
    return Grey(full, centre, level)


def pixel_match(a: Grey, b: Grey) -> float:
    """How alike two pictures' pixels are (-1 to 1; see the module doc)."""
    return max(float(a.full @ b.full), float(a.centre @ b.full), float(a.full @ b.centre))


def level_gap(a: Grey, b: Grey) -> float:
    """How far apart two pictures' mean grey levels are (|log ratio|: +10 % brightness ~0.1)."""
    return abs(math.log((a.level + 1.0) / (b.level + 1.0)))


def match_matrix(greys: list[Grey]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel match and level gap of every pair of ``greys`` (n x n each)."""
    if not greys:
        empty = np.zeros((0, 0), np.float32)
        return empty, empty
    full = np.stack([g.full for g in greys])
    centre = np.stack([g.centre for g in greys])
    ff = full @ full.T
    cf = centre @ full.T
    match = np.maximum(np.maximum(ff, cf), cf.T)
    levels = np.log(np.array([g.level for g in greys], np.float64) + 1.0)
    return match, np.abs(levels[:, None] - levels[None, :]).astype(np.float32)


def open_grey(thumb_dir: Path, key: str | None) -> Grey | None:
    """The grey levels of a stored thumbnail (``key``: ``ab/name`` inside ``thumb_dir``), or None
    when the key is not one, the file is missing, unreadable or too large to be ours."""
    parts = (key or "").split("/")
    if len(parts) != 2 or not all(p and p not in (".", "..") for p in parts):
        return None
    try:
        with PILImage.open(thumb_dir / parts[0] / parts[1]) as im:
            if im.width * im.height > MAX_THUMB_PIXELS or getattr(im, "n_frames", 1) != 1:
                return None  # not one of ours: never decoded
            return grey_of(im)
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        log.debug("no grey levels for thumbnail %s: %s", key, exc)
        return None


class GreyCache:
    """Grey levels of stored thumbnails by key, read when first asked for, at most ``size`` kept
    (the least recently used dropped): a job's memory stays bounded at any library size."""

    def __init__(self, thumb_dir: Path, size: int = CACHE_SIZE) -> None:
        self.thumb_dir = thumb_dir
        self.size = size
        self._kept: OrderedDict[str, Grey | None] = OrderedDict()
        self.reads = 0

    def get(self, key: str | None) -> Grey | None:
        if not key:
            return None
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        grey = open_grey(self.thumb_dir, key)
        self.reads += 1
        self._kept[key] = grey
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return grey

    def matches(self, pairs: Iterable[tuple[str | None, str | None]]) -> list[float | None]:
        """The pixel match of each pair of thumbnail keys (None where one cannot be read). Pairs
        sorted by their first key are read with the fewest repeated decodes."""
        out: list[float | None] = []
        for ka, kb in pairs:
            ga, gb = self.get(ka), self.get(kb)
            out.append(None if ga is None or gb is None else pixel_match(ga, gb))
        return out


def pixel_matches(
    thumb_dir: Path,
    pairs: list[tuple[int, int]],
    meta: dict[int, tuple[str | None, str | None]],
) -> dict[tuple[int, int], float | None]:
    """The thumbnails' pixel match of these pairs of images (``meta``: id -> (sha256, thumbnail
    key)), read through a bounded cache (:class:`GreyCache`) in pair order."""
    todo = sorted(pairs)
    cache = GreyCache(thumb_dir)
    keys = [(meta.get(a, (None, None))[1], meta.get(b, (None, None))[1]) for a, b in todo]
    out = dict(zip(todo, cache.matches(keys), strict=True))
    log.debug("duplicates: pixel match of %d pairs, %d thumbnails read", len(todo), cache.reads)
    return out
