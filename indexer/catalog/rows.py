"""Reading and writing rows: model records, images, jobs and their vectors, read out as the
plain dataclasses of indexer.types.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from clipsearch.indexer.errors import IndexerError, NotFound
from clipsearch.indexer.types import Hit, ImageInfo, JobInfo
from clipsearch.model.fingerprint import model_fingerprint

from .codecs import bytes_to_vector, pack_vectors
from .schema import Embedding, Image, ImageCount, Job, ModelRecord

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping

    from clipsearch.model.base import EmbeddingModel

JOB_ERROR_SAMPLE = 50  # at most this many {path, reason} pairs are kept per job


# --------------------------------------------------------------------------------------------
# Models


def get_or_create_model(session: Session, name: str, fingerprint: str, dim: int) -> ModelRecord:
    """The ModelRecord with this fingerprint, created (and committed) if new. Race-safe."""
    rec = session.scalar(sa.select(ModelRecord).where(ModelRecord.fingerprint == fingerprint))
    if rec is not None:
        return rec
    try:
        with session.begin_nested():
            rec = ModelRecord(name=name[:512], fingerprint=fingerprint, dim=int(dim))
            session.add(rec)
        session.commit()
        return rec
    except sa.exc.IntegrityError:
        session.rollback()
        rec = session.scalar(sa.select(ModelRecord).where(ModelRecord.fingerprint == fingerprint))
        if rec is None:  # pragma: no cover - only if the winner rolled back
            raise
        return rec


def ensure_model(sessions: sessionmaker[Session], model: EmbeddingModel) -> int:
    """The catalog id of ``model`` (a CLIP with ``.name``, ``.embed_dim``), recorded if new."""
    fp = model_fingerprint(model)
    with sessions() as s:
        rec = get_or_create_model(s, str(getattr(model, "name", "model")), fp, model.embed_dim)
        return rec.id


# --------------------------------------------------------------------------------------------
# Reading rows out as plain dataclasses


#: ``images.id IN :ids`` with the ids given at execution (``{"ids": [...]}``): the statement is
#: built and compiled once, not once per id list (a search asks several per query)
ID_IN = Image.id.in_(sa.bindparam("ids", expanding=True))

#: the columns of an image a search hit shows (:func:`hit_from_row` reads these)
HIT_COLUMNS = (Image.id, Image.path, Image.width, Image.height, Image.format, Image.taken_at)


class HitRow(Protocol):
    """What :func:`hit_from_row` reads: an ``Image``, or a row of (at least) HIT_COLUMNS."""

    id: int
    path: str
    width: int | None
    height: int | None
    format: str | None
    taken_at: dt.datetime | None


def hit_from_row(row: HitRow, score: float) -> Hit:
    """A search result for an image row at ``score`` (an ``Image`` or a row of HIT_COLUMNS)."""
    return Hit(
        id=row.id,
        score=score,
        path=row.path,
        width=row.width,
        height=row.height,
        format=row.format,
        taken_at=row.taken_at,
    )


def image_info(row: Image) -> ImageInfo:
    return ImageInfo(
        id=row.id,
        path=row.path,
        folder=row.folder,
        size=row.size,
        mtime=row.mtime_ns / 1e9,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        format=row.format,
        taken_at=row.taken_at,
        state=row.state,
        error=row.error,
        thumbnail=row.thumbnail,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def job_info(row: Job) -> JobInfo:
    return JobInfo(
        id=row.id,
        kind=row.kind,
        state=row.state,
        params=dict(row.params or {}),
        total=row.total,
        done=row.done or 0,
        failed=row.failed or 0,
        errors=list(row.errors or []),
        message=row.message,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
    )


def get_image(session: Session, image_id: int) -> Image:
    row = session.get(Image, image_id)
    if row is None:
        raise NotFound(f"image {image_id} is not in the catalog (it may have been deleted)")
    return row


def get_job(session: Session, job_id: int) -> Job:
    row = session.get(Job, job_id)
    if row is None:
        raise NotFound(f"job {job_id} does not exist")
    return row


def create_job(session: Session, kind: str, params: Mapping[str, object] | None = None) -> Job:
    """Record a queued job and commit it."""
    if kind not in ("ingest", "reindex", "ocr"):
        raise IndexerError(f"unknown job kind {kind!r}: use ingest, reindex or ocr")
    job = Job(kind=kind, state="queued", params=dict(params or {}), done=0, failed=0, errors=[])
    session.add(job)
    session.commit()
    return job


def state_counts(session: Session) -> dict[str, int]:
    """Images per state, from the trigger-kept counts (one tiny table, not the library)."""
    return {str(s): int(n) for s, n in session.execute(sa.select(ImageCount.state, ImageCount.n))}


# --------------------------------------------------------------------------------------------
# Vectors


def image_vector(session: Session, image_id: int, model_id: int) -> np.ndarray:
    """The stored vector of one image for one model; NotFound if it has none."""
    row = session.execute(
        sa.select(Embedding.vector)
        .join(Image, Image.sha256 == Embedding.sha256)
        .where(Image.id == image_id, Embedding.model_id == model_id)
    ).first()
    if row is None:
        raise NotFound(f"image {image_id} has no embedding for model {model_id} yet")
    return bytes_to_vector(row[0])


def iter_vectors(
    session: Session, model_id: int, chunk: int = 20_000, image_ids: Sequence[int] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids int64[n], vectors float32[n, D])`` chunks for every *ready* image that has an
    embedding for ``model_id`` (images with equal content each get the shared vector)."""
    stmt = (
        sa.select(Image.id, Embedding.vector)
        .join(Embedding, Embedding.sha256 == Image.sha256)
        .where(Embedding.model_id == model_id, Image.state == "ready")
        .order_by(Image.id)
    )
    if image_ids is not None:
        stmt = stmt.where(Image.id.in_(list(image_ids)))
    ids: list[int] = []
    vecs: list[bytes] = []
    for image_id, blob in session.execute(stmt.execution_options(yield_per=chunk)):
        ids.append(image_id)
        vecs.append(blob)
        if len(ids) >= chunk:
            yield pack_vectors(ids, vecs)
            ids, vecs = [], []
    if ids:
        yield pack_vectors(ids, vecs)


def load_vectors(
    session: Session, model_id: int, image_ids: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All of :func:`iter_vectors` at once: ``(ids int64[N], vectors float32[N, D])``."""
    dim = session.scalar(sa.select(ModelRecord.dim).where(ModelRecord.id == model_id)) or 0
    parts = list(iter_vectors(session, model_id, image_ids=image_ids))
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
