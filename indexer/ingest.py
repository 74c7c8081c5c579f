"""Ingestion as plain functions; the Celery tasks (indexer/tasks.py) are thin wrappers.

A job runs in two steps, each safe to run again after a crash:

1. :func:`plan_ingest` scans the job's folder and brings the catalog in line with the disk:
   new files and files changed since the last scan (size or mtime differ) become ``pending``;
   unchanged files are skipped, except those that failed for a reason of this machine's rather
   than the file's (no room for the thumbnail: ``decode.retry_on_rescan``), which are retried;
   a file that disappeared from one path and appeared at another with the same bytes (same
   size, then same sha256) is a *move*: its row gets the new path and keeps its id and
   embedding; files gone from under the scanned folder leave the catalog (their
   ids are in ``IngestPlan.removed_ids`` so the vector index drops them). Folders that could not
   be read are reported and their catalog rows left alone (an unmounted share deletes nothing).
   It returns batches of the image ids still to embed under that folder (re-running the plan
   finds the same work again, nothing more) and records the job's total.
2. :func:`process_batch` decodes a batch in parallel, embeds what the model has not embedded yet
   (identical content anywhere in the catalog is embedded once: embeddings are keyed by sha256),
   and commits vectors, image states and the job's progress in one transaction. An image only
   counts towards the job when this call moves it out of its planned state, so a batch
   delivered twice is counted once. A bad file fails alone, with its reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from clipsearch.indexer import jobs
from clipsearch.indexer.batching import chunks as _chunks
from clipsearch.indexer.catalog import (
    Embedding,
    Image,
    Job,
    delete_images,
    ensure_model,
    folder_of,
    gc_embeddings,
    get_job,
    job_info,
    path_from_db,
    path_to_db,
    remove_thumbnails,
    removed_content_by_size,
    removed_paths,
    under_folder,
    utcnow,
    vector_to_bytes,
)
from clipsearch.indexer.configs import OcrConfig
from clipsearch.indexer.decode import DecodeResult, retry_on_rescan
from clipsearch.indexer.decode_pool import DecodePool, decode_many
from clipsearch.indexer.errors import IndexerError, IngestError
from clipsearch.indexer.ingest_problems import scan_outcome
from clipsearch.indexer.scan import OUTSIDE_ROOTS, check_path_allowed, scan_folder
from clipsearch.indexer.types import BatchResult, FileInfo, IngestPlan, JobInfo, ScanProblem

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from clipsearch.model.base import EmbeddingModel

DEFAULT_BATCH_SIZE = 64


def _insert_ignore(
    session: Session, table: Any, rows: list[dict[str, object]], keys: list[str]
) -> None:
    """INSERT ... ON CONFLICT (keys) DO NOTHING on SQLite and PostgreSQL, as one executemany
    with RETURNING: SQLAlchemy sends multi-row batches from one compiled statement, so the
    statement triggers (counts, migration 0012) run once per batch (bench/scan_insert.py)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement = insert(table).on_conflict_do_nothing(index_elements=keys)
    session.execute(statement.returning(table.c[keys[0]]), rows).all()


def _sha256_of(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# Jobs (their state machine is indexer.jobs)


def job_progress(sessions: sessionmaker[Session], job_id: int) -> JobInfo:
    """A job's state and counts as the API shows them."""
    with sessions() as s:
        return job_info(get_job(s, job_id))


def _has_work(session: Session, model_id: int | None, folder: str, recursive: bool) -> bool:
    """Whether an image under ``folder`` is pending, or ready without a vector of ``model_id``
    (pending first: the state index answers that at once while a job is under way)."""
    where = under_folder(Image.folder, path_to_db(os.path.abspath(folder)), recursive)
    if session.scalar(sa.select(Image.id).where(Image.state == "pending", where).limit(1)):
        return True
    if model_id is None:
        return False
    has = sa.exists().where(Embedding.sha256 == Image.sha256, Embedding.model_id == model_id)
    return (
        session.scalar(sa.select(Image.id).where(Image.state == "ready", ~has, where).limit(1))
        is not None
    )


def _finish_covered_jobs(sessions: sessionmaker[Session], model_id: int | None) -> list[int]:
    """Finish the running ingest jobs whose folder has nothing left to embed although their
    counts fall short of their total; returns their ids.

    Two jobs over the same images (a folder submitted twice at once, overlapping folders) both
    plan them, but an image counts only for the job whose batch moved it out of ``pending``: the
    other job's ``done + failed`` never reaches its total. Once no image under its folder needs
    embedding its work is done: it finishes with ``total = done + failed`` (what it processed
    itself, as planning it again would report). One short transaction per job, so that two
    batches finishing each other's jobs never wait on each other's locks.
    """
    short = sa.and_(
        Job.kind == "ingest",
        Job.state == "running",
        Job.total.is_not(None),
        Job.done + Job.failed < Job.total,
    )
    with sessions() as s:
        rows = s.execute(sa.select(Job.id, Job.params).where(short)).all()
    finished = []
    for job_id, params in rows:
        params = params or {}
        folder = params.get("path")
        if not isinstance(folder, str) or not folder:
            continue
        with sessions.begin() as s:
            recursive = bool(params.get("recursive", True))
            if _has_work(s, model_id, path_from_db(folder), recursive):
                continue
            if jobs.finish_as_processed(s, int(job_id), short):
                finished.append(int(job_id))
    if finished:
        log.info("jobs %s finished: another job processed the rest of their images", finished)
    return finished


# --------------------------------------------------------------------------------------------
# Planning


def images_needing_embedding(
    session: Session,
    model_id: int | None,
    folder: str | None = None,
    recursive: bool = True,
    limit: int | None = None,
) -> list[int]:
    """Ids (ascending) of images that are pending, or ready but without an embedding of their
    content for ``model_id``. ``folder`` (a filesystem path) restricts to that folder."""
    cond: Any = Image.state == "pending"
    if model_id is not None:
        has = sa.exists().where(Embedding.sha256 == Image.sha256, Embedding.model_id == model_id)
        cond = sa.or_(cond, sa.and_(Image.state == "ready", ~has))
    stmt = sa.select(Image.id).where(cond).order_by(Image.id)
    if folder is not None:
        stmt = stmt.where(
            under_folder(Image.folder, path_to_db(os.path.abspath(folder)), recursive)
        )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def _catalogued_signatures(
    sessions: sessionmaker[Session], root_db: str, recursive: bool
) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every image catalogued under a folder, read in one query, so that a
    rescan compares in bulk and opens only new or changed files."""
    with sessions() as s:
        rows = s.execute(
            sa.select(Image.path, Image.size, Image.mtime_ns).where(
                under_folder(Image.folder, root_db, recursive), Image.state != "failed"
            )
        )
        return {path: (int(size), int(mtime)) for path, size, mtime in rows}


def link_roots(
    root: str, allowed_roots: Iterable[str | os.PathLike[str]] | None
) -> list[str | os.PathLike[str]]:
    """Where a symbolic link met by an ingest's scan may lead, whichever door asked for the
    ingest (the API, the CLI, a watched folder): inside the allowed roots of a confined library
    (the API's), else inside the folder being ingested. A link to a file or folder outside is
    reported and never indexed (its thumbnail would otherwise be served)."""
    return list(allowed_roots) if allowed_roots is not None else [root]


def plan_ingest(
    sessions: sessionmaker[Session],
    job_id: int,
    *,
    model_id: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allowed_roots: Iterable[str | os.PathLike[str]] | None = None,
    thumb_dir: str | os.PathLike[str] | None = None,
    finish: bool = True,
) -> IngestPlan:
    """Scan the folder in the job's params (``{"path": ..., "recursive": true}``), reconcile the
    catalog (module docstring) and return the batches to embed. Marks the job running; if there
    is nothing to embed the job is finished here. A missing/unreadable/forbidden folder fails the
    job and raises :class:`IngestError` / :class:`PathNotAllowed`. ``allowed_roots`` (default:
    the job's own ``params["allowed_roots"]``, set by a confined Library) also stops the scan at
    symbolic links leading out of them. ``thumb_dir``, when given,
    lets thumbnails of removed images be deleted. A finished job returns an empty plan.
    ``finish=False``: a plan with nothing to embed leaves the job running for the caller to
    finish once the removals reached a shared vector store (as :func:`process_batch`)."""
    if batch_size < 1:
        raise IndexerError("batch_size must be at least 1")
    with sessions() as s:
        job = get_job(s, job_id)
        params = dict(job.params or {})
        if job.state not in ("queued", "running"):
            log.info("job %s is %s already; nothing to plan", job_id, job.state)
            return IngestPlan(job_id=job_id, root=str(params.get("path", "")))
        jobs.mark_running(s, job)
    with sessions.begin() as s:
        # Until this plan records the total the job is being planned: no batch (an earlier one of
        # its own, or another job's, see _finish_covered_jobs) may finish it meanwhile.
        s.execute(sa.update(Job).where(Job.id == job_id).values(total=None))

    problems: list[ScanProblem] = []
    try:
        raw = params.get("path")
        if not isinstance(raw, str) or not raw:
            raise IngestError("the job has no folder to scan: give a path")
        recursive = bool(params.get("recursive", True))
        if allowed_roots is None and isinstance(params.get("allowed_roots"), list):
            # submitted by a confined library (the API): the scan stays inside its roots too
            allowed_roots = [path_from_db(str(r)) for r in params["allowed_roots"]]
        root = check_path_allowed(path_from_db(raw), allowed_roots)
        signatures = _catalogued_signatures(sessions, path_to_db(root), recursive)
        files = list(
            scan_folder(
                root,
                recursive=recursive,
                on_problem=problems,
                allowed_roots=link_roots(root, allowed_roots),
                known=lambda p, size, mtime: signatures.get(path_to_db(p)) == (size, mtime),
            )
        )
        signatures.clear()  # the comparison is done: free it before planning
    except IndexerError as exc:
        with sessions() as s:
            jobs.fail(s, job_id, str(exc), path=str(params.get("path", "")))
        raise

    plan = IngestPlan(job_id=job_id, root=root, problems=problems)
    root_db = path_to_db(root)
    seen: dict[str, FileInfo] = {path_to_db(f.path): f for f in files}
    # A link that now leads out of the allowed roots is no shield: its row leaves the served set.
    bad_db = [path_to_db(p.path) for p in problems if p.reason != OUTSIDE_ROOTS]

    def shielded(db_path: str) -> bool:  # under an entry we could not read: keep its rows
        return any(db_path == b or db_path.startswith(b.rstrip("/") + "/") for b in bad_db)

    with sessions.begin() as s:
        rows = s.execute(
            sa.select(
                Image.id,
                Image.path,
                Image.size,
                Image.mtime_ns,
                Image.sha256,
                Image.state,
                Image.thumbnail,
                Image.error,
            ).where(under_folder(Image.folder, root_db, recursive))
        ).all()
        existing = {r.path: r for r in rows}
        changed: list[int] = []
        retried: list[int] = []
        new_paths: list[str] = []
        for db_path, f in seen.items():
            row = existing.get(db_path)
            if row is None:
                new_paths.append(db_path)
            elif row.size == f.size and row.mtime_ns == f.mtime_ns:
                if row.state == "failed" and retry_on_rescan(row.error):
                    # it failed for a reason of this machine's (a full disk), not the file's
                    retried.append(row.id)
                    s.execute(
                        sa.update(Image)
                        .where(Image.id == row.id)
                        .values(state="pending", error=None, updated_at=utcnow())
                    )
                else:
                    plan.unchanged += 1
            else:
                changed.append(row.id)
                s.execute(
                    sa.update(Image)
                    .where(Image.id == row.id)
                    .values(
                        size=f.size,
                        mtime_ns=f.mtime_ns,
                        state="pending",
                        error=None,
                        updated_at=utcnow(),
                    )
                )
        missing = [r for p, r in existing.items() if p not in seen and not shielded(p)]

        # Moves: a vanished row and a new file with the same size, then the same sha256.
        by_size: dict[int, list[Any]] = defaultdict(list)
        for r in missing:
            if r.sha256 and r.state == "ready":
                by_size[r.size].append(r)
        moved_rows: set[int] = set()
        still_new: list[str] = []
        for db_path in new_paths:
            f = seen[db_path]
            candidates = [r for r in by_size.get(f.size, []) if r.id not in moved_rows]
            match = None
            if candidates:
                digest = _sha256_of(f.path)
                match = next((r for r in candidates if r.sha256 == digest), None)
            if match is None:
                still_new.append(db_path)
                continue
            moved_rows.add(match.id)
            plan.moved_ids.append(match.id)
            s.execute(
                sa.update(Image)
                .where(Image.id == match.id)
                .values(
                    path=db_path,
                    folder=folder_of(db_path),
                    mtime_ns=f.mtime_ns,
                    updated_at=utcnow(),
                )
            )
        # Files the user removed stay out: by path, or by content (a moved or copied file; only
        # a new file whose size matches a removed one is hashed).
        refused = removed_paths(s, still_new)
        by_removed_size = removed_content_by_size(
            s, [seen[p].size for p in still_new if p not in refused]
        )
        kept: list[str] = []
        for db_path in still_new:
            shas = by_removed_size.get(seen[db_path].size)
            if db_path in refused or (shas and _sha256_of(seen[db_path].path) in shas):
                plan.skipped_removed += 1
                continue
            kept.append(db_path)
        still_new = kept
        now = utcnow()
        _insert_ignore(
            s,
            Image.__table__,
            [
                {
                    "path": p,
                    "folder": folder_of(p),
                    "size": seen[p].size,
                    "mtime_ns": seen[p].mtime_ns,
                    "state": "pending",
                    "created_at": now,
                    "updated_at": now,
                }
                for p in still_new
            ],
            ["path"],
        )
        for part in _chunks(still_new):
            plan.new_ids.extend(s.scalars(sa.select(Image.id).where(Image.path.in_(list(part)))))
        plan.changed_ids = changed
        plan.removed_ids = sorted(r.id for r in missing if r.id not in moved_rows)
        orphans: list[str] = []
        for id_part in _chunks(plan.removed_ids):
            orphans += delete_images(s, id_part)

    if thumb_dir is not None and orphans:
        remove_thumbnails(thumb_dir, orphans)

    with sessions.begin() as s:
        todo = images_needing_embedding(s, model_id, root, recursive)
        plan.batches = [list(b) for b in _chunks(todo, batch_size)]
        # each problem once (a rescan meeting an unchanged entry again does not report it), and
        # when up to date the folder's counts as the library counts (ingest_problems)
        new_problems, summary = scan_outcome(
            s, job_id, root_db, recursive, problems, keep=shielded, up_to_date=not todo
        )
        job = get_job(s, job_id)
        job.total = (job.done or 0) + (job.failed or 0) + len(todo)
        job.heartbeat_at = utcnow()
        job.params = {
            **params,
            "scan": {
                "found": len(files),
                "new": len(plan.new_ids),
                "changed": len(plan.changed_ids),
                "moved": len(plan.moved_ids),
                "removed": len(plan.removed_ids),
                "unchanged": plan.unchanged,
                **({"removed_by_user": plan.skipped_removed} if plan.skipped_removed else {}),
                **({"retried": len(retried)} if retried else {}),
                "unreadable": len(problems),
                **summary,
            },
        }
        if new_problems:
            s.flush()
            jobs.record_errors(
                s, job_id, [{"path": path_to_db(p.path), "reason": p.reason} for p in new_problems]
            )
        if not todo and finish:
            jobs.finish_if_complete(s, job_id)
    log.info(
        "job %s: %d files under %r, %d to embed (%d new, %d changed, %d moved, %d removed)",
        job_id, len(files), root, len(todo), len(plan.new_ids), len(plan.changed_ids),
        len(plan.moved_ids), len(plan.removed_ids),
    )  # fmt: skip
    return plan


# --------------------------------------------------------------------------------------------
# Embedding a batch


def embed_decoded(
    model: EmbeddingModel,
    decoded: list[DecodeResult],
    have: set[str],
    *,
    batch_size: int = 64,
    on_device: bool = False,
    expect: Sequence[tuple[int, int]] | None = None,
    roots: list[str] | None = None,
    pool: DecodePool | None = None,
) -> tuple[dict[str, np.ndarray], list[DecodeResult]]:
    """Embed the decoded images whose content ``model`` has not embedded yet (sha256 not in
    ``have``), each content once: ``(vectors by sha256, decoded)``. ``on_device``: the JPEGs were
    decoded without pixels and are decoded and embedded on the model's GPU (indexer.device_embed;
    ``expect``: (size, mtime_ns) the scan saw, per result); the results it could not handle come
    back in ``decoded`` as failures or with CPU pixels, embedded here."""
    vectors: dict[str, np.ndarray] = {}
    if on_device:
        from clipsearch.indexer import device_embed

        vectors, decoded = device_embed.embed_decoded(
            model,
            decoded,
            have,
            expect={d.path: e for d, e in zip(decoded, expect or [], strict=True)},
            roots=roots,
            pool=pool,
            batch_size=batch_size,
        )
    to_embed: dict[str, np.ndarray] = {}
    for d in decoded:
        if (
            d.ok
            and d.sha256
            and d.sha256 not in have
            and d.sha256 not in to_embed
            and d.sha256 not in vectors
            and d.pixels is not None
        ):
            to_embed[d.sha256] = d.pixels
    if to_embed:
        import torch

        keys = list(to_embed)
        stacked = torch.from_numpy(np.stack([to_embed[k] for k in keys]))
        embedded = np.asarray(model.embed_pixels(stacked, batch_size=batch_size), np.float32)
        vectors.update(zip(keys, embedded, strict=True))
    return vectors, decoded


def store_vectors(
    session: Session, model_id: int, vectors: dict[str, np.ndarray], now: object = None
) -> None:
    """Add one embedding per content (sha256) for ``model_id``, inside the caller's transaction;
    content another worker embedded meanwhile keeps its row (insert or ignore)."""
    now = now or utcnow()
    _insert_ignore(
        session,
        Embedding.__table__,
        [
            {"sha256": k, "model_id": model_id, "vector": vector_to_bytes(v), "created_at": now}
            for k, v in vectors.items()
        ],
        ["sha256", "model_id"],
    )


def process_batch(
    sessions: sessionmaker[Session],
    model: EmbeddingModel,
    job_id: int | None,
    image_ids: Sequence[int],
    thumb_dir: str | os.PathLike[str] | None,
    pool: DecodePool | None = None,
    *,
    model_id: int | None = None,
    draft: bool = True,
    thumb_size: int = 256,
    embed_batch_size: int = 64,
    text: OcrConfig | None = None,
    finish: bool = True,
    device_decode: str = "auto",
) -> BatchResult:
    """Decode, embed and commit one batch (module docstring). ``job_id=None`` processes images
    without a job (no progress recorded); a cancelled, failed or deleted job's batch is skipped.
    ``pool`` defaults to in-process decoding. ``text`` (an :class:`indexer.ocr.OcrConfig`):
    also record the words read in each image and its captions in the keyword index.
    ``device_decode`` (auto, on, off): whether JPEGs are decoded on the model's GPU
    (indexer.device_embed; the worker's CLIPSEARCH_DEVICE_DECODE).

    ``finish=False`` leaves the job running even when this batch was its last: the caller
    writes the batch through to a shared vector store first and then calls
    :func:`finish_batch_job`, so that a job reported done has every image searchable."""
    result = BatchResult()
    if model_id is None:
        model_id = ensure_model(sessions, model)
    ids = sorted({int(i) for i in image_ids})
    roots: list[str] | None = None  # a confined (API) job's files must resolve inside its roots
    if job_id is not None:
        with sessions() as s:
            state = s.scalar(sa.select(Job.state).where(Job.id == job_id))
            params = s.scalar(sa.select(Job.params).where(Job.id == job_id)) or {}
        if isinstance(params, dict) and isinstance(params.get("allowed_roots"), list):
            roots = [path_from_db(str(r)) for r in params["allowed_roots"]]
        if state in (None, "cancelled", "failed"):
            log.info("job %s is %s: batch of %d skipped", job_id, state or "gone", len(ids))
            result.skipped = len(ids)
            return result

    with sessions() as s:
        rows: list[Any] = []
        for part in _chunks(ids):
            rows += s.execute(
                sa.select(
                    Image.id, Image.path, Image.size, Image.mtime_ns, Image.sha256, Image.state
                ).where(Image.id.in_(list(part)))
            ).all()
        shas = [r.sha256 for r in rows if r.sha256]
        known: set[str] = set()
        for part in _chunks(sorted(set(shas))):
            known |= set(
                s.scalars(
                    sa.select(Embedding.sha256).where(
                        Embedding.model_id == model_id, Embedding.sha256.in_(list(part))
                    )
                )
            )
        if job_id is not None:
            jobs.heartbeat(s, job_id)
            s.commit()
    work = [
        r for r in rows if r.state == "pending" or (r.state == "ready" and r.sha256 not in known)
    ]
    result.skipped = len(ids) - len(work)
    if not work:
        if job_id is not None and finish:
            result.job_finished = finish_batch_job(sessions, job_id, model_id)
        return result

    preprocess = getattr(model, "preprocessor", None)
    from clipsearch.indexer import device_embed

    # JPEG pixels decoded on the model's GPU instead
    on_device = device_embed.wanted(model, device_decode)
    expect = [(int(r.size), int(r.mtime_ns)) for r in work]  # the file the scan saw
    decoded: list[DecodeResult] = decode_many(
        [path_from_db(r.path) for r in work],
        int(model.image_size),
        thumb_dir,
        thumb_size,
        draft,
        pool=pool or DecodePool(1),
        preprocess=preprocess,
        roots=roots,
        expect=expect,
        text=text,
        want_pixels=not on_device,
    )

    # Content already embedded by this model (anywhere in the catalog) is not embedded again.
    ok_shas = sorted({d.sha256 for d in decoded if d.ok and d.sha256})
    with sessions() as s:
        have: set[str] = set()
        for sha_part in _chunks(ok_shas):
            have |= set(
                s.scalars(
                    sa.select(Embedding.sha256).where(
                        Embedding.model_id == model_id, Embedding.sha256.in_(list(sha_part))
                    )
                )
            )
    vectors, decoded = embed_decoded(
        model,
        decoded,
        have,
        batch_size=embed_batch_size,
        on_device=on_device,
        expect=expect,
        roots=roots,
        pool=pool,
    )
    result.embedded = len(vectors)

    errors: list[dict[str, str]] = []
    old_shas: list[str | None] = []
    used_shas: set[str] = set()
    texts: list[tuple[int, DecodeResult]] = []
    with sessions.begin() as s:
        now = utcnow()
        for row, d in zip(work, decoded, strict=True):
            guard = sa.and_(
                Image.id == row.id,
                Image.state == row.state,
                Image.size == row.size,
                Image.mtime_ns == row.mtime_ns,
            )
            common = {
                "sha256": d.sha256,
                "width": d.width,
                "height": d.height,
                "format": d.format,
                "taken_at": d.taken_at,
                "updated_at": now,
            }
            if d.ok:
                values = {**common, "thumbnail": d.thumbnail, "state": "ready", "error": None}
            else:
                values = {**common, "state": "failed", "error": d.reason}
            res = s.execute(sa.update(Image).where(guard).values(**values))
            if not res.rowcount:  # type: ignore[attr-defined]
                result.skipped += 1  # changed or deleted since it was read: a re-scan handles it
                continue
            if row.sha256 and row.sha256 != d.sha256:
                old_shas.append(row.sha256)
            if d.ok:
                result.done += 1
                result.ready_ids.append(row.id)
                texts.append((row.id, d))
                if d.sha256:
                    used_shas.add(d.sha256)
            else:
                result.failed += 1
                result.failed_ids.append(row.id)
                errors.append({"path": row.path, "reason": d.reason or "failed"})
                log.info("image %s (%r) failed: %s", row.id, row.path, d.reason)
        store_vectors(s, model_id, {k: v for k, v in vectors.items() if k in used_shas}, now)
        gc_embeddings(s, old_shas)
        if texts:
            from clipsearch.indexer.keywords import store_decoded

            result.ocr = store_decoded(s, texts)
        if job_id is not None:
            s.execute(
                sa.update(Job)
                .where(Job.id == job_id)
                .values(
                    done=Job.done + result.done,
                    failed=Job.failed + result.failed,
                    heartbeat_at=now,
                    updated_at=now,
                )
            )
            jobs.record_errors(s, job_id, errors)
            if finish:
                result.job_finished = jobs.finish_if_complete(s, job_id)
    if job_id is not None and finish:
        result.job_finished |= job_id in _finish_covered_jobs(sessions, model_id)
    return result


def finish_batch_job(sessions: sessionmaker[Session], job_id: int, model_id: int | None) -> bool:
    """After a batch of ``job_id`` is committed (and written through to a shared store): finish
    the job if every image it planned is accounted for, and any job whose folder another job's
    batches completed (:func:`_finish_covered_jobs`). True when ``job_id`` was finished here."""
    with sessions.begin() as s:
        finished = jobs.finish_if_complete(s, job_id)
    return finished | (job_id in _finish_covered_jobs(sessions, model_id))
