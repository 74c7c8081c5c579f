"""Timing hooks for the stages of a search, for whoever measures them (service.metrics).

``with timed("vector_search"): ...`` reports the seconds the block took to every observer added
with :func:`add_observer` (the API's metrics, one per app). Observers are held weakly, so an app
that is gone stops observing; with none, a stage costs two clock reads. The stages:

- ``encode``: a query's embedding (text through the batching encoder, or an uploaded image);
- ``vector_search``: the vector store's search (FAISS or Milvus);
- ``keyword_search``: the keyword index (indexer.keywords);
- ``catalog``: reading the catalog rows of the hits found.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["STAGES", "add_observer", "timed"]

STAGES = ("encode", "vector_search", "keyword_search", "catalog")

Observer = Callable[[str, float], None]
_lock = threading.Lock()
_observers: list[weakref.WeakMethod[Observer]] = []


def add_observer(method: Observer) -> None:
    """Have the bound method ``method(stage, seconds)`` called after each timed stage, for as
    long as its object lives."""
    with _lock:
        _observers.append(weakref.WeakMethod(method))


@contextmanager
def timed(stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        if _observers:
            seconds = time.perf_counter() - start
            with _lock:
                alive = [ref for ref in _observers if ref() is not None]
                _observers[:] = alive
            for ref in alive:
                method = ref()
                if method is not None:
                    method(stage, seconds)
