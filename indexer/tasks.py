"""Celery tasks: thin wrappers that take ids, check the catalog, and call plain functions.

Every task is safe to run twice (a redelivered message, a job re-enqueued by recovery, two workers
racing): it reads the job and the images from the catalog and skips what is already done. The
embedding table is unique per (content, model), so re-running a batch never stores a vector twice.

The logic lives in plain functions (here: :func:`run_ingest`, :func:`run_embed_batch`,
:func:`run_reindex`, :func:`run_delete`, :func:`run_resume`; and H4's ``indexer.ingest``) that take a
:class:`~indexer.worker.WorkerContext`, so tests can call them without a broker as well.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from celery import Celery

from . import catalog, jobs
from .catalog import Embedding, Image, IndexVersion, Job, ModelRecord
from .celery_app import (
    TASK_DELETE,
    TASK_EMBED,
    TASK_INGEST,
    TASK_OCR,
    TASK_REINDEX,
    TASK_RESUME,
)
from .context import WorkerContext
from .context import normalise_spec as normalise_spec  # the model spec as recorded
from .errors import IndexerError
from .vector_store import active_index_row

log = logging.getLogger(__name__)

FINAL_STATES = jobs.FINAL_STATES
CATALOG_RETRY_S = 10
CATALOG_RETRIES = 60
ERROR_SAMPLE = jobs.ERROR_SAMPLE

#: Generic prompts encoded by the current model to tune the IVF index for text queries (the
#: modality gap: text vectors do not come from the image distribution).
TUNING_PROMPTS: tuple[str, ...] = (
    "a photo of a dog", "a photo of a cat", "a photo of a person", "a group of people",
    "a portrait of a woman", "a portrait of a man", "a child playing", "a baby",
    "a photo of a car", "a bicycle", "a train", "an airplane in the sky", "a boat on the water",
    "a city street", "a building", "a house", "the inside of a room", "a kitchen",
    "a beach", "the ocean", "a mountain landscape", "a forest", "a field of flowers",
    "a sunset", "snow", "a river", "a desert", "the night sky",
    "food on a plate", "a cup of coffee", "fruit", "a birthday cake",
    "a screenshot", "a document with text", "a drawing", "a diagram", "a painting",
    "a red object", "something blue", "a black and white photo", "a blurry photo",
    "a close-up photo", "a bird", "a horse", "a flower", "a tree",
    "a computer", "a phone", "a book", "a sign", "a logo",
)  # fmt: skip


# Job bookkeeping: one state machine for every job kind (indexer.jobs); the names below are
# what this module's task functions use.
_now = jobs.now
_ctx = jobs.context_of
_load_job = jobs.load_job
_mark_running = jobs.mark_running
_finish = jobs.finish
_add_errors = jobs.add_errors
fail_job = jobs.fail_job
unfinished_job_ids = jobs.unfinished_job_ids


# --------------------------------------------------------------------------------------------
# The active model


def library_model_spec(session: Any) -> str | None:
    """The model this library uses, as the catalog records it: the active index's model, else
    the model that embedded the oldest vector (a library ingested but never re-indexed: every
    finished re-index activates an index, so with none active, vectors of any other model come
    from a re-index still under way, which must not take over searches before its flip); None
    for a new library. Two index look-ups."""
    row = active_index_row(session)
    model_id = row.model_id if row is not None else None
    if model_id is None:
        oldest = sa.select(sa.func.min(Embedding.id)).scalar_subquery()  # the key's first entry
        model_id = session.scalar(sa.select(Embedding.model_id).where(Embedding.id == oldest))
    if model_id is None:
        return None
    name = session.scalar(sa.select(ModelRecord.name).where(ModelRecord.id == model_id))
    return str(name) if name else None


def active_model_spec(session: Any, default: str) -> str:
    """The spec of the model searches and workers use: :func:`library_model_spec`, else
    ``default`` (the configured model, for a new library)."""
    return library_model_spec(session) or default


# --------------------------------------------------------------------------------------------
# Ingest


def _active_model(ctx: WorkerContext) -> tuple[Any, int]:
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
        if _load_job(session, job_id) is None:
            return []
    _model, model_id = _active_model(ctx)
    plan = ingest.plan_ingest(
        ctx.Session,
        job_id,
        model_id=model_id,
        batch_size=ctx.config.batch_size,
        thumb_dir=thumb_dir(ctx),
    )
    batches = [list(b) for b in plan.batches if b]
    store_write(ctx, model_id, [], list(plan.removed_ids))
    if app is not None:
        for batch in batches:
            app.send_task(TASK_EMBED, args=[job_id, batch])
    log.info("job %s: %d images to embed in %d batches", job_id, plan.total, len(batches))
    return batches


def run_embed_batch(
    ctx: WorkerContext, job_id: int, image_ids: Sequence[int], app: Celery | None = None
) -> Any:
    """Decode, thumbnail and embed one batch with the active model; one transaction."""
    from . import ingest

    ids = [int(i) for i in image_ids]
    with ctx.session() as session:
        if _load_job(session, job_id) is None:
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
    )
    store_write(ctx, model_id, result.ready_ids, result.failed_ids)
    if result.job_finished and app is not None:
        maybe_auto_reindex(ctx, app)
        from . import duplicates

        duplicates.maybe_queue(ctx, app)  # new images: update the duplicate groups
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
        job = _load_job(session, job_id)
        if job is None:
            return
        kind = job.kind
    log.info("resuming %s job %s", kind, job_id)
    if kind == "ingest":
        run_ingest(ctx, app, job_id)
    elif kind == "reindex":
        run_reindex(ctx, job_id)
    elif kind == "delete":
        run_delete(ctx, job_id)
    elif kind == "ocr":
        from .ocr_job import run_ocr

        run_ocr(ctx, job_id)
    elif kind == "duplicates":
        from .duplicates import run_duplicates

        run_duplicates(ctx, job_id)
    else:
        with ctx.session() as session:
            job = session.get(Job, job_id)
            if job is not None:
                _finish(session, job, "failed", f"unknown job kind {kind!r}")


# --------------------------------------------------------------------------------------------
# Re-index


def index_dir(ctx_or_data_dir: Any) -> Path:
    data_dir = getattr(ctx_or_data_dir, "data_dir", ctx_or_data_dir)
    return Path(data_dir) / "index"


def _missing_stmt(model_id: int, after_id: int, limit: int) -> Any:
    has = sa.exists().where(Embedding.sha256 == Image.sha256, Embedding.model_id == model_id)
    return (
        sa.select(Image.id, Image.path, Image.sha256)
        .where(Image.state == "ready", Image.sha256.is_not(None), ~has, Image.id > after_id)
        .order_by(Image.id)
        .limit(limit)
    )


def _store_vectors(session: Any, model_id: int, shas: list[str], vectors: np.ndarray) -> int:
    """Insert one embedding per content hash; hashes embedded meanwhile are skipped. Commits."""
    rows = [
        {
            "sha256": s,
            "model_id": model_id,
            "vector": catalog.vector_to_bytes(v),
            "created_at": _now(),
        }
        for s, v in zip(shas, vectors, strict=True)
    ]
    if not rows:
        return 0
    try:
        session.execute(sa.insert(Embedding), rows)
        session.commit()
        return len(rows)
    except sa.exc.IntegrityError:
        session.rollback()
    stored = 0
    for row in rows:  # someone else embedded some of these: insert the rest one by one
        try:
            with session.begin_nested():
                session.execute(sa.insert(Embedding), [row])
            stored += 1
        except sa.exc.IntegrityError:
            pass
    session.commit()
    return stored


def embed_missing(
    ctx: WorkerContext,
    model: Any,
    model_id: int,
    on_batch: Callable[[int, list[dict[str, str]]], None] | None = None,
    skip: set[int] | None = None,
) -> tuple[int, list[dict[str, str]]]:
    """Embed every ready image whose content has no vector for ``model_id`` (idempotent).

    Returns (vectors stored, errors). A file that vanished or changed since it was catalogued is
    reported, skipped, and its id added to ``skip``: the next scan of its folder brings the catalog
    up to date.
    """
    import torch

    from .decode import decode_many

    skip = skip if skip is not None else set()
    stored = 0
    errors: list[dict[str, str]] = []
    after = 0
    batch = max(1, ctx.config.batch_size)
    preprocess = getattr(model, "preprocessor", None)
    while True:
        with ctx.session() as session:
            rows = session.execute(_missing_stmt(model_id, after, batch)).all()
        if not rows:
            break
        after = rows[-1][0]
        pixels: list[np.ndarray] = []
        shas: list[str] = []
        batch_errors: list[dict[str, str]] = []
        todo: list[tuple[int, str, str]] = []
        for image_id, db_path, sha in rows:
            if image_id in skip or any(sha == t[2] for t in todo):
                continue
            todo.append((int(image_id), db_path, sha))
        results = decode_many(
            [catalog.path_from_db(p) for _, p, _ in todo],
            model.image_size,
            None,
            pool=ctx.decode_pool(),
            preprocess=preprocess,
        )
        for (image_id, db_path, sha), res in zip(todo, results, strict=True):
            if not res.ok or res.pixels is None:
                skip.add(image_id)
                batch_errors.append({"path": db_path, "reason": res.reason or "could not decode"})
            elif res.sha256 != sha:
                skip.add(image_id)
                batch_errors.append(
                    {
                        "path": db_path,
                        "reason": "the file changed since it was catalogued; ingest its folder again",
                    }
                )
            else:
                pixels.append(np.asarray(res.pixels, dtype=np.float32))
                shas.append(sha)
        if ctx.config.embed_delay_s > 0:  # test-only
            time.sleep(ctx.config.embed_delay_s)
        if pixels:
            vecs = model.embed_pixels(torch.from_numpy(np.stack(pixels)))
            with ctx.session() as session:
                stored += _store_vectors(session, model_id, shas, vecs)
        errors.extend(batch_errors)
        if on_batch is not None:
            on_batch(len(rows), batch_errors)
    return stored, errors


MAX_SWITCH_LOSS = 0.05  # a new model must embed at least 95% of the ready images to go live


def _count_covered(session: Any, model_id: int) -> int:
    has = sa.exists().where(Embedding.sha256 == Image.sha256, Embedding.model_id == model_id)
    return int(
        session.scalar(
            sa.select(sa.func.count()).select_from(Image).where(Image.state == "ready", has)
        )
        or 0
    )


def _progress(
    ctx: WorkerContext, job_id: int, model_id: int
) -> Callable[[int, list[dict[str, str]]], None]:
    """Progress of a re-index: counted once at the start (images whose content the model has
    embedded already), then advanced by each batch, so no batch counts the library."""
    with ctx.session() as session:
        covered = _count_covered(session, model_id)

    def update(n: int, errors: list[dict[str, str]]) -> None:
        nonlocal covered
        covered += max(0, n - len(errors))
        with ctx.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return
            job.done = covered if job.total is None else min(covered, int(job.total))
            job.failed = int(job.failed or 0) + len(errors)
            _add_errors(job, errors)
            job.heartbeat_at = _now()
            session.commit()

    return update


@contextlib.contextmanager
def _heartbeat(ctx: WorkerContext, job_id: int | None, every_s: float = 20.0) -> Iterator[None]:
    """Refresh the job's heartbeat from a side thread while a long step runs."""
    if job_id is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                with ctx.session() as session:
                    session.execute(
                        sa.update(Job).where(Job.id == job_id).values(heartbeat_at=_now())
                    )
                    session.commit()
            except Exception as exc:  # a missed beat only risks a duplicate (idempotent) run
                log.warning("job %s: heartbeat failed: %s", job_id, exc)

    thread = threading.Thread(target=beat, name=f"clipsearch-heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def build_and_activate(
    ctx: WorkerContext, model: Any, model_id: int, job_id: int | None = None
) -> int:
    """Build an index from the catalog's vectors for ``model_id``, save it, make it active.

    The catalog row and the flip happen in one transaction after the files are on disk, so API
    processes (which follow the catalog) switch to a complete index or not at all. Returns the
    catalog's index version.
    """
    from .vector_store import FaissStore

    store_config = ctx.config.store
    with ctx.session() as session:
        # Read before the vectors: a change committed meanwhile is also applied by the API's next
        # refresh (an upsert), never missed.
        change_seq = catalog.change_watermark(session)
        max_img = int(session.scalar(sa.select(sa.func.max(Image.id))) or 0)
        catalog.prune_tombstones(session)
        session.commit()
        next_version = int(session.scalar(sa.select(sa.func.max(IndexVersion.version))) or 0) + 1
        previous = active_index_row(session)
        keep = [] if previous is None else [str((previous.params or {}).get("collection", ""))]
    text = model.embed_texts(list(TUNING_PROMPTS))
    if store_config.kind == "milvus":
        return _build_and_activate_milvus(
            ctx, model, model_id, job_id, next_version, change_seq, text, keep
        )
    with ctx.session() as session:
        ids, vecs = catalog.load_vectors(session, model_id)
    if vecs.shape[1] == 0:
        vecs = np.zeros((0, int(model.embed_dim)), dtype=np.float32)
    meta = {
        "catalog_version": next_version,
        "model_id": model_id,
        "model": str(getattr(model, "name", "")),
        "change_seq": change_seq,
        "max_image_id": max_img,
        "job_id": job_id,
    }
    with _heartbeat(ctx, job_id):  # k-means on a big library takes minutes: stay visibly alive
        built = FaissStore.build(
            ids, vecs, text_queries=text, compression=ctx.config.index_compression, meta=meta
        )
        store_version = built.save(index_dir(ctx))
    info = built.metadata
    with ctx.session() as session:
        _activate_row(
            session,
            IndexVersion(
                version=next_version,
                model_id=model_id,
                kind=str(info.get("kind", "flat")),
                size=int(ids.size),
                path=str(index_dir(ctx)),
                params={
                    "store": "faiss",
                    "store_version": store_version,
                    "nprobe": info.get("nprobe"),
                    "nlist": info.get("nlist"),
                    "recall": info.get("recall"),
                    "change_seq": change_seq,
                    "max_image_id": max_img,
                },
                active=False,
            ),
        )
    log.info(
        "index version %d (%s, %d vectors, store v%d) is active",
        next_version,
        info.get("kind"),
        ids.size,
        store_version,
    )
    return next_version


def _activate_row(session: Any, row: IndexVersion) -> None:
    """Add ``row`` and make the newest version the active one: one statement, so two builds
    racing cannot leave two active rows, and whichever commits last with the higher version
    wins."""
    session.add(row)
    session.flush()
    newest = sa.select(sa.func.max(IndexVersion.version)).scalar_subquery()
    session.execute(
        sa.update(IndexVersion).values(
            active=sa.case((IndexVersion.version == newest, True), else_=False)
        )
    )
    session.commit()


def _build_and_activate_milvus(
    ctx: WorkerContext,
    model: Any,
    model_id: int,
    job_id: int | None,
    version: int,
    change_seq: int,
    text: np.ndarray,
    keep: list[str],
) -> int:
    """The Milvus flavour of :func:`build_and_activate`: a new collection from the catalog,
    active in the catalog once complete, then the alias flipped and older collections dropped."""
    from . import milvus_store

    config = ctx.config.store
    with _heartbeat(ctx, job_id):
        kind, size, params = milvus_store.build_version(
            config,
            ctx.Session,
            model_id,
            int(model.embed_dim),
            version,
            change_seq,
            text_queries=text,
        )
    with ctx.session() as session:
        _activate_row(
            session,
            IndexVersion(
                version=version,
                model_id=model_id,
                kind=kind,
                size=size,
                path=str(params["collection"]),
                params=params,
                active=False,
            ),
        )
    dropped = milvus_store.activate(config, str(params["collection"]), keep)
    log.info(
        "index version %d (Milvus collection %s, %s, %d vectors) is active; dropped %s",
        version, params["collection"], kind, size, dropped or "nothing",
    )  # fmt: skip
    return version


def run_reindex(ctx: WorkerContext, job_id: int) -> int | None:
    """Embed what the target model has not embedded, build its index, switch to it atomically.

    ``params["model"]`` names a new model (``clipsearch reindex --model DIR``); without it the
    active model is re-indexed. Until the flip, searches keep the old model and index.
    """
    with ctx.session() as session:
        job = _load_job(session, job_id)
        if job is None:
            return None
        _mark_running(session, job)
        spec = (job.params or {}).get("model") or active_model_spec(session, ctx.config.model_spec)
        total = catalog.state_counts(session).get("ready", 0)
        job.total = total
        session.commit()
    model = ctx.model(spec)
    model_id = catalog.ensure_model(ctx.Session, model)
    update = _progress(ctx, job_id, model_id)
    update(0, [])
    skip: set[int] = set()
    embed_missing(ctx, model, model_id, on_batch=update, skip=skip)
    with ctx.session() as session:
        active = active_index_row(session)
        switching = active is None or active.model_id != model_id
        covered = _count_covered(session, model_id)
    if switching and total and covered < total * (1 - MAX_SWITCH_LOSS):
        raise IndexerError(
            f"only {covered} of {total} images could be embedded with {spec} "
            f"({len(skip)} failed; see the job's errors); searches keep the current model. "
            "Fix or re-ingest the folders named in the errors, then re-index again"
        )
    version = build_and_activate(ctx, model, model_id, job_id)
    # Images ingested with the old model while this job ran: embed them with the new one too
    # (they reach searches through the index's delta).
    embed_missing(ctx, model, model_id, on_batch=update, skip=skip)
    with ctx.session() as session:
        job = session.get(Job, job_id)
        if job is not None and job.state not in FINAL_STATES:
            job.params = {**(job.params or {}), "index_version": version, "model": spec}
            _finish(session, job, "done")
    return version


# --------------------------------------------------------------------------------------------
# Delete


def run_delete(ctx: WorkerContext, job_id: int) -> int:
    """Delete the images listed in ``params["image_ids"]`` (those already gone are skipped)."""
    with ctx.session() as session:
        job = _load_job(session, job_id)
        if job is None:
            return 0
        _mark_running(session, job)
        ids = [int(i) for i in (job.params or {}).get("image_ids", [])]
        present = list(session.scalars(sa.select(Image.id).where(Image.id.in_(ids)))) if ids else []
        keys = catalog.delete_images(session, present)
        job.total = len(ids)
        job.done = len(ids)
        _finish(session, job, "done")
    catalog.remove_thumbnails(thumb_dir(ctx), keys)
    store_write(ctx, 0, [], present)
    return len(present)


# --------------------------------------------------------------------------------------------
# Registration


def register_tasks(app: Celery) -> dict[str, Any]:
    """Register clipsearch's tasks on ``app`` (carrying a WorkerContext as ``app.clipsearch``)."""
    from .errors import CatalogUnavailable, StoreUnavailable

    def guarded(task: Any, job_id: int, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (CatalogUnavailable, StoreUnavailable) as exc:
            # Nothing can be recorded while the catalog is down: try again later. If retries run
            # out, the job stays unfinished in the catalog and the next worker start resumes it.
            log.warning("job %s: %s; retrying in %d s", job_id, exc, CATALOG_RETRY_S)
            raise task.retry(
                exc=exc, countdown=CATALOG_RETRY_S, max_retries=CATALOG_RETRIES
            ) from exc
        except Exception as exc:
            # A failure a user must act on (folder gone, model missing, a bug): the job fails
            # with it instead of staying "running" for ever.
            if isinstance(exc, IndexerError):
                log.error("job %s failed: %s", job_id, exc)
            else:
                log.exception("job %s failed unexpectedly", job_id)
            fail_job(_ctx(app), job_id, exc)
            return None

    @app.task(name=TASK_INGEST, bind=True, acks_late=True, ignore_result=True)
    def ingest_folder(self: Any, job_id: int) -> None:
        guarded(self, job_id, lambda: run_ingest(_ctx(app), app, job_id))

    @app.task(name=TASK_EMBED, bind=True, acks_late=True, ignore_result=True)
    def embed_batch(self: Any, job_id: int, image_ids: list[int]) -> None:
        guarded(self, job_id, lambda: run_embed_batch(_ctx(app), job_id, image_ids, app))

    @app.task(name=TASK_REINDEX, bind=True, acks_late=True, ignore_result=True)
    def reindex(self: Any, job_id: int) -> None:
        guarded(self, job_id, lambda: run_reindex(_ctx(app), job_id))

    @app.task(name=TASK_DELETE, bind=True, acks_late=True, ignore_result=True)
    def delete_images(self: Any, job_id: int) -> None:
        guarded(self, job_id, lambda: run_delete(_ctx(app), job_id))

    @app.task(name=TASK_OCR, bind=True, acks_late=True, ignore_result=True)
    def ocr_images(self: Any, job_id: int) -> None:
        from .ocr_job import run_ocr

        guarded(self, job_id, lambda: run_ocr(_ctx(app), job_id))

    @app.task(name=TASK_RESUME, bind=True, acks_late=True, ignore_result=True)
    def resume_job(self: Any, job_id: int) -> None:
        guarded(self, job_id, lambda: run_resume(_ctx(app), app, job_id))

    return {
        "ingest_folder": ingest_folder,
        "embed_batch": embed_batch,
        "reindex": reindex,
        "delete_images": delete_images,
        "resume_job": resume_job,
        "ocr_images": ocr_images,
    }
