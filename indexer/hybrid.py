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
  page's last relevance is above what an unread image could reach, or equal to it with a
  higher cosine than the vector list's last). Under a cut the first reading goes 101 results
  deeper than its page, so the page where the results above the cut end counts what the cut
  hid (up to 100, and whether there are more) from the same reading.

The catalog is read once per step of that reading (:class:`_Reading`): the keyword side is the
keyword index's candidates alone (read ahead by the API while the query is encoded), and one
statement, made with the vector search's check that its hits are still ready and pass the
filters, reads the hit rows, the vector hits' keyword rows, the keyword candidates' readiness and
the cosines the ranking needs; the page's rows come from it. A step reads another statement only
for the images the vector search adds when its first hits did not hold enough that pass (filters
only the catalog applies), or the keyword candidates past the first that were not enough.

Results are ordered by that relevance (then the cosine, then the id) and ``min_relevance`` cuts
on it (indexer.search_service). Each hit's ``score`` stays the cosine of its vector to the query
(read from the catalog for images only the keyword index found); ``min_score`` drops only hits no
keyword matched. ``match`` says why an image is there: ``semantic`` when its semantic relevance
reaches the cut (or it ranks within the page's depth of the vector search without a cut), and the
keyword fields that matched (``text``: recognised in the image; ``filename``; ``caption``;
``folder``); ``words`` lists the image's words that matched.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import sqlalchemy as sa

from . import catalog
from .catalog.rows import HitRow
from .errors import IndexerError
from .keywords import (
    KeywordHit,
    image_keywords,
    keyword_candidates,
    query_words,
    same_candidates,
    score_row,
)
from .timing import timed
from .types import Hit, SearchFilters, Tally, check_page

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
    * ``scores(vector, k=, filters=, read=)``: the same search's (id, cosine), best first, no
      rows; ``read(ids)`` is its catalog check (the rows of those ids that are ready and pass
      the filters, by id: a ranking reads what it needs of them in that statement);
    * ``has_keywords()``: whether the keyword index has rows.
    """

    session: Callable[[], AbstractContextManager[Any]]
    conditions: Callable[[SearchFilters], list[Any]]
    model_id: Callable[[], int]
    rows: Callable[[list[int], SearchFilters | None], dict[int, HitRow]]
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
    query's text is encoded, and hands it to :func:`search_text` as ``keywords``): the keyword
    index's candidates, best first (:func:`indexer.keywords.keyword_candidates`), not yet
    checked against the catalog: the ranking's one catalog read keeps the first ``limit`` that
    are ready and pass ``filters``. Reads the keyword index only."""
    del filters  # applied by the ranking's catalog read (the same candidates for any filters)
    with timed("keyword_search"), src.session() as session:
        return keyword_candidates(session, query, limit=limit)


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
    tally: Tally | None = None,
) -> list[Hit]:
    """A page of a text query's results in ``mode`` (module docstring), each hit with its
    ``relevance``, ordered by it, those below ``min_relevance`` left out. ``relevance``: the
    calibrated relevance of cosines (indexer.relevance; default: the cosine within 0..1).
    ``keywords``: (depth, hits) of :func:`keyword_hits` for this query and these filters, read
    beforehand; used when the first reading needs that depth. ``tally``: the first step reads ``tally.want`` deeper, and the tally is filled with how
    many of the results read fall below the cut."""
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
    depth = keyword_depth(k + (tally.want if tally is not None else 0), offset)
    reading = _Reading(src, vector, filters)  # the rows the ranking read (the page's too)
    while True:
        if keywords is not None and same_candidates(keywords[0], depth):
            cands = list(keywords[1])
        else:
            cands = keyword_hits(src, query, depth, filters)
            keywords = (depth, cands)  # a deeper step may need the same list
        if mode == "text":
            ranked, bound, done = _text_side(reading, cands, depth)
            floor = None
        else:
            assert vector is not None
            ranked, bound, done, floor = _both_sides(reading, vector, query, cands, depth, rel_of)
        if min_score is not None:
            ranked = [c for c in ranked if c.keyword is not None or (c.cosine or -2.0) >= min_score]
        kept = [c for c in ranked if c.relevance >= cut]
        if done or depth >= MAX_DEPTH:
            break
        if len(kept) >= need and _settled(kept[need - 1], bound, floor):
            break  # no image outside both lists could rank within the page
        if len(kept) < need and bound < cut:
            break  # no image outside both lists passes the cut
        if mode == "text":  # the page ends in a tie (a common word): settled by the vectors
            tied = _tied_page(reading, query, ranked, bound, need)
            if tied is not None:
                kept = [c for c in tied if c.relevance >= cut]
                break
        depth = min(MAX_DEPTH, depth * 2)
    if tally is not None:
        tally.below, tally.whole = len(ranked) - len(kept), done
    page = kept[offset:need]
    read = reading.rows
    rows: dict[int, HitRow] = {c.id: read[c.id] for c in page if c.id in read}
    missing = [c.id for c in page if c.id not in read]
    if missing:  # images of the page the ranking's read did not cover
        rows.update(src.rows(missing, filters))
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


def _settled(last: _Candidate, bound: float, floor: float | None) -> bool:
    """Whether no image outside the lists read could rank before ``last``: such an image's
    relevance is at most ``bound``, and (``floor``: the vector list's last cosine, where it is
    not whole) its cosine at most ``floor``, so it loses a tie of relevance to a higher cosine
    (a meaningless query's relevances are all 0 after rounding: one tie, broken by the cosine)."""
    if last.relevance > bound:
        return True
    cos = last.cosine if last.cosine is not None else -2.0
    return last.relevance == bound and floor is not None and cos > floor


def _text_side(
    reading: _Reading, cands: list[KeywordHit], depth: int
) -> tuple[list[_Candidate], float, bool]:
    """The keyword list ranked by keyword relevance; the most an unread image could reach;
    whether the list is whole. Its images' rows and cosines come with the catalog's check of
    the candidates (one statement)."""
    kw, whole = reading.keyword_list(cands, depth, lambda ids: ids)
    cos = reading.cosines([h.id for h in kw])
    ranked = [_Candidate(h.id, cos.get(h.id), round(KEYWORD_RELEVANCE * h.score, 6), h) for h in kw]
    ranked.sort(key=_Candidate.key)
    done = whole
    bound = 0.0 if done or not kw else KEYWORD_RELEVANCE * kw[-1].score
    return ranked, bound, done


_KEYWORD_COLUMNS = (
    image_keywords.c.name.label("kw_name"),
    image_keywords.c.folder.label("kw_folder"),
    image_keywords.c.caption.label("kw_caption"),
    image_keywords.c.ocr.label("kw_ocr"),
)


@dataclasses.dataclass(frozen=True)
class _WordsRow:
    """An image's keyword row as :func:`indexer.keywords.score_row` reads it."""

    image_id: int
    name: str | None
    folder: str | None
    caption: str | None
    ocr: str | None


class _ReadRow(HitRow, Protocol):
    """A row of :func:`_read`: the hit columns, the keyword row's, the stored vector."""

    kw_name: str | None
    kw_folder: str | None
    kw_caption: str | None
    kw_ocr: str | None
    vector: bytes | None


def _read(
    src: Sources,
    ids: list[int],
    vector_of: list[int],
    filters: SearchFilters | None,
) -> dict[int, _ReadRow]:
    """One statement for the images a ranking holds (by primary key): each ready image's hit
    row that passes the filters with its keyword row (``kw_*`` columns), and for those of
    ``vector_of`` its stored vector (served model; ``vector``). Returns the rows by id, in the
    order the catalog gave them."""
    if not ids:
        return {}
    vec_col: Any = sa.null().label("vector")
    stmt = sa.select(*catalog.HIT_COLUMNS, *_KEYWORD_COLUMNS).select_from(catalog.Image)
    if vector_of:
        model_id = src.model_id()
        emb = catalog.Embedding
        # by key, for the images that need it only (a join let PostgreSQL hash the table)
        vector = (
            sa.select(emb.vector)
            .where(emb.sha256 == catalog.Image.sha256, emb.model_id == model_id)
            .scalar_subquery()
        )
        vec_col = sa.case(
            (catalog.Image.id.in_(sa.bindparam("vec_ids", expanding=True)), vector),
            else_=sa.null(),
        ).label("vector")
    # the keyword rows by key too: with only the join's condition, PostgreSQL hashed the whole
    # keyword table for a few hundred ids (a deep hybrid step, 100,000 images)
    kw_in = image_keywords.c.image_id.in_(sa.bindparam("ids", expanding=True))
    stmt = (
        stmt.add_columns(vec_col)
        .outerjoin(image_keywords, sa.and_(image_keywords.c.image_id == catalog.Image.id, kw_in))
        .where(catalog.ID_IN, catalog.Image.state == "ready")
    )
    if filters is not None:
        stmt = stmt.where(*src.conditions(filters))
    params: dict[str, Any] = {"ids": [int(i) for i in dict.fromkeys(ids)]}
    if vector_of:
        params["vec_ids"] = [int(i) for i in dict.fromkeys(vector_of)]
    with src.session() as session:
        return {int(r.id): r for r in session.execute(stmt, params)}


class _Reading:
    """What one text query's ranking has read of the catalog: the rows (:func:`_read`) of the
    images it asked about that are ready and pass the filters, and the cosines of the stored
    vectors it asked for. Each image is asked about once: the catalog's check that a hit is
    still ready (and passes the filters), its keyword row and its hit row come from one
    statement, made with the vector search's check of its hits (Sources.scores' ``read``) where
    there is one. An image asked about again for its cosine is read again (only then)."""

    def __init__(self, src: Sources, vector: np.ndarray | None, filters: SearchFilters | None):
        self.src = src
        self.vector = vector
        self.filters = filters
        self.rows: dict[int, _ReadRow] = {}
        self.blobs: dict[int, bytes] = {}  # the stored vectors read, in the catalog's order
        self.asked: set[int] = set()
        self.vectors_asked: set[int] = set()

    def read(self, ids: Sequence[int], cosine_of: Collection[int] = (), time: bool = True) -> None:
        """Read those of ``ids`` not asked about yet (and those of ``cosine_of`` found without
        their vector), in one statement; with their vectors for those of ``cosine_of``."""
        want = set(cosine_of) if self.vector is not None else set()
        new = [
            i
            for i in dict.fromkeys(ids)
            if i not in self.asked or (i in want and i in self.rows and i not in self.vectors_asked)
        ]
        if not new:
            return
        vec = [i for i in new if i in want]
        with timed("catalog") if time else contextlib.nullcontext():
            rows = _read(self.src, new, vec, self.filters)
        self.asked.update(new)
        self.vectors_asked.update(vec)
        self.rows.update(rows)
        self.blobs.update((i, r.vector) for i, r in rows.items() if r.vector is not None)

    def cosines(self, ids: Collection[int]) -> dict[int, float]:
        """The cosines to the query of these images' stored vectors (those read), computed
        together in the order the catalog gave them: one product of those vectors alone (a
        float32 product's last bit depends on a row's place in it), so an image's cosine is
        the one a read of just these images gives."""
        if self.vector is None:
            return {}
        want = set(ids)
        blobs = [(i, b) for i, b in self.blobs.items() if i in want]
        if not blobs:
            return {}
        q = np.asarray(self.vector, dtype=np.float32).reshape(-1)
        vecs = np.stack([catalog.bytes_to_vector(b) for _, b in blobs])
        if vecs.shape[1] != q.size:
            return {}
        return {i: float(c) for (i, _), c in zip(blobs, vecs @ q, strict=True)}

    def keyword_list(
        self, cands: list[KeywordHit], depth: int, cosine_of: Callable[[list[int]], list[int]]
    ) -> tuple[list[KeywordHit], bool]:
        """The first ``depth`` of the keyword candidates that are ready and pass the filters
        (what :func:`indexer.keywords.keyword_search` gives), and whether fewer than ``depth``
        of them do. Candidates not asked about yet are read (with the vectors of those
        ``cosine_of`` names): the first ``depth`` and a quarter, then the rest if those were
        not enough; all at once under filters (which may keep few of them)."""
        first = depth + depth // 4 if self.filters is None else len(cands)
        ids = [h.id for h in cands]
        for chunk in (ids[:first], ids[first:]):
            kept = [h for h in cands if h.id in self.rows]
            if len(kept) >= depth:
                break
            self.read(chunk, cosine_of(chunk))
        kept = [h for h in cands if h.id in self.rows]
        return kept[:depth], len(kept) < depth

    def check(self, cosine_of: Callable[[list[int]], Collection[int]]) -> Check:
        """The catalog check for the vector search (Sources.scores' ``read``): reads each batch
        of ids it is given (with the vectors of those ``cosine_of(batch)`` names) and gives the
        rows of those that are ready and pass the filters (timed by the library, as the
        catalog)."""

        def check(ids: list[int]) -> dict[int, _ReadRow]:
            self.read(ids, cosine_of(ids), time=False)
            return {i: self.rows[i] for i in ids if i in self.rows}

        return check


Check = Callable[[list[int]], Mapping[int, Any]]


def _scored(query: str, rows: Sequence[_ReadRow]) -> list[KeywordHit]:
    """The keyword scores of these rows (of :func:`_read`) for ``query``."""
    words = query_words(query)
    if not words:
        return []
    hits = []
    for r in rows:
        if r.kw_name is None and r.kw_folder is None and r.kw_caption is None and r.kw_ocr is None:
            continue
        hit = score_row(words, _WordsRow(int(r.id), r.kw_name, r.kw_folder, r.kw_caption, r.kw_ocr))
        if hit is not None:
            hits.append(hit)
    return hits


def _tied_page(
    reading: _Reading, query: str, ranked: list[_Candidate], bound: float, need: int
) -> list[_Candidate] | None:
    """A text-mode page whose last places are a tie of keyword relevance at the keyword list's
    end (a common word: thousands of images match it equally well), ranked without reading the
    whole tie: the tie is broken by the cosine (then the id), and the images of the tie with the
    highest cosines are found by the vector search, read deeper until ``need`` are certain (an
    image of the tie not among the vector search's first ``d`` has a cosine below the ``d``-th).
    The candidates above the tie, then the tie's first ones (their rows read by ``reading``);
    None where the page does not end in such a tie (or the vector search cannot settle it: then
    the list is read deeper). With an approximate index (IVF) an image of the tie that neither
    the vector search nor the keyword list holds can be missed (the vector search's recall)."""
    vector = reading.vector
    if vector is None or not ranked:
        return None
    tie = round(bound, 6)
    above = [c for c in ranked if c.relevance > tie]
    if len(above) >= need or not any(c.relevance == tie for c in ranked):
        return None
    words = {c.id: c for c in ranked}
    depth = max(DEPTH, keyword_depth(need - len(above), 0))
    while True:
        # the matches the keyword list had not reached: their keyword rows, rows and cosines,
        # read with the vector search's check of its hits
        check = reading.check(lambda ids: [i for i in ids if i not in words])
        sem = reading.src.scores(vector, k=depth, filters=reading.filters, read=check)
        sem_done = len(sem) < depth
        floor = sem[-1][1] if sem and not sem_done else -2.0
        new = [i for i, _ in sem if i not in words]
        reading.read(new, new)  # read by the check already (unless the search read deeper)
        cos = reading.cosines(new)
        for h in _scored(query, [reading.rows[i] for i in new if i in reading.rows]):
            words[h.id] = _Candidate(h.id, cos.get(h.id), round(KEYWORD_RELEVANCE * h.score, 6), h)
        above = [c for c in words.values() if c.relevance > tie]
        # the tie's images whose (catalog) cosine beats the vector search's last: found by it,
        # or held by the keyword list (an approximate index may have missed those)
        certain = [
            c
            for c in words.values()
            if c.relevance == tie
            and (sem_done or (c.cosine if c.cosine is not None else -2.0) > floor)
        ]
        if len(above) + len(certain) >= need or sem_done:
            break
        if depth >= MAX_DEPTH:
            return None
        depth = min(MAX_DEPTH, depth * 2)
    if len(above) + len(certain) < need:
        return None  # the tie is smaller than the page: the images below it are read too
    return sorted(above + certain, key=_Candidate.key)


def _both_sides(
    reading: _Reading,
    vector: np.ndarray,
    query: str,
    cands: list[KeywordHit],
    depth: int,
    rel_of: Callable[[Sequence[float]], Sequence[float]],
) -> tuple[list[_Candidate], float, bool, float | None]:
    """Both lists merged by fused relevance; the most an image in neither could reach; whether
    both are whole; the vector list's last cosine (the most an image it did not reach could
    have; None where it is whole). One catalog statement in the common case: the vector
    search's check of its hits reads their rows and keyword rows, and the keyword candidates'
    rows with the cosines of those the vector list may not hold."""
    first = {"batch": True}
    chunk = [h.id for h in cands[: depth + depth // 4 if reading.filters is None else None]]

    def check(ids: list[int]) -> dict[int, _ReadRow]:
        # the first batch the vector search found, with the first keyword candidates: the
        # vectors of those among them that are not among its first ``depth`` ids
        if first.pop("batch", False):
            top = set(ids[:depth])
            reading.read([*ids, *chunk], [i for i in chunk if i not in top], time=False)
        else:
            reading.read(ids, time=False)
        return {i: reading.rows[i] for i in ids if i in reading.rows}

    sem = reading.src.scores(vector, k=depth, filters=reading.filters, read=check)
    sem_done = len(sem) < depth
    cos: dict[int, float] = {i: s for i, s in sem}
    if first:  # the vector search found nothing: the keyword candidates alone
        reading.read(chunk, chunk)
    kw, kw_done = reading.keyword_list(cands, depth, lambda ids: [i for i in ids if i not in cos])
    kw_last = kw[-1].score if kw and not kw_done else 0.0
    by_id = {h.id: h for h in kw}
    kw_only = [i for i in by_id if i not in cos]
    reading.read(kw_only, kw_only)  # read already (unless the vector search read deeper)
    rows = reading.rows
    # the vector hits the words match too, found by key whatever the words' frequency (a common
    # word's keyword list holds only its best-ranked matches)
    for h in _scored(query, [rows[i] for i in cos if i not in by_id and i in rows]):
        by_id[h.id] = h
    cos.update(reading.cosines(kw_only))
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
    floor = float(sem[-1][1]) if sem and not sem_done else None
    return ranked, _fuse(sem_last, kw_last), sem_done and kw_done, floor


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
