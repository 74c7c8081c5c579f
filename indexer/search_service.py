"""One search for every door: a typed query in, a typed page out (the REST API, the CLI and,
through the API, the gallery all call :class:`SearchService`).

Every door gets the same decisions (README: Search):

* **The key shown is the order.** Each hit shows ``relevance`` (0..1, the same meaning for every
  query) and ``score`` (the cosine of its vector to the query). Results are ordered by
  ``relevance`` (then the cosine, then the id), in every mode: semantic, the calibrated cosine
  (:mod:`indexer.relevance`); text, :data:`KEYWORD_RELEVANCE` times the keyword score; hybrid,
  the two fused (:mod:`indexer.hybrid`). Rank 4 never shows a lower relevance than rank 5.
* **One cut.** ``min_relevance`` (default :data:`DEFAULT_MIN_RELEVANCE`, 0.5, for every door;
  0 shows everything) drops the hits below it, on that same number: a keyword match is cut like
  any other hit. On the page where the results above the cut end, ``hidden`` counts what it
  left out (at most :data:`HIDDEN_CAP`).
* **The same paging at every depth.** ``k`` up to :data:`MAX_K`, ``offset`` up to
  :data:`MAX_OFFSET` (10,000) in every mode; each page says ``has_more`` and gives a
  ``next_cursor``: the position and the last hit's key, so a page asked by cursor never repeats
  a hit of the previous page when images were added meanwhile.
* **Date orders** (``sort=date_desc|date_asc``): the results above the cut (at most
  :data:`DATE_SET_MAX`) by capture date (undated last, then by id), paged over that set.

A query whose terms include images (uploads, library images) is searched by its vector alone
(mode ``semantic``); a text query runs in the mode asked for, or hybrid when the library has
keywords and the query words to look for (:func:`resolve_mode`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .errors import Conflict
from .hybrid import MODES
from .keywords import KeywordHit, query_words
from .relevance import DEFAULT_MIN_RELEVANCE, Calibration
from .search_terms import InvalidQuery, QueryError
from .types import Hit, SearchFilters, Tally

log = logging.getLogger(__name__)

__all__ = [
    "DATE_SET_MAX",
    "DEFAULT_MIN_RELEVANCE",
    "HIDDEN_CAP",
    "MAX_K",
    "MAX_OFFSET",
    "InvalidQuery",
    "QueryError",
    "SearchPage",
    "SearchQuery",
    "SearchService",
    "resolve_mode",
]

SORTS = ("relevance", "date_desc", "date_asc")
MAX_K = 500  # the largest page
MAX_OFFSET = 10_000  # the deepest page starts here
HIDDEN_CAP = 100
DATE_SET_MAX = MAX_OFFSET + MAX_K  # a date order sorts at most this many results
CURSOR_SLACK = 8  # hits read beyond a cursor's page: those the previous page showed are dropped


class SearchLibrary(Protocol):
    """What a search reads from the library (indexer.library.Library offers it)."""

    def search(
        self,
        vector: np.ndarray,
        k: int = 20,
        offset: int = 0,
        min_score: float | None = None,
        filters: SearchFilters | None = None,
        exclude: Sequence[int] | None = None,
    ) -> list[Hit]: ...

    def search_text(
        self,
        vector: np.ndarray | None,
        query: str,
        mode: str | None = None,
        k: int = 20,
        offset: int = 0,
        min_score: float | None = None,
        filters: SearchFilters | None = None,
        keywords: tuple[int, list[KeywordHit]] | None = None,
        relevance: Callable[[Sequence[float]], Sequence[float]] | None = None,
        min_relevance: float | None = None,
        tally: Tally | None = None,
    ) -> list[Hit]: ...

    def has_keywords(self) -> bool: ...

    # optional: ``calibration()`` (indexer.relevance), ``keyword_hits(text, k, offset, filters)``
    # and ``keywords_known()``; a library without them searches uncalibrated, reads no keyword
    # side ahead and asks has_keywords


@dataclass(frozen=True)
class SearchQuery:
    """One search. ``vector``: the query's (None only for a text-mode search); ``text``: the
    positive text the keyword index looks for ("" for a query of images); ``image_share``: the
    share of positive weight image terms carry (the relevance background); ``exclude``: library
    images never shown; ``min_relevance`` None: :data:`DEFAULT_MIN_RELEVANCE`; ``cursor``: a
    previous page's ``next_cursor`` (then ``offset`` is taken from it); ``keywords``: the
    keyword side read ahead (:meth:`SearchService.keyword_side`)."""

    vector: np.ndarray | None = None
    text: str = ""
    mode: str | None = None
    filters: SearchFilters | None = None
    exclude: tuple[int, ...] = ()
    image_share: float = 0.0
    k: int = 20
    offset: int = 0
    cursor: str | None = None
    min_score: float | None = None
    min_relevance: float | None = None
    sort: str = "relevance"
    keywords: tuple[int, list[KeywordHit]] | None = None


@dataclass
class SearchPage:
    """One page: ``hits`` (each with ``relevance`` and ``score``) in the order of their
    relevance (or capture date), the ``mode`` that ran, the cut actually applied
    (``min_relevance``), where the page starts (``offset``), ``has_more`` and the
    ``next_cursor`` to page on, and on the page where the results above the cut end, ``hidden``
    (how many weaker results the cut left out, at most HIDDEN_CAP; ``hidden_more``: more)."""

    hits: list[Hit]
    mode: str
    min_relevance: float
    offset: int
    has_more: bool
    next_cursor: str | None = None
    hidden: int | None = None
    hidden_more: bool = False
    sort: str = "relevance"
    calibrated: bool = True
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def relevance(self) -> list[float | None]:
        return [h.relevance for h in self.hits]


def resolve_mode(has_keywords: Callable[[], bool], text: str, mode: str | None) -> str:
    """The mode a text query runs in: the one asked for, else hybrid when the keyword index can
    help (it has rows and the query has words to look for), else semantic."""
    if mode is not None:
        if mode not in MODES:
            raise InvalidQuery("mode must be semantic, text or hybrid")
        return mode
    if not query_words(text):
        return "semantic"
    return "hybrid" if has_keywords() else "semantic"


def order_key(hit: Hit) -> tuple[float, float, int]:
    """Where a hit ranks (ascending): by the relevance it shows, then its cosine, then id."""
    rel = hit.relevance if hit.relevance is not None else hit.score
    return (-float(rel), -float(hit.score), int(hit.id))


def _date_key(desc: bool) -> Callable[[Hit], tuple[int, float, int]]:
    def key(hit: Hit) -> tuple[int, float, int]:
        taken = hit.taken_at
        if taken is None:
            return (1, 0.0, hit.id)
        if isinstance(taken, dt.datetime):
            seconds = (taken.replace(tzinfo=None) - dt.datetime(1970, 1, 1)).total_seconds()
        else:
            seconds = float(taken)
        return (0, -seconds if desc else seconds, -hit.id if desc else hit.id)

    return key


def encode_cursor(state: Mapping[str, object]) -> str:
    raw = json.dumps(state, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidQuery("cursor: not a cursor this server gave (pass `next_cursor`)") from exc
    if not isinstance(state, dict) or not isinstance(state.get("o"), int) or state["o"] < 0:
        raise InvalidQuery("cursor: not a cursor this server gave (pass `next_cursor`)")
    return state


class SearchService:
    """The search (module docstring) over a library. ``default_min_relevance``: the cut when
    a query names none; ``max_k`` and ``max_offset``: the largest page and the deepest start
    (a door's settings; the library reads at most 10,609 deep)."""

    def __init__(
        self,
        library: SearchLibrary | Any,
        *,
        default_min_relevance: float = DEFAULT_MIN_RELEVANCE,
        max_k: int = MAX_K,
        max_offset: int = MAX_OFFSET,
    ) -> None:
        self.library = library
        self.default_min_relevance = float(default_min_relevance)
        self.max_k = int(max_k)
        self.max_offset = int(max_offset)

    # --- what a door asks before it searches -----------------------------------------------

    def check_page(self, k: int, offset: int) -> None:
        """:class:`InvalidQuery` for a page out of bounds (before anything is encoded)."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_k:
            raise InvalidQuery(f"k must be between 1 and {self.max_k} (got {k})")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidQuery(f"offset must be a non-negative integer (got {offset})")
        if offset > self.max_offset:
            raise InvalidQuery(
                f"offset must be at most {self.max_offset} (got {offset}); refine the query"
            )

    def cut(self, min_relevance: float | None) -> float:
        """The relevance cut a query gets: its own, else the default."""
        if min_relevance is None:
            return self.default_min_relevance
        r = float(min_relevance)
        if not math.isfinite(r) or not 0.0 <= r <= 1.0:
            raise InvalidQuery("min_relevance must be a finite number from 0 to 1")
        return r

    def mode_of(self, text: str, mode: str | None) -> str:
        """The mode of a query whose keyword text is ``text`` (reads the catalog at most once a
        minute: see Library.has_keywords)."""
        if not text:
            if mode is not None and mode not in MODES:
                raise InvalidQuery("mode must be semantic, text or hybrid")
            return "semantic" if mode in (None, "hybrid") else mode
        return resolve_mode(self.library.has_keywords, text, mode)

    def known_mode(self, text: str, mode: str | None) -> str | None:
        """The mode when it is known without reading the catalog (an event loop may ask)."""
        if mode is not None or not text or not query_words(text):
            return self.mode_of(text, mode)
        known = getattr(self.library, "keywords_known", None)
        return "hybrid" if known is not None and known() else None

    def keyword_side(
        self, text: str, k: int, offset: int, filters: SearchFilters | None
    ) -> tuple[int, list[KeywordHit]] | None:
        """The keyword side of a text or hybrid query's first reading, read on its own (no vector
        needed: a door reads it while the query's text is encoded); None where it failed (the
        search reads it again and reports what went wrong)."""
        # optional (SearchLibrary)
        get: Callable[..., tuple[int, list[KeywordHit]]] | None = getattr(
            self.library, "keyword_hits", None
        )
        if get is None:
            return None
        try:
            return get(text, k=k + 1, offset=offset, filters=filters)
        except Exception:  # the search proper reads it again and reports what failed
            return None

    def calibration(self) -> Calibration | None:
        """The library's relevance calibration, or None where it cannot be measured (then hits
        show no calibrated relevance and the cut applies to keyword relevance only)."""
        # optional (SearchLibrary)
        get: Callable[[], Calibration | None] | None = getattr(self.library, "calibration", None)
        if get is None:
            return None
        try:
            return get()
        except Conflict:
            raise
        except Exception as exc:  # no relevance is better than no results
            log.warning("relevance calibration unavailable: %s", exc)
            return None

    # --- the search -------------------------------------------------------------------------

    def search(self, q: SearchQuery) -> SearchPage:
        """One page of ``q`` (module docstring)."""
        if q.sort not in SORTS:
            raise InvalidQuery("sort must be relevance, date_desc or date_asc")
        cut = self.cut(q.min_relevance)
        mode = self.mode_of(q.text, q.mode)
        if q.vector is None and mode != "text":
            raise QueryError(f"a {mode} search needs the query's vector")
        offset, boundary = q.offset, None
        if q.cursor:
            state = decode_cursor(q.cursor)
            if (state.get("s"), state.get("m"), state.get("r")) != (q.sort, mode, cut):
                raise InvalidQuery(
                    "cursor: it belongs to another query (sort, mode or min_relevance differ); "
                    "start again without it"
                )
            offset = int(state["o"])
            b = state.get("b")
            boundary = tuple(b) if isinstance(b, list) and len(b) == 3 else None
        self.check_page(q.k, offset)
        calibration = self.calibration()
        fetch = _Fetch(self.library, q, mode, calibration)
        if q.sort != "relevance":
            return self._by_date(fetch, q, mode, cut, offset)
        extra = 1 + (CURSOR_SLACK if boundary is not None else 0)
        # under a cut, the ranking reads enough to count what the cut hides on the page where
        # the results above it end (where they do not, the few more rows read cost little)
        tally = Tally(want=HIDDEN_CAP + 1 if cut > 0 and fetch.cuts else 0)
        hits = fetch(q.k + extra, offset, cut, tally=tally)
        if boundary is not None:
            hits = [h for h in hits if order_key(h) > boundary]
        page, has_more = hits[: q.k], len(hits) > q.k
        out = SearchPage(
            page, mode, cut, offset, has_more, sort=q.sort, calibrated=calibration is not None
        )
        if has_more and page:
            last = order_key(page[-1])
            out.next_cursor = encode_cursor(
                {"o": offset + len(page), "s": q.sort, "m": mode, "r": cut, "b": list(last)}
            )
        if not has_more and cut > 0 and fetch.cuts:
            # the results above the cut end on this page: count what the cut left out (from
            # what the ranking read, where that holds enough or is every result)
            if tally.whole or tally.below > HIDDEN_CAP:
                n_below = tally.below
            else:
                n_below = len(fetch(HIDDEN_CAP + 1, offset + len(page), 0.0))
            out.hidden = min(n_below, HIDDEN_CAP)
            out.hidden_more = n_below > HIDDEN_CAP
        return out

    def _by_date(
        self, fetch: _Fetch, q: SearchQuery, mode: str, cut: float, offset: int
    ) -> SearchPage:
        pool = fetch(DATE_SET_MAX, 0, cut)
        pool.sort(key=_date_key(q.sort == "date_desc"))
        page = pool[offset : offset + q.k]
        has_more = offset + q.k < len(pool)
        out = SearchPage(
            page, mode, cut, offset, has_more, sort=q.sort, calibrated=fetch.cal is not None
        )
        out.info["result_set"] = len(pool)
        if has_more:
            out.next_cursor = encode_cursor(
                {"o": offset + len(page), "s": q.sort, "m": mode, "r": cut}
            )
        return out


class _Fetch:
    """``fetch(k, offset, cut)``: hits ranked ``offset`` to ``offset + k`` of one query above
    ``cut``, each with its relevance (the order and the cut of the module docstring)."""

    def __init__(
        self, library: SearchLibrary, q: SearchQuery, mode: str, calibration: Calibration | None
    ) -> None:
        self.library = library
        self.q = q
        self.mode = mode
        self.cal = calibration
        # whether a cut can apply at all (a semantic query without a calibration shows none)
        self.cuts = calibration is not None or mode != "semantic"

    def relevance(self, scores: Sequence[float]) -> list[float]:
        if self.cal is None:
            return [float("nan")] * len(scores)
        values = self.cal.relevance(list(scores), self.q.image_share)
        return [round(float(v), 6) for v in np.asarray(values).reshape(-1)]

    def __call__(self, k: int, offset: int, cut: float, tally: Tally | None = None) -> list[Hit]:
        """``tally``: filled by a text or hybrid ranking with what it read below the cut."""
        q = self.q
        if self.mode != "semantic":
            rel = self.relevance if self.cal is not None else None
            return self.library.search_text(
                q.vector,
                q.text,
                self.mode,
                k=k,
                offset=offset,
                min_score=q.min_score,
                filters=q.filters,
                keywords=q.keywords,
                relevance=rel,
                min_relevance=cut,
                tally=tally,
            )
        floor = q.min_score
        if cut > 0 and self.cal is not None:
            threshold = float(self.cal.min_score(cut, q.image_share))
            if threshold == math.inf:  # min_relevance 1: nothing can reach it
                return []
            if math.isfinite(threshold):
                floor = threshold if floor is None else max(floor, threshold)
        vector = q.vector
        if vector is None:  # SearchService.search asked for it before any fetch
            raise QueryError(f"a {self.mode} search needs the query's vector")
        extra: dict[str, Any] = {"exclude": list(q.exclude)} if q.exclude else {}
        hits = self.library.search(
            vector, k=k, offset=offset, min_score=floor, filters=q.filters, **extra
        )
        if self.cal is None:
            return [dataclasses.replace(h, match=h.match or ("semantic",)) for h in hits]
        rels = self.relevance([h.score for h in hits])
        return [
            dataclasses.replace(h, relevance=r, match=h.match or ("semantic",))
            for h, r in zip(hits, rels, strict=True)
        ]
