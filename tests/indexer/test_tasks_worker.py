"""The task path with a REAL Celery worker process and a real broker (not eager mode).

Catalogs: SQLite and PostgreSQL. Brokers: Redis, and the embedded SQLite broker that
``clipsearch serve`` uses. Jobs are submitted through the Library, exactly as the API does.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from workerutil import make_images, running_worker, wait_for, worker_config

from clipsearch.indexer import catalog
from clipsearch.indexer.catalog import Embedding, Image
from clipsearch.indexer.library import Library, LibraryConfig
from clipsearch.indexer.worker import WorkerProcess

pytestmark = pytest.mark.slow


def _library(
    data_dir: Path, model_dir: Path, database_url: str | None, broker_url: str | None, prefix: str
) -> Library:
    return Library(
        LibraryConfig(
            data_dir=data_dir,
            database_url=database_url,
            broker_url=broker_url,
            queue_prefix=prefix,
            model_spec=str(model_dir),
            device="cpu",
            refresh_interval_s=0.0,
        )
    )


def _counts(lib: Library) -> tuple[int, int]:
    with lib.Session() as s:
        ready = s.scalar(
            sa.select(sa.func.count()).select_from(Image).where(Image.state == "ready")
        )
        embeddings = s.scalar(sa.select(sa.func.count()).select_from(Embedding))
    return int(ready or 0), int(embeddings or 0)


def _ingest_reindex_search(
    lib: Library, tmp_path: Path, start: Callable[[], AbstractContextManager[WorkerProcess]]
) -> None:
    paths = make_images(tmp_path / "photos", 16, seed=11)
    # A JPEG by its signature, cut off right after it: catalogued, then failed with a reason.
    (tmp_path / "photos" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    with start() as worker:
        job = lib.submit_ingest(str(tmp_path / "photos"))
        assert job.state == "queued"
        done = wait_for(
            lambda: (j := lib.get_job(job.id)).state in ("done", "failed") and j,
            timeout=120,
            what=f"ingest job {job.id}",
            worker=worker,
        )
        assert done.state == "done", done
        assert (done.total, done.done, done.failed) == (17, 16, 1)
        assert any(e["path"].endswith("cut.jpg") for e in done.errors)
        assert _counts(lib) == (16, 16)
        lib.refresh_index()

        # Searchable at once, before any index build: each image finds itself.
        ids = {Path(catalog.path_from_db(i.path)).name: i.id for i in lib.list_images(limit=100)[0]}
        for path in paths[:4]:
            vec = lib.image_vector(ids[path.name])
            assert lib.search(vec, k=1)[0].id == ids[path.name]

        reindex = lib.submit_reindex()
        seen: list[tuple[str, int]] = []
        finished = lib.wait_for_job(
            reindex.id,
            timeout=120,
            on_progress=lambda j: seen.append((j.state, j.done)),
            poll_s=0.05,
        )
        assert finished.state == "done", finished
        assert seen[-1] == ("done", 16)
        assert [d for _, d in seen] == sorted(d for _, d in seen)  # progress only moves forward
        lib.refresh_index()
        stats = lib.stats()
        assert stats.index.version == 1
        assert stats.index.size == 16 and stats.index.delta == 0
        assert (lib.data_dir / "index" / "manifest.json").is_file()
        for path in paths[4:8]:
            vec = lib.image_vector(ids[path.name])
            assert lib.search(vec, k=1)[0].id == ids[path.name]
        # Running the same job's task again is a no-op: it checks the catalog first.
        lib.celery.send_task("clipsearch.ingest_folder", args=[job.id])
        again = lib.submit_reindex()
        wait_for(
            lambda: lib.get_job(again.id).state == "done", 120, "second reindex", worker=worker
        )
    assert _counts(lib) == (16, 16)  # nothing embedded twice
    assert lib.get_job(job.id).done == 16


def test_real_worker_redis_sqlite(tmp_path: Path, redis_url: str, tiny_model_dir: Path) -> None:
    lib = _library(tmp_path / "data", tiny_model_dir, None, redis_url, "t-")
    cfg = worker_config(
        tmp_path / "data", str(tiny_model_dir), lib.database_url, redis_url, queue_prefix="t-"
    )
    try:
        _ingest_reindex_search(lib, tmp_path, lambda: running_worker(cfg))
    finally:
        lib.close()


@pytest.mark.postgres
def test_real_worker_redis_postgres(
    tmp_path: Path, redis_url: str, pg_url: str, tiny_model_dir: Path
) -> None:
    lib = _library(tmp_path / "data", tiny_model_dir, pg_url, redis_url, "t-")
    cfg = worker_config(
        tmp_path / "data", str(tiny_model_dir), pg_url, redis_url, queue_prefix="t-"
    )
    cfg = dataclasses.replace(cfg, concurrency=2)  # two tasks at once, one model (threads pool)
    try:
        _ingest_reindex_search(lib, tmp_path, lambda: running_worker(cfg))
    finally:
        lib.close()


def test_real_worker_embedded_sqlite_broker(tmp_path: Path, tiny_model_dir: Path) -> None:
    """No Redis: the broker is a SQLite file in the data folder, and the worker is the child
    process `clipsearch serve` starts with Library.start_embedded_worker()."""
    lib = _library(tmp_path / "data", tiny_model_dir, None, None, "")
    started: list[WorkerProcess] = []

    @contextlib.contextmanager
    def embedded() -> Iterator[WorkerProcess]:
        worker = lib.start_embedded_worker(
            device="cpu",
            batch_size=8,
            decode_workers=1,
            extra_env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        started.append(worker)
        worker.wait_ready(90)
        yield worker

    try:
        _ingest_reindex_search(lib, tmp_path, embedded)
        assert (lib.data_dir / "broker.sqlite").is_file()
        assert started[0].is_alive()
    finally:
        lib.close()
    # close() stopped the worker cleanly (SIGTERM, warm shutdown), not by killing it.
    assert not started[0].is_alive()
    assert started[0].popen.returncode == 0


def test_broker_losing_its_queue_loses_no_job(
    tmp_path: Path, redis_url: str, tiny_model_dir: Path
) -> None:
    """FLUSHDB mid-job throws away every queued batch; the catalog still knows the job."""
    lib = _library(tmp_path / "data", tiny_model_dir, None, redis_url, "f-")
    make_images(tmp_path / "photos", 60, seed=12)
    cfg = worker_config(
        tmp_path / "data", str(tiny_model_dir), lib.database_url, redis_url,
        batch_size=4, embed_delay_s=0.1, queue_prefix="f-",
    )  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    try:
        with running_worker(cfg, name="first") as worker:
            job = lib.submit_ingest(str(tmp_path / "photos"))
            wait_for(
                lambda: (j := lib.get_job(job.id)).total is not None and 0 < j.done < j.total,
                timeout=120,
                what="the job to be part done",
                worker=worker,
            )
            client.flushdb()  # the broker forgets every queued message
        partial = lib.get_job(job.id)
        assert partial.state == "running" and partial.done < 60
        # Nothing is left in the broker for this job: only the catalog remembers it.
        assert not any(b"clipsearch" in key for key in client.keys("*"))
        with running_worker(cfg, name="second") as worker:
            final = wait_for(
                lambda: (j := lib.get_job(job.id)).state in ("done", "failed") and j,
                timeout=180,
                what="the job to complete after the flush",
                worker=worker,
            )
        assert final.state == "done", final
        assert (final.total, final.done, final.failed) == (60, 60, 0)
        assert _counts(lib) == (60, 60)
    finally:
        client.close()
        lib.close()


def test_index_compression_setting_is_read_and_checked() -> None:
    """CLIPSEARCH_INDEX_COMPRESSION chooses the IVF codes; a typo is a clear error, not a
    silently uncompressed index."""
    from clipsearch.indexer.errors import IndexerError
    from clipsearch.indexer.settings import LibrarySettings
    from clipsearch.indexer.worker import worker_environment

    def read(env: dict[str, str]) -> str | None:
        return LibrarySettings.from_env(env).worker_config().index_compression

    assert read({}) is None
    assert read({"CLIPSEARCH_INDEX_COMPRESSION": "none"}) is None
    assert read({"CLIPSEARCH_INDEX_COMPRESSION": " SQ8 "}) == "sq8"
    # What `serve` hands to the worker process it starts keeps the choice: nothing to add when
    # the environment carries it, the variable when it does not.
    cfg = LibrarySettings.from_env({"CLIPSEARCH_INDEX_COMPRESSION": "sq8"}).worker_config()
    carried = {"CLIPSEARCH_INDEX_COMPRESSION": "sq8"}
    assert "CLIPSEARCH_INDEX_COMPRESSION" not in worker_environment(cfg, carried)
    assert read(worker_environment(cfg, {})) == "sq8"
    with pytest.raises(IndexerError, match="sq8"):
        read({"CLIPSEARCH_INDEX_COMPRESSION": "sq4"})
