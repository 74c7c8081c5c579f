"""Watched folders: the folders the library keeps up to date by itself (file-system events and a
periodic re-scan queue the usual ingest jobs). Kept in the catalog, so they survive restarts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from clipsearch.indexer.errors import NotFound
from clipsearch.indexer.folders import browse_folders
from clipsearch.indexer.ingest_problems import PROBLEMS_PAGE_DEFAULT, PROBLEMS_PAGE_MAX
from clipsearch.indexer.sharing import Visibility
from clipsearch.indexer.types import FolderInfo

from ..auth import PrivateReadAccess, ReadAccess, audited, require_token, visible_folders
from ..deps import LibraryDep, SettingsDep
from ..schemas import (
    AllowedFoldersOut,
    FolderBrowseOut,
    FolderEntryOut,
    FolderIn,
    FolderOut,
    FolderProblemOut,
    FolderProblemsOut,
    JobOut,
)
from .common import ERRORS, MAX_ID, job_out
from .jobs import check_ingest_path

router = APIRouter(prefix="/api/folders", tags=["folders"], responses=ERRORS)

IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Id of the watched folder.")]


def folder_out(info: FolderInfo) -> FolderOut:
    return FolderOut(
        id=info.id,
        path=info.path,
        recursive=info.recursive,
        state=info.state,
        created_at=info.created_at,
        last_scan_at=info.last_scan_at,
        last_job=job_out(info.last_job) if info.last_job is not None else None,
    )


@router.get(
    "",
    operation_id="list_folders",
    response_model=list[FolderOut],
    dependencies=[PrivateReadAccess],
)
def list_folders(library: LibraryDep) -> list[FolderOut]:
    """The watched folders, in the order they were added, each with its state and newest job."""
    return [folder_out(f) for f in library.list_watched_folders()]


@router.get(
    "/allowed",
    operation_id="allowed_folders",
    response_model=AllowedFoldersOut,
    dependencies=[PrivateReadAccess],
)
def allowed_folders(settings: SettingsDep) -> AllowedFoldersOut:
    """Where folders may be added from (the gallery's panel says so before anyone types):
    the `serve --images` folders and CLIPSEARCH_ALLOWED_ROOTS."""
    roots = [str(r) for r in settings.effective_allowed_roots]
    hint = (
        "to allow more, start the server with `clipsearch serve --images DIR` or "
        "`--allowed-root DIR`, or set CLIPSEARCH_ALLOWED_ROOTS"
        if roots
        else "no folder may be added from here: start the server with `clipsearch serve "
        "--images DIR` or `--allowed-root DIR`, or set CLIPSEARCH_ALLOWED_ROOTS"
    )
    return AllowedFoldersOut(roots=roots, hint=hint)


@router.get(
    "/browse",
    operation_id="browse_folders",
    response_model=FolderBrowseOut,
    dependencies=[PrivateReadAccess],
)
def browse(
    settings: SettingsDep,
    path: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="A folder under an allowed root; left out: the allowed roots themselves.",
        ),
    ] = None,
) -> FolderBrowseOut:
    """The folders a folder may be picked from, without typing a server path: the allowed roots,
    or the sub-folders of one folder under them, each with how many pictures it holds. Only
    folder names and counts: no file name, nothing above a root (403), no link followed out."""
    if path is not None:
        path = str(check_ingest_path(path, settings.effective_allowed_roots))
    listing = browse_folders(settings.effective_allowed_roots, path)
    return FolderBrowseOut(
        path=listing.path,
        parent=listing.parent,
        images=listing.images,
        folders=[
            FolderEntryOut(name=f.name, path=f.path, images=f.images) for f in listing.folders
        ],
        truncated=listing.truncated,
    )


@router.post(
    "",
    operation_id="add_folder",
    status_code=202,
    response_model=FolderOut,
    dependencies=[Depends(require_token), audited("folder-added")],
)
def add_folder(body: FolderIn, library: LibraryDep, settings: SettingsDep) -> FolderOut:
    """Watch a folder under an allowed root: it is ingested now, and new, changed, moved or
    deleted files are picked up within seconds from then on (and at each periodic re-scan)."""
    folder = check_ingest_path(body.path, settings.effective_allowed_roots)
    return folder_out(library.add_watched_folder(str(folder), recursive=body.recursive))


@router.delete(
    "/{id}",
    operation_id="remove_folder",
    status_code=204,
    response_class=Response,
    dependencies=[Depends(require_token), audited("folder-removed")],
)
def remove_folder(library: LibraryDep, id: IdPath) -> Response:
    """Stop watching a folder. Its images stay in the library."""
    library.remove_watched_folder(id)
    return Response(status_code=204)


@router.post(
    "/{id}/scan",
    operation_id="scan_folder",
    status_code=202,
    response_model=JobOut | None,
    dependencies=[Depends(require_token), audited("ingest")],
)
def scan_folder(library: LibraryDep, id: IdPath) -> JobOut | None:
    """Re-scan a watched folder now; null when an ingest of it is already waiting in the queue."""
    job = library.scan_watched_folder(id)
    return job_out(job) if job is not None else None


@router.get(
    "/{id}/problems",
    operation_id="folder_problems",
    response_model=FolderProblemsOut,
    dependencies=[ReadAccess],
)
def folder_problems(
    library: LibraryDep,
    id: IdPath,
    limit: Annotated[
        int,
        Query(ge=1, le=PROBLEMS_PAGE_MAX, description="How many to list, by path."),
    ] = PROBLEMS_PAGE_DEFAULT,
    after: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=4096,
            description="Start after this file: pass the previous page's `next_after`.",
        ),
    ] = None,
) -> FolderProblemsOut:
    """The files of a watched folder that are not in the library now, and why: links out of the
    folder, entries that cannot be read, files that are not pictures that can be read. Each
    once, however many rescans met it; empty once they are fixed. A viewer sees the folders
    shared with them (another folder: 404, as for one not watched). Pages by path: each is a
    range read on the folder's failed files and recorded problems, however many it has."""
    page = library.watched_folder_problems(id, limit, after)
    seen = visible_folders()
    if seen is not None and not Visibility(False, seen).allows_folder(page.folder):
        raise NotFound(f"folder {id} is not watched")  # the words for an unknown folder
    return FolderProblemsOut(
        folder_id=page.folder_id,
        items=[
            FolderProblemOut(path=p.path, problem=p.reason, kind=p.kind, since=p.since)
            for p in page.items
        ],
        total=page.total,
        next_after=page.next_after,
    )
