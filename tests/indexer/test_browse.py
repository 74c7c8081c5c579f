"""Browsing with the searches' filters and a capture-date order (indexer/browse.py): every page
once, in order, across the dated and undated images; and at 10,000 images on SQLite and
PostgreSQL each page is a range read on an index (plans checked as in test_scale.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from test_scale import (  # the 10,000-image catalogs on SQLite and PostgreSQL
    N,
    big_library,  # noqa: F401 (the fixture)
    captured,
    plan_problems,
)

from clipsearch.indexer.catalog import Image
from clipsearch.indexer.errors import IndexerError
from clipsearch.indexer.library import Library
from clipsearch.indexer.types import SearchFilters

BASE = dt.datetime(2020, 1, 1, 8, 0, 0)
UNDATED_EVERY = 10  # every tenth image has no capture date


def _date(lib: Library, ids: list[int]) -> dict[int, dt.datetime | None]:
    """Capture dates: shuffled against the ids (so date order is not id order), a tenth undated,
    and pairs sharing one timestamp (so the id breaks ties)."""
    taken: dict[int, dt.datetime | None] = {}
    for n, image_id in enumerate(ids):
        taken[image_id] = (
            None if n % UNDATED_EVERY == 0 else BASE + dt.timedelta(hours=(n * 7919 % N) // 2)
        )
    table = Image.__table__
    with lib.engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.id == sa.bindparam("b_id"))
            .values(taken_at=sa.bindparam("t")),
            [{"b_id": i, "t": t} for i, t in taken.items() if t is not None],
        )
    with lib.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return taken


def _expected(taken: dict[int, Any], desc: bool, keep: Any = lambda i: True) -> list[int]:
    dated = sorted(
        (i for i, t in taken.items() if t is not None and keep(i)),
        key=lambda i: (taken[i], i),
        reverse=desc,
    )
    return dated + sorted(i for i, t in taken.items() if t is None and keep(i))


def _walk(lib: Library, **kwargs: Any) -> list[int]:
    out: list[int] = []
    key = None
    while True:
        items, total, next_after, key = lib.browse_images(limit=500, after_key=key, **kwargs)
        assert total == N and next_after is None
        out += [i.id for i in items]
        if key is None:
            return out


def test_date_order_walks_every_image_once_dated_first(
    big_library: tuple[Library, list[int]],  # noqa: F811
) -> None:
    lib, ids = big_library
    taken = _date(lib, ids)
    assert _walk(lib, sort="date_desc") == _expected(taken, desc=True)
    assert _walk(lib, sort="date_asc") == _expected(taken, desc=False)
    # the searches' filters: a date range, a folder, a format
    since = BASE + dt.timedelta(hours=4000)
    f = SearchFilters(date_from=since)
    assert _walk(lib, sort="date_desc", filters=f) == _expected(
        taken, True, lambda i: taken[i] is not None and taken[i] >= since
    )
    folder_ids = set(ids[3::97])  # fill() puts image n in folder f{n % 97}
    assert _walk(lib, sort="date_asc", filters=SearchFilters(folder="/library/f3")) == _expected(
        taken, False, lambda i: i in folder_ids
    )
    assert _walk(lib, sort="date_asc", filters=SearchFilters(formats=("PNG",))) == []
    # id order with filters pages by `after`
    page, _, nxt, key = lib.browse_images(limit=20, filters=SearchFilters(folder="/library/f3"))
    assert [i.id for i in page] == sorted(folder_ids)[:20] and key is None
    page2, *_ = lib.browse_images(limit=20, filters=SearchFilters(folder="/library/f3"), after=nxt)
    assert [i.id for i in page2] == sorted(folder_ids)[20:40]


def test_bad_cursors_are_refused_with_a_message(
    big_library: tuple[Library, list[int]],  # noqa: F811
) -> None:
    lib, _ = big_library
    for bad in ("yesterday", "2021-13-01T00:00:00_5", "_x", "2021-01-01"):
        with pytest.raises(IndexerError, match="after_key"):
            lib.browse_images(sort="date_desc", after_key=bad)
    with pytest.raises(IndexerError, match="sort"):
        lib.browse_images(sort="size")


def test_date_pages_read_an_index_not_the_library(
    big_library: tuple[Library, list[int]],  # noqa: F811
) -> None:
    lib, ids = big_library
    taken = _date(lib, ids)
    deep_dated = _expected(taken, desc=True)[7000]
    deep_key = f"{taken[deep_dated].isoformat()}_{deep_dated}"
    with captured(lib.engine) as stmts:
        lib.browse_images(limit=50, sort="date_desc")
        lib.browse_images(limit=50, sort="date_desc", after_key=deep_key)
        lib.browse_images(limit=50, sort="date_asc", after_key=deep_key, state="ready")
        lib.browse_images(limit=50, sort="date_asc", after_key=f"_{ids[5000]}")
        lib.browse_images(
            limit=50,
            sort="date_desc",
            filters=SearchFilters(
                date_from=BASE + dt.timedelta(hours=100), date_to=BASE + dt.timedelta(hours=140)
            ),
        )
    assert len(stmts) >= 5
    assert plan_problems(lib.engine, stmts, max_rows=200) == []


def test_the_timeline_lists_each_month_once_and_its_cursor_starts_a_page_there(
    big_library: tuple[Library, list[int]],  # noqa: F811
) -> None:
    lib, ids = big_library
    taken = _date(lib, ids)
    for sort, desc in (("date_desc", True), ("date_asc", False)):
        order = _expected(taken, desc=desc)
        wanted = sorted({(t.year, t.month) for t in taken.values() if t is not None}, reverse=desc)
        found = lib.timeline(sort=sort)
        assert [(m.year, m.month) for m in found.months] == wanted and len(wanted) >= 6
        assert found.undated and not found.more
        for month in found.months:
            page, _, _, _ = lib.browse_images(limit=5, sort=sort, after_key=month.after_key)
            first = page[0].id
            assert (taken[first].year, taken[first].month) == (month.year, month.month)
            before = order[order.index(first) - 1] if order.index(first) else None
            if before is not None:  # the picture before the jump is from another month
                assert (taken[before].year, taken[before].month) != (month.year, month.month)
        page, *_ = lib.browse_images(limit=5, sort=sort, after_key=found.undated_after_key)
        assert [i.id for i in page] == sorted(i for i, t in taken.items() if t is None)[:5]
    # a date range narrows the months; a format nothing has leaves none
    since = BASE + dt.timedelta(days=100)
    narrowed = lib.timeline(sort="date_desc", filters=SearchFilters(date_from=since))
    assert (
        narrowed.months[-1].year * 12 + narrowed.months[-1].month == since.year * 12 + since.month
    )
    assert narrowed.undated is False  # a date filter leaves the undated out, as browsing does
    assert lib.timeline(filters=SearchFilters(formats=("PNG",))).months == []
    with pytest.raises(IndexerError, match="sort"):
        lib.timeline(sort="id")


def test_the_timeline_seeks_an_index_per_month_never_reads_the_library(
    big_library: tuple[Library, list[int]],  # noqa: F811
) -> None:
    lib, ids = big_library
    _date(lib, ids)
    with captured(lib.engine) as stmts:
        lib.timeline(sort="date_desc")
        lib.timeline(sort="date_asc", state="ready")
    assert len(stmts) >= 10  # one seek per month, and one for the undated
    assert plan_problems(lib.engine, stmts, max_rows=200) == []
