"""Computing smart albums: vector math over the stored embeddings, never a decode or a re-embed.

* :func:`refresh_albums` (the ``albums`` job, :data:`~indexer.albums.TASK_ALBUMS`): encodes each
  smart album's saved query (:class:`~indexer.albums.SavedQuery` into the search's
  :class:`~indexer.search_service.SearchQuery`), measures the library's relevance background the
  way the search does (:func:`indexer.relevance.calibrate`: the best match of the meaningless
  queries, here over the stored vectors) to turn the album's cut into a cosine, scores every
  picture in one pass of matrix products, keeps what the filters keep, and rewrites the album's
  matches; pinned and excluded pictures stay as people left them.
* :func:`after_batch` (called where the new pictures of an ingest were tagged,
  :func:`indexer.tag_jobs.after_batch`): judges the batch's pictures against every computed
  album with its stored vector and cosine, so an album gains a matching picture as soon as it is
  embedded. A picture that leaves the library leaves its albums through the foreign keys.
* A model switch recomputes every album (:func:`indexer.tag_jobs.retag` calls
  :func:`refresh_albums`).
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
from .albums import TASK_ALBUMS, Album, AlbumMember, filtered, matches, saved_query
from .catalog import Job
from .celery_app import task
from .context import active_model_spec
from .errors import CatalogUnavailable, IndexerError, StoreUnavailable
from .jobs import FINAL_STATES, context_of, finish, load_job, mark_running, run_guarded
from .relevance import calibrate, embed_backgrounds
from .search_service import SearchService

if TYPE_CHECKING:
    import datetime as dt

    from celery import Celery, Task

    from clipsearch.model.base import EmbeddingModel

    from .context import WorkerContext
    from .search_service import SearchQuery

log = logging.getLogger(__name__)

_INSERT = 5_000

__all__ = ["AlbumRun", "after_batch", "refresh_albums", "register_tasks", "run_albums"]


@dataclass
class AlbumRun:
    albums: int = 0
    images: int = 0
    matched: int = 0  # automatic members written
    skipped: list[str] = dataclasses.field(default_factory=list)  # albums that could not run


def _encode(
    session: Session, model: EmbeddingModel, model_id: int, row: Album
) -> tuple[SearchQuery, np.ndarray]:
    """The album's search query with its vector for ``model`` (texts encoded, library pictures
    read from the store); IndexerError when a picture it names is gone."""
    saved = saved_query(row)
    plan = saved.plan()
    texts = [t for t, _ in plan.texts]
    text_vecs = np.asarray(model.embed_texts(texts), np.float32) if texts else np.zeros((0, 1))
    wanted = [i for i, _ in plan.images]
    image_vecs: list[np.ndarray] = []
    if wanted:
        ids, vecs = catalog.load_vectors(session, model_id, wanted)
        by_id = {int(i): v for i, v in zip(ids.tolist(), vecs, strict=True)}
        gone = [i for i in wanted if i not in by_id]
        if gone:
            raise IndexerError(f"picture {gone[0]} of its query is no longer in the library")
        image_vecs = [by_id[i] for i in wanted]
    vector = plan.vector(list(text_vecs), image_vecs)
    return saved.search_query(vector), vector


def refresh_albums(
    Session_: sessionmaker[Session],
    model: EmbeddingModel,
    model_id: int,
    album_ids: Sequence[int] | None = None,
) -> AlbumRun:
    """Compute the smart albums (all, or ``album_ids``) over every stored vector of
    ``model_id`` (module docstring). Safe to run twice."""
    run = AlbumRun()
    queries: list[tuple[int, Any, np.ndarray]] = []
    with Session_() as session:
        stmt = sa.select(Album).where(Album.kind == "smart").order_by(Album.id)
        if album_ids is not None:
            stmt = stmt.where(Album.id.in_([int(i) for i in album_ids]))
        for row in session.scalars(stmt):
            try:
                q, vector = _encode(session, model, model_id, row)
            except IndexerError as exc:
                run.skipped.append(f"{row.name}: {exc}")
                log.warning("album %r not computed: %s", row.name, exc)
                continue
            queries.append((int(row.id), q, vector))
    run.albums = len(queries)
    if not queries:
        return run
    M = np.stack([v for _, _, v in queries]).astype(np.float32)
    bg_text, bg_image = embed_backgrounds(model)
    best_t = np.full(len(bg_text), -np.inf, np.float32)
    best_i = np.full(len(bg_image), -np.inf, np.float32)
    id_parts, score_parts = [], []
    with Session_() as session:
        for chunk_ids, chunk in catalog.iter_vectors(session, model_id):
            best_t = np.maximum(best_t, (chunk @ bg_text.T).max(axis=0))
            best_i = np.maximum(best_i, (chunk @ bg_image.T).max(axis=0))
            id_parts.append(chunk_ids)
            score_parts.append(chunk @ M.T)
    ids = np.concatenate(id_parts) if id_parts else np.zeros(0, np.int64)
    S = np.concatenate(score_parts) if score_parts else np.zeros((0, len(queries)), np.float32)
    run.images = len(ids)
    best = {id(bg_text): best_t, id(bg_image): best_i}
    cal = calibrate(
        model,
        lambda v: [float(x) if np.isfinite(x) else float("nan") for x in best[id(v)]],
        len(ids),
        (bg_text, bg_image),
    )
    cuts = SearchService(None)  # the search's own default cut and its checks
    now = catalog.utcnow()
    with Session_() as session:
        for k, (album_id, q, vector) in enumerate(queries):
            floor = float(cal.min_score(cuts.cut(q.min_relevance), q.image_share))
            hit = np.flatnonzero(S[:, k] >= floor)
            scores = {int(ids[i]): float(S[i, k]) for i in hit.tolist()}
            kept = [i for i in filtered(session, q.filters, sorted(scores)) if i not in q.exclude]
            run.matched += _rewrite(session, album_id, {i: scores[i] for i in kept}, now)
            session.execute(
                sa.update(Album)
                .where(Album.id == album_id)
                .values(
                    model_id=model_id,
                    vector=catalog.vector_to_bytes(vector),
                    min_score=floor if np.isfinite(floor) else (1e9 if floor > 0 else -1e9),
                    computed_at=now,
                )
            )
        session.commit()
    log.info("albums: %d computed over %d pictures, %d matches", run.albums, run.images,
             run.matched)  # fmt: skip
    return run


def _rewrite(session: Session, album_id: int, scores: dict[int, float], now: dt.datetime) -> int:
    """Replace an album's automatic members by ``scores`` (people's rows stay). No commit."""
    session.execute(
        sa.delete(AlbumMember).where(AlbumMember.album_id == album_id, AlbumMember.state == "auto")
    )
    manual = set(
        session.scalars(sa.select(AlbumMember.image_id).where(AlbumMember.album_id == album_id))
    )
    rows = [
        {"album_id": album_id, "image_id": i, "state": "auto", "score": s, "updated_at": now}
        for i, s in scores.items()
        if i not in manual
    ]
    for start in range(0, len(rows), _INSERT):
        session.execute(sa.insert(AlbumMember), rows[start : start + _INSERT])
    return len(rows)


def add_images(session: Session, model_id: int, image_ids: Sequence[int]) -> int:
    """Judge newly embedded pictures against every album computed for ``model_id`` (committed).
    Returns the matches written."""
    ids = sorted({int(i) for i in image_ids})
    if not ids:
        return 0
    albums = list(
        session.scalars(
            sa.select(Album).where(
                Album.kind == "smart", Album.model_id == model_id, Album.vector.is_not(None)
            )
        )
    )
    written = 0
    now = catalog.utcnow()
    for row in albums:
        found = matches(session, row, ids)
        if not found:
            continue
        taken = set(
            session.scalars(
                sa.select(AlbumMember.image_id).where(
                    AlbumMember.album_id == row.id, AlbumMember.image_id.in_(sorted(found))
                )
            )
        )
        fresh = [
            {"album_id": row.id, "image_id": i, "state": "auto", "score": s, "updated_at": now}
            for i, s in found.items()
            if i not in taken
        ]
        if fresh:
            session.execute(sa.insert(AlbumMember), fresh)
            written += len(fresh)
    session.commit()
    return written


def after_batch(ctx: WorkerContext, model_id: int, image_ids: Sequence[int]) -> None:
    """Where a batch's pictures were embedded and tagged: put them in the albums they match.
    A failure is logged, never fails the ingest (`clipsearch albums refresh` catches up)."""
    try:
        with ctx.session() as session:
            add_images(session, model_id, image_ids)
    except (CatalogUnavailable, StoreUnavailable):
        raise
    except Exception:
        log.exception("putting the new pictures in their albums failed; refresh the albums")


def run_albums(ctx: WorkerContext, job_id: int) -> AlbumRun | None:
    """The ``albums`` job: :func:`refresh_albums` with the library's model."""
    with ctx.session() as session:
        job = load_job(session, job_id)
        if job is None:
            return None
        mark_running(session, job)
        spec = active_model_spec(session, ctx.config.model_spec)
    model = ctx.model(spec)
    model_id = catalog.ensure_model(ctx.Session, model)
    result = refresh_albums(ctx.Session, model, model_id)
    with ctx.session() as session:
        row = session.get(Job, job_id)
        if row is not None and row.state not in FINAL_STATES:
            row.total = row.done = result.images
            row.params = {**(row.params or {}), "result": dataclasses.asdict(result)}
            finish(session, row, "done")
    return result


def register_tasks(app: Celery) -> dict[str, Callable[..., object]]:
    """Register the albums task on a worker app (see indexer.worker.create_worker_app)."""

    @task(app, TASK_ALBUMS)
    def refresh_albums_task(self: Task, job_id: int) -> None:
        run_guarded(app, self, job_id, lambda: run_albums(context_of(app), job_id))

    return {"refresh_albums": refresh_albums_task}
