"""The OCR job: read the text inside images already in the library, without embedding anything.

``clipsearch ocr`` / ``POST /api/ocr`` record a Job of kind ``ocr`` whose params say which images:
those never OCR'd (``ocr_state`` NULL: ingested while Tesseract was missing or OCR was off), or
with ``force`` every ready image (a new language, a newer Tesseract), optionally only under one
folder. The worker walks them by id in batches (a keyset on the primary key: safe to run again
after a crash, it continues where the catalog says), decodes each file on the decode pool without
preprocessing or a thumbnail, runs OCR and reads captions, and records the text per image. An
image whose OCR fails keeps the reason (``ocr_error``) and counts as failed in the job; the image
itself stays searchable.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import catalog
from .catalog import Image, Job
from .errors import IndexerError
from .keywords import image_keywords, store_decoded

if TYPE_CHECKING:
    from .context import WorkerContext

log = logging.getLogger(__name__)


def _todo_stmt(
    params: Mapping[str, object], after: int, limit: int
) -> sa.Select[int, str, int, int, str | None]:
    k = image_keywords
    stmt = (
        sa.select(Image.id, Image.path, Image.size, Image.mtime_ns, Image.sha256)
        .join(k, k.c.image_id == Image.id)
        .where(Image.state == "ready", Image.id > after)
        .order_by(Image.id)
        .limit(limit)
    )
    if not params.get("force"):
        stmt = stmt.where(k.c.ocr_state.is_(None))
    elif params.get("started_before"):  # a forced run: not the ones it read already
        since = dt.datetime.fromisoformat(str(params["started_before"]))
        stmt = stmt.where(sa.or_(k.c.ocr_at.is_(None), k.c.ocr_at < since))
    folder = params.get("folder")
    if isinstance(folder, str) and folder:
        stmt = stmt.where(catalog.under_folder(Image.folder, folder))
    return stmt


def count_todo(session: Session, params: Mapping[str, object]) -> int:
    stmt = _todo_stmt(params, 0, 2**31 - 1).subquery()
    return int(session.scalar(sa.select(sa.func.count()).select_from(stmt)) or 0)


def run_ocr(ctx: WorkerContext, job_id: int) -> int:
    """Run an OCR job (module docstring); returns the images it read."""
    from .decode_pool import decode_many
    from .jobs import FINAL_STATES
    from .jobs import add_errors as _add_errors
    from .jobs import finish as _finish
    from .jobs import load_job as _load_job
    from .jobs import mark_running as _mark_running
    from .jobs import now as _now
    from .ocr import probe

    config = ctx.config.ocr
    with ctx.session() as session:
        job = _load_job(session, job_id)
        if job is None:
            return 0
        status = probe(config)
        if not status.available:
            _finish(session, job, "failed", status.error or "OCR is not available")
            return 0
        _mark_running(session, job)
        params = dict(job.params or {})
        if params.get("force") and not params.get("started_before"):
            params["started_before"] = _now().isoformat()
            job.params = params
        if job.total is None:
            job.total = count_todo(session, params)
        session.commit()
    batch = max(1, ctx.config.batch_size)
    after = 0
    read = 0
    while True:
        with ctx.session() as session:
            state = session.scalar(sa.select(Job.state).where(Job.id == job_id))
            if state in FINAL_STATES:
                return read
            rows = session.execute(_todo_stmt(params, after, batch)).all()
        if not rows:
            break
        after = int(rows[-1].id)
        results = decode_many(
            [catalog.path_from_db(r.path) for r in rows],
            224,
            None,
            pool=ctx.decode_pool(),
            expect=[(int(r.size), int(r.mtime_ns)) for r in rows],
            text=config,
            want_pixels=False,
        )
        errors: list[dict[str, str]] = []
        stored: list[tuple[int, Any]] = []
        for row, res in zip(rows, results, strict=True):
            if not res.ok:
                reason = res.reason or "could not be read"
                errors.append({"path": row.path, "reason": f"not OCR'd: {reason}"})
                continue
            if res.ocr_state == "failed":
                errors.append({"path": row.path, "reason": f"OCR: {res.ocr_error}"})
            stored.append((int(row.id), res))
        with ctx.session() as session:
            counts = store_decoded(session, stored)
            job = session.get(Job, job_id)
            if job is not None:
                failed = counts.get("failed", 0) + sum(
                    1 for e in errors if e["reason"].startswith("not OCR'd")
                )
                job.done = int(job.done or 0) + len(rows) - failed
                job.failed = int(job.failed or 0) + failed
                _add_errors(job, errors)
                job.heartbeat_at = _now()
            session.commit()
        read += len(stored)
    with ctx.session() as session:
        job = session.get(Job, job_id)
        if job is not None and job.state not in FINAL_STATES:
            job.total = int(job.done or 0) + int(job.failed or 0)
            _finish(session, job, "done")
    log.info("OCR job %s: %d images read", job_id, read)
    return read


def ocr_params(force: bool = False, folder: str | None = None) -> dict[str, object]:
    """The params of an OCR job (checked: a folder is an absolute path without NUL)."""
    params: dict[str, object] = {"force": bool(force)}
    if folder:
        if not isinstance(folder, str) or "\x00" in folder or len(folder) > 4096:
            raise IndexerError("the folder must be a path without NUL characters")
        params["folder"] = catalog.path_to_db(os.path.abspath(os.path.expanduser(folder)))
    return params
