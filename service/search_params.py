"""The search parameters as the REST API reads them: page, cut, sort, mode, language and the
filters (query parameters and JSON), turned into the domain's types. Shared by the search and
image routes (no router imports another)."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from datetime import date, datetime
from datetime import time as dtime
from typing import Annotated

from fastapi import Depends, HTTPException, Query

from clipsearch.indexer.types import SearchFilters

from .auth import visible_folders
from .schemas import LANG_HELP, SearchFiltersIn

MODE_HELP = (
    "semantic (the vectors), text (the words read in images, file and folder names, captions) "
    "or hybrid (both, merged by relevance); default: hybrid when the library has keywords, else "
    "semantic."
)

ModeQuery = Annotated[str | None, Query(pattern="^(semantic|text|hybrid)$", description=MODE_HELP)]
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=512,
        description="Continue after the previous page: its `next_cursor` (instead of `offset`).",
    ),
]

# The paging and threshold parameters every search endpoint takes.
KQuery = Annotated[int, Query(ge=1, description="How many results.")]
OffsetQuery = Annotated[int, Query(ge=0, description="Skip this many results.")]
MinScoreQuery = Annotated[
    float | None,
    Query(ge=-1.0, le=1.0, allow_inf_nan=False, description="Drop results below this cosine."),
]
MinRelevanceQuery = Annotated[
    float | None,
    Query(
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Drop results whose relevance (the key they are ordered by) is below this; "
        "default: the server's cut (0.5), echoed as `min_relevance`; 0 shows all (README: "
        "Relevance).",
    ),
]
# bounded here (a clear 422 for a long value); service.query says what else it may not be
LangQuery = Annotated[str | None, Query(max_length=64, description=LANG_HELP)]
SortQuery = Annotated[
    str,
    Query(
        pattern="^(relevance|date_desc|date_asc)$",
        description="relevance, or by capture date (newest or oldest first) among the results "
        "above min_relevance.",
    ),
]


def _day_bound(value: datetime | date | None, end: bool) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.combine(value, dtime.max if end else dtime.min)
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)  # taken_at is camera wall-clock time
    return value


#: How a folder filter is read for this request's caller: set (by
#: ``middleware.PublicPathsMiddleware``) for a caller without the token in public-read mode, who
#: sees folders by name (``photos/2024``), never by the server's path; None: as given.
FOLDER_READER: ContextVar[Callable[[str], str] | None] = ContextVar(
    "clipsearch_folder_reader", default=None
)


def _read_folder(folder: str) -> str:
    """The folder filter as the catalog knows it: a name as shown read back to the server's path
    for a caller who sees names (whether in the query, a JSON body or a form); an absolute server
    path from such a caller is refused (400), as it is never shown to them."""
    reader = FOLDER_READER.get()
    if reader is None:
        return folder
    if folder.startswith("/"):
        raise HTTPException(
            400,
            detail="give the folder filter as it is shown (for example photos/2024): server "
            "paths are only for callers with the API token",
        )
    return reader(folder)


def to_filters(f: SearchFiltersIn | None) -> SearchFilters | None:
    """The library's filters of the request's (None when they select everything); 4xx for
    filters no image can pass (a NUL in the folder, a reversed date range)."""
    within = visible_folders()  # a viewer's shared folders (service.auth; None: all)
    if f is None:
        return None if within is None else SearchFilters(within=within)
    if f.folder and "\x00" in f.folder:
        # checked here, not only where the catalog is asked: an empty index answers no ids and
        # would otherwise let the bad value pass as a 200
        raise HTTPException(400, detail="the folder filter contains a NUL character")
    formats = tuple(x.strip().upper() for x in f.formats if x.strip()) if f.formats else None
    date_from = _day_bound(f.date_from, end=False)
    date_to = _day_bound(f.date_to, end=True)
    if date_from and date_to and date_from > date_to:
        raise HTTPException(422, detail="filters.date_from is after filters.date_to")
    if not (f.folder or formats or date_from or date_to or f.tag or within is not None):
        return None
    return SearchFilters(
        folder=_read_folder(f.folder) if f.folder else None, date_from=date_from, date_to=date_to, formats=formats,
        tag=f.tag or None, within=within,
    )  # fmt: skip


async def filter_params(
    folder: Annotated[
        str | None,
        Query(max_length=4096, description="Only images under this folder (absolute path)."),
    ] = None,
    date_from: Annotated[date | None, Query(description="Taken on or after (YYYY-MM-DD).")] = None,
    date_to: Annotated[date | None, Query(description="Taken on or before (YYYY-MM-DD).")] = None,
    format: Annotated[
        list[str] | None,
        Query(description="Only these formats (repeatable: JPEG, PNG, WEBP, GIF, BMP, TIFF)."),
    ] = None,
    tag: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="Only pictures with this tag (name or id)."),
    ] = None,
) -> SearchFiltersIn | None:
    """The search filters as query parameters (GET search, search by image, more like this)."""
    if format is not None and len(format) > 16:
        raise HTTPException(422, detail="at most 16 format parameters")
    if format is not None and any(len(x) > 16 for x in format):
        raise HTTPException(422, detail="a format name is at most 16 characters (e.g. JPEG)")
    if not (folder or date_from or date_to or format or tag):
        # a viewer of some folders has filters even unasked: their folders (to_filters)
        return None if visible_folders() is None else SearchFiltersIn()
    from pydantic import ValidationError

    try:
        return SearchFiltersIn(
            folder=folder, date_from=date_from, date_to=date_to, formats=format, tag=tag
        )
    except ValidationError as exc:  # a control character in folder, a format that is no name
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise HTTPException(422, detail=f"{where or 'filters'}: {msg}") from None


FiltersDep = Annotated[SearchFiltersIn | None, Depends(filter_params)]
