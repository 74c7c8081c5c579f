"""Shared pieces of the routers: error responses for OpenAPI and library-object converters."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from fastapi import Request

from clipsearch.indexer.types import Hit, ImageInfo, JobInfo, RemovedInfo, RestoreResult

from ..schemas import (
    ErrorOut,
    ImageOut,
    JobError,
    JobOut,
    RemovedOut,
    RestoreOut,
    SearchHit,
    ValidationErrorOut,
)
from ..versioning import V1_PREFIX

MAX_ID = 2**63 - 1

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ValidationErrorOut if code == 422 else ErrorOut, "description": desc}
    for code, desc in {
        400: "Bad request (the message says what to change)",
        401: "Missing or wrong API token",
        403: "Path outside the allowed roots",
        404: "Not found",
        409: "Conflict with the current state",
        413: "Upload too large (bytes or pixels)",
        415: "Not an image this server can read",
        422: "Invalid parameters",
        503: "Catalog or model unavailable",
    }.items()
}


def _api_url(request: Request, path: str) -> str:
    """The URL of an API ``path`` (``/images/3/thumbnail``) that a response hands out: always
    under the versioned prefix (``/api/v1``), whichever of the two prefixes was asked."""
    root = request.scope.get("root_path", "") or ""
    return f"{root}{V1_PREFIX}{path}"


def _url(request: Request, image_id: int, what: str) -> str:
    return _api_url(request, f"/images/{image_id}/{what}")


def hit_out(request: Request, hit: Hit) -> SearchHit:
    image_id = int(hit.id)
    return SearchHit(
        id=image_id,
        score=float(hit.score),
        path=str(hit.path),
        width=hit.width,
        height=hit.height,
        format=hit.format,
        taken_at=hit.taken_at,
        thumbnail_url=_url(request, image_id, "thumbnail"),
        file_url=_url(request, image_id, "file"),
        preview_url=_url(request, image_id, "preview"),
        match=list(hit.match or ("semantic",)),
        words=list(hit.words or ()),
    )


def image_out(request: Request, info: ImageInfo) -> ImageOut:
    image_id = int(info.id)
    return ImageOut(
        id=image_id,
        path=str(info.path),
        size=info.size,
        width=info.width,
        height=info.height,
        format=info.format,
        taken_at=info.taken_at,
        state=str(info.state),
        error=info.error,
        sha256=info.sha256,
        thumbnail_url=_url(request, image_id, "thumbnail"),
        file_url=_url(request, image_id, "file"),
        preview_url=_url(request, image_id, "preview"),
    )


def job_out(job: JobInfo) -> JobOut:
    errors = []
    recorded: list[object] = list(job.errors or [])  # the catalog's JSON, checked item by item
    for err in recorded:
        if is_dataclass(err) and not isinstance(err, type):
            err = asdict(err)
        if isinstance(err, dict):
            errors.append(JobError(path=err.get("path"), reason=str(err.get("reason", ""))))
        elif isinstance(err, (list, tuple)) and len(err) == 2:
            errors.append(JobError(path=err[0], reason=str(err[1])))
        else:
            errors.append(JobError(path=None, reason=str(err)))
    return JobOut(
        id=int(job.id),
        kind=str(job.kind),
        state=str(job.state),
        params=dict(job.params or {}),
        total=job.total,
        done=int(job.done or 0),
        failed=int(job.failed or 0),
        errors=errors,
        message=job.message,
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
    )


def removed_out(request: Request, info: RemovedInfo) -> RemovedOut:
    return RemovedOut(
        id=info.id,
        image_id=info.image_id,
        path=info.path,
        size=info.size,
        width=info.width,
        height=info.height,
        format=info.format,
        taken_at=info.taken_at,
        sha256=info.sha256,
        in_trash=info.trash_path is not None,
        removed_at=info.removed_at,
        thumbnail_url=_api_url(request, f"/removed/{info.id}/thumbnail")
        if info.thumbnail
        else None,
    )


def restore_out(request: Request, result: RestoreResult) -> RestoreOut:
    return RestoreOut(
        restored=[removed_out(request, r) for r in result.restored],
        jobs=[job_out(j) for j in result.jobs],
    )
