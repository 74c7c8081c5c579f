"""Relevance: a score in [0, 1] that means the same for every query.

A raw score (the cosine between query and image) says little on its own: every query has a best
match, and how high that best match scores depends on the model, the library and the query. A
meaningless query ("zzzz qqqq") still finds images scoring 0.87 with the small demo model.

The rule, for CLIP-style models (``score_kind == "cosine"``)
--------------------------------------------------------------
Once per served index (and again when the library has grown or shrunk by a quarter), the library
is searched with a fixed background of meaningless queries: :data:`BACKGROUND_TEXTS` strings of
random letters, and :data:`BACKGROUND_IMAGES` noise images for image queries. Their best-match
scores in *this* library, with *this* model, are what "nothing relevant here" looks like: their
highest, ``top0``, and their standard deviation, ``sd0`` (at least :data:`MIN_SPREAD`). A hit
scoring ``s`` gets::

    relevance = Phi((s - top0) / sd0)        # Phi: the standard normal CDF

so relevance 0.5 is the best match of the luckiest of the 64 meaningless texts (24 noise images
for image queries): a new meaningless query's best match reaches it about once in 65 (25), and
each background standard deviation above it moves relevance along the normal curve (0.84 one
above, 0.98 two above; 0.16 one below). :data:`DEFAULT_MIN_RELEVANCE` (0.5) is the default cut
of every search, whatever the door (indexer.search_service).
Text queries are measured against the text background, image queries (uploads, "more like
this") against the image background; a query mixing text and image terms against a background
interpolated by the share of its positive weight that image terms carry.

SigLIP-style models (``score_kind == "sigmoid"``)
-------------------------------------------------
A text query's relevance is the model's own match probability,
``sigmoid(exp(logit_scale) * s + logit_bias)`` (``model.score``); image queries use the background
rule above (the sigmoid was trained on image-text pairs only).

For a given query relevance only grows with the raw score, so a ``min_relevance`` is a
``min_score`` for that query (:meth:`Calibration.min_score`): ranking and paging are unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import string
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image as PILImage

    from clipsearch.model.base import EmbeddingModel

log = logging.getLogger(__name__)

BACKGROUND_TEXTS = 64
BACKGROUND_IMAGES = 24
BACKGROUND_SEED = 20240613  # never the seed of model.finetune.background's training captions
MIN_SPREAD = 0.005  # cosine units: a background this tight still gets a usable scale
DEFAULT_MIN_RELEVANCE = 0.5
REFRESH_GROWTH = 0.25  # recalibrate when the library's size changed by more than this share
REFRESH_AFTER_S = 3600.0  # ... or when the calibration is older than this

_NORMAL = NormalDist()


@runtime_checkable
class _SigmoidHead(Protocol):
    """A model that scores with a sigmoid (SigLIP): its learned scale and bias."""

    logit_scale: torch.Tensor
    logit_bias: torch.Tensor


# How well a result matches, in words (the gallery's "looks like what you described: strong"),
# in background deviations above the luckiest meaningless query (relevance 0.5): strong from
# 1.28 (0.9: where an exact copy of a query picture lands even with a weak model), fair from
# 0.52 (0.7), weak below (down to the default cut, 0.5).
BANDS = (("strong", 0.9), ("fair", 0.7), ("weak", 0.0))


def relevance_band(relevance: float | None) -> str | None:
    """``"strong"``, ``"fair"`` or ``"weak"`` for a calibrated relevance; None without one."""
    if relevance is None or relevance != relevance:  # NaN: no calibrated relevance
        return None
    return next(name for name, floor in BANDS if relevance >= floor)


def background_texts(n: int = BACKGROUND_TEXTS, seed: int = BACKGROUND_SEED) -> list[str]:
    """``n`` meaningless queries: one to four "words" of two to nine random letters."""
    rng = random.Random(seed)
    return [
        " ".join(
            "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
            for _ in range(rng.randint(1, 4))
        )
        for _ in range(n)
    ]


def background_images(
    n: int = BACKGROUND_IMAGES, size: int = 96, seed: int = BACKGROUND_SEED
) -> list[PILImage]:
    """``n`` meaningless pictures: pixel noise, coarse blocks and smooth colour fields."""
    from PIL import Image

    out = []
    gen = np.random.default_rng(seed)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            pixels = gen.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            out.append(Image.fromarray(pixels))
            continue
        cells = int(gen.integers(2, 9)) if kind == 1 else int(gen.integers(2, 4))
        small = gen.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
        resample = Image.Resampling.NEAREST if kind == 1 else Image.Resampling.BICUBIC
        out.append(Image.fromarray(small).resize((size, size), resample))
    return out


@dataclass(frozen=True)
class NullFit:
    """What meaningless queries' best matches score in this library: mean and spread."""

    top: float  # the highest best-match score of the background queries
    spread: float  # their standard deviation (at least MIN_SPREAD)
    n: int  # background queries that found a match
    mean: float = 0.0

    @classmethod
    def of(cls, best: Sequence[float]) -> NullFit:
        values = np.asarray([b for b in best if np.isfinite(b)], dtype=np.float64)
        if values.size == 0:
            return cls(top=1.0, spread=MIN_SPREAD, n=0)  # an empty library: nothing is relevant
        return cls(
            top=float(values.max()),
            spread=max(float(values.std()), MIN_SPREAD),
            n=int(values.size),
            mean=float(values.mean()),
        )


def _fit(data: Mapping[str, float]) -> NullFit:
    """A NullFit as BackgroundCache keeps it in its store."""
    return NullFit(
        top=float(data["top"]),
        spread=float(data["spread"]),
        n=int(data["n"]),
        mean=float(data["mean"]),
    )


def _mix(a: NullFit, b: NullFit, share: float) -> tuple[float, float]:
    share = min(1.0, max(0.0, share))
    return (
        (1 - share) * a.top + share * b.top,
        (1 - share) * a.spread + share * b.spread,
    )


@dataclass(frozen=True)
class Calibration:
    """Turns one query's raw scores into relevance (see the module docstring)."""

    text: NullFit
    image: NullFit
    sigmoid: tuple[float, float] | None  # (exp(logit_scale), logit_bias) of a SigLIP model
    library_size: int
    made_at: float  # time.monotonic() when measured
    rule: str = "background"

    def relevance(
        self, scores: Sequence[float] | np.ndarray, image_share: float = 0.0
    ) -> np.ndarray:
        """Relevance in [0, 1] of raw scores of one query (``image_share``: the share of the
        query's positive weight carried by image terms: 0 for text, 1 for an image)."""
        s = np.asarray(scores, dtype=np.float64)
        if self.sigmoid is not None and image_share <= 0.0:
            scale, bias = self.sigmoid
            return 1.0 / (1.0 + np.exp(-(scale * s + bias)))
        top, spread = _mix(self.text, self.image, image_share)
        z = (s - top) / spread
        return np.array([_NORMAL.cdf(float(v)) for v in z.reshape(-1)]).reshape(s.shape)

    def min_score(self, min_relevance: float, image_share: float = 0.0) -> float:
        """The raw score a hit of such a query needs to reach ``min_relevance``."""
        r = float(min_relevance)
        if r <= 0.0:
            return -math.inf
        if r >= 1.0:
            return math.inf
        if self.sigmoid is not None and image_share <= 0.0:
            scale, bias = self.sigmoid
            return (math.log(r / (1.0 - r)) - bias) / scale
        top, spread = _mix(self.text, self.image, image_share)
        return top + spread * _NORMAL.inv_cdf(r)

    def stale(self, library_size: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        base = max(self.library_size, 1)
        return abs(library_size - self.library_size) > REFRESH_GROWTH * base or (
            now - self.made_at > REFRESH_AFTER_S
        )

    def describe(self) -> dict[str, object]:
        """The measured background, for health and the docs."""
        out: dict[str, object] = {
            "rule": "sigmoid" if self.sigmoid is not None else self.rule,
            "text_background": {
                "top": round(self.text.top, 4),
                "spread": round(self.text.spread, 4),
                "mean": round(self.text.mean, 4),
            },
            "image_background": {
                "top": round(self.image.top, 4),
                "spread": round(self.image.spread, 4),
                "mean": round(self.image.mean, 4),
            },
            "library_size": self.library_size,
            "default_min_relevance": DEFAULT_MIN_RELEVANCE,
        }
        return out


def calibrate(
    model: EmbeddingModel,
    best_scores: Callable[[np.ndarray], Sequence[float]],
    library_size: int,
    backgrounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> Calibration:
    """Measure the background in a library.

    ``best_scores(vectors [n, D]) -> [n]``: the best-match score of each vector in the library
    (NaN where nothing matched). ``backgrounds``: the background's (text, image) embeddings when
    the caller keeps them per model (:class:`BackgroundCache`)."""
    texts, images = backgrounds if backgrounds is not None else embed_backgrounds(model)
    text_fit = NullFit.of(best_scores(texts))
    image_fit = NullFit.of(best_scores(images))
    sigmoid = None
    if getattr(model, "score_kind", "cosine") == "sigmoid":
        if not isinstance(model, _SigmoidHead):
            raise TypeError(
                f"{type(model).__name__} scores with a sigmoid but has no logit_scale/bias"
            )
        scale = float(model.logit_scale.detach().float().exp())
        bias = float(model.logit_bias.detach().float())
        sigmoid = (scale, bias)
    return Calibration(text_fit, image_fit, sigmoid, int(library_size), time.monotonic())


def embed_backgrounds(model: EmbeddingModel) -> tuple[np.ndarray, np.ndarray]:
    """The background queries embedded by ``model`` (text [64, D], image [24, D])."""
    texts = np.asarray(model.embed_texts(background_texts()), dtype=np.float32)
    images = np.asarray(model.embed_images(background_images()), dtype=np.float32)
    return texts, images


class BackgroundCache:
    """Per model: the background embeddings; per served index: the calibration (thread-safe).

    ``store``: a file that keeps the last calibration for other processes of the same library
    (a ``clipsearch search`` on its own reads what the server measured instead of embedding the
    background again): used when it names the same index (``identity``: the model and the index
    version) and is not stale; written after each measurement."""

    def __init__(self, store: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._embedded: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None
        self._calibration: tuple[int, Calibration] | None = None
        self._store = store
        self._identity: str | None = None

    def get(
        self,
        key: int,
        model: EmbeddingModel,
        best_scores: Callable[[np.ndarray], Sequence[float]],
        library_size: int,
        identity: str | None = None,
    ) -> Calibration:
        """The calibration of served index ``key`` (an identity). Measured now when there is none
        yet, or the model changed; when it is stale, or the index was rebuilt for the same model
        (a new ``key``: about the same images), measured again in a background thread while the
        old one keeps answering (a search never waits for a re-measure). ``identity``: what the
        stored calibration must name to be used (none: the store is not read)."""
        self._identity = identity
        if self._calibration is None and identity is not None:
            kept = self._read(identity, library_size)
            if kept is not None:
                self._calibration = (key, kept)
                return kept
        current = self._calibration
        embedded = self._embedded
        same_model = embedded is not None and embedded[0] == id(model)
        if current is not None and (current[0] == key or same_model):
            if (current[0] != key or current[1].stale(library_size)) and not self._lock.locked():
                threading.Thread(
                    target=self._remeasure,
                    args=(key, model, best_scores, library_size),
                    name="clipsearch-relevance",
                    daemon=True,
                ).start()
            return current[1]
        return self._measure(key, model, best_scores, library_size)

    def _remeasure(
        self,
        key: int,
        model: EmbeddingModel,
        best_scores: Callable[[np.ndarray], Sequence[float]],
        library_size: int,
    ) -> None:
        try:
            self._measure(key, model, best_scores, library_size)
        except Exception as exc:  # the old calibration keeps answering
            log.warning("relevance re-calibration failed: %s", exc)

    def _measure(
        self,
        key: int,
        model: EmbeddingModel,
        best_scores: Callable[[np.ndarray], Sequence[float]],
        library_size: int,
    ) -> Calibration:
        with self._lock:
            current = self._calibration
            if current is not None and current[0] == key and not current[1].stale(library_size):
                return current[1]
            embedded = self._embedded
            if embedded is None or embedded[0] != id(model):
                embedded = (id(model), embed_backgrounds(model))
                self._embedded = embedded
            cal = calibrate(model, best_scores, library_size, embedded[1])
            log.info(
                "relevance calibrated on %d images: meaningless texts' best matches up to %.3f "
                "(sd %.3f), noise images' up to %.3f (sd %.3f)",
                library_size,
                cal.text.top,
                cal.text.spread,
                cal.image.top,
                cal.image.spread,
            )
            self._calibration = (key, cal)
            self._write(cal)
            return cal

    def _read(self, identity: str, library_size: int) -> Calibration | None:
        if self._store is None:
            return None
        try:
            data = json.loads(self._store.read_text())
            if data.get("identity") != identity:
                return None
            age = time.time() - float(data["measured_at"])
            sigmoid = data.get("sigmoid")
            cal = Calibration(
                text=_fit(data["text"]),
                image=_fit(data["image"]),
                sigmoid=(float(sigmoid[0]), float(sigmoid[1])) if sigmoid else None,
                library_size=int(data["library_size"]),
                made_at=time.monotonic() - max(0.0, age),
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
        return None if cal.stale(library_size) else cal

    def _write(self, cal: Calibration) -> None:
        if self._store is None or self._identity is None:
            return
        fit = ("top", "spread", "n", "mean")
        data = {
            "identity": self._identity,
            "measured_at": time.time() - (time.monotonic() - cal.made_at),
            "text": {k: getattr(cal.text, k) for k in fit},
            "image": {k: getattr(cal.image, k) for k in fit},
            "sigmoid": list(cal.sigmoid) if cal.sigmoid is not None else None,
            "library_size": cal.library_size,
        }
        tmp = self._store.with_name(f".{self._store.name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._store)
        except OSError as exc:  # a read-only data folder: each process measures its own
            log.debug("relevance calibration not kept in %s: %s", self._store, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
