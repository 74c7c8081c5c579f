"""Shared pieces of the routers: error responses for OpenAPI and library-object converters."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from fastapi import Request

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


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def hit_out(request: Request, hit: Any) -> SearchHit:
    image_id = int(_get(hit, "id"))
    return SearchHit(
        id=image_id,
        score=float(_get(hit, "score")),
        path=str(_get(hit, "path", "")),
        width=_get(hit, "width"),
        height=_get(hit, "height"),
        format=_get(hit, "format"),
        taken_at=_get(hit, "taken_at"),
        thumbnail_url=_url(request, image_id, "thumbnail"),
        file_url=_url(request, image_id, "file"),
        preview_url=_url(request, image_id, "preview"),
        match=list(_get(hit, "match", None) or ("semantic",)),
        words=list(_get(hit, "words", None) or ()),
    )


def image_out(request: Request, info: Any) -> ImageOut:
    image_id = int(_get(info, "id"))
    return ImageOut(
        id=image_id,
        path=str(_get(info, "path", "")),
        size=_get(info, "size"),
        width=_get(info, "width"),
        height=_get(info, "height"),
        format=_get(info, "format"),
        taken_at=_get(info, "taken_at"),
        state=str(_get(info, "state", "pending")),
        error=_get(info, "error"),
        sha256=_get(info, "sha256"),
        thumbnail_url=_url(request, image_id, "thumbnail"),
        file_url=_url(request, image_id, "file"),
        preview_url=_url(request, image_id, "preview"),
    )


def job_out(job: Any) -> JobOut:
    errors = []
    for err in _get(job, "errors", None) or []:
        if is_dataclass(err) and not isinstance(err, type):
            err = asdict(err)
        if isinstance(err, dict):
            errors.append(JobError(path=err.get("path"), reason=str(err.get("reason", ""))))
        elif isinstance(err, (list, tuple)) and len(err) == 2:
            errors.append(JobError(path=err[0], reason=str(err[1])))
        else:
            errors.append(JobError(path=None, reason=str(err)))
    return JobOut(
        id=int(_get(job, "id")),
        kind=str(_get(job, "kind", "")),
        state=str(_get(job, "state", "")),
        params=dict(_get(job, "params", None) or {}),
        total=_get(job, "total"),
        done=int(_get(job, "done", 0) or 0),
        failed=int(_get(job, "failed", 0) or 0),
        errors=errors,
        message=_get(job, "message"),
        created_at=_get(job, "created_at"),
        updated_at=_get(job, "updated_at"),
        finished_at=_get(job, "finished_at"),
    )


def removed_out(request: Request, info: Any) -> RemovedOut:
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


def restore_out(request: Request, result: Any) -> RestoreOut:
    return RestoreOut(
        restored=[removed_out(request, r) for r in result.restored],
        jobs=[job_out(j) for j in result.jobs],
    )
