"""The search mode of text queries (semantic, text, hybrid) at the API edge.

The ranking itself is :mod:`indexer.hybrid` (through ``Library.search_text``); this module turns
the ``mode`` parameter into the ``search(k, offset, min_score)`` function that
routes/search.py hands to :func:`service.ranking.ranked_page`, so the relevance cut and the date
sort work the same in every mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import HTTPException, Query
from starlette.concurrency import run_in_threadpool

from clipsearch.indexer.errors import IndexerError

from .deps import ServiceState, limit_compute_threads

MODES = ("semantic", "text", "hybrid")
MODE_HELP = (
    "semantic (the vectors), text (the words read in images, file and folder names, captions) "
    "or hybrid (both, merged); default: hybrid when the library has keywords, else semantic."
)

ModeQuery = Annotated[str | None, Query(pattern="^(semantic|text|hybrid)$", description=MODE_HELP)]


async def resolve_mode(state: ServiceState, text: str, mode: str | None) -> str:
    """The mode this query runs in (one index probe when none is asked for)."""
    from clipsearch.indexer.hybrid import resolve_mode as resolve
    from clipsearch.indexer.keywords import query_words

    if mode is not None and mode not in MODES:
        raise HTTPException(422, detail="mode must be semantic, text or hybrid")
    if mode is not None:
        return mode
    if not query_words(text):
        return "semantic"
    known = getattr(state.library, "keywords_known", None)
    if known is not None and known():  # answered without a thread (the catalog is not read)
        return "hybrid"
    try:
        return await run_in_threadpool(resolve, state.library, text, mode)
    except IndexerError as exc:
        raise HTTPException(422, detail=str(exc)) from exc


def mode_search(
    state: ServiceState,
    vector: Any,
    text: str,
    mode: str,
    filters: Any,
    keywords: tuple[int, list[Any]] | None = None,
) -> Callable[..., list[Any]]:
    """``search(k, offset, min_score)`` for ``mode`` (every hit says why it matched);
    ``keywords``: the keyword side read ahead (:func:`prefetch_keywords`)."""

    def search(k: int, offset: int, min_score: float | None) -> list[Any]:
        limit_compute_threads(state.settings.compute_threads)
        ahead = {"keywords": keywords} if keywords is not None else {}
        return state.library.search_text(  # type: ignore[no-any-return]
            vector, text, mode, k=k, offset=offset, min_score=min_score, filters=filters, **ahead
        )

    return search


def prefetch_keywords(
    state: ServiceState, text: str, mode: str, k: int, offset: int, filters: Any
) -> asyncio.Future[tuple[int, list[Any]] | None] | None:
    """The keyword side of a hybrid or text query, started on the search pool now, so it is
    read while the query's text is encoded (one client's latency: the two no longer add up).
    None for a semantic query. The future gives None where reading failed: the search then
    reads it again itself and reports what went wrong."""
    if mode == "semantic" or not hasattr(state.library, "keyword_hits"):
        return None

    def read() -> tuple[int, list[Any]] | None:
        try:
            return state.library.keyword_hits(text, k=k, offset=offset, filters=filters)  # type: ignore[no-any-return]
        except Exception:  # the search proper reads it again and reports what failed
            return None

    return asyncio.ensure_future(state.run_search(read))
