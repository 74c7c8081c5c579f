"""Assigning tags: vector math over the stored embeddings, never a decode or a re-embed.

* :func:`tag_library` (the ``tags`` job, :data:`~indexer.celery_app.TASK_TAGS`, on the builds
  queue): embeds the tags the model has no vector for (their descriptions through their template
  ensemble), scores every picture of the library against every tag (one matrix product per
  chunk), calibrates each tag's threshold against the background (:mod:`indexer.tag_decisions`),
  and rewrites the automatic assignments; a person's confirmations and rejections are kept as
  they are.
* :func:`after_batch` (called where a batch of embeddings is committed, indexer.runs): tags the
  batch's pictures with the stored thresholds at once, and when the ingest is finished queues a
  full run if the calibration is missing or the library changed size by a quarter since.
* :func:`retag` (called by a re-index that switched models, indexer.reindex): the same full run
  with the new model, so the tags (and the smart albums) follow the model searches use.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from . import catalog
from .album_jobs import after_batch as albums_after_batch
from .album_jobs import refresh_albums
from .catalog import Job, ModelRecord
from .celery_app import TASK_TAGS, task
from .context import active_model_spec
from .errors import CatalogUnavailable, StoreUnavailable
from .jobs import FINAL_STATES, context_of, finish, load_job, mark_running, run_guarded
from .relevance import REFRESH_GROWTH, background_texts
from .tag_decisions import (
    BACKGROUND_TAGS,
    CALIBRATION_SAMPLE,
    DEFAULT_LOGIT_SCALE,
    MARGIN_SCALES,
    TARGET_PRECISION,
    Null,
    TagThreshold,
    calibrate_tag,
    decide,
    trusted_groups,
)
from .tag_vocabulary import TEMPLATE_SETS, embed_tags
from .tags import Tag, TagAssignment, TagVector, ensure_vocabulary, record_job, recount

if TYPE_CHECKING:
    from celery import Celery, Task

    from clipsearch.model.base import EmbeddingModel

    from .context import WorkerContext

log = logging.getLogger(__name__)

_MARK_MODEL = "tags_model"
_INSERT = 5_000

__all__ = ["TagRun", "after_batch", "register_tasks", "retag", "run_tags", "tag_library"]


@dataclass
class TagRun:
    tags: int = 0
    images: int = 0
    assigned: int = 0  # automatic assignments written
    kept: int = 0  # a person's decisions left as they were
    embedded: int = 0  # tags embedded for the model now
    per_tag: dict[str, int] = dataclasses.field(default_factory=dict)


def _lock(session: Session) -> None:
    """One writer of the assignments at a time (SQLite's write lock does it there)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(7342190553)"))


def logit_scale(model: EmbeddingModel) -> float:
    """The softmax scale of the model's zero-shot classifier (its learnt temperature)."""
    raw = getattr(model, "logit_scale", None)
    try:
        value = float(raw.detach().float().exp()) if raw is not None else DEFAULT_LOGIT_SCALE
    except (AttributeError, TypeError, ValueError):
        return DEFAULT_LOGIT_SCALE
    return value if np.isfinite(value) and value > 0 else DEFAULT_LOGIT_SCALE


def background_nulls(
    model: EmbeddingModel, sample: np.ndarray, template_sets: Sequence[str]
) -> dict[str, Null]:
    """Per template set: the background of meaningless tags (relevance's random-letter queries
    through that ensemble) scored against ``sample`` (library vectors)."""
    texts = background_texts()[:BACKGROUND_TAGS]
    out: dict[str, Null] = {}
    for name in sorted(set(template_sets)):
        templates = TEMPLATE_SETS[name]
        bg = embed_tags(model, [([t], templates) for t in texts])
        out[name] = Null.of(sample @ bg.T if len(sample) else np.zeros((0, len(bg))))
    return out


def tag_library(
    Session_: sessionmaker[Session],
    model: EmbeddingModel,
    model_id: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> TagRun:
    """Embed, calibrate and assign every tag over every picture with ``model`` (see the module
    docstring). Safe to run twice."""
    with Session_() as session:
        ensure_vocabulary(session)
        tags = list(session.scalars(sa.select(Tag).order_by(Tag.id)))
        stored = {
            int(v.tag_id): v
            for v in session.scalars(sa.select(TagVector).where(TagVector.model_id == model_id))
        }
        dim = int(session.scalar(sa.select(ModelRecord.dim).where(ModelRecord.id == model_id)) or 0)
        expected = catalog.state_counts(session).get("ready", 0)
        session.expunge_all()
    run = TagRun(tags=len(tags))
    if not tags:
        return run
    need = [t for t in tags if int(t.id) not in stored or len(stored[int(t.id)].vector) != 4 * dim]
    fresh = embed_tags(model, [(t.descriptions, TEMPLATE_SETS[t.templates]) for t in need])
    run.embedded = len(need)
    by_id = {int(t.id): fresh[i] for i, t in enumerate(need)}
    for t in tags:
        if int(t.id) not in by_id:
            by_id[int(t.id)] = catalog.bytes_to_vector(stored[int(t.id)].vector)
    T = np.stack([by_id[int(t.id)] for t in tags]).astype(np.float32)
    if on_progress:
        on_progress(0, expected)
    # one pass over the stored vectors in chunks: the scores [N, K] are kept, the vectors only
    # for an evenly spaced calibration sample (memory follows N x tags, not N x D)
    step = max(1, -(-expected // CALIBRATION_SAMPLE))
    id_parts, score_parts, sample_parts, pick_parts = [], [], [], []
    seen = 0
    with Session_() as session:
        for chunk_ids, chunk in catalog.iter_vectors(session, model_id):
            id_parts.append(chunk_ids)
            score_parts.append(chunk @ T.T)
            rows = np.flatnonzero((seen + np.arange(len(chunk_ids))) % step == 0)
            sample_parts.append(chunk[rows])
            pick_parts.append(rows + seen)
            seen += len(chunk_ids)
    ids = np.concatenate(id_parts) if id_parts else np.zeros(0, np.int64)
    S = np.concatenate(score_parts) if score_parts else np.zeros((0, len(tags)), np.float32)
    sample = np.concatenate(sample_parts) if sample_parts else np.zeros((0, dim), np.float32)
    pick = np.concatenate(pick_parts) if pick_parts else np.zeros(0, np.int64)
    run.images = len(ids)
    nulls = background_nulls(model, sample, [t.templates for t in tags])
    thresholds: list[TagThreshold] = [
        calibrate_tag(S[pick, k], nulls[t.templates], t.target_precision or TARGET_PRECISION)
        for k, t in enumerate(tags)
    ]
    groups = [t.group_name for t in tags]
    cuts, margins = [th.threshold for th in thresholds], [th.margin() for th in thresholds]
    softmax = trusted_groups(S, cuts, margins, groups, logit_scale(model))
    keep = decide(S, cuts, margins, groups, softmax)
    tag_ids = [int(t.id) for t in tags]
    now = catalog.utcnow()
    with Session_() as session:
        _lock(session)
        session.execute(sa.delete(TagVector).where(TagVector.model_id == model_id))
        for k, t in enumerate(tags):
            th = thresholds[k]
            session.add(
                TagVector(
                    tag_id=int(t.id),
                    model_id=model_id,
                    vector=catalog.vector_to_bytes(T[k]),
                    threshold=None if not np.isfinite(th.threshold) else th.threshold,
                    location=th.location,
                    scale=th.scale,
                    precision=th.precision,
                    softmax_scale=softmax[k],
                    library_size=len(ids),
                    calibrated_at=now,
                )
            )
        session.execute(
            sa.delete(TagAssignment).where(
                TagAssignment.tag_id.in_(tag_ids), TagAssignment.state == "auto"
            )
        )
        manual = {
            (int(a), int(b))
            for a, b in session.execute(
                sa.select(TagAssignment.tag_id, TagAssignment.image_id).where(
                    TagAssignment.state != "auto"
                )
            )
        }
        rows_i, cols_k = np.nonzero(keep)
        batch: list[dict[str, Any]] = []
        for i, k in zip(rows_i.tolist(), cols_k.tolist(), strict=True):
            key = (tag_ids[k], int(ids[i]))
            if key in manual:
                run.kept += 1
                continue
            batch.append(
                {
                    "tag_id": key[0],
                    "image_id": key[1],
                    "score": float(S[i, k]),
                    "state": "auto",
                    "updated_at": now,
                }
            )
            if len(batch) >= _INSERT:
                session.execute(sa.insert(TagAssignment), batch)
                run.assigned += len(batch)
                batch = []
        if batch:
            session.execute(sa.insert(TagAssignment), batch)
            run.assigned += len(batch)
        recount(session, tag_ids)
        catalog.set_mark(session, _MARK_MODEL, model_id)
        session.commit()
    run.per_tag = {t.name: int(keep[:, k].sum()) for k, t in enumerate(tags)}
    if on_progress:
        on_progress(len(ids), len(ids))
    log.info(
        "tags: %d tags over %d pictures, %d automatic assignments (%s)",
        len(tags), len(ids), run.assigned,
        ", ".join(f"{n} {c}" for n, c in run.per_tag.items() if c),
    )  # fmt: skip
    return run


def tag_images(Session_: sessionmaker[Session], model_id: int, image_ids: Sequence[int]) -> int:
    """Tag newly embedded pictures with the stored thresholds of ``model_id`` (nothing when no
    run calibrated the tags for it yet). Pictures that have a decision already keep it.
    Returns the assignments written."""
    ids_in = sorted({int(i) for i in image_ids})
    if not ids_in:
        return 0
    with Session_() as session:
        rows = list(
            session.execute(
                sa.select(TagVector, Tag.group_name)
                .join(Tag, Tag.id == TagVector.tag_id)
                .where(TagVector.model_id == model_id)
                .order_by(TagVector.tag_id)
            )
        )
        live = [(v, g) for v, g in rows if v.threshold is not None]
        if not live:
            return 0
        ids, vectors = catalog.load_vectors(session, model_id, ids_in)
        if not len(ids):
            return 0
        T = np.stack([catalog.bytes_to_vector(v.vector) for v, _ in rows])
        if T.shape[1] != vectors.shape[1]:
            return 0
        keep = decide(
            vectors @ T.T,
            [np.inf if v.threshold is None else v.threshold for v, _ in rows],
            [MARGIN_SCALES * (v.scale or 0.0) for v, _ in rows],
            [g for _, g in rows],
            [v.softmax_scale for v, _ in rows],
        )
        scores = vectors @ T.T
        tag_ids = [int(v.tag_id) for v, _ in rows]
        _lock(session)
        taken = {
            (int(a), int(b))
            for a, b in session.execute(
                sa.select(TagAssignment.tag_id, TagAssignment.image_id).where(
                    TagAssignment.image_id.in_([int(i) for i in ids])
                )
            )
        }
        now = catalog.utcnow()
        batch = [
            {
                "tag_id": tag_ids[k],
                "image_id": int(ids[i]),
                "score": float(scores[i, k]),
                "state": "auto",
                "updated_at": now,
            }
            for i, k in zip(*(a.tolist() for a in np.nonzero(keep)), strict=True)
            if (tag_ids[k], int(ids[i])) not in taken
        ]
        if batch:
            session.execute(sa.insert(TagAssignment), batch)
            recount(session, sorted({b["tag_id"] for b in batch}))
        session.commit()
    return len(batch)


def needs_run(session: Session, model_id: int) -> bool:
    """Whether a full run is due: a tag has no calibration for the model, or the library changed
    size by more than a quarter since the calibration."""
    n_tags = session.scalar(sa.select(sa.func.count()).select_from(Tag)) or 0
    vecs = list(
        session.execute(
            sa.select(TagVector.library_size).where(TagVector.model_id == model_id)
        ).scalars()
    )
    if n_tags == 0:
        return catalog.get_mark(session, "tags_seeded") is None
    if len(vecs) < n_tags:
        return True
    ready = catalog.state_counts(session).get("ready", 0)
    size = min(vecs)
    return abs(ready - size) > REFRESH_GROWTH * max(size, 1)


def after_batch(
    ctx: WorkerContext, app: Celery, model_id: int, image_ids: Sequence[int], job_finished: bool
) -> None:
    """Where a batch's embeddings were committed: tag its pictures, and once the ingest finished
    queue a full run when one is due (:func:`needs_run`). A failure here is logged, never fails
    the ingest: the next run tags what was missed."""
    try:
        tag_images(ctx.Session, model_id, image_ids)
    except (CatalogUnavailable, StoreUnavailable):
        raise
    except Exception:
        log.exception("tagging the new pictures failed; the next tags run assigns them")
    albums_after_batch(ctx, model_id, image_ids)  # then the smart albums they match (tags too)
    try:
        if job_finished and app is not None:
            with ctx.session() as session:
                due = needs_run(session, model_id)
                job, created = record_job(session) if due else (None, False)
            if created and job is not None:
                app.send_task(TASK_TAGS, args=[int(job.id)])
    except (CatalogUnavailable, StoreUnavailable):
        raise
    except Exception:
        log.exception("tagging the new pictures failed; the next tags run assigns them")


def retag(ctx: WorkerContext, model: EmbeddingModel, model_id: int) -> TagRun | None:
    """After a model switch: the tags follow the new model (a full run, logged on failure)."""
    try:
        run = tag_library(ctx.Session, model, model_id)
    except (CatalogUnavailable, StoreUnavailable):
        raise
    except Exception:
        log.exception("re-tagging with the new model failed; `clipsearch tags run` retries")
        run = None
    try:  # the smart albums follow the model too (indexer.album_jobs)
        refresh_albums(ctx.Session, model, model_id)
    except (CatalogUnavailable, StoreUnavailable):
        raise
    except Exception:
        log.exception("recomputing the albums with the new model failed; refresh them")
    return run


def run_tags(ctx: WorkerContext, job_id: int) -> TagRun | None:
    """The ``tags`` job: :func:`tag_library` with the library's model, progress recorded."""
    with ctx.session() as session:
        job = load_job(session, job_id)
        if job is None:
            return None
        mark_running(session, job)
        spec = active_model_spec(session, ctx.config.model_spec)
    model = ctx.model(spec)
    model_id = catalog.ensure_model(ctx.Session, model)

    def progress(done: int, total: int) -> None:
        with ctx.session() as session:
            row = session.get(Job, job_id)
            if row is not None and row.state not in FINAL_STATES:
                row.total, row.done = total, done
                row.heartbeat_at = catalog.utcnow()
                session.commit()

    result = tag_library(ctx.Session, model, model_id, on_progress=progress)
    with ctx.session() as session:
        row = session.get(Job, job_id)
        if row is not None and row.state not in FINAL_STATES:
            summary = dataclasses.asdict(result)
            row.params = {**(row.params or {}), "result": summary}
            finish(session, row, "done")
    return result


def register_tasks(app: Celery) -> dict[str, Callable[..., object]]:
    """Register the tags task on a worker app (see indexer.worker.create_worker_app)."""

    @task(app, TASK_TAGS)
    def tag_images_task(self: Task, job_id: int) -> None:
        run_guarded(app, self, job_id, lambda: run_tags(context_of(app), job_id))

    return {"tag_images": tag_images_task}
