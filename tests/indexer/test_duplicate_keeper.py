"""The suggested keeper of a duplicates group (indexer.duplicate_keeper): the largest original
first (pixels, then bytes), then the earliest date (taken, else modified), then the smallest id."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from clipsearch.indexer.duplicate_keeper import keeper_order, member_date

JAN_2020 = dt.datetime(2020, 1, 1, 12, 0).timestamp()
JAN_2024 = dt.datetime(2024, 1, 1, 12, 0).timestamp()


@dataclass(frozen=True)
class Img:
    id: int
    size: int = 1000
    mtime: float = JAN_2024
    width: int | None = 100
    height: int | None = 100
    taken_at: dt.datetime | None = None


def _ids(*images: Img) -> list[int]:
    return [i.id for i in keeper_order(images)]


def test_the_largest_original_is_kept_before_an_older_smaller_copy() -> None:
    resized = Img(1, width=50, height=50, size=400, mtime=JAN_2020)
    original = Img(2, width=100, height=100, size=900)
    assert _ids(resized, original) == [2, 1]
    # the same pixels: the one with more bytes (less compressed) first
    assert _ids(Img(3, size=500), Img(4, size=800)) == [4, 3]


def test_between_equal_copies_the_earliest_date_then_the_smallest_id() -> None:
    newer = Img(1, mtime=JAN_2024)
    older = Img(2, mtime=JAN_2020)
    assert _ids(newer, older) == [2, 1]
    # a capture date wins over a file's date
    taken = Img(3, mtime=JAN_2024, taken_at=dt.datetime(2019, 6, 1))
    assert _ids(older, taken) == [3, 2]
    assert member_date(taken) == dt.datetime(2019, 6, 1)
    assert _ids(Img(7), Img(5), Img(6)) == [5, 6, 7]
    # no size known and no date at all: after those that have them
    assert _ids(Img(8, width=None, height=None), Img(9)) == [9, 8]
