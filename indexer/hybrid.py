"""Hybrid ranking: one text query through the vectors and the keyword index, merged.

``mode``:

* ``semantic``: the vector search alone (what clipsearch always did).
* ``text``: the keyword index alone (:mod:`indexer.keywords`), best keyword score first.
* ``hybrid`` (the default when the keyword index has rows and the query has words it can look
  for): both lists, each ``depth`` deep (100, or the next hundred above ``offset + k``, so pages
  of one query are cut from one ranking), merged by weighted reciprocal rank fusion:

      fused(image) = 1 / (RRF_K + semantic rank) + TEXT_WEIGHT * quality / (RRF_K + keyword rank)

  where ``quality`` (0..1) is the keyword score: the share of query words the image's words match
  and how closely (a whole word counts more than a prefix, a typo least). A word found in the
  picture (or its name) is strong evidence, so TEXT_WEIGHT gives the keyword list more say than
  the vectors; an image both lists find comes first. ``bench/ocr_hybrid.py`` measures recall@5
  of this rule against the vectors alone.

Each hit's ``score`` stays the cosine similarity of its vector to the query (computed from the
catalog for images only the keyword index found), so ``min_score`` and the relevance the API shows
mean what they mean for semantic search; ``min_score`` drops only hits no keyword matched. ``match``
says why an image is there: ``semantic`` when it ranks within ``offset + k`` of the vector search,
and the keyword fields that matched (``text``: recognised in the image; ``filename``; ``caption``;
``folder``); ``words`` lists the image's words that matched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np

from . import catalog
from .errors import IndexerError
from .keywords import KeywordHit, keyword_search, query_words, score_ids
from .types import Hit, SearchFilters, check_page

if TYPE_CHECKING:
    from .facade import LibraryFacade


@dataclasses.dataclass(frozen=True)
class Sources:
    """What a hybrid query reads, handed over by the library (this module does not know it):

    * ``session()``: a catalog session (a context manager);
    * ``conditions(filters)``: the catalog conditions that select the filters' images;
    * ``model_id()``: the served model's id (its vectors give the cosines);
    * ``rows(ids, filters)``: the ready image rows of these ids that pass the filters, by id;
    * ``search(vector, k=, offset=, min_score=, filters=)``: the vector search's page of hits;
    * ``scores(vector, k=, filters=)``: the same search's (id, cosine), best first, no rows;
    * ``has_keywords()``: whether the keyword index has rows.
    """

    session: Callable[[], AbstractContextManager[Any]]
    conditions: Callable[[SearchFilters], list[Any]]
    model_id: Callable[[], int]
    rows: Callable[[list[int], SearchFilters | None], dict[int, Any]]
    search: Callable[..., list[Hit]]
    scores: Callable[..., list[tuple[int, float]]]
    has_keywords: Callable[[], bool]


MODES = ("semantic", "text", "hybrid")
RRF_K = 60.0
TEXT_WEIGHT = 1.5
DEPTH = 100


def resolve_mode(library: LibraryFacade, query: str, mode: str | None) -> str:
    """The mode a query runs in: the one asked for, else hybrid when the keyword index can
    help (it has rows and the query has words to look for), else semantic."""
    return _resolve(library.has_keywords, query, mode)


def _resolve(has_keywords: Callable[[], bool], query: str, mode: str | None) -> str:
    if mode is not None:
        if mode not in MODES:
            raise IndexerError(f"unknown search mode {mode!r}: use semantic, text or hybrid")
        return mode
    if not query_words(query):
        return "semantic"
    return "hybrid" if has_keywords() else "semantic"


def keyword_depth(k: int, offset: int) -> int:
    """How many keyword hits a page (``k`` after ``offset``) is ranked from (module docstring:
    100, or the next hundred above ``offset + k``)."""
    need = offset + k
    return max(DEPTH, -(-need // DEPTH) * DEPTH)


def keyword_hits(
    src: Sources, query: str, limit: int, filters: SearchFilters | None
) -> list[KeywordHit]:
    """The keyword side of a query on its own (it needs no vector: the API reads it while the
    query's text is encoded, and hands it to :func:`search_text` as ``keywords``)."""
    where = src.conditions(filters) if filters is not None else []
    with src.session() as session:
        return keyword_search(session, query, limit=limit, where=where)


def _cosines(src: Sources, vector: np.ndarray | None, ids: list[int]) -> dict[int, float]:
    """The cosine of the query with these images' vectors (served model), read by key."""
    if vector is None or not ids:
        return {}
    model_id = src.model_id()
    q = np.asarray(vector, dtype=np.float32).reshape(-1)
    with src.session() as session:
        got, vecs = catalog.load_vectors(session, model_id, ids)
    if len(got) == 0 or vecs.shape[1] != q.size:
        return {}
    return {int(i): float(s) for i, s in zip(got, vecs @ q, strict=True)}


def _rows(src: Sources, ids: list[int], filters: SearchFilters | None) -> dict[int, Any]:
    return src.rows(ids, filters) if ids else {}


def _with(hit: Hit, match: list[str], words: list[str], score: float | None = None) -> Hit:
    changes: dict[str, Any] = {"match": tuple(match), "words": tuple(words)}
    if score is not None:
        changes["score"] = score
    return dataclasses.replace(hit, **changes)


def search_text(
    src: Sources,
    vector: np.ndarray | None,
    query: str,
    mode: str | None,
    k: int = 20,
    offset: int = 0,
    min_score: float | None = None,
    filters: SearchFilters | None = None,
    keywords: tuple[int, list[KeywordHit]] | None = None,
) -> list[Hit]:
    """A page of a text query's results in ``mode`` (module docstring). ``keywords``: (depth,
    hits) of :func:`keyword_hits` for this query and these filters, read beforehand; used when
    the page needs that depth, else read again."""
    k, offset = check_page(k, offset, 1000)
    mode = _resolve(src.has_keywords, query, mode)
    if mode == "semantic":
        if vector is None:
            raise IndexerError("a semantic search needs the query's vector")
        hits = src.search(vector, k=k, offset=offset, min_score=min_score, filters=filters)
        return [_with(h, ["semantic"], []) for h in hits]

    depth = keyword_depth(k, offset)
    if keywords is not None and keywords[0] == depth:
        kw = list(keywords[1])
    else:
        kw = keyword_hits(src, query, depth, filters)
    if mode == "text":
        page = kw[offset : offset + k]
        ids = [h.id for h in page]
        rows = _rows(src, ids, filters)
        cos = _cosines(src, vector, ids)
        found: list[Hit] = []
        for kh in page:
            row = rows.get(kh.id)
            if row is not None:
                found.append(
                    _with(catalog.hit_from_row(row, cos.get(kh.id, kh.score)), kh.fields, kh.words)
                )
        return found

    if vector is None:
        raise IndexerError("a hybrid search needs the query's vector")
    sem = src.scores(vector, k=depth, filters=filters)
    # the vector hits the words match too, found by key whatever the words' frequency (a common
    # word's keyword list holds only its best-ranked matches), ranked after the keyword list's own
    with src.session() as session:
        seen = {h.id for h in kw}
        extra = [kh for kh in score_ids(session, query, [i for i, _ in sem]) if kh.id not in seen]
    kw = kw + sorted(extra, key=lambda h: (-h.score, h.id))
    fused: dict[int, float] = {}
    sem_rank: dict[int, int] = {}
    sem_score: dict[int, float] = {}
    for rank, (image_id, score) in enumerate(sem):
        sem_rank[image_id] = rank
        sem_score[image_id] = score
        fused[image_id] = 1.0 / (RRF_K + rank + 1)
    kw_by_id: dict[int, KeywordHit] = {}
    for rank, kh in enumerate(kw):
        kw_by_id[kh.id] = kh
        fused[kh.id] = fused.get(kh.id, 0.0) + TEXT_WEIGHT * kh.score / (RRF_K + rank + 1)
    order = sorted(fused, key=lambda i: (-fused[i], sem_rank.get(i, depth), i))
    if min_score is not None:
        order = [i for i in order if i in kw_by_id or sem_score.get(i, -2.0) >= min_score]
    page_ids = order[offset : offset + k]
    # the rows of the page only (a row gone since the ranking is left out)
    rows = _rows(src, page_ids, filters)
    cos = _cosines(src, vector, [i for i in page_ids if i not in sem_score])
    out: list[Hit] = []
    for i in page_ids:
        row = rows.get(i)
        if row is None:
            continue
        got = kw_by_id.get(i)
        match = ["semantic"] if sem_rank.get(i, depth) < offset + k else []
        if got is not None:
            match += got.fields
        words = got.words if got is not None else []
        if i in sem_score:
            score = sem_score[i]
        else:
            score = cos.get(i, got.score if got is not None else 0.0)
            if min_score is not None and got is None and score < min_score:
                continue
        out.append(_with(catalog.hit_from_row(row, score), match, words))
    return out
