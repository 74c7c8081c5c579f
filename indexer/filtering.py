"""The searches' and the browser's filters (:class:`~indexer.types.SearchFilters`) as catalog
conditions and as vector-store filters: one reading of a folder, a date range and formats."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable

import sqlalchemy as sa

from . import catalog
from .catalog import Image
from .errors import IndexerError
from .tags import tagged_ids_condition
from .types import SearchFilters
from .vector_store import StoreFilters

__all__ = ["filter_conditions", "formats", "naive", "store_filters", "within_condition"]


def filter_conditions(filters: SearchFilters) -> list[sa.ColumnElement[bool]]:
    """SQL conditions on :class:`~indexer.catalog.Image` that keep what ``filters`` keeps."""
    conds: list[sa.ColumnElement[bool]] = []
    if filters.folder:
        conds.append(catalog.under_folder(Image.folder, _folder_db(filters.folder)))
    if filters.date_from is not None:
        conds.append(Image.taken_at >= naive(filters.date_from))
    if filters.date_to is not None:
        conds.append(Image.taken_at <= naive(filters.date_to))
    if filters.formats:
        kept = formats(filters.formats)
        if kept:
            conds.append(Image.format.in_(kept))
    if filters.tag is not None:  # the pictures with the tag: a range read on its key
        conds.append(tagged_ids_condition(filters.tag, Image.id))
    if filters.within is not None:  # a viewer's shared folders (indexer.sharing)
        conds.append(within_condition(filters.within))
    return conds


def within_condition(
    folders: tuple[str, ...], column: sa.SQLColumnExpression[str] = Image.folder
) -> sa.ColumnElement[bool]:
    """Pictures under any of ``folders`` (catalog text form); none when there are none."""
    if not folders:
        return sa.false()
    return sa.or_(*(catalog.under_folder(column, f) for f in folders))


def store_filters(filters: SearchFilters) -> StoreFilters:
    """The same filters as a vector store applies them (Milvus inside its search)."""
    return StoreFilters(
        folder=_folder_db(filters.folder) if filters.folder else None,
        date_from=naive(filters.date_from) if filters.date_from is not None else None,
        date_to=naive(filters.date_to) if filters.date_to is not None else None,
        formats=tuple(formats(filters.formats or ())),
        within=filters.within,
    )


def _folder_db(folder: str) -> str:
    text = str(folder)
    if "\x00" in text:
        raise IndexerError("the folder filter contains a NUL character")
    return catalog.path_to_db(os.path.abspath(os.path.expanduser(text)))


def formats(values: Iterable[object]) -> list[str]:
    """Format names as the catalog keeps them (upper case; JPG is JPEG)."""
    names = [str(f).upper().strip() for f in values if str(f).strip()]
    return ["JPEG" if f == "JPG" else f for f in names]


def naive(value: dt.datetime) -> dt.datetime:
    """taken_at is camera wall-clock time (naive): compare with the caller's wall-clock value."""
    return value.replace(tzinfo=None) if getattr(value, "tzinfo", None) is not None else value
