"""What each kind of job does, as plain functions of a :class:`~indexer.context.WorkerContext`
(the Celery tasks in indexer.tasks only wrap them; tests call them without a broker): plan an
ingest and send its batches, embed a batch, resume an unfinished job. Each is safe
to run twice: it reads the job and the images from the catalog and skips what is already done.
Re-index is indexer.reindex; OCR indexer.ocr_job; duplicates indexer.duplicates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from celery import Celery

from . import catalog, jobs
from .catalog import Job
from .celery_app import TASK_EMBED, TASK_REINDEX
from .context import WorkerContext, active_model_spec
from .reindex import run_reindex
from .vector_store import active_index_row

if TYPE_CHECKING:
    from clipsearch.model.base import EmbeddingModel

    from .types import BatchResult

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_REINDEX_MIN",
    "AUTO_REINDEX_SHARE",
    "maybe_auto_reindex",
    "run_embed_batch",
    "run_ingest",
    "run_resume",
    "store_write",
    "thumb_dir",
]


def _active_model(ctx: WorkerContext) -> tuple[EmbeddingModel, int]:
    """The model searches use now (the active index's, else the configured one) and its id."""
    with ctx.session() as session:
        spec = active_model_spec(session, ctx.config.model_spec)
    model = ctx.model(spec)
    return model, catalog.ensure_model(ctx.Session, model)


def thumb_dir(ctx: WorkerContext) -> Path:
    return Path(jobs.thumb_dir(ctx))


def run_ingest(ctx: WorkerContext, app: Celery | None, job_id: int) -> list[list[int]]:
    """Plan an ingest job (scan, reconcile the catalog) and enqueue its batches.

    Re-running it (recovery, a redelivered message) plans what is still left: images that are
    pending, or ready without a vector from the active model, under the job's folder.
    Returns the batches (also sent to ``app`` when given).
    """
    from . import ingest

    with ctx.session() as session:
        if jobs.load_job(session, job_id) is None:
            return []
    _model, model_id = _active_model(ctx)
    plan = ingest.plan_ingest(
        ctx.Session,
        job_id,
        model_id=model_id,
        batch_size=ctx.config.batch_size,
        thumb_dir=thumb_dir(ctx),
        finish=False,
    )
    batches = [list(b) for b in plan.batches if b]
    store_write(ctx, model_id, [], list(plan.removed_ids))
    if not batches:  # nothing to embed: done once the removals left the shared store too
        with ctx.Session.begin() as session:
            jobs.finish_if_complete(session, job_id)
    if app is not None:
        for batch in batches:
            app.send_task(TASK_EMBED, args=[job_id, batch])
    log.info("job %s: %d images to embed in %d batches", job_id, plan.total, len(batches))
    return batches


def run_embed_batch(
    ctx: WorkerContext, job_id: int, image_ids: Sequence[int], app: Celery | None = None
) -> BatchResult | None:
    """Decode, thumbnail and embed one batch with the active model; one transaction."""
    from . import ingest

    ids = [int(i) for i in image_ids]
    with ctx.session() as session:
        if jobs.load_job(session, job_id) is None:
            return None
    if ctx.config.embed_delay_s > 0:  # test-only: widen the window a kill -9 test aims at
        time.sleep(ctx.config.embed_delay_s)
    model, model_id = _active_model(ctx)
    result = ingest.process_batch(
        ctx.Session,
        model,
        job_id,
        ids,
        thumb_dir(ctx),
        pool=ctx.decode_pool(),
        model_id=model_id,
        embed_batch_size=max(1, ctx.config.batch_size),
        text=ctx.config.ocr,  # captions, and the text inside images when OCR is on
        finish=False,
        device_decode=ctx.config.device_decode,  # JPEGs decoded on the model's GPU, or not
    )
    # Vectors reach a shared store (Milvus) before the job can be reported done: "done" means
    # every image of the job is searchable from every API replica.
    store_write(ctx, model_id, result.ready_ids, result.failed_ids)
    result.job_finished = ingest.finish_batch_job(ctx.Session, job_id, model_id)
    from .tag_jobs import after_batch  # zero-shot tags for the new pictures (indexer.tag_jobs)

    after_batch(ctx, app, model_id, result.ready_ids, result.job_finished)
    if result.job_finished and app is not None:
        maybe_auto_reindex(ctx, app)
        from . import duplicate_jobs

        duplicate_jobs.maybe_queue(ctx, app)  # new images: update the duplicate groups
    return result


def store_write(
    ctx: WorkerContext, model_id: int, upsert_ids: Sequence[int], delete_ids: Sequence[int]
) -> None:
    """Write what was just committed to the catalog through to a shared store (Milvus): an
    image is searchable as soon as its batch commits, a deletion is immediate. The embedded
    FAISS index needs nothing here: each API process follows the catalog itself."""
    if ctx.config.store.kind != "milvus" or not (upsert_ids or delete_ids):
        return
    from . import milvus_store

    milvus_store.write_through(ctx.config.store, ctx.Session, model_id, upsert_ids, delete_ids)


#: Unindexed vectors (beyond the last build) that make a finished ingest queue a rebuild: below
#: this the exact delta is as fast as IVF; the share keeps big libraries from rebuilding often.
AUTO_REINDEX_MIN = 20_000
AUTO_REINDEX_SHARE = 0.2


def maybe_auto_reindex(ctx: WorkerContext, app: Celery) -> int | None:
    """Queue a re-index when many images are searchable only through the delta (no rebuild is
    queued or running already). Returns the new job's id, if any."""
    with ctx.session() as session:
        busy = session.scalar(
            sa.select(sa.func.count())
            .select_from(Job)
            .where(Job.kind == "reindex", Job.state.in_(("queued", "running")))
        )
        if busy:
            return None
        ready = catalog.state_counts(session).get("ready", 0)
        row = active_index_row(session)
        indexed = 0 if row is None else int(row.size)
        if ready - indexed < max(AUTO_REINDEX_MIN, AUTO_REINDEX_SHARE * indexed):
            return None
        job = catalog.create_job(session, "reindex", {"auto": True})
        job_id = int(job.id)
    log.info(
        "%d images are not in the built index yet: queued re-index job %s", ready - indexed, job_id
    )
    app.send_task(TASK_REINDEX, args=[job_id])
    return job_id


def run_resume(ctx: WorkerContext, app: Celery | None, job_id: int) -> None:
    """Continue an unfinished job from what the catalog says is left (recovery)."""
    with ctx.session() as session:
        job = jobs.load_job(session, job_id)
        if job is None:
            return
        kind = job.kind
    log.info("resuming %s job %s", kind, job_id)
    if kind == "ingest":
        run_ingest(ctx, app, job_id)
    elif kind == "reindex":
        run_reindex(ctx, job_id)
    elif kind == "ocr":
        from .ocr_job import run_ocr

        run_ocr(ctx, job_id)
    elif kind == "duplicates":
        from .duplicate_jobs import run_duplicates

        run_duplicates(ctx, job_id)
    elif kind == "tags":
        from .tag_jobs import run_tags

        run_tags(ctx, job_id)
    elif kind == "albums":
        from .album_jobs import run_albums

        run_albums(ctx, job_id)
    else:
        with ctx.session() as session:
            job = session.get(Job, job_id)
            if job is not None:
                jobs.finish(session, job, "failed", f"unknown job kind {kind!r}")
