"""Browsing the library with the searches' filters and a capture-date order.

``browse(session, limit, state, filters, sort, after)``: one page of images, and the cursor of the
next page. Orders:

* ``id`` (the order images were added): keyset on the primary key (``ix_images_state_id`` with a
  state);
* ``date_desc`` / ``date_asc``: dated images by ``(taken_at, id)``, then the undated ones by id.
  The cursor is ``"<taken_at ISO>_<id>"`` (``"_<id>"`` once among the undated), and each page is a
  range read on ``ix_images_taken_at_id`` / ``ix_images_state_taken_at_id`` (migration 0007):
  the same cost at image 100,000 as at image 1. A capture-date range narrows that range.

The folder and format filters are checked on the rows the index walk reads: a page costs the rows
read until it is full (cheap unless the filter keeps a small share of a big library).

``months(session, state, conditions, sort)``: the timeline's months (what the gallery's date
scrubber lists) and the cursor that starts a page at each, one index seek per month.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .catalog import Image
from .errors import IndexerError

SORTS = ("id", "date_desc", "date_asc")


def encode_cursor(taken_at: dt.datetime | None, image_id: int) -> str:
    return f"{taken_at.isoformat() if taken_at is not None else ''}_{image_id}"


def decode_cursor(value: str) -> tuple[dt.datetime | None, int]:
    """``"2021-06-01T12:00:00_17"`` -> (datetime, 17); ``"_17"`` -> (None, 17)."""
    stamp, sep, ident = value.rpartition("_")
    try:
        if not sep or not ident.isdigit() or len(ident) > 19:
            raise ValueError
        image_id = int(ident)
        taken = dt.datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        raise IndexerError(
            f"after_key {value[:80]!r} is not a cursor: pass the previous page's next_after_key"
        ) from None
    if taken is not None and taken.tzinfo is not None:
        taken = taken.replace(tzinfo=None)
    return taken, image_id


def browse(
    session: Session,
    *,
    limit: int,
    state: str | None,
    conditions: list[sa.ColumnElement[bool]],
    sort: str,
    after: int | None = None,
    after_key: str | None = None,
) -> tuple[list[Image], int | None, str | None]:
    """(rows, next_after id for ``sort="id"``, next_after_key for the date orders)."""
    if sort not in SORTS:
        raise IndexerError(f"unknown sort {sort!r}: use {', '.join(SORTS)}")
    where = list(conditions)
    if state is not None:
        where.append(Image.state == state)
    if sort == "id":
        if after_key is not None:
            raise IndexerError("after_key goes with sort=date_desc or date_asc; use after")
        stmt = sa.select(Image).where(Image.id > (after or 0), *where).order_by(Image.id)
        page = list(session.scalars(stmt.limit(limit)))
        return page, (page[-1].id if len(page) == limit else None), None
    if after is not None:
        raise IndexerError("after goes with the id order; the date orders page with after_key")
    desc = sort == "date_desc"
    taken, last_id = decode_cursor(after_key) if after_key else (None, None)
    rows: list[Image] = []
    if last_id is None or taken is not None:
        dated = sa.select(Image).where(Image.taken_at.is_not(None), *where)
        if taken is not None and last_id is not None:
            key = sa.tuple_(Image.taken_at, Image.id)
            dated = dated.where(key < (taken, last_id) if desc else key > (taken, last_id))
        order = (Image.taken_at.desc(), Image.id.desc()) if desc else (Image.taken_at, Image.id)
        rows = list(session.scalars(dated.order_by(*order).limit(limit)))
        last_id = None  # the undated part starts from its beginning
    if len(rows) < limit:
        undated = sa.select(Image).where(Image.taken_at.is_(None), *where)
        if last_id is not None:
            undated = undated.where(Image.id > last_id)
        # ordered as the index is (taken_at is NULL throughout): a range read on it
        undated = undated.order_by(Image.taken_at, Image.id).limit(limit - len(rows))
        rows += list(session.scalars(undated))
    next_key = None
    if len(rows) == limit:
        tail = rows[-1]
        next_key = encode_cursor(tail.taken_at, tail.id)
    return rows, None, next_key


@dataclass(frozen=True)
class Month:
    """A month the timeline holds (``year``, ``month``) and the cursor that starts a page there
    (``after_key`` for :func:`browse` in the same order; None: from the start)."""

    year: int
    month: int
    after_key: str | None


@dataclass(frozen=True)
class Timeline:
    """The months that hold pictures, newest first for ``date_desc`` (oldest first for
    ``date_asc``), whether undated pictures follow them, and where the undated part starts."""

    months: list[Month]
    undated: bool
    undated_after_key: str | None
    more: bool  # more months than ``limit``


MONTHS_MAX = 1200  # a century of months: the scrubber lists at most this many


def _month_start(year: int, month: int) -> dt.datetime:
    return dt.datetime(year, month, 1)


def _next_month(year: int, month: int) -> dt.datetime:
    return dt.datetime(year + month // 12, month % 12 + 1, 1)


def months(
    session: Session,
    *,
    state: str | None,
    conditions: list[sa.ColumnElement[bool]],
    sort: str,
    limit: int = MONTHS_MAX,
) -> Timeline:
    """The months of the library in ``sort`` order, found without reading the library: each month
    is one seek on ``ix_images_taken_at_id`` (the newest picture before the month found last), so
    the cost grows with the number of months, never with the number of pictures. The folder and
    format filters are checked on the rows each seek reads, as in :func:`browse`."""
    if sort not in ("date_desc", "date_asc"):
        raise IndexerError(
            f"the timeline goes by date: sort must be date_desc or date_asc, not {sort!r}"
        )
    if not 1 <= limit <= MONTHS_MAX:
        raise IndexerError(f"limit must be between 1 and {MONTHS_MAX} (got {limit})")
    where = list(conditions)
    if state is not None:
        where.append(Image.state == state)
    desc = sort == "date_desc"
    found: list[Month] = []
    bound: dt.datetime | None = None
    more = False
    while True:
        stmt = sa.select(Image.taken_at).where(Image.taken_at.is_not(None), *where)
        if bound is not None:
            stmt = stmt.where(Image.taken_at < bound if desc else Image.taken_at >= bound)
        order = Image.taken_at.desc() if desc else Image.taken_at
        taken = session.scalar(stmt.order_by(order).limit(1))
        if taken is None:
            break
        if len(found) == limit:
            more = True
            break
        year, month = taken.year, taken.month
        if desc:  # a page starts after (first instant of the next month, id 0)
            key = None if not found else encode_cursor(_next_month(year, month), 0)
            bound = _month_start(year, month)
        else:  # ascending: after (first instant of the month, id 0), ids start at 1
            key = None if not found else encode_cursor(_month_start(year, month), 0)
            bound = _next_month(year, month)
        found.append(Month(year, month, key))
    undated_row = session.scalar(
        sa.select(Image.id)
        .where(Image.taken_at.is_(None), *where)
        .order_by(Image.taken_at, Image.id)
        .limit(1)
    )
    undated = undated_row is not None
    return Timeline(
        months=found,
        undated=undated,
        undated_after_key=("_0" if found else None) if undated else None,
        more=more,
    )
