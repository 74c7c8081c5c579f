"""Helpers for tests that run a REAL Celery worker process against a real broker.

Nothing here is a mock: :func:`running_worker` starts ``python -m indexer.worker`` as a child
process (the same entry point ``clipsearch worker`` uses), waits until it consumes its queue, and
stops it afterwards. Synchronisation is by polling the catalog with a deadline, never by sleeping a
guessed amount of time.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa
from PIL import Image

from clipsearch.indexer import catalog
from clipsearch.indexer.catalog import Embedding
from clipsearch.indexer.library import Library, LibraryConfig
from clipsearch.indexer.reindex import run_reindex
from clipsearch.indexer.runs import run_embed_batch, run_ingest
from clipsearch.indexer.vector_store import StoreConfig
from clipsearch.indexer.worker import (
    WorkerConfig,
    WorkerContext,
    WorkerProcess,
    start_worker_process,
)

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.02,
    worker: WorkerProcess | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``.

    When ``worker`` is given, a worker that died meanwhile fails the wait at once, with its log.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if worker is not None and not worker.is_alive():
            raise AssertionError(f"worker died while waiting for {what}:\n{worker_log(worker)}")
        if time.monotonic() > deadline:
            extra = f"\nworker log:\n{worker_log(worker)}" if worker is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def worker_log(worker: WorkerProcess, tail: int = 6000) -> str:
    if worker.log_path is None or not Path(worker.log_path).exists():
        return "(no log)"
    return Path(worker.log_path).read_text(errors="replace")[-tail:]


def worker_config(
    data_dir: Path,
    model_spec: str,
    database_url: str | None = None,
    broker_url: str | None = None,
    batch_size: int = 8,
    embed_delay_s: float = 0.0,
    queue_prefix: str | None = None,
) -> WorkerConfig:
    return WorkerConfig(
        data_dir=data_dir,
        model_spec=model_spec,
        database_url=database_url,
        broker_url=broker_url,
        queue_prefix=queue_prefix if queue_prefix is not None else f"t{uuid.uuid4().hex[:8]}-",
        device="cpu",
        batch_size=batch_size,
        decode_workers=1,
        embed_delay_s=embed_delay_s,
        # Single-threaded torch in the child: the CI machine has two cores for everyone.
        extra_env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )


@contextlib.contextmanager
def running_worker(
    config: WorkerConfig, name: str = "worker", timeout: float = 90.0
) -> Iterator[WorkerProcess]:
    """Start a real worker process, wait until it consumes, and stop it on exit."""
    log_path = Path(config.data_dir) / f"{name}-{uuid.uuid4().hex[:6]}.log"
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    worker = start_worker_process(config, log_path=log_path, loglevel="INFO", die_with_parent=True)
    try:
        worker.wait_ready(timeout)
        yield worker
    finally:
        worker.stop(timeout=30)


def make_images(
    folder: Path, count: int, seed: int = 0, size: int = 40, fmt: str = "JPEG"
) -> list[Path]:
    """Write ``count`` distinct random images (each its own colour pattern) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    suffix = {"PNG": ".png", "JPEG": ".jpg"}[fmt]
    for i in range(count):
        base = rng.integers(0, 256, size=(1, 1, 3))
        noise = rng.integers(0, 256, size=(size // 4, size // 4, 3))
        pixels = np.clip(0.5 * base + 0.5 * noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels, "RGB").resize((size, size), Image.NEAREST)
        path = folder / f"img_{seed}_{i:04d}{suffix}"
        img.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths


class Env:
    """A library plus an in-process worker context on the same catalog and data folder."""

    def __init__(
        self, data_dir: Path, model_dir: Path, database_url: str | None, store: Any = None
    ) -> None:
        store = store if store is not None else StoreConfig()
        self.store = store
        self.lib = Library(
            LibraryConfig(
                data_dir=data_dir,
                database_url=database_url,
                # Jobs are run in-process below; the message goes to an embedded broker file.
                model_spec=str(model_dir),
                device="cpu",
                refresh_interval_s=3600,  # the tests refresh explicitly
                store=store,
            )
        )
        self.ctx = WorkerContext(
            WorkerConfig(
                data_dir=data_dir,
                model_spec=str(model_dir),
                database_url=self.lib.database_url,
                device="cpu",
                batch_size=8,
                decode_workers=1,
                store=store,
            )
        )

    def ingest(self, folder: Path) -> int:
        job = self.lib.submit_ingest(str(folder))
        for batch in run_ingest(self.ctx, None, job.id):
            run_embed_batch(self.ctx, job.id, batch)
        info = self.lib.get_job(job.id)
        assert info.state == "done", info
        return job.id

    def reindex(self, model: str | None = None) -> int:
        job = self.lib.submit_reindex(model)
        run_reindex(self.ctx, job.id)
        info = self.lib.get_job(job.id)
        assert info.state == "done", info
        return job.id

    def ids_by_name(self) -> dict[str, int]:
        images, _ = self.lib.list_images(limit=1000)
        return {Path(catalog.path_from_db(i.path)).name: i.id for i in images}

    def count_embeddings(self) -> int:
        with self.lib.Session() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(Embedding)) or 0)

    def close(self) -> None:
        self.ctx.dispose()
        self.lib.close()
