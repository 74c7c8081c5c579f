"""One catalog read per search page (issue 25): the check that each hit is still ready (and
passes the filters), the keyword rows of the vector hits, the cosines of the keyword hits and
the rows the page shows come from one SQL statement, in every mode (semantic, text, hybrid), with
filters, by offset and by cursor, while images the vector store still holds are no longer ready
or removed. The pages are the documented ranking worked out over every image here; at 100,000
images the statements read through indexes on SQLite and PostgreSQL (EXPLAIN, test_scale's
check).

The keyword side is read ahead as the API does (SearchService.keyword_side, while the query is
encoded): it reads the keyword index only (never the images table).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from test_scale import captured, plan_problems

from clipsearch.indexer import catalog, hybrid
from clipsearch.indexer.catalog import Embedding, Image
from clipsearch.indexer.keywords import image_keywords, query_words, score_row
from clipsearch.indexer.library import Library, LibraryConfig
from clipsearch.indexer.search_service import SearchQuery, SearchService
from clipsearch.indexer.types import SearchFilters

WORDS = [
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "old",
    "new",
    "small",
    "large",
    "happy",
    "quiet",
    "busy",
    "empty",
    "bright",
    "dark",
    "dog",
    "cat",
    "horse",
    "bird",
    "tree",
    "house",
    "car",
    "boat",
    "beach",
    "sunset",
    "mountain",
    "river",
    "city",
    "street",
    "garden",
    "kitchen",
]
N = 1_500
BIG_N = 100_000
MODES = ("semantic", "text", "hybrid")
QUERIES = ("sunset", "red dog", "kitchen garden river", "brd")  # "brd": a typo of "bird"
IMAGES = re.compile(r"\bimages\b", re.IGNORECASE)
PG_ADMIN_URL = os.environ.get(
    "CLIPSEARCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)  # as tests/conftest.py


def _row(i: int, now: dt.datetime) -> dict[str, Any]:
    w1, w2 = WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)]
    folder = "/lib/few" if i % 50 == 1 else f"/lib/f{i % 4}"  # /lib/few: 2% of the images
    return {
        "path": f"{folder}/{w1}_{w2}_{i}.jpg",
        "folder": folder,
        "size": 1000 + i,
        "mtime_ns": 1,
        "sha256": f"{i:064x}",
        "width": 64,
        "height": 48,
        "format": "PNG" if i % 3 == 0 else "JPEG",
        "state": "ready",
        "taken_at": None if i % 5 == 0 else dt.datetime(2020, 1, 1) + dt.timedelta(hours=7 * i),
        "created_at": now,
        "updated_at": now,
    }


def _fill(lib: Library, n: int, seed: int = 11, chunk: int = 5_000) -> np.ndarray:
    """``n`` ready images named by two words each, with their own vectors (row i: image i)."""
    served = lib._ensure_served()
    vectors = np.random.default_rng(seed).standard_normal((n, served.store.dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    now = catalog.utcnow()
    with lib.Session() as s:
        for start in range(0, n, chunk):
            rows = [_row(i, now) for i in range(start, min(n, start + chunk))]
            s.execute(sa.insert(Image), rows)
            s.execute(
                sa.insert(Embedding),
                [
                    {
                        "sha256": r["sha256"],
                        "model_id": served.model_id,
                        "vector": catalog.vector_to_bytes(vectors[i]),
                        "created_at": now,
                    }
                    for i, r in enumerate(rows, start)
                ],
            )
            s.commit()
    with lib.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    lib.refresh_index()
    return vectors


def _library(tmp_path: Path, model: Path, url: str | None) -> Library:
    return Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            database_url=url,
            model_spec=str(model),
            device="cpu",
            refresh_interval_s=3600,  # the store keeps what it holds: refreshed explicitly
        )
    )


@contextlib.contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement the engine sends inside the block."""
    out: list[str] = []
    me = threading.get_ident()  # (a calibration measured again runs in a thread of its own)

    def grab(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if threading.get_ident() == me:
            out.append(statement)

    event.listen(engine, "before_cursor_execute", grab)
    try:
        yield out
    finally:
        event.remove(engine, "before_cursor_execute", grab)


@contextlib.contextmanager
def params_sent(engine: Engine) -> Iterator[list[list[int]]]:
    """The image ids each statement asks about (its ``ids`` parameter)."""
    out: list[list[int]] = []
    me = threading.get_ident()

    def grab(_conn: Any, _clause: Any, multi: Any, params: Any, _options: Any) -> None:
        if threading.get_ident() != me:
            return
        for p in [params, *multi]:
            if isinstance(p, dict) and "ids" in p:
                out.append([int(i) for i in p["ids"]])

    event.listen(engine, "before_execute", grab)
    try:
        yield out
    finally:
        event.remove(engine, "before_execute", grab)


class Small:
    def __init__(self, lib: Library, vectors: np.ndarray, ids: list[int], gone: set[int]) -> None:
        self.lib = lib
        self.vectors = vectors
        self.ids = ids  # image n's id
        self.gone = gone  # images the store still holds (or held) that must never be shown
        self.service = SearchService(lib)
        # the rankings a page runs: library.search (semantic), search_text (text, hybrid) and
        # the vector rankings of a text query (one per step of its reading)
        self.calls = {"search": 0, "search_text": 0, "search_scores": 0}
        for name in self.calls:
            setattr(lib, name, self._counted(name, getattr(lib, name)))
        with lib.Session() as s:
            self.kw_rows = {int(r.image_id): r for r in s.execute(sa.select(image_keywords))}

    def _counted(self, name: str, method: Any) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kw)

        return call

    def steps(self, mode: str) -> int:
        """The catalog reads the last page should have made: one per ranking, and one per step
        of a text query's reading (a hybrid ranking's first read is its first step's)."""
        c = self.calls
        if mode == "semantic":
            return c["search"]
        if mode == "text":
            return c["search_text"] + c["search_scores"]
        return c["search_scores"]

    def page(self, **kw: Any) -> tuple[Any, list[str], list[str]]:
        """The page of SearchQuery(**kw) with its keyword side read ahead; the statements of
        the read-ahead and those of the search."""
        mode, text = kw.get("mode"), kw.get("text", "")
        ahead = None
        with statements(self.lib.engine) as before:
            if mode != "semantic" and kw.get("cursor") is None:
                ahead = self.service.keyword_side(
                    text, kw.get("k", 20), kw.get("offset", 0), kw.get("filters")
                )
        self.calls.update(dict.fromkeys(self.calls, 0))
        with statements(self.lib.engine) as during:
            page = self.service.search(SearchQuery(keywords=ahead, **kw))
        return page, before, during

    def expected(
        self, mode: str, text: str, q: np.ndarray, filters: SearchFilters | None
    ) -> list[tuple[int, float]]:
        """The documented ranking over every image that is ready and passes the filters:
        (id, relevance) by relevance, then cosine, then id."""
        cal = self.service.calibration()
        assert cal is not None
        words = query_words(text)
        out = []
        for n, image_id in enumerate(self.ids):
            if image_id in self.gone or not _passes(n, filters):
                continue
            cos = float(self.vectors[n].astype(np.float64) @ q.astype(np.float64))
            sem = round(float(np.asarray(cal.relevance([cos], 0.0)).reshape(-1)[0]), 6)
            hit = score_row(words, self.kw_rows[image_id]) if words else None
            kw = hit.score if hit is not None else 0.0
            if mode == "semantic":
                rel = sem
            elif mode == "text":
                if hit is None:
                    continue
                rel = round(hybrid.KEYWORD_RELEVANCE * kw, 6)
            else:
                rel = round(1.0 - (1.0 - sem) * (1.0 - hybrid.KEYWORD_RELEVANCE * kw), 6)
            out.append((image_id, rel, cos))
        out.sort(key=lambda t: (-t[1], -t[2], t[0]))
        return [(i, r) for i, r, _ in out]


def _passes(n: int, filters: SearchFilters | None) -> bool:
    if filters is None:
        return True
    row = _row(n, catalog.utcnow())
    if filters.folder and row["folder"] != filters.folder:
        return False
    if filters.formats and row["format"] not in filters.formats:
        return False
    if filters.date_from is not None:
        taken = row["taken_at"]
        if taken is None or not filters.date_from <= taken <= (filters.date_to or taken):
            return False
    return True


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def small(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[Small]:
    url = None
    if request.param == "postgres":  # a database for the module (pg_url's is per test)
        name = f"cs_oneread_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    lib = _library(tmp_path_factory.mktemp("one-read"), tiny_model_dir, url)
    try:
        vectors = _fill(lib, N)
        with lib.Session() as s:  # row n of the vectors: the n-th image inserted
            ids = [int(i) for i in s.scalars(sa.select(Image.id).order_by(Image.id))]
        # after the index holds them: images that stop being ready (the store still holds them)
        # and one removed through the library (the store forgets it at once)
        stale = ids[::17]
        with lib.Session() as s:
            s.execute(sa.update(Image).where(Image.id.in_(stale[::2])).values(state="pending"))
            s.execute(sa.update(Image).where(Image.id.in_(stale[1::2])).values(state="failed"))
            s.commit()
        removed = ids[5]
        lib.delete_image(removed)
        env = Small(lib, vectors, ids, {*stale, removed})
        env.service.calibration()  # measured once, before any page is counted
        lib.has_keywords()
        yield env
    finally:
        lib.close()
        if url is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


FILTERS = {"none": None, "folder": SearchFilters(folder="/lib/f2")}


def _hit_reads(reads: list[str]) -> list[str]:
    """The statements that read the hits (a folder filter's ids are read before the vector
    search, which looks among them alone: vector_store.selective_ids)."""
    return [s for s in reads if IMAGES.search(s) and "images.path" in s]


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("mode", MODES)
def test_a_page_is_one_catalog_read_per_ranking_step_and_the_documented_ranking(
    small: Small, mode: str, filters: str
) -> None:
    """A page settled by the first reading (the common case; here "sunset" in every mode) sends
    one statement; each further step (a hybrid ranking read deeper, a text page ending in a
    tie the vectors settle) one more, never more. With a folder filter, the folder's ids come
    first (the vector search looks among them alone)."""
    f = FILTERS[filters]
    for query in QUERIES:
        text = "" if mode == "semantic" else query
        q = small.lib.model.embed_texts([query])[0]
        want = small.expected(mode, text, q, f)
        common: dict[str, Any] = {"vector": q, "text": text, "mode": mode, "filters": f}
        first, ahead, reads = small.page(k=20, min_relevance=0.0, **common)
        assert not [s for s in ahead if IMAGES.search(s)], ahead  # the keyword index only
        if mode == "text" and not want:  # no image has the words: nothing to read ("brd")
            assert not first.hits and len(_hit_reads(reads)) <= 1, reads
            continue
        steps = small.steps(mode)
        assert len(_hit_reads(reads)) == steps, (query, steps, reads)
        if query == "sunset":
            assert steps == 1, "the first reading settles this page"
        if f is None:  # besides: the keyword index, read again by a deeper step
            assert [s for s in reads if IMAGES.search(s)] == _hit_reads(reads), reads
            assert len(reads) == 1 or steps != 1, reads
        shown = [(h.id, h.relevance) for h in first.hits]
        assert [i for i, _ in shown] == [i for i, _ in want[:20]], query
        assert [r for _, r in shown] == pytest.approx([r for _, r in want[:20]], abs=2e-6)
        assert not {h.id for h in first.hits} & small.gone
        if f is not None:
            assert all(h.path.startswith("/lib/f2/") for h in first.hits)
        if not first.has_more:
            continue
        # the next page by its cursor, and a page further on by its offset
        second, _, reads = small.page(k=20, min_relevance=0.0, cursor=first.next_cursor, **common)
        assert len(_hit_reads(reads)) == small.steps(mode), (query, reads)
        assert [h.id for h in second.hits] == [i for i, _ in want[20:40]]
        deeper, _, reads = small.page(k=15, offset=45, min_relevance=0.0, **common)
        assert len(_hit_reads(reads)) == small.steps(mode), (query, reads)
        assert [h.id for h in deeper.hits] == [i for i, _ in want[45:60]]
        assert not {h.id for h in second.hits + deeper.hits} & small.gone


@pytest.mark.parametrize(
    "f",
    [
        SearchFilters(formats=("PNG",)),
        SearchFilters(date_from=dt.datetime(2020, 2, 1), date_to=dt.datetime(2020, 6, 1)),
    ],
    ids=["png", "dates"],
)
@pytest.mark.parametrize("mode", MODES)
def test_a_filter_only_the_catalog_applies_reads_deeper_never_an_image_twice(
    small: Small, mode: str, f: SearchFilters
) -> None:
    """A filter only the catalog applies (here a third of the images or fewer pass) can leave
    fewer hits than the page needs among those the vector search found first: the search reads
    deeper, one statement for the images each step adds, never an image twice."""
    for query in QUERIES:
        text = "" if mode == "semantic" else query
        q = small.lib.model.embed_texts([query])[0]
        want = small.expected(mode, text, q, f)
        with params_sent(small.lib.engine) as asked:
            page, _, reads = small.page(vector=q, text=text, mode=mode, filters=f, k=20,
                                        min_relevance=0.0)  # fmt: skip
        assert [h.id for h in page.hits] == [i for i, _ in want[:20]], query
        assert len(_hit_reads(reads)) >= (small.steps(mode) if want else 0), (query, reads)
        ids = [i for stmt in asked for i in stmt]
        assert len(ids) == len(set(ids)), query


@pytest.mark.parametrize("mode", MODES)
def test_the_page_where_the_results_above_the_cut_end_ranks_once_more_for_what_it_hid(
    small: Small, mode: str
) -> None:
    """Under a cut, a page with more results above it reads as any page; the page where they
    end also counts what the cut hid below it (``hidden``): a text or hybrid ranking under a
    cut reads 101 results deeper than its page (what the cut hid, up to the 100 shown, and
    whether there are more), a semantic one ranks once more below the cut (its own reads)."""
    query = "red yellow dog"  # red_yellow_<n>.jpg: two of the three words; dog: one
    q = small.lib.model.embed_texts([query])[0]
    text = "" if mode == "semantic" else query
    if mode == "semantic":  # close to two images (the tiny model finds none of its texts so)
        q = small.vectors[[1, 11]].sum(axis=0)
        q = q / np.linalg.norm(q)
    want = small.expected(mode, text, q, None)
    # a cut between two relevances well apart, with a few results or more above it
    end = next(p for p in range(2, len(want)) if want[p - 1][1] - want[p][1] > 1e-3)
    cut = round((want[end - 1][1] + want[end][1]) / 2, 6)
    above = [i for i, _ in want[:end]]
    k = max(1, len(above) // 2)
    common: dict[str, Any] = {"vector": q, "text": text, "mode": mode, "min_relevance": cut}
    first, _, reads = small.page(k=k, **common)
    assert first.has_more and first.hidden is None
    assert small.calls["search" if mode == "semantic" else "search_text"] == 1
    assert len(_hit_reads(reads)) == small.steps(mode), reads
    assert [h.id for h in first.hits] == above[:k]
    last, _, reads = small.page(k=k, cursor=first.next_cursor, **common)
    assert [h.id for h in last.hits] == above[k:] and not last.has_more, (
        cut,
        want[:6],
        [(h.id, h.relevance, h.score) for h in first.hits + last.hits],
    )
    below = len(want) - len(above)
    assert (last.hidden, last.hidden_more) == (min(below, 100), below > 100)
    # text and hybrid: the page's own ranking read 101 results deeper than the page (or all of
    # them), which counts them; semantic: one more ranking, below the cut
    rankings = {"semantic": 2, "text": 1, "hybrid": 1}[mode]
    assert small.calls["search" if mode == "semantic" else "search_text"] == rankings
    assert len(_hit_reads(reads)) == small.steps(mode), reads


def test_a_page_deep_in_a_tie_of_relevance_and_a_count_of_what_the_cut_hid_read_one_step(
    small: Small,
) -> None:
    """Far below every picture that matters, relevances round to 0: one tie, broken by the
    cosine. A hybrid page there (cut 0, offset 300, words nothing has) is the documented
    ranking's, settled by the first step of reading: an image the vector list did not reach
    has a lower cosine than the page's last (before, the tie sent the reading through the whole
    library, step after step). Under the default cut nothing passes, and the page's ranking
    counts what the cut hid (``hidden``: 100, more) from its own reading: one step. In a folder
    holding few of the images, that reading holds all of them: the count is exact."""
    text = "qqzxv"  # no image's words
    q = small.lib.model.embed_texts([text])[0]
    want = small.expected("hybrid", text, q, None)
    assert {r for _, r in want[300:321]} == {0.0}  # the page and the next: inside the tie
    common: dict[str, Any] = {"vector": q, "text": text, "mode": "hybrid"}
    page, _, _ = small.page(k=20, offset=300, min_relevance=0.0, **common)
    assert [(h.id, h.relevance) for h in page.hits] == want[300:320]
    assert small.steps("hybrid") == 1
    nothing, _, _ = small.page(k=20, **common)
    assert nothing.hits == [] and (nothing.hidden, nothing.hidden_more) == (100, True)
    assert small.calls["search_text"] == 1 and small.steps("hybrid") == 1
    few = SearchFilters(folder="/lib/few")  # 2% of the images: 30 here
    want_few = small.expected("hybrid", text, q, few)
    assert 0 < len(want_few) < 100
    nothing, _, _ = small.page(k=20, filters=few, **common)
    assert nothing.hits == [] and (nothing.hidden, nothing.hidden_more) == (len(want_few), False)
    assert small.calls["search_text"] == 1


def _asks(params: Any) -> int:
    """How many values a statement sends (about the ids it asks about)."""
    return len(params) if isinstance(params, (tuple, list, dict)) else 0


# --------------------------------------------------------------------------------------------
# 100,000 images: the page's one statement reads through indexes


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_reads_of_a_page_use_indexes_at_100k(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path, backend: str
) -> None:
    """Every statement of a page (its keyword side read ahead, its catalog reads, the ranking
    below the cut that counts what it hid) in every mode, a common word, a rare one, a typo,
    with and without filters: index reads (EXPLAIN), never a scan of the library. A common
    word's keyword side reads its matches (about 6,000 of each word here), and a deep hybrid
    reading the thousands of images it ranks, by key."""
    url = None if backend == "sqlite" else request.getfixturevalue("pg_url")
    lib = _library(tmp_path, tiny_model_dir, url)
    try:
        vectors = _fill(lib, BIG_N, seed=5, chunk=2_000)
        service = SearchService(lib)
        service.calibration()
        lib.has_keywords()
        cases = [
            ("sunset beach", None),
            ("4242", None),  # a file's number: a rare word
            ("brd", None),  # a typo
            ("kitchen", SearchFilters(formats=("PNG",))),
            ("red yellow", SearchFilters(folder="/lib/few")),  # its ids: 2,000 read first
        ]
        for mode in MODES:
            for query, f in cases:
                text = "" if mode == "semantic" else query
                q = vectors[4242] if mode == "semantic" else lib.model.embed_texts([query])[0]
                for cut in (0.0, None) if mode != "semantic" else (None,):
                    with captured(lib.engine) as stmts:
                        ahead = service.keyword_side(text, 20, 0, f) if text else None
                        page = service.search(
                            SearchQuery(
                                vector=q, text=text, mode=mode, filters=f, k=20,
                                min_relevance=cut, keywords=ahead,
                            )
                        )  # fmt: skip
                    if cut == 0.0 and mode == "hybrid":
                        assert len(page.hits) == 20, (mode, query)
                    # by key: as many rows as the ids a step asks about, far from the 100,000
                    # of a scan. (A hybrid reading this tiny model's texts take many steps
                    # deep asks about 12,000 images in its last: PostgreSQL's planner may read
                    # the table for that many; left out)
                    tables = {"images", "embeddings", "image_keywords"}
                    shallow = [(sql, p) for sql, p in stmts if _asks(p) <= 5_000]
                    assert plan_problems(lib.engine, shallow, 25_000, tables) == [], (mode, query)
    finally:
        lib.close()
