"""A text query for a word every image has (a common word: 100,000 images match it equally well)
answers in the documented order, relevance, then the cosine, then the id, over all the images that
match, not only those the keyword list read, and without reading the whole tie: the statements it
runs use indexes (query plans checked on SQLite and PostgreSQL at 100,000 rows)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from test_scale import captured, plan_problems

from clipsearch.indexer import catalog, hybrid
from clipsearch.indexer.catalog import Embedding, Image
from clipsearch.indexer.library import Library, LibraryConfig

N = 100_000
SUNSET = 500  # every 500th image has "sunset" in its folder too
CHUNK = 2_000  # rows per INSERT and per transaction while seeding


def _fill(lib: Library, vectors: np.ndarray, model_id: int, n: int = N) -> None:
    """``n`` (100,000) ready images named beach_<n>.jpg (the keyword rows follow from the triggers),
    each with its own vector, written in batched INSERTs."""
    now = catalog.utcnow()
    gin: list[tuple[str, str]] = []
    if lib.engine.dialect.name == "postgresql":  # built once after the rows, not row by row
        with lib.engine.begin() as conn:
            gin = [
                (str(n), str(d))
                for n, d in conn.exec_driver_sql(
                    "SELECT indexname, indexdef FROM pg_indexes "
                    "WHERE tablename = 'image_keywords' AND indexdef LIKE '%%USING gin%%'"
                )
            ]
            for index_name, _ in gin:
                conn.exec_driver_sql(f'DROP INDEX "{index_name}"')
    with lib.Session() as s:
        for start in range(0, n, CHUNK):
            rows = [
                {
                    "path": f"/lib/{'sunset' if i % SUNSET == 0 else 'f'}{i % 97}/beach_{i}.jpg",
                    "folder": f"/lib/{'sunset' if i % SUNSET == 0 else 'f'}{i % 97}",
                    "size": 1,
                    "mtime_ns": 1,
                    "sha256": f"{i:064x}",
                    "width": 8,
                    "height": 8,
                    "format": "JPEG",
                    "state": "ready",
                    "thumbnail": None,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(start, min(n, start + CHUNK))
            ]
            s.execute(sa.insert(Image), rows)
            s.execute(
                sa.insert(Embedding),
                [
                    {
                        "sha256": f"{i:064x}",
                        "model_id": model_id,
                        "vector": catalog.vector_to_bytes(vectors[i]),
                        "created_at": now,
                    }
                    for i in range(start, min(n, start + CHUNK))
                ],
            )
            # a commit per chunk: the triggers update one counts row per image, and PostgreSQL
            # walks that row's versions from the transaction's start on every update
            s.commit()
    with lib.engine.begin() as conn:
        for _, definition in gin:
            conn.exec_driver_sql(definition)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def common(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path
) -> Iterator[tuple[Library, np.ndarray, dict[int, int]]]:
    """The library, every image's vector (row n: the image of beach_<n>.jpg) and n -> id."""
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    lib = Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            database_url=url,
            model_spec=str(tiny_model_dir),
            device="cpu",
            refresh_interval_s=3600,
        )
    )
    try:
        served = lib._ensure_served()
        rng = np.random.default_rng(3)
        vectors = rng.standard_normal((N, served.index.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        _fill(lib, vectors, served.model_id)
        with lib.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        lib.refresh_index()
        with lib.Session() as s:
            ids = {
                int(p.rsplit("_", 1)[1][:-4]): int(i)
                for i, p in s.execute(sa.select(Image.id, Image.path))
            }
        yield lib, vectors, ids
    finally:
        lib.close()


def _expected(
    vectors: np.ndarray, ids: dict[int, int], q: np.ndarray, rows: list[int]
) -> list[int]:
    """The documented order worked out by hand: every listed image has the same keyword
    relevance, so the cosine decides, then the id."""
    cos = vectors[rows] @ q
    return [ids[rows[j]] for j in sorted(range(len(rows)), key=lambda j: (-cos[j], ids[rows[j]]))]


def test_a_common_word_pages_in_the_documented_order_over_every_match_through_indexes(
    common: tuple[Library, np.ndarray, dict[int, int]],
) -> None:
    lib, vectors, ids = common
    q = vectors[4242]
    want = _expected(vectors, ids, q, list(range(N)))
    with captured(lib.engine) as stmts:
        first = lib.search_text(q, "beach", "text", k=20)
    assert [h.id for h in first] == want[:20]
    assert first[0].id == ids[4242]  # its own picture: the highest cosine of all
    assert all(h.relevance == pytest.approx(hybrid.KEYWORD_RELEVANCE) for h in first)
    assert [h.score for h in first] == sorted((h.score for h in first), reverse=True)
    deeper = lib.search_text(q, "beach", "text", k=30, offset=300)
    assert [h.id for h in deeper] == want[300:330]
    # the 20 images of the page, not the 16,000 of the whole tie, had their rows read
    assert plan_problems(lib.engine, stmts, max_rows=2_000) == []

    # a tie below better matches ranks after them
    q = vectors[77]
    both = [n for n in range(N) if n % SUNSET == 0]  # "beach" and "sunset": the best matches
    beach = [n for n in range(N) if n % SUNSET != 0]  # "beach" alone: a tie half as good
    want = _expected(vectors, ids, q, both) + _expected(vectors, ids, q, beach)
    at = len(both) - 10  # a page across the border of the two
    with captured(lib.engine) as stmts:
        page = lib.search_text(q, "sunset beach", "text", k=20, offset=at, min_relevance=0)
    assert [h.id for h in page] == want[at : at + 20]
    rel = [h.relevance for h in page]
    # "beach" whole, "sunset" beginning a folder's word (0.85 x 0.7): (1 + 0.595) / 2 x 0.9
    assert rel[:10] == [pytest.approx(0.9 * (1 + 0.85 * 0.7) / 2)] * 10
    assert rel[10:] == [pytest.approx(0.9 / 2)] * 10  # "beach" alone
    assert plan_problems(lib.engine, stmts, max_rows=25_000) == []


@pytest.mark.parametrize(
    ("mode", "query", "reads"),
    [
        ("hybrid", "sunset beach", 1),  # the vector ranking's check of its hits is the read
        ("text", "sunset", 1),  # six images match: one read
        ("text", "beach", 2),  # every image matches: the tie is settled by the vector ranking
    ],
)
def test_a_page_of_a_text_query_reads_the_catalog_once_after_its_keyword_side(
    tmp_path: Path, tiny_model_dir: Path, mode: str, query: str, reads: int
) -> None:
    """The keyword side is read ahead (while the query is encoded); then a text page reads its
    rows, the cosines, the keyword rows of the vector hits and whether its hits are still ready
    in one statement (a tie the vector ranking settles: one more, with that ranking's hits)."""
    lib = Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            model_spec=str(tiny_model_dir),
            device="cpu",
            refresh_interval_s=3600,
        )
    )
    try:
        served = lib._ensure_served()
        n = 3_000
        vectors = np.random.default_rng(5).standard_normal((n, served.index.dim))
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        _fill(lib, vectors, served.model_id, n)
        lib.refresh_index()
        q = vectors[42]
        alone = lib.search_text(q, query, mode, k=20, min_relevance=0)
        ahead = lib.keyword_hits(query, k=20)
        with captured(lib.engine) as stmts:
            page = lib.search_text(q, query, mode, k=20, keywords=ahead, min_relevance=0)
        shown = [(h.id, h.relevance, h.score, h.path, h.match) for h in page]
        assert shown == [(h.id, h.relevance, h.score, h.path, h.match) for h in alone]
        assert len(page) == (6 if query == "sunset" else 20)
        assert all(h.path.endswith(".jpg") and h.width == 8 for h in page)
        assert [sql for sql, _ in stmts if "images" in sql] == [sql for sql, _ in stmts]
        assert len(stmts) == reads, [sql for sql, _ in stmts]
    finally:
        lib.close()
