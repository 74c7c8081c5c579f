"""Prometheus metrics, one ``CollectorRegistry`` per app (test apps never collide).

- ``clipsearch_http_request_duration_seconds{method,route,status}``: latency by route template.
  Every label comes from a closed set, whatever a client sends: the method is one of
  :data:`METHODS` or ``other``, the route a template of the app's routes (``/`` for the gallery,
  ``unmatched`` for any other path under /api), the status a number the app answered with.
- ``clipsearch_searches_total{kind}``: searches served (text, image, similar).
- ``clipsearch_query_cache_{hits,misses}_total``, ``clipsearch_text_batches_total``: the encoder.
- From the catalog at scrape time: ``clipsearch_images{state}``, ``clipsearch_jobs_queue_depth``
  (queued + running jobs), ``clipsearch_images_pending``, ``clipsearch_ingest_images_per_second``
  (processed images per second over the running ingest jobs), ``clipsearch_index_size``,
  ``clipsearch_catalog_up``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipsearch.indexer.facade import LibraryFacade

log = logging.getLogger(__name__)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


class LibraryCollector(Collector):
    """Reads the catalog when Prometheus scrapes; a catalog outage shows as catalog_up 0."""

    def __init__(
        self, get_library: Callable[[], LibraryFacade | None], get_encoder: Callable[[], Any]
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
            jobs = library.list_jobs(limit=200)
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
            "clipsearch_images_pending",
            "Images waiting to be embedded.",
            value=float(images.pending),
        )
        yield GaugeMetricFamily(
            "clipsearch_index_size",
            "Vectors in the served index (including the delta).",
            value=float(stats.index.size + stats.index.delta),
        )

        rate = 0.0
        now = _utcnow()
        for job in jobs:
            if job.state == "running" and job.kind in ("ingest", "reindex"):
                started = _as_utc(job.started_at) or _as_utc(job.created_at)
                if started is not None:
                    elapsed = max((now - started).total_seconds(), 1e-3)
                    rate += (job.done + job.failed) / elapsed
        # exact, not limited to the recent jobs listed
        depth = stats.jobs.queued + stats.jobs.running
        yield GaugeMetricFamily(
            "clipsearch_jobs_queue_depth", "Jobs queued or running.", value=float(depth)
        )
        yield GaugeMetricFamily(
            "clipsearch_ingest_images_per_second",
            "Images processed per second, summed over running ingest/reindex jobs.",
            value=rate,
        )


class Metrics:
    """The metrics of one app instance."""

    def __init__(
        self,
        get_library: Callable[[], Any] = lambda: None,
        get_encoder: Callable[[], Any] = lambda: None,
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
        self.registry.register(LibraryCollector(get_library, get_encoder))

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
