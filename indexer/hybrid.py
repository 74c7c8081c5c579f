"""Text and hybrid ranking: one text query through the keyword index, alone or with the vectors.

``mode``:

* ``semantic``: the vector search alone.
* ``text``: the keyword index alone (:mod:`indexer.keywords`); a hit's relevance is
  :data:`KEYWORD_RELEVANCE` times its keyword score (0..1: the share of query words the image's
  words match and how closely: a whole word counts more than a prefix, a typo least).
* ``hybrid`` (the default when the keyword index has rows and the query has words it can look
  for): both lists merged by the relevance each hit shows, the two pieces of evidence fused as

      relevance = 1 - (1 - semantic relevance) * (1 - KEYWORD_RELEVANCE * keyword score)

  where the semantic relevance is the calibrated cosine (indexer.relevance): a word found in the
  picture (or its name) is strong evidence on its own, a picture close to the query too, and an
  image both find comes first. The number is the image's own (it does not depend on the depth
  read), so pages of one query are cut from one ranking; each side is read deep enough that no
  image outside both lists could rank within the page (the lists are read deeper until the
  page's last relevance is at least what an unread image could reach).

Results are ordered by that relevance (then the cosine, then the id) and ``min_relevance`` cuts
on it (indexer.search_service). Each hit's ``score`` stays the cosine of its vector to the query
(read from the catalog for images only the keyword index found); ``min_score`` drops only hits no
keyword matched. ``match`` says why an image is there: ``semantic`` when its semantic relevance
reaches the cut (or it ranks within the page's depth of the vector search without a cut), and the
keyword fields that matched (``text``: recognised in the image; ``filename``; ``caption``;
``folder``); ``words`` lists the image's words that matched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np

from . import catalog
from .errors import IndexerError
from .keywords import KeywordHit, keyword_search, query_words, score_ids
from .timing import timed
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
KEYWORD_RELEVANCE = 0.9  # the relevance of a hit all of whose query words match whole words
DEPTH = 100
MAX_DEPTH = 16_000  # the deepest either side is read (Milvus answers at most 16,384)


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
    """How deep each side of a page (``k`` after ``offset``) is read first: 100, or the next
    hundred above ``offset + k``."""
    need = offset + k
    return min(MAX_DEPTH, max(DEPTH, -(-need // DEPTH) * DEPTH))


def keyword_hits(
    src: Sources, query: str, limit: int, filters: SearchFilters | None
) -> list[KeywordHit]:
    """The keyword side of a query on its own (it needs no vector: the API reads it while the
    query's text is encoded, and hands it to :func:`search_text` as ``keywords``)."""
    where = src.conditions(filters) if filters is not None else []
    with timed("keyword_search"), src.session() as session:
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


def _uncalibrated(scores: Sequence[float]) -> list[float]:
    """Without a calibration (none could be measured): the cosine itself, within 0..1."""
    return [round(min(1.0, max(0.0, float(s))), 6) for s in scores]


def _fuse(semantic: float, keyword: float) -> float:
    return round(1.0 - (1.0 - semantic) * (1.0 - KEYWORD_RELEVANCE * keyword), 6)


@dataclasses.dataclass
class _Candidate:
    id: int
    cosine: float | None
    relevance: float
    keyword: KeywordHit | None = None
    semantic_rank: int | None = None

    def key(self) -> tuple[float, float, int]:
        cos = self.cosine if self.cosine is not None else -2.0
        return (-self.relevance, -cos, self.id)


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
    relevance: Callable[[Sequence[float]], Sequence[float]] | None = None,
    min_relevance: float | None = None,
) -> list[Hit]:
    """A page of a text query's results in ``mode`` (module docstring), each hit with its
    ``relevance``, ordered by it, those below ``min_relevance`` left out. ``relevance``: the
    calibrated relevance of cosines (indexer.relevance; default: the cosine within 0..1).
    ``keywords``: (depth, hits) of :func:`keyword_hits` for this query and these filters, read
    beforehand; used when the first reading needs that depth."""
    k, offset = check_page(k, offset, MAX_DEPTH)
    mode = _resolve(src.has_keywords, query, mode)
    rel_of = relevance or _uncalibrated
    cut = float(min_relevance or 0.0)
    if mode == "semantic":
        if vector is None:
            raise IndexerError("a semantic search needs the query's vector")
        hits = src.search(vector, k=k, offset=offset, min_score=min_score, filters=filters)
        rels = list(rel_of([h.score for h in hits]))
        return [
            _with(h, ["semantic"], [], relevance=float(r))
            for h, r in zip(hits, rels, strict=True)
            if float(r) >= cut
        ]
    if mode == "hybrid" and vector is None:
        raise IndexerError("a hybrid search needs the query's vector")
    need = offset + k
    depth = keyword_depth(k, offset)
    while True:
        if keywords is not None and keywords[0] == depth:
            kw = list(keywords[1])
        else:
            kw = keyword_hits(src, query, depth, filters)
        if mode == "text":
            ranked, bound, done = _text_side(src, vector, kw, depth, rel_of)
        else:
            assert vector is not None
            ranked, bound, done = _both_sides(src, vector, query, kw, depth, filters, rel_of)
        if min_score is not None:
            ranked = [c for c in ranked if c.keyword is not None or (c.cosine or -2.0) >= min_score]
        kept = [c for c in ranked if c.relevance >= cut]
        if done or depth >= MAX_DEPTH:
            break
        if len(kept) >= need and kept[need - 1].relevance > bound:
            break  # no image outside both lists could rank within the page (a tie could)
        if len(kept) < need and bound < cut:
            break  # no image outside both lists passes the cut
        depth = min(MAX_DEPTH, depth * 2)
    page = kept[offset:need]
    rows = src.rows([c.id for c in page], filters) if page else {}
    out: list[Hit] = []
    for c in page:
        row = rows.get(c.id)
        if row is None:  # gone since the ranking: left out
            continue
        match = ["semantic"] if c.semantic_rank is not None and c.semantic_rank < need else []
        words: list[str] = []
        if c.keyword is not None:
            match += c.keyword.fields
            words = list(c.keyword.words)
        score = c.cosine if c.cosine is not None else (c.keyword.score if c.keyword else 0.0)
        out.append(_with(catalog.hit_from_row(row, score), match, words, relevance=c.relevance))
    return out


def _text_side(
    src: Sources,
    vector: np.ndarray | None,
    kw: list[KeywordHit],
    depth: int,
    rel_of: Callable[[Sequence[float]], Sequence[float]],
) -> tuple[list[_Candidate], float, bool]:
    """The keyword list ranked by keyword relevance; the most an unread image could reach."""
    cos = _cosines(src, vector, [h.id for h in kw])
    ranked = [_Candidate(h.id, cos.get(h.id), round(KEYWORD_RELEVANCE * h.score, 6), h) for h in kw]
    ranked.sort(key=_Candidate.key)
    done = len(kw) < depth
    bound = 0.0 if done or not kw else KEYWORD_RELEVANCE * kw[-1].score
    return ranked, bound, done


def _both_sides(
    src: Sources,
    vector: np.ndarray,
    query: str,
    kw: list[KeywordHit],
    depth: int,
    filters: SearchFilters | None,
    rel_of: Callable[[Sequence[float]], Sequence[float]],
) -> tuple[list[_Candidate], float, bool]:
    """Both lists merged by fused relevance; the most an image in neither could reach."""
    sem = src.scores(vector, k=depth, filters=filters)
    sem_done = len(sem) < depth
    kw_done = len(kw) < depth
    kw_last = kw[-1].score if kw and not kw_done else 0.0
    # the vector hits the words match too, found by key whatever the words' frequency (a common
    # word's keyword list holds only its best-ranked matches)
    by_id = {h.id: h for h in kw}
    with src.session() as session:
        for h in score_ids(session, query, [i for i, _ in sem if i not in by_id]):
            by_id[h.id] = h
    cos: dict[int, float] = {i: s for i, s in sem}
    cos.update(_cosines(src, vector, [i for i in by_id if i not in cos]))
    ids = list(cos) + [i for i in by_id if i not in cos]
    rels = list(rel_of([cos.get(i, -1.0) for i in ids]))
    sem_rank = {i: r for r, (i, _) in enumerate(sem)}
    ranked = []
    for i, r in zip(ids, rels, strict=True):
        hit = by_id.get(i)
        semantic = float(r) if i in cos else 0.0
        ranked.append(
            _Candidate(
                i, cos.get(i), _fuse(semantic, hit.score if hit else 0.0), hit, sem_rank.get(i)
            )
        )
    ranked.sort(key=_Candidate.key)
    sem_last = float(rel_of([sem[-1][1]])[0]) if sem and not sem_done else 0.0
    return ranked, _fuse(sem_last, kw_last), sem_done and kw_done


def _with(
    hit: Hit,
    match: list[str],
    words: list[str],
    score: float | None = None,
    relevance: float | None = None,
) -> Hit:
    changes: dict[str, Any] = {"match": tuple(match), "words": tuple(words)}
    if score is not None:
        changes["score"] = score
    if relevance is not None:
        changes["relevance"] = relevance
    return dataclasses.replace(hit, **changes)
