"""``clipsearch serve``: the API and gallery, the embedded worker, and the first ingestion."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from .settings import Settings, is_loopback

log = logging.getLogger(__name__)


class ServeError(Exception):
    """serve cannot start; the message says what to do."""


def worker_config(settings: Settings, **overrides: Any) -> Any:
    """The indexer's WorkerConfig for these settings.

    The worker-only knobs (``CLIPSEARCH_WORKER_CONCURRENCY``, ``CLIPSEARCH_EMBED_BATCH_SIZE``,
    ``CLIPSEARCH_DECODE_WORKERS``, ``CLIPSEARCH_STALE_AFTER_S``, ...) come from the environment as
    ``python -m indexer.worker`` reads them; the shared ones from ``settings`` (flags win).
    """
    from dataclasses import replace

    from indexer.worker import WorkerConfig

    return replace(
        WorkerConfig.from_env(),
        data_dir=settings.data_dir,
        model_spec=settings.model,
        database_url=settings.database_url,
        broker_url=settings.broker_url,
        queue_prefix=settings.queue_prefix,
        device=settings.device,
        **overrides,
    )


def start_embedded_worker(settings: Settings) -> Any:
    """Start a worker child process (it stops when this process dies)."""
    from indexer.worker import start_worker_process

    worker = start_worker_process(worker_config(settings), die_with_parent=True)
    log.info("embedded worker started (pid %d, log %s)", worker.pid, worker.log_path)
    return worker


@dataclass
class ServeHandle:
    """What ``prepare`` started: the library, the worker, the jobs submitted for --images."""

    library: Any
    worker: Any = None
    jobs: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        if self.worker is not None:
            try:
                self.worker.stop()
            except Exception:  # pragma: no cover - best effort on shutdown
                log.exception("stopping the embedded worker failed")
            self.worker = None


def prepare(settings: Settings, library: Any = None) -> ServeHandle:
    """Load the model (fail early, clearly), start the worker, queue the --images folders."""
    from .app import build_library

    for folder in settings.images:
        if not folder.is_dir():
            raise ServeError(f"--images {folder}: no such folder")
    lib = library if library is not None else build_library(settings)
    handle = ServeHandle(library=lib)
    if settings.preload_model:
        lib.model  # noqa: B018 - raises ModelError with the "how to get the weights" message
    if settings.embedded_worker:
        handle.worker = start_embedded_worker(settings)
    try:
        for folder in settings.images:
            job = lib.submit_ingest(str(folder), recursive=True)
            handle.jobs.append(job)
            log.info("ingesting %s as job %s", folder, job.id)
    except BaseException:
        handle.stop()
        raise
    return handle


def run(settings: Settings, library: Any = None) -> None:
    """Serve until interrupted."""
    import uvicorn

    from .app import create_app

    handle = prepare(settings, library)
    try:
        app = create_app(settings, library=handle.library)
        url_host = settings.host if ":" not in settings.host else f"[{settings.host}]"
        print(
            f"clipsearch: serving http://{url_host}:{settings.port}/ "
            f"(API docs at /docs, model {settings.model}, data in {settings.data_dir})",
            file=sys.stderr,
            flush=True,
        )
        if not is_loopback(settings.host) and settings.api_token is None:
            print(
                "clipsearch: WARNING: listening beyond loopback without an API token (--insecure)",
                file=sys.stderr,
            )
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        uvicorn.Server(config).run()
    finally:
        handle.stop()
