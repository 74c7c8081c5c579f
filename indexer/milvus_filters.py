"""The searches' filters in Milvus' boolean expression language (:mod:`indexer.milvus_store`
searches with them): a folder and below it, a capture-date range, formats, a viewer's shared
folders (indexer.sharing), ids left out. It may over-include (``_`` and ``%`` in a folder name
are LIKE wildcards): the catalog re-checks every hit."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from .vector_store import StoreFilters

NO_TIME = -(2**62)  # taken_at of an image without a capture time
_EPOCH = dt.datetime(1970, 1, 1)


def micros(value: dt.datetime | None) -> int:
    """A capture time as Milvus keeps it: microseconds since 1970 (wall clock), or NO_TIME."""
    if value is None:
        return NO_TIME
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return (value - _EPOCH) // dt.timedelta(microseconds=1)


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def under(folder: str) -> str:
    """``folder`` (catalog text form) and everything below it."""
    folder = folder.rstrip("/") or "/"
    prefix = folder if folder.endswith("/") else folder + "/"
    return f"(folder == {quote(folder)} or folder like {quote(prefix + '%')})"


def expression(filters: StoreFilters | None, exclude: Sequence[int] | None) -> str:
    """The Milvus boolean expression for these filters and left-out ids ("" for none)."""
    parts: list[str] = []
    if filters is not None:
        if filters.folder:
            parts.append(under(filters.folder))
        if filters.date_from is not None:
            parts.append(f"taken_at >= {micros(filters.date_from)}")
        if filters.date_to is not None:
            parts.append(f"taken_at <= {micros(filters.date_to)} and taken_at > {NO_TIME}")
        if filters.formats:
            parts.append(f"format in [{', '.join(quote(f) for f in filters.formats)}]")
        if filters.within is not None:  # a viewer's shared folders; none: no vector at all
            shared = " or ".join(under(f) for f in filters.within)
            parts.append(f"({shared})" if shared else "id < 0")
    if exclude:
        parts.append(f"id not in [{', '.join(str(int(i)) for i in exclude)}]")
    return " and ".join(parts)
