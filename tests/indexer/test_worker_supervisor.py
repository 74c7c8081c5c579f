"""The embedded worker ``clipsearch serve`` runs is started again when it ends on its own
(issue 23: a task past its hard time limit ends its worker on purpose, so that a fresh process
takes over; without a supervisor the embedded mode then ingested nothing until a restart).
Real worker processes on a real Redis broker; the waits are bounded, nothing is timed."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from workerutil import make_images, wait_for, worker_config

from clipsearch.indexer.library import Library, LibraryConfig
from clipsearch.indexer.worker import WorkerProcess, start_worker_process
from clipsearch.indexer.worker_supervisor import SupervisedWorker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def test_a_worker_ended_by_its_hard_time_limit_is_replaced_and_ingestion_goes_on(
    tmp_path: Path, redis_url: str, tiny_model_dir: Path
) -> None:
    stuck, later = tmp_path / "stuck", tmp_path / "later"
    make_images(stuck, 2, seed=11, size=32)
    make_images(later, 3, seed=12, size=32)
    lib = Library(
        LibraryConfig(
            data_dir=tmp_path / "data", broker_url=redis_url, queue_prefix="sv-",
            model_spec=str(tiny_model_dir), device="cpu",
        )
    )  # fmt: skip
    quick = worker_config(
        tmp_path / "data", str(tiny_model_dir), lib.database_url, redis_url, queue_prefix="sv-"
    )
    # the first worker's batches sleep 120 s where no exception reaches them: past the hard
    # limit (4 s) it ends itself; the workers started after it are quick
    hard = dataclasses.replace(quick, embed_delay_s=120.0, batch_time_limit_s=2.0)
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        cfg = hard if not started else quick
        worker = start_worker_process(
            cfg, log_path=tmp_path / f"worker-{len(started)}.log", die_with_parent=True
        )
        started.append(worker)
        return worker

    supervised = SupervisedWorker(start, poll_s=0.2, backoff_s=(0.5, 2.0))
    try:
        supervised.wait_ready(120)
        first_pid = supervised.pid
        lib.submit_ingest(str(stuck))
        wait_for(lambda: supervised.restarts == 1, timeout=180, what="the worker's restart")
        assert supervised.last_exit == "a task ran past its hard time limit"
        assert not _alive(first_pid)
        assert supervised.pid != first_pid
        supervised.wait_ready(120)
        # the new worker takes work: a folder ingested after the restart becomes searchable
        job = lib.submit_ingest(str(later))
        done = wait_for(
            lambda: (j := lib.get_job(job.id)).state in ("done", "failed") and j,
            timeout=180,
            what="the ingest after the restart",
        )
        assert done.state == "done", done
        assert done.done == 3, done
    finally:
        supervised.stop()
        lib.close()
    # stopping ends the supervision: no worker is started again and none is left running
    last = started[-1]
    time.sleep(1.0)
    assert len(started) == 2
    assert not _alive(last.pid)
