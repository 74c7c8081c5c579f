"""Removed images: what the user took out of the library, and bringing it back.

A removal (DELETE /api/images/{id}) is remembered by path and content, so rescans and restarts do
not add the file again; these routes list the removals and restore them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from ..auth import ReadAccess, VisibleRemoval, audited, require_token, visible_folders
from ..deps import LibraryDep
from ..files import CACHE_THUMB, serve_file
from ..schemas import RemovedOut, RemovedPage, RestoreOut
from .common import ERRORS, MAX_ID, removed_out, restore_out

router = APIRouter(prefix="/api/removed", tags=["removed"], responses=ERRORS)

IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Id of the removal.")]


@router.get(
    "",
    operation_id="list_removed",
    response_model=RemovedPage,
    dependencies=[ReadAccess],
)
def list_removed(
    request: Request,
    library: LibraryDep,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_ID, description="Start before this id: the previous `next_before`."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 50,
) -> RemovedPage:
    """Images removed from the library, the most recent first. Scans skip them (by path, and
    by content wherever a copy appears) until they are restored. A viewer sees those removed
    from the folders shared with them."""
    items = library.list_removed(limit=limit, before=before, within=visible_folders())
    return RemovedPage(
        items=[removed_out(request, r) for r in items],
        next_before=items[-1].id if len(items) == limit else None,
    )


@router.get(
    "/{id}",
    operation_id="get_removed",
    response_model=RemovedOut,
    dependencies=[ReadAccess, VisibleRemoval],
)
def get_removed(request: Request, library: LibraryDep, id: IdPath) -> RemovedOut:
    """One removal."""
    return removed_out(request, library.get_removed(id))


@router.get(
    "/{id}/thumbnail",
    operation_id="removed_thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The thumbnail bytes."}},
    dependencies=[ReadAccess, VisibleRemoval],
)
def removed_thumbnail(request: Request, library: LibraryDep, id: IdPath) -> Response:
    """The thumbnail the image had (kept while it is removed)."""
    opened = library.open_removed_thumbnail(id)
    return serve_file(request, opened, "removed-thumb", id, "image/jpeg", CACHE_THUMB)


@router.post(
    "/{id}/restore",
    operation_id="restore_removed",
    status_code=202,
    response_model=RestoreOut,
    dependencies=[Depends(require_token), audited("image-restored")],
)
def restore_removed(request: Request, library: LibraryDep, id: IdPath) -> RestoreOut:
    """Bring the image back (and any other removed copy of the same content): files moved to
    the trash return to their folders, and ingest jobs add them again under new ids."""
    return restore_out(request, library.restore(id))
