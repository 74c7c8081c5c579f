"""Re-index: embed what a model has not embedded yet, build the vector store from the catalog's
vectors (FAISS files or a Milvus collection), and make it the active version in one step, so
searches switch to a complete index or not at all. Plain functions of a
:class:`~indexer.context.WorkerContext`; the Celery task (indexer.tasks) only wraps
:func:`run_reindex`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import catalog, jobs
from .catalog import Embedding, Image, IndexVersion, Job
from .context import WorkerContext, active_model_spec, index_dir
from .errors import IndexerError
from .ingest import embed_decoded, store_vectors
from .vector_store import FaissStore, active_index_row

if TYPE_CHECKING:
    from clipsearch.model.base import EmbeddingModel

log = logging.getLogger(__name__)

__all__ = [
    "MAX_SWITCH_LOSS",
    "TUNING_PROMPTS",
    "build_and_activate",
    "embed_missing",
    "run_reindex",
]

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


def _missing_stmt(model_id: int, after_id: int, limit: int) -> sa.Select[int, str, str | None]:
    has = sa.exists().where(Embedding.sha256 == Image.sha256, Embedding.model_id == model_id)
    return (
        sa.select(Image.id, Image.path, Image.sha256)
        .where(Image.state == "ready", Image.sha256.is_not(None), ~has, Image.id > after_id)
        .order_by(Image.id)
        .limit(limit)
    )


def embed_missing(
    ctx: WorkerContext,
    model: EmbeddingModel,
    model_id: int,
    on_batch: Callable[[int, list[dict[str, str]]], None] | None = None,
    skip: set[int] | None = None,
) -> tuple[int, list[dict[str, str]]]:
    """Embed every ready image whose content has no vector for ``model_id`` (idempotent).

    Returns (vectors stored, errors). A file that vanished or changed since it was catalogued is
    reported, skipped, and its id added to ``skip``: the next scan of its folder brings the catalog
    up to date.
    """
    from .decode_pool import decode_many

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
        batch_errors: list[dict[str, str]] = []
        todo: list[tuple[int, str, str]] = []
        for image_id, db_path, sha in rows:
            if sha is None:  # never: the statement reads hashed pictures only
                continue
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
        good = []
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
                good.append(res)
        if ctx.config.embed_delay_s > 0:  # test-only
            time.sleep(ctx.config.embed_delay_s)
        vectors, _ = embed_decoded(model, good, set(), batch_size=batch)
        if vectors:
            with ctx.session() as session:
                store_vectors(session, model_id, vectors)
                session.commit()
            stored += len(vectors)
        errors.extend(batch_errors)
        if on_batch is not None:
            on_batch(len(rows), batch_errors)
    return stored, errors


MAX_SWITCH_LOSS = 0.05  # a new model must embed at least 95% of the ready images to go live


def _count_covered(session: Session, model_id: int) -> int:
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
            jobs.add_errors(job, errors)
            job.heartbeat_at = jobs.now()
            session.commit()

    return update


def build_and_activate(
    ctx: WorkerContext, model: EmbeddingModel, model_id: int, job_id: int | None = None
) -> int:
    """Build an index from the catalog's vectors for ``model_id``, save it, make it active.

    The catalog row and the flip happen in one transaction after the files are on disk, so API
    processes (which follow the catalog) switch to a complete index or not at all. Returns the
    catalog's index version.
    """
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
    with jobs.keep_alive(ctx, job_id):  # k-means on a big library takes minutes: stay visibly alive
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
                    "k_factor": info.get("k_factor"),  # ivf-fastscan: candidates re-ranked per hit
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


def _activate_row(session: Session, row: IndexVersion) -> None:
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
    model: EmbeddingModel,
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
    with jobs.keep_alive(ctx, job_id):
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
        job = jobs.load_job(session, job_id)
        if job is None:
            return None
        jobs.mark_running(session, job)
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
        if job is not None and job.state not in jobs.FINAL_STATES:
            job.params = {**(job.params or {}), "index_version": version, "model": spec}
            jobs.finish(session, job, "done")
    if switching:  # the tags follow the model searches use now (indexer.tag_jobs)
        from .tag_jobs import retag

        retag(ctx, model, model_id)
    return version
