"""Celery tasks: thin wrappers that take ids and call the plain functions of indexer.runs and
indexer.reindex (ingest, embed a batch, re-index, resume) and indexer.ocr_job.

Every task is safe to run twice (a redelivered message, a job re-enqueued by recovery, two workers
racing): the functions it calls read the job and the images from the catalog and skip what is
already done. A catalog or vector store that is down makes the task retry later; any other error
fails the job with its message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from celery import Celery

from .celery_app import (
    TASK_EMBED,
    TASK_INGEST,
    TASK_OCR,
    TASK_REINDEX,
    TASK_RESUME,
    task,
)
from .jobs import context_of as _ctx
from .jobs import run_guarded
from .reindex import run_reindex
from .runs import run_embed_batch, run_ingest, run_resume

if TYPE_CHECKING:
    from celery import Task

    from .types import BatchResult

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = ["register_tasks"]


def register_tasks(app: Celery) -> dict[str, Callable[..., object]]:
    """Register clipsearch's tasks on ``app`` (carrying a WorkerContext as ``app.clipsearch``)."""

    def guarded(task: Task, job_id: int, fn: Callable[[], T]) -> T | None:
        return run_guarded(app, task, job_id, fn)

    @task(app, TASK_INGEST)
    def ingest_folder(self: Task, job_id: int) -> None:
        guarded(self, job_id, lambda: run_ingest(_ctx(app), app, job_id))

    @task(app, TASK_EMBED)
    def embed_batch(self: Task, job_id: int, image_ids: list[int]) -> BatchResult | None:
        # the batch's outcome goes to task_postrun's receivers (indexer.worker_metrics)
        return guarded(self, job_id, lambda: run_embed_batch(_ctx(app), job_id, image_ids, app))

    @task(app, TASK_REINDEX)
    def reindex(self: Task, job_id: int) -> None:
        guarded(self, job_id, lambda: run_reindex(_ctx(app), job_id))

    @task(app, TASK_OCR)
    def ocr_images(self: Task, job_id: int) -> None:
        from .ocr_job import run_ocr

        guarded(self, job_id, lambda: run_ocr(_ctx(app), job_id))

    @task(app, TASK_RESUME)
    def resume_job(self: Task, job_id: int) -> None:
        guarded(self, job_id, lambda: run_resume(_ctx(app), app, job_id))

    return {
        "ingest_folder": ingest_folder,
        "embed_batch": embed_batch,
        "reindex": reindex,
        "resume_job": resume_job,
        "ocr_images": ocr_images,
    }
