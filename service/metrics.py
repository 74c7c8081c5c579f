"""Prometheus metrics, one ``CollectorRegistry`` per app (test apps never collide).

Names follow Prometheus' conventions (docs/operations.md#metrics lists them): a unit suffix
(``_seconds``, ``_bytes``), ``_total`` on counters, which count from the process's start and are
read with ``rate()``; gauges say what is true now. Besides its own, the page carries
``clipsearch_build_info`` and the process, platform and GC collectors
(indexer.worker_metrics.add_standard_collectors, which each worker's page carries too).

- ``clipsearch_http_request_duration_seconds{method,route,status}``: latency by route template.
  Every label comes from a closed set, whatever a client sends: the method is one of
  :data:`METHODS` or ``other``, the route a template of the app's routes (``/`` for the gallery,
  ``unmatched`` for any other path under /api), the status a number the app answered with.
- ``clipsearch_search_stage_duration_seconds{stage}``: the stages of a search
  (indexer.timing: encode, vector_search, keyword_search, catalog).
- ``clipsearch_searches_total{kind}``: searches served (text, image, similar).
- ``clipsearch_query_cache_{hits,misses}_total``, ``clipsearch_text_batches_total``: the encoder.
- From the catalog at scrape time: ``clipsearch_catalog_up``, ``clipsearch_images{state}``,
  ``clipsearch_jobs{state}`` (queued, running), ``clipsearch_index_vectors`` (the served index),
  ``clipsearch_index_size_bytes`` (its files, FAISS).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipsearch.indexer.context import index_dir
from clipsearch.indexer.facade import LibraryFacade
from clipsearch.indexer.timing import STAGES, add_observer
from clipsearch.indexer.worker_metrics import add_standard_collectors

if TYPE_CHECKING:
    from .query import TextEncoder

log = logging.getLogger(__name__)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LibraryCollector(Collector):
    """Reads the catalog when Prometheus scrapes; a catalog outage shows as catalog_up 0."""

    def __init__(
        self,
        get_library: Callable[[], LibraryFacade | None],
        get_encoder: Callable[[], TextEncoder | None],
    ) -> None:
        self._get_library = get_library
        self._get_encoder = get_encoder

    def describe(self) -> list[Metric]:
        return []  # collected lazily: nothing to check at registration time

    def collect(self) -> Iterator[Metric]:
        encoder = self._get_encoder()
        if encoder is not None:
            yield CounterMetricFamily(
                "clipsearch_query_cache_hits",
                "Query embeddings served from the LRU cache.",
                value=encoder.cache.hits,
            )
            yield CounterMetricFamily(
                "clipsearch_query_cache_misses",
                "Query embeddings that had to be computed.",
                value=encoder.cache.misses,
            )
            yield CounterMetricFamily(
                "clipsearch_text_batches",
                "Batched text-encoder forward passes.",
                value=encoder.batches,
            )
        library = self._get_library()
        up = GaugeMetricFamily("clipsearch_catalog_up", "1 when the catalog answered this scrape.")
        if library is None:
            up.add_metric([], 0)
            yield up
            return
        try:
            stats = library.stats()
        except Exception as exc:  # the scrape must not fail because the DB is down
            log.warning("metrics: catalog unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        images = stats.images
        g = GaugeMetricFamily(
            "clipsearch_images", "Images in the catalog by state.", labels=["state"]
        )
        for state, count in (
            ("ready", images.ready),
            ("failed", images.failed),
            ("pending", images.pending),
        ):
            g.add_metric([state], float(count))
        yield g
        yield GaugeMetricFamily(
            "clipsearch_index_vectors",
            "Vectors in the served index (including those added since its build).",
            value=float(stats.index.size + stats.index.delta),
        )
        size = self._index_bytes(library, stats.index.store)
        if size is not None:
            yield GaugeMetricFamily(
                "clipsearch_index_size_bytes",
                "The FAISS index files on disk (every version kept).",
                value=float(size),
            )

        jobs_by_state = GaugeMetricFamily(
            "clipsearch_jobs", "Jobs queued or running, by state.", labels=["state"]
        )
        jobs_by_state.add_metric(["queued"], float(stats.jobs.queued))
        jobs_by_state.add_metric(["running"], float(stats.jobs.running))
        yield jobs_by_state

    @staticmethod
    def _index_bytes(library: LibraryFacade, store: str | None) -> int | None:
        """The size of the FAISS index folder (None: Milvus, or no data folder known)."""
        data_dir = getattr(getattr(library, "config", None), "data_dir", None)
        if store == "milvus" or data_dir is None:
            return None
        try:
            files = index_dir(Path(data_dir).expanduser()).rglob("*")
            return sum(f.stat().st_size for f in files if f.is_file())
        except OSError:
            return None


class Metrics:
    """The metrics of one app instance."""

    def __init__(
        self,
        get_library: Callable[[], LibraryFacade | None] = lambda: None,
        get_encoder: Callable[[], TextEncoder | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.request_latency = Histogram(
            "clipsearch_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.searches = Counter(
            "clipsearch_searches", "Searches served, by kind.", ["kind"], registry=self.registry
        )
        self.stages = Histogram(
            "clipsearch_search_stage_duration_seconds",
            "The stages of a search: encode, vector_search, keyword_search, catalog.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        for stage in STAGES:  # every stage on the page from the start, at zero
            self.stages.labels(stage)
        add_observer(self.observe_stage)
        add_standard_collectors(self.registry)
        self.registry.register(LibraryCollector(get_library, get_encoder))

    def observe_stage(self, stage: str, seconds: float) -> None:
        if stage in STAGES:
            self.stages.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Pure ASGI middleware that observes each HTTP request under its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                "/" if not scope.get("path", "").startswith("/api") else "unmatched"
            )
            method = scope.get("method", "")
            self.metrics.request_latency.labels(
                method if method in METHODS else "other", template, str(status)
            ).observe(time.perf_counter() - start)
