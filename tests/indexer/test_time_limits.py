"""Per-task time limits on the pools ``clipsearch worker`` runs (issue 23): Celery's threads and
solo pools ignore ``soft_time_limit``/``time_limit``, so indexer.time_limits enforces the limits
of celery_app.TIME_LIMITS itself. Real worker processes on a real Redis broker, an embedding
batch slowed down on purpose (the test-only per-batch delay):

- past the soft limit the batch is stopped and its job fails, saying it ran past its time
  limit; the worker goes on taking work;
- past the hard limit (the batch stuck where no exception reaches it) the worker process exits
  with status 70, naming the task in its log.

The waits are bounded; nothing is asserted about how fast anything runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from workerutil import make_images, running_worker, wait_for, worker_config

from clipsearch.indexer.celery_app import TASK_EMBED, TIME_LIMITS, batch_time_limits
from clipsearch.indexer.library import Library, LibraryConfig
from clipsearch.indexer.time_limits import EXIT_HARD_LIMIT
from clipsearch.indexer.worker import start_worker_process


def _library(tmp_path: Path, redis_url: str, model: Path, prefix: str) -> Library:
    return Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            broker_url=redis_url,
            queue_prefix=prefix,
            model_spec=str(model),
            device="cpu",
        )
    )


def test_every_task_has_limits_and_the_hard_one_comes_after_the_soft_one() -> None:
    assert TIME_LIMITS[TASK_EMBED] == batch_time_limits(600.0) == (600.0, 900.0)
    for name, (soft, hard) in TIME_LIMITS.items():
        assert 0 < soft < hard, name


def test_a_batch_past_its_soft_limit_fails_its_job_and_the_worker_goes_on(
    tmp_path: Path, redis_url: str, tiny_model_dir: Path
) -> None:
    slow, quick = tmp_path / "slow", tmp_path / "quick"
    make_images(slow, 2, seed=3, size=32)
    make_images(quick, 2, seed=4, size=32)
    lib = _library(tmp_path, redis_url, tiny_model_dir, "tl-")
    # soft limit 5 s (hard 10 s); every batch first sleeps 6 s
    cfg = dataclasses.replace(
        worker_config(
            tmp_path / "data", str(tiny_model_dir), lib.database_url, redis_url,
            embed_delay_s=6.0, queue_prefix="tl-",
        ),
        batch_time_limit_s=5.0,
    )  # fmt: skip
    try:
        with running_worker(cfg, name="limited") as worker:
            job = lib.submit_ingest(str(slow))
            failed = wait_for(
                lambda: (j := lib.get_job(job.id)).state in ("done", "failed") and j,
                timeout=120,
                what="the slow job to end",
                worker=worker,
            )
            assert failed.state == "failed", failed
            assert "time limit" in (failed.message or ""), failed
            assert worker.is_alive()
        log = Path(worker.log_path or "").read_text()
        assert "past its time limit of 5 s" in log
    finally:
        lib.close()

    # the same library with a worker whose batches are quick: the next job runs
    quick_cfg = dataclasses.replace(cfg, embed_delay_s=0.0)
    lib = _library(tmp_path, redis_url, tiny_model_dir, "tl-")
    try:
        with running_worker(quick_cfg, name="quick") as worker:
            job = lib.submit_ingest(str(quick))
            done = wait_for(
                lambda: (j := lib.get_job(job.id)).state in ("done", "failed") and j,
                timeout=120,
                what="the quick job to end",
                worker=worker,
            )
        assert done.state == "done", done
    finally:
        lib.close()


def test_a_batch_past_its_hard_limit_ends_the_worker_process(
    tmp_path: Path, redis_url: str, tiny_model_dir: Path
) -> None:
    photos = tmp_path / "photos"
    make_images(photos, 2, seed=5, size=32)
    lib = _library(tmp_path, redis_url, tiny_model_dir, "th-")
    # soft 2 s, hard 4 s; the batch sleeps 120 s first, where the soft limit cannot reach it
    cfg = dataclasses.replace(
        worker_config(
            tmp_path / "data", str(tiny_model_dir), lib.database_url, redis_url,
            embed_delay_s=120.0, queue_prefix="th-",
        ),
        batch_time_limit_s=2.0,
    )  # fmt: skip
    log = tmp_path / "hard.log"
    try:
        worker = start_worker_process(cfg, log_path=log, die_with_parent=True)
        worker.wait_ready(120)
        job = lib.submit_ingest(str(photos))
        assert worker.popen.wait(120) == EXIT_HARD_LIMIT
        text = log.read_text()
        assert f"task {TASK_EMBED}" in text and "past its hard time limit of 4 s" in text
        # the job is not lost: it stays unfinished in the catalog for the next worker
        assert lib.get_job(job.id).state in ("queued", "running")
    finally:
        lib.close()
