"""A worker's Prometheus metrics, served by each worker on its own port
(``CLIPSEARCH_WORKER_METRICS_PORT``; 0 serves none), at ``http://<host>:<port>/metrics``:

- ``clipsearch_worker_images_embedded_total``: images this worker made searchable;
- ``clipsearch_worker_decode_failures_total``: images it could not read (recorded as failed);
- ``clipsearch_worker_batch_duration_seconds``: one embedding batch, decode to commit;
- ``clipsearch_worker_tasks_total{task,state}``: tasks run, by name and how they ended;
- ``clipsearch_worker_queue_messages{queue}``: messages waiting in each clipsearch queue of the
  broker, read when scraped;
- ``clipsearch_build_info{version,python}`` and the process, platform and GC collectors.

A worker is one process (the threads or solo pool, see indexer.worker), so one registry per
process is the whole of it; several workers on one host each need their own port. Counters count
from the worker's start: read them with ``rate()``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from celery import Celery
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

__all__ = ["BATCH_BUCKETS", "WorkerMetrics", "add_standard_collectors", "start_worker_metrics"]

BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def add_standard_collectors(registry: CollectorRegistry) -> None:
    """What every clipsearch process exports besides its own: ``clipsearch_build_info`` and the
    process (CPU, memory, open files), platform (Python) and GC collectors. The ``_created``
    series of counters and histograms are left out (process-wide): in the text format they
    appear as gauges beside each counter, which Prometheus does not need to ``rate()``."""
    from importlib.metadata import PackageNotFoundError, version

    from prometheus_client import disable_created_metrics

    no_created: Callable[[], None] = disable_created_metrics  # untyped in prometheus_client
    no_created()

    try:
        release = version("clipsearch")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without metadata
        release = "unknown"
    info = Info("clipsearch_build", "The clipsearch release this process runs.", registry=registry)
    info.info({"version": release, "python": ".".join(map(str, sys.version_info[:3]))})
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)


def _waiting(channel: Any, queue: str) -> int:
    """Messages waiting in ``queue``. kombu's virtual transports (Redis, the embedded SQL one)
    count them with their ``_size``; their passive ``queue_declare`` misses a Redis queue under
    a key prefix. AMQP brokers answer the passive declare."""
    size = getattr(channel, "_size", None)
    if callable(size):
        return int(size(queue))
    return int(channel.queue_declare(queue=queue, passive=True).message_count)


class _QueueCollector(Collector):
    """The broker's queue lengths, read when scraped (bounded; a broker that does not answer
    shows as no samples and a log line)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "clipsearch_worker_queue_messages",
            "Messages waiting in each clipsearch queue of the broker.",
            labels=["queue"],
        )
        try:
            with self.app.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
                channel = conn.default_channel
                for queue in self.app.conf.task_queues or ():
                    family.add_metric([queue.name], float(_waiting(channel, queue.name)))
        except Exception as exc:  # the scrape must not fail because the broker is away
            log.warning("metrics: broker queue lengths unavailable: %s", exc)
        yield family


class WorkerMetrics:
    """The metrics of one worker process, fed by Celery's task signals."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.registry = CollectorRegistry(auto_describe=True)
        add_standard_collectors(self.registry)
        self.embedded = Counter(
            "clipsearch_worker_images_embedded",
            "Images this worker made searchable.",
            registry=self.registry,
        )
        self.decode_failures = Counter(
            "clipsearch_worker_decode_failures",
            "Images this worker could not read (recorded as failed).",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "clipsearch_worker_batch_duration_seconds",
            "One embedding batch, decode to commit.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.tasks = Counter(
            "clipsearch_worker_tasks",
            "Tasks this worker ran, by name and how they ended.",
            ["task", "state"],
            registry=self.registry,
        )
        self.registry.register(_QueueCollector(app))
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def task_started(self, sender: object = None, task_id: str = "", **_: object) -> None:
        if getattr(sender, "app", None) is self.app:
            with self._lock:
                self._started[task_id] = time.perf_counter()

    def task_ended(
        self,
        sender: object = None,
        task_id: str = "",
        retval: object = None,
        state: str | None = None,
        **_: object,
    ) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        from .celery_app import TASK_EMBED

        with self._lock:
            began = self._started.pop(task_id, None)
        name = str(getattr(sender, "name", "unknown"))
        self.tasks.labels(name, (state or "unknown").lower()).inc()
        if name != TASK_EMBED:
            return
        if began is not None:
            self.batch_seconds.observe(time.perf_counter() - began)
        done = getattr(retval, "done", None)
        failed = getattr(retval, "failed", None)
        if isinstance(done, int):
            self.embedded.inc(done)
        if isinstance(failed, int):
            self.decode_failures.inc(failed)

    def connect(self) -> None:
        from celery import signals

        signals.task_prerun.connect(self.task_started, weak=False)
        signals.task_postrun.connect(self.task_ended, weak=False)


def start_worker_metrics(app: Celery, port: int, addr: str = "0.0.0.0") -> WorkerMetrics | None:
    """Serve ``app``'s worker metrics on ``port`` (0: none). A port already taken is logged and
    the worker runs on without metrics: embedding matters more than its statistics."""
    if not port:
        return None
    from prometheus_client import start_http_server

    metrics = WorkerMetrics(app)
    try:
        start_http_server(port, addr=addr, registry=metrics.registry)
    except OSError as exc:
        log.error(
            "worker metrics not served: port %d: %s (set CLIPSEARCH_WORKER_METRICS_PORT to a "
            "free port, one per worker on a host)",
            port,
            exc.strerror or exc,
        )
        return None
    metrics.connect()
    log.info("worker metrics on http://%s:%d/metrics", addr, port)
    return metrics
