"""When does a picture get a tag: calibrated decisions, vector math only.

A fixed cosine means nothing across models, libraries and tags: "food" may score 0.28 on every
plate and "documents" 0.22 on every page, and a random model scores everything alike. So each
tag's threshold is chosen from this library's score distribution for a target precision:

1. **What no match looks like.** The background queries the relevance calibration uses
   (:func:`indexer.relevance.background_texts`: strings of random letters) are turned into
   *meaningless tags* through the same template ensemble as a real tag, and scored against the
   library. Each one's scores are standardised by their own median and MAD; pooled, they are the
   shape of a "nothing here" score distribution in this library with this model (:class:`Null`).
2. **One tag.** The tag's own scores over the library are standardised the same way (the bulk of
   a library does not show the tag). Going down from the top, after ``c`` images with a
   standardised score at least ``z``, the background predicts ``N * P_null(Z >= z)`` of them by
   chance, so the precision is about ``1 - N * P_null(Z >= z) / c`` (Benjamini-Hochberg's
   estimate). The threshold is the lowest score whose estimated precision is still at least the
   target (:data:`TARGET_PRECISION`), and never below the best match a meaningless tag finds
   (:attr:`Null.floor`): a model that cannot tell the tag from noise assigns (almost) nothing.
3. **Groups.** Tags of one group exclude each other ("indoor" / "outdoor"): a picture takes only
   the group's best tag by raw cosine (the paper's zero-shot classification), and only when it
   beats the runner-up by :data:`MARGIN_SCALES` of the tag's spread.
4. **A group's classifier, where the library shows it can be trusted.** The thresholds of step 2
   are strict: what a meaningless tag scores is a pessimistic picture of what a real tag's
   non-matches score, so many pictures that clearly show a tag stay below them. Within a group,
   the paper's classifier (a softmax over the group's tags at the model's logit scale) also
   decides: a picture gets the group's best tag when its probability is at least the target
   precision. It is trusted only where the library vouches for it (:func:`trusted_groups`): the
   pictures the strict thresholds already decided (at least :data:`MIN_SEEDS`, of at least two
   of the group's tags) must get the same tag from the classifier at least the target share of
   the time. A model that cannot tell the group's tags apart decides (almost) nothing
   strictly, so its classifier is never trusted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The precision a tag's threshold is chosen for (estimated against the background).
TARGET_PRECISION = 0.9
#: A group's winner must beat the runner-up by this many robust standard deviations of its own
#: scores over the library.
MARGIN_SCALES = 0.25
#: The smallest spread a score distribution is given (cosine units).
MIN_SCALE = 1e-4
#: Library vectors a calibration reads at most (a uniform sample beyond).
CALIBRATION_SAMPLE = 50_000
#: Meaningless tags the background is made of (each through the tag's template ensemble).
BACKGROUND_TAGS = 16
#: Pictures the strict thresholds must have decided in a group before its classifier is trusted.
MIN_SEEDS = 20
#: The softmax scale of a model without a logit scale (CLIP's largest).
DEFAULT_LOGIT_SCALE = 100.0
_MAD_TO_SD = 1.4826
TAIL_QUANTILE = 0.5  # which meaningless tag's tail is "typical": the median one


def robust(scores: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based standard deviation of a score column (at least :data:`MIN_SCALE`)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return 0.0, 1.0
    loc = float(np.median(s))
    scale = _MAD_TO_SD * float(np.median(np.abs(s - loc)))
    return loc, max(scale, MIN_SCALE)


@dataclass(frozen=True)
class Null:
    """Each meaningless tag's standardised scores over the library (sorted rows), and the
    highest best match any of them finds."""

    z: np.ndarray  # float64 [B, n], each row ascending
    floor: float

    @classmethod
    def of(cls, background_scores: np.ndarray) -> Null:
        """From the scores ``[n images, B meaningless tags]``."""
        b = np.asarray(background_scores, dtype=np.float64)
        if b.size == 0:
            return cls(np.zeros((0, 0)), math.inf)
        rows = []
        for j in range(b.shape[1]):
            loc, scale = robust(b[:, j])
            rows.append(np.sort((b[:, j] - loc) / scale))
        return cls(np.stack(rows), float(b.max()))

    def tail(self, z: np.ndarray) -> np.ndarray:
        """P(Z >= z) of a typical meaningless tag: the median over the background's tags (a
        meaningless string that happens to point at something the library holds is one of
        them, not the rule)."""
        zz = np.asarray(z, dtype=np.float64)
        if self.z.size == 0:
            return np.ones_like(zz)
        n = self.z.shape[1]
        tails = [1.0 - np.searchsorted(row, zz, side="left") / n for row in self.z]
        return np.asarray(np.quantile(np.stack(tails), TAIL_QUANTILE, axis=0))


@dataclass(frozen=True)
class TagThreshold:
    """A tag's calibrated decision rule for one model and library."""

    threshold: float  # the raw cosine an image needs (inf: the tag assigns nothing)
    location: float  # median score over the library
    scale: float  # robust standard deviation of the scores over the library
    precision: float  # the precision estimated at the threshold (0 when it assigns nothing)
    expected: int  # images of the calibration sample at or above the threshold

    def margin(self) -> float:
        return MARGIN_SCALES * self.scale


NOTHING = TagThreshold(math.inf, 0.0, 1.0, 0.0, 0)


def calibrate_tag(
    scores: np.ndarray, null: Null, target_precision: float = TARGET_PRECISION
) -> TagThreshold:
    """The threshold of one tag from its scores over the library (or a sample of it)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return NOTHING
    loc, scale = robust(s)
    desc = np.sort(s)[::-1]
    z = (desc - loc) / scale
    counts = np.arange(1, desc.size + 1, dtype=np.float64)
    precision = 1.0 - s.size * null.tail(z) / counts
    ok = np.flatnonzero((precision >= target_precision) & (z > 0))
    if ok.size == 0:
        return TagThreshold(math.inf, loc, scale, 0.0, 0)
    last = int(ok[-1])  # the most images whose estimated precision still meets the target
    return TagThreshold(float(desc[last]), loc, scale, float(precision[last]), last + 1)


def calibrate(
    scores: np.ndarray, null: Null | Sequence[Null], target_precision: float = TARGET_PRECISION
) -> list[TagThreshold]:
    """:func:`calibrate_tag` for each column of ``scores [n, K]`` (one null, or one per tag)."""
    nulls = [null] * scores.shape[1] if isinstance(null, Null) else list(null)
    return [calibrate_tag(scores[:, k], nulls[k], target_precision) for k in range(scores.shape[1])]


def _groups(groups: Sequence[str | None]) -> dict[str, list[int]]:
    by_group: dict[str, list[int]] = {}
    for k, g in enumerate(groups):
        if g:
            by_group.setdefault(g, []).append(k)
    return {g: cols for g, cols in by_group.items() if len(cols) >= 2}


def _classify(sub: np.ndarray, logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The group classifier over scores ``[n, k]``: each picture's best column and its softmax
    probability at ``logit_scale``."""
    z = logit_scale * sub.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p.argmax(axis=1), p.max(axis=1)


def trusted_groups(
    scores: np.ndarray,
    thresholds: Sequence[float],
    margins: Sequence[float],
    groups: Sequence[str | None],
    logit_scale: float,
    target_precision: float = TARGET_PRECISION,
) -> list[float | None]:
    """Per tag: the softmax scale its group's classifier decides with, or None where the group's
    classifier is not trusted (module docstring, step 4)."""
    out: list[float | None] = [None] * len(groups)
    strict = decide(scores, thresholds, margins, groups)
    for cols in _groups(groups).values():
        sub = np.asarray(scores, dtype=np.float32)[:, cols]
        seeded = strict[:, cols]
        rows = np.flatnonzero(seeded.sum(axis=1) == 1)
        # seeds of one tag alone cannot show the classifier confusing the others (one that always
        # answered that tag would agree with every seed): at least two of the group's tags
        if rows.size < MIN_SEEDS or np.count_nonzero(seeded[rows].any(axis=0)) < 2:
            continue
        best, prob = _classify(sub[rows], logit_scale)
        agree = (seeded[rows, best] & (prob >= target_precision)).mean()
        if agree >= target_precision:
            for k in cols:
                out[k] = float(logit_scale)
    return out


def decide(
    scores: np.ndarray,
    thresholds: Sequence[float],
    margins: Sequence[float],
    groups: Sequence[str | None],
    softmax: Sequence[float | None] | None = None,
    target_precision: float = TARGET_PRECISION,
) -> np.ndarray:
    """Which tags each picture gets: bool ``[n, K]`` from raw scores ``[n, K]``. A tag needs its
    threshold; within a group only the best tag may be kept, by at least its margin; where
    ``softmax`` gives a trusted group's scale (:func:`trusted_groups`), the group's best tag is
    also kept when the classifier's probability reaches ``target_precision``."""
    s = np.asarray(scores, dtype=np.float32)
    keep = s >= np.asarray(thresholds, dtype=np.float32)[None, :]
    by_group = _groups(groups)
    for cols in by_group.values():
        scale = None if softmax is None else softmax[cols[0]]
        if scale is not None:
            best, prob = _classify(s[:, cols], scale)
            sure = np.flatnonzero(prob >= target_precision)
            keep[sure, np.asarray(cols)[best[sure]]] = True
        sub = s[:, cols]
        order = np.argsort(-sub, axis=1)
        best, second = order[:, 0], order[:, 1]
        rows = np.arange(s.shape[0])
        gap = sub[rows, best] - sub[rows, second]
        need = np.asarray(margins, dtype=np.float32)[np.asarray(cols)][best]
        winner = np.zeros_like(sub, dtype=bool)
        winner[rows, best] = gap >= need
        keep[:, cols] &= winner
    return keep
