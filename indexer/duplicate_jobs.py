"""The duplicates job: measure the library's near-duplicate thresholds when they no longer
describe it (indexer.duplicate_thresholds), then bring the pairs and groups up to date
(indexer.duplicates.find_duplicates), with progress recorded on the job; and its Celery task."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa

from . import catalog
from .catalog import Embedding, Image, Job, bytes_to_vector
from .celery_app import TASK_DUPLICATES, task
from .context import active_model_spec
from .duplicate_thresholds import (
    MEASURE_VERSION,
    MIN_SAMPLE,
    PAIR_SAMPLE,
    DuplicateThresholds,
    Others,
    default_thresholds,
    measure,
    sample_thumbnails,
)
from .duplicates import (
    _MARK_LIMITS,
    NEAR_HASH_BITS,
    NEAR_SIMILARITY,
    SIMILAR_SIMILARITY,
    FindResult,
    applied_thresholds,
    content_hashes,
    find_duplicates,
    library_model_id,
    record_job,
)
from .duplicates_pixels import open_grey
from .picture_hash import dhash

if TYPE_CHECKING:
    from celery import Celery, Task

    from .context import WorkerContext
    from .facade import LibraryFacade
    from .types import JobInfo

log = logging.getLogger(__name__)


def submit(lib: LibraryFacade, full: bool = False) -> JobInfo:
    """Queue a duplicates job (or return the one queued or running). Returns its JobInfo."""
    with lib.Session() as session:
        job, created = record_job(session, full=full)
        info = catalog.job_info(job)
    if created:
        lib.send_job(TASK_DUPLICATES, info.id)
    return info


# --------------------------------------------------------------------------------------------
# The job and its task


def run_duplicates(ctx: WorkerContext, job_id: int) -> FindResult | None:
    """The ``duplicates`` job: :func:`find_duplicates` with the job's progress recorded."""
    from .jobs import FINAL_STATES, thumb_dir
    from .jobs import finish as _finish
    from .jobs import load_job as _load_job
    from .jobs import mark_running as _mark_running

    with ctx.session() as session:
        job = _load_job(session, job_id)
        if job is None:
            return None
        _mark_running(session, job)
        full = bool((job.params or {}).get("full"))
        previous = applied_thresholds(session)
    limits = _library_thresholds(ctx, previous, remeasure=full)
    measured_now = limits.mode != "default" and limits != previous
    if measured_now:  # every pair is classified again with the new thresholds
        full = True
        with ctx.session() as session:
            row = session.get(Job, job_id)
            if row is not None:
                row.params = {**(row.params or {}), "limits": limits.to_dict()}
                session.commit()

    def progress(done: int, total: int) -> None:
        with ctx.session() as session:
            row = session.get(Job, job_id)
            if row is not None and row.state not in FINAL_STATES:
                row.total, row.done = total, done
                row.heartbeat_at = catalog.utcnow()
                session.commit()

    result = find_duplicates(
        ctx.Session, thumb_dir(ctx), full=full, on_progress=progress, limits=limits
    )
    with ctx.session() as session:
        row = session.get(Job, job_id)
        if row is not None and row.state not in FINAL_STATES:
            row.params = {**(row.params or {}), "result": dataclasses.asdict(result)}
            if measured_now:
                catalog.set_mark(session, _MARK_LIMITS, job_id)
            _finish(session, row, "done")
    return result


def _library_thresholds(
    ctx: WorkerContext, previous: DuplicateThresholds | None, remeasure: bool
) -> DuplicateThresholds:
    """The thresholds to group with: ``previous`` while they still describe this library (same
    model, size within a factor of two, measured as today), else measured again on its pictures
    (a sample of its thumbnails, embedded by its model; indexer.duplicate_thresholds)."""
    from .jobs import thumb_dir

    with ctx.session() as session:
        model_id = library_model_id(session)
        rows = [
            (int(i), str(t))
            for i, t in session.execute(
                sa.select(Image.id, Image.thumbnail)
                .where(Image.state == "ready", Image.thumbnail.is_not(None))
                .order_by(Image.id)
            )
        ]
        spec = active_model_spec(session, ctx.config.model_spec)
    size = len(rows)
    if (
        previous is not None
        and not remeasure
        and previous.model_id == model_id
        and previous.version >= MEASURE_VERSION
        and previous.library_size / 2 <= size <= previous.library_size * 2
    ):
        return previous
    pictures = sample_thumbnails(rows, thumb_dir(ctx))
    if model_id is None or len(pictures) < MIN_SAMPLE:
        return previous or default_thresholds(NEAR_SIMILARITY, NEAR_HASH_BITS)
    others = _stored_pairs(ctx, rows, model_id)
    model = ctx.model(spec)
    limits = measure(
        pictures, lambda ims: model.embed_images(list(ims)), dhash, others=others,
        model_id=model_id, library_size=size, floor=SIMILAR_SIMILARITY,
    )  # fmt: skip
    log.info("duplicates: %s", limits.reason)
    return limits


def _stored_pairs(ctx: WorkerContext, rows: list[tuple[int, str]], model_id: int) -> Others | None:
    """Stored vectors, picture hashes and thumbnails' grey levels (indexer.duplicates_pixels) of
    up to PAIR_SAMPLE pictures evenly spread over the library (``rows``: (id, thumbnail) in id
    order): its pairs of different pictures."""
    from .jobs import thumb_dir

    step = max(1, len(rows) // PAIR_SAMPLE)
    ids = [i for i, _ in rows[::step][:PAIR_SAMPLE]]
    found: dict[str, tuple[np.ndarray, str | None]] = {}
    with ctx.session() as session:
        for start in range(0, len(ids), 500):
            for sha, thumb, blob in session.execute(
                sa.select(Image.sha256, Image.thumbnail, Embedding.vector)
                .join(Embedding, Embedding.sha256 == Image.sha256)
                .where(Image.id.in_(ids[start : start + 500]), Embedding.model_id == model_id)
            ):
                if sha and sha not in found:
                    found[str(sha)] = (bytes_to_vector(blob), thumb)
        hashes = content_hashes(session, thumb_dir(ctx), {k: v[1] for k, v in found.items()})
        session.commit()  # the hashes computed are kept (ContentHash) for the job's pairs
    greys = {sha: open_grey(thumb_dir(ctx), thumb) for sha, (_, thumb) in found.items()}
    shas = [sha for sha in found if sha in hashes and greys[sha] is not None]
    if len(shas) < MIN_SAMPLE:
        return None
    return (
        np.stack([found[sha][0] for sha in shas]),
        [hashes[sha] for sha in shas],
        [g for sha in shas if (g := greys[sha]) is not None],
    )


def maybe_queue(ctx: WorkerContext, app: Celery) -> int | None:
    """After an ingest finished: queue a duplicates job unless one is queued or running."""
    with ctx.session() as session:
        job, created = record_job(session)
        job_id = int(job.id)
    if created:
        app.send_task(TASK_DUPLICATES, args=[job_id])
        return job_id
    return None


def register_tasks(app: Celery) -> dict[str, Callable[..., object]]:
    """Register the duplicates task on a worker app (see indexer.worker.create_worker_app)."""
    from .jobs import context_of, run_guarded

    @task(app, TASK_DUPLICATES)
    def find_duplicates_task(self: Task, job_id: int) -> None:
        run_guarded(app, self, job_id, lambda: run_duplicates(context_of(app), job_id))

    return {"find_duplicates": find_duplicates_task}
