"""Jobs: ingest a folder (only under the allowed roots), re-index, and watch progress."""

from __future__ import annotations

import os
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from ..auth import AdminAccess, PrivateReadAccess, audited, require_token
from ..deps import LibraryDep, SettingsDep
from ..schemas import IngestIn, JobOut, ReindexIn
from .common import ERRORS, MAX_ID, job_out

router = APIRouter(prefix="/api", tags=["jobs"], responses=ERRORS)


def _roots_text(roots: list[FsPath]) -> str:
    return ", ".join(str(r) for r in roots) if roots else "(none)"


def check_ingest_path(raw: str, roots: list[FsPath]) -> FsPath:
    """Resolve ``raw`` (symlinks included) and return it if it is a folder under one of ``roots``.

    Raises HTTPException: 400 for a malformed path, 403 outside the roots, 404 for a missing
    folder under a root. The existence check comes after the root check, so a client learns
    nothing about the file system outside the roots.
    """
    if "\x00" in raw:
        raise HTTPException(400, detail="the path contains a NUL byte")
    if not roots:
        raise HTTPException(
            403,
            detail="no folder may be ingested through the API on this server: start it with "
            "`clipsearch serve --images DIR` or set CLIPSEARCH_ALLOWED_ROOTS",
        )
    candidate = FsPath(raw)
    if not candidate.is_absolute():
        raise HTTPException(
            400,
            detail=f"path {raw!r} must be absolute, under one of the allowed roots: {_roots_text(roots)}",
        )
    try:
        resolved = FsPath(os.path.realpath(candidate))
    except (OSError, ValueError) as exc:
        raise HTTPException(400, detail=f"path {raw!r} cannot be resolved: {exc}") from exc
    resolved_roots = [FsPath(os.path.realpath(r)) for r in roots]
    if not any(resolved == r or resolved.is_relative_to(r) for r in resolved_roots):
        raise HTTPException(
            403,
            # not what it resolved to: that would tell a client where links and /proc lead
            detail=f"path {raw!r} is outside the allowed roots: {_roots_text(roots)}",
        )
    try:
        is_dir = resolved.is_dir()
    except OSError as exc:  # a name too long for the file system, ...
        raise HTTPException(400, detail=f"path {raw!r} cannot be read: {exc.strerror}") from exc
    if not is_dir:
        raise HTTPException(404, detail=f"no folder at {raw!r}: check the path")
    return resolved


@router.post(
    "/ingest",
    operation_id="ingest",
    status_code=202,
    response_model=JobOut,
    dependencies=[Depends(require_token), audited("ingest")],
)
def ingest(body: IngestIn, library: LibraryDep, settings: SettingsDep) -> JobOut:
    """Queue ingestion of a folder under an allowed root; returns the job to watch. A job that
    cannot run is refused with the reason (507: the data folder's disk is full; 503: the job
    queue did not take it), never queued silently."""
    folder = check_ingest_path(body.path, settings.effective_allowed_roots)
    from .health import disk_problem

    data_dir = FsPath(settings.catalog.data_dir).expanduser()
    full = disk_problem(data_dir, settings.server.disk_free_min_mb, str(data_dir))
    if full is not None:
        raise HTTPException(507, detail=f"{full.message}; the ingest was not queued")
    return job_out(library.submit_ingest(str(folder), recursive=body.recursive))


@router.post(
    "/reindex",
    operation_id="reindex",
    status_code=202,
    response_model=JobOut,
    dependencies=[AdminAccess, audited("reindex")],
)
def reindex(library: LibraryDep, settings: SettingsDep, body: ReindexIn | None = None) -> JobOut:
    """Re-embed what the model has not embedded and rebuild the index (optionally a new model).

    `model` is a registry name, or a path under the data folder or an allowed root.
    """
    model = (body.model if body is not None else None) or None
    if model is not None:
        model = check_model_spec(
            model, [settings.catalog.data_dir, *settings.effective_allowed_roots]
        )
    return job_out(library.submit_reindex(model))


def check_model_spec(spec: str, roots: list[FsPath]) -> str:
    """A registry name passes as is; a path must resolve under one of ``roots``."""
    if "\x00" in spec:
        raise HTTPException(400, detail="the model name contains a NUL byte")
    spec = spec.strip()
    if not spec:
        raise HTTPException(400, detail="the model name is empty")
    try:
        from clipsearch.model.registry import MODELS

        if spec in MODELS:
            return spec
    except ImportError:  # registry not there: treat every name with a separator as a path
        pass
    looks_like_path = "/" in spec or "\\" in spec or spec.startswith((".", "~"))
    if not looks_like_path:
        return spec
    resolved = FsPath(os.path.realpath(spec)) if FsPath(spec).is_absolute() else None
    resolved_roots = [FsPath(os.path.realpath(r)) for r in roots]
    if resolved is None or not any(resolved.is_relative_to(r) for r in resolved_roots):
        raise HTTPException(
            403,
            detail=f"model path {spec!r} must be absolute and under the data folder or an allowed "
            f"root: {_roots_text(roots)}",
        )
    return str(resolved)


@router.get(
    "/jobs",
    operation_id="list_jobs",
    response_model=list[JobOut],
    dependencies=[PrivateReadAccess],
)
def list_jobs(
    library: LibraryDep,
    limit: Annotated[int, Query(ge=1, le=500, description="How many recent jobs.")] = 50,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_ID, description="Only jobs older than this id (the last one listed)."),
    ] = None,
) -> list[JobOut]:
    """Recent jobs, newest first; page back with `before`."""
    return [job_out(j) for j in library.list_jobs(limit=limit, before=before)]


@router.get(
    "/jobs/{id}", operation_id="get_job", response_model=JobOut, dependencies=[PrivateReadAccess]
)
def get_job(
    library: LibraryDep,
    id: Annotated[int, Path(ge=1, le=MAX_ID, description="Job id.")],
) -> JobOut:
    """One job's state and progress."""
    return job_out(library.get_job(id))
