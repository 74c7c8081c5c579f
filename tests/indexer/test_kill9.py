"""A worker killed with SIGKILL in the middle of a job loses nothing.

A real worker process ingests ~200 generated images in small batches (with a test-only pause
before each batch, so the job is reliably mid-way when we look). When the catalog shows the job
part done, the worker gets SIGKILL: no shutdown code runs, its message is unacknowledged, its
batch half-done. A new worker starts; the job must complete with every image embedded exactly
once: one embedding row per image, the job's counts equal to the files, none lost, none twice.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa
from workerutil import make_images, running_worker, wait_for, worker_config

from clipsearch.indexer.catalog import Embedding, Image
from clipsearch.indexer.library import Library, LibraryConfig

pytestmark = pytest.mark.slow

N_IMAGES = 200


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    make_images(folder, N_IMAGES, seed=21, size=32)
    return folder


def _kill9_and_recover(lib: Library, photos: Path, cfg: object) -> None:
    with running_worker(cfg, name="doomed") as doomed:  # type: ignore[arg-type]
        job = lib.submit_ingest(str(photos))
        part = wait_for(
            lambda: (j := lib.get_job(job.id)).total is not None and 0 < j.done < j.total and j,
            timeout=120,
            what="the job to be part done",
            worker=doomed,
        )
        assert part.total == N_IMAGES
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.popen.wait(30)
        assert doomed.popen.returncode == -signal.SIGKILL
    interrupted = lib.get_job(job.id)
    assert interrupted.state == "running" and interrupted.done < N_IMAGES

    with running_worker(cfg, name="rescuer") as rescuer:  # type: ignore[arg-type]
        final = wait_for(
            lambda: (j := lib.get_job(job.id)).state in ("done", "failed") and j,
            timeout=240,
            what="the job to complete after the kill",
            worker=rescuer,
        )
    assert final.state == "done", final
    assert (final.total, final.done, final.failed) == (N_IMAGES, N_IMAGES, 0)
    with lib.Session() as s:
        states = dict(
            s.execute(sa.select(Image.state, sa.func.count()).group_by(Image.state)).all()
        )
        embeddings = s.scalar(sa.select(sa.func.count()).select_from(Embedding))
        distinct = s.scalar(sa.select(sa.func.count(sa.distinct(Embedding.sha256))))
        images = s.scalar(sa.select(sa.func.count()).select_from(Image))
    assert states == {"ready": N_IMAGES}
    assert images == N_IMAGES
    assert embeddings == distinct == N_IMAGES  # exactly once each
    # And every one of them is searchable.
    lib.refresh_index()
    assert lib.stats().index.delta == N_IMAGES


def test_kill9_mid_job_with_redis_broker(
    tmp_path: Path, redis_url: str, tiny_model_dir: Path, photos: Path
) -> None:
    lib = Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            broker_url=redis_url,
            queue_prefix="k-",
            model_spec=str(tiny_model_dir),
            device="cpu",
        )
    )
    cfg = worker_config(
        tmp_path / "data", str(tiny_model_dir), lib.database_url, redis_url,
        batch_size=5, embed_delay_s=0.05, queue_prefix="k-",
    )  # fmt: skip
    try:
        _kill9_and_recover(lib, photos, cfg)
    finally:
        lib.close()


def test_kill9_mid_job_with_embedded_broker(
    tmp_path: Path, tiny_model_dir: Path, photos: Path
) -> None:
    """The SQLite broker marks a delivered message invisible: SIGKILL orphans it for good, and
    only the catalog-driven recovery on worker start can finish the job."""
    lib = Library(
        LibraryConfig(data_dir=tmp_path / "data", model_spec=str(tiny_model_dir), device="cpu")
    )
    cfg = lib.config.worker_config(
        device="cpu",
        batch_size=5,
        decode_workers=1,
        embed_delay_s=0.05,
        extra_env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    try:
        _kill9_and_recover(lib, photos, cfg)
    finally:
        lib.close()
