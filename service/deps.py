"""Per-app state and the ``Annotated`` dependency aliases the routes use.

Everything hangs off ``app.state.service`` (a :class:`ServiceState` built by ``create_app``), so
two apps in one process (tests) never share anything, and ``app.dependency_overrides`` can swap
any of these dependencies.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import numpy as np
from fastapi import Depends, HTTPException, Request

from clipsearch.indexer.facade import LibraryFacade
from clipsearch.indexer.types import Hit, SearchFilters

from .admission import AdmissionGate, make_search_gate, make_upload_gate
from .metrics import Metrics
from .query import EmbeddingCache, TextEncoder, query_embedder
from .settings import Settings

if TYPE_CHECKING:
    from clipsearch.model.base import EmbeddingModel

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


_thread_state = threading.local()


def limit_compute_threads(n: int) -> None:
    """Limit torch's and FAISS's OpenMP teams for work started from the calling thread.

    OpenMP thread counts are per calling thread, so each thread that runs the model or searches
    the index calls this once (cheap afterwards). ``n`` = 0 leaves the libraries' defaults.
    """
    if n <= 0 or getattr(_thread_state, "limited", 0) == n:
        return
    _thread_state.limited = n
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except (ImportError, AttributeError):
        pass
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


@dataclass
class ServiceState:
    """What one app instance owns: settings, the library, the encoders, the metrics."""

    settings: Settings
    library: LibraryFacade
    metrics: Metrics
    cache: EmbeddingCache
    executor: ThreadPoolExecutor | None = None
    search_executor: ThreadPoolExecutor | None = None
    encoder: TextEncoder | None = None
    model_error: str | None = None
    model_name: str | None = None
    model_device: str | None = None
    #: the bounded queues in front of searches and of upload decodes (service.admission)
    search_gate: AdmissionGate = field(init=False)
    upload_gate: AdmissionGate = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _encoder_model: object = None

    def __post_init__(self) -> None:
        s, limits = self.settings.search, self.settings.limits
        self.search_gate = make_search_gate(s.search_slots, s.search_queue)
        self.upload_gate = make_upload_gate(limits.upload_decode_slots, limits.upload_queue)

    def ensure_model(self) -> EmbeddingModel:
        """The library's model, loaded if needed (raises ModelError); records name and device."""
        model: EmbeddingModel = self.library.model  # the facade types it Any (indexer.facade)
        self.model_name = str(getattr(model, "name", "") or self.settings.models.spec)
        self.model_device = str(getattr(model, "device", "") or "") or None
        return model

    def text_encoder(self) -> TextEncoder:
        """The batching text encoder of the library's current model (loads it if needed).

        When the library swaps to another model (a re-index with a new model finished), a new
        encoder is made for it; cached embeddings are keyed by model, so none is reused wrongly.
        """
        model = self.ensure_model()
        encoder = self.encoder
        if encoder is not None and self._encoder_model is model:
            return encoder
        with self._lock:
            if self.encoder is None or self._encoder_model is not model:
                old = self.encoder
                precision = self.settings.search.query_precision
                self.encoder = TextEncoder(
                    query_embedder(model, precision),
                    model_name=f"{getattr(model, 'name', '')}#{id(model)}#{precision}",
                    cache=self.cache,
                    window_ms=self.settings.search.batch_window_ms,
                    max_batch=self.settings.search.batch_max,
                    on_start=lambda: limit_compute_threads(self.settings.search.compute_threads),
                )
                self.encoder.start()
                self._encoder_model = model
                if old is not None:
                    old.close()
            return self.encoder

    def _executor(self, attr: str, workers: int, name: str) -> ThreadPoolExecutor:
        """The pool kept in ``attr``, made on first use; its threads limit their OpenMP teams."""
        with self._lock:
            executor: ThreadPoolExecutor | None = getattr(self, attr)
            if executor is None:
                executor = ThreadPoolExecutor(
                    max_workers=workers,
                    thread_name_prefix=name,
                    initializer=limit_compute_threads,
                    initargs=(self.settings.search.compute_threads,),
                )
                setattr(self, attr, executor)
            return executor

    def pool(self) -> ThreadPoolExecutor:
        return self._executor(
            "executor", self.settings.search.inference_threads, "clipsearch-infer"
        )

    def search_pool(self) -> ThreadPoolExecutor:
        return self._executor(
            "search_executor", self.settings.search.search_threads, "clipsearch-search"
        )

    async def run_search(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a search (index, catalog, ranking) on the search pool: at most
        ``search_threads`` at once, the rest wait their turn. A search is mostly Python holding
        the GIL between short C calls (FAISS, SQLite); sixteen of them on sixteen threads hand
        the GIL around and finish slower than two at a time do (bench/results/service.md)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.search_pool(), lambda: fn(*args, **kwargs))

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking work (model, decode) on the inference pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool(), lambda: fn(*args, **kwargs))

    def search(
        self,
        vector: np.ndarray,
        k: int = 20,
        offset: int = 0,
        min_score: float | None = None,
        filters: SearchFilters | None = None,
    ) -> list[Hit]:
        """``library.search`` from a worker thread, with that thread's OpenMP team limited."""
        limit_compute_threads(self.settings.search.compute_threads)
        return self.library.search(vector, k=k, offset=offset, min_score=min_score, filters=filters)

    def close(self) -> None:
        """Stop the encoder thread and the pool; a later request (or lifespan) starts new ones.

        The library is not closed here: whoever made it owns it (create_app's caller, or the
        CLI); an app may be started and stopped several times (tests, reloads).
        """
        with self._lock:
            encoder, self.encoder, self._encoder_model = self.encoder, None, None
            executor, self.executor = self.executor, None
            searches, self.search_executor = self.search_executor, None
        if encoder is not None:
            encoder.close()
        for pool in (executor, searches):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


# The dependencies below (and service.auth's) are ``async def``: they do no I/O, and a plain
# ``def`` would cost every request a hop to the thread pool and back for each of them.
async def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        raise HTTPException(503, detail="the service is not initialised yet; retry in a moment")
    return state


async def get_settings(state: Annotated[ServiceState, Depends(get_state)]) -> Settings:
    return state.settings


async def get_library(state: Annotated[ServiceState, Depends(get_state)]) -> LibraryFacade:
    return state.library


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
LibraryDep = Annotated[LibraryFacade, Depends(get_library)]
