"""What a search page shows: relevance per hit, the relevance cut, and the sort order.

The searches of routes/search.py hand :func:`ranked_page` a ``search(k, offset, min_score)``
function bound to their query vector, filters and mode; this module adds

* ``relevance`` (indexer.relevance: a calibrated score in [0, 1], the same meaning for every
  query) to each hit;
* ``min_relevance``: for one query relevance grows with the raw score, so the cut is a raw score
  threshold (``Calibration.min_score``) and paging works as before. On the page where the
  results above the cut end, ``hidden`` counts the weaker results it left out (at most
  :data:`HIDDEN_CAP`; ``hidden_more`` when there are more);
* ``sort=date_desc|date_asc``: the results above the cut (the default cut when none is given,
  at most :data:`DATE_SET_MAX`) ordered by capture date (undated images last, then by id), paged
  by offset over that fixed set: the same query gives the same pages.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SORTS = ("relevance", "date_desc", "date_asc")
HIDDEN_CAP = 100
DATE_SET_MAX = 1000


@dataclass
class RankedPage:
    """One page of hits with their relevance, and what the relevance cut left out."""

    hits: list[Any]
    relevance: list[float | None]
    hidden: int | None = None
    hidden_more: bool = False
    min_relevance: float | None = None
    threshold: float | None = None  # the raw score the cut came to
    info: dict[str, Any] = field(default_factory=dict)


def _exempt(hit: Any) -> bool:
    """A hit a keyword matched (hybrid search): found by its words, never cut by relevance."""
    match = getattr(hit, "match", None) or ()
    return any(m != "semantic" for m in match)


def _date_key(desc: bool) -> Callable[[Any], tuple[int, float, int]]:
    def key(hit: Any) -> tuple[int, float, int]:
        taken = hit.taken_at
        if taken is None:
            return (1, 0.0, hit.id)
        if isinstance(taken, dt.datetime):
            stamp = taken.replace(tzinfo=None) - dt.datetime(1970, 1, 1)
            seconds = stamp.total_seconds()
        else:
            seconds = float(taken)
        return (0, -seconds if desc else seconds, -hit.id if desc else hit.id)

    return key


def ranked_page(
    search: Callable[..., list[Any]],
    calibration: Any | None,
    *,
    k: int,
    offset: int,
    min_score: float | None = None,
    min_relevance: float | None = None,
    image_share: float = 0.0,
    sort: str = "relevance",
    default_min_relevance: float = 0.5,
) -> RankedPage:
    """Run ``search(k=, offset=, min_score=)`` with the relevance cut and the sort order."""
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}: use {', '.join(SORTS)}")
    if sort != "relevance" and min_relevance is None:
        min_relevance = default_min_relevance
    threshold = None
    if min_relevance is not None and calibration is not None:
        threshold = calibration.min_score(min_relevance, image_share)
    cut = min_score
    if threshold is not None and math.isfinite(threshold):
        cut = threshold if cut is None else max(cut, threshold)
    elif threshold is not None and threshold > 0:  # min_relevance 1: nothing can reach it
        cut = math.inf

    def rel(hits: list[Any]) -> list[float | None]:
        if calibration is None or not hits:
            return [None] * len(hits)
        values = calibration.relevance([h.score for h in hits], image_share)
        return [round(float(v), 6) for v in values]

    if sort == "relevance":
        if cut is not None and math.isinf(cut):
            hits: list[Any] = []
        else:
            hits = search(k=k, offset=offset, min_score=cut)
        page = RankedPage(hits, rel(hits), min_relevance=min_relevance, threshold=threshold)
        if min_relevance is not None and len(hits) < k:
            # the results above the cut end on this page: count what the cut left out
            above = offset + len(hits)
            wider = search(k=above + HIDDEN_CAP + 1, offset=0, min_score=min_score)
            below = max(0, len(wider) - above)
            page.hidden = min(below, HIDDEN_CAP)
            page.hidden_more = below > HIDDEN_CAP
        return page
    if cut is not None and math.isinf(cut):
        kept: list[Any] = []
    else:
        kept = search(k=DATE_SET_MAX, offset=0, min_score=cut)
    if cut is not None:
        kept = [h for h in kept if h.score >= cut or _exempt(h)]
    kept.sort(key=_date_key(sort == "date_desc"))
    hits = kept[offset : offset + k]
    page = RankedPage(hits, rel(hits), min_relevance=min_relevance, threshold=threshold)
    page.info["result_set"] = len(kept)
    return page
