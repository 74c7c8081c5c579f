"""Browse the catalog and fetch images: files are served only by catalog id, never by a path."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat as statmod
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import FileResponse

from ..auth import require_token
from ..deps import LibraryDep, SettingsDep
from ..schemas import ImageOut, ImagePage
from .common import ERRORS, MAX_ID, image_out

router = APIRouter(prefix="/api/images", tags=["images"], responses=ERRORS)

IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Catalog id of the image.")]

CACHE_THUMB = "public, max-age=86400"
CACHE_FILE = "private, max-age=3600"

MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heif",
    "HEIC": "image/heic",
    "AVIF": "image/avif",
}

BINARY: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/*": {}}, "description": "The image bytes."},
    304: {"description": "Not modified"},
}


@router.get("", operation_id="list_images", response_model=ImagePage)
def list_images(
    request: Request,
    library: LibraryDep,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Skip this many images.")] = 0,
    limit: Annotated[int, Query(ge=1, description="Page size.")] = 50,
    state: Annotated[
        Literal["pending", "ready", "failed"] | None,
        Query(description="Only images in this state."),
    ] = None,
) -> ImagePage:
    """Browse the catalog, newest first as the library orders it."""
    if limit > settings.list_limit_max:
        raise HTTPException(
            422, detail=f"limit must be at most {settings.list_limit_max} (got {limit})"
        )
    items, total = library.list_images(offset=offset, limit=limit, state=state)
    return ImagePage(
        items=[image_out(request, i) for i in items], total=int(total), offset=offset, limit=limit
    )


@router.get("/{id}", operation_id="get_image", response_model=ImageOut)
def get_image(request: Request, library: LibraryDep, id: IdPath) -> ImageOut:
    """One image's metadata and state (with the failure reason when it could not be read)."""
    return image_out(request, library.get_image(id))


def _etag(kind: str, image_id: int, st: os.stat_result) -> str:
    base = f"{kind}:{image_id}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
    return '"' + hashlib.sha256(base.encode()).hexdigest()[:32] + '"'


def _not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag in tags


def _serve(
    request: Request, path: FsPath, kind: str, image_id: int, media_type: str, cache: str
) -> Response:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        what = "thumbnail" if kind == "thumb" else "file"
        raise HTTPException(
            404,
            detail=f"the {what} of image {image_id} is no longer on disk; re-run ingestion of its folder",
        ) from exc
    if not statmod.S_ISREG(st.st_mode):
        raise HTTPException(404, detail=f"image {image_id} is not a regular file on disk")
    etag = _etag(kind, image_id, st)
    headers = {"ETag": etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return FileResponse(
        path,
        media_type=media_type,
        headers=headers,
        stat_result=st,
        # a name that is not UTF-8 (bytes on disk) cannot go into Content-Disposition as is
        filename=os.fsencode(path.name).decode("utf-8", "replace") if kind == "file" else None,
        content_disposition_type="inline",
    )


@router.get(
    "/{id}/thumbnail", operation_id="image_thumbnail", response_class=Response, responses=BINARY
)
def image_thumbnail(request: Request, library: LibraryDep, id: IdPath) -> Response:
    """The thumbnail (about 256 px), with ETag and Cache-Control; 304 on a matching If-None-Match."""
    path = FsPath(library.thumbnail_path(id))
    media_type = mimetypes.guess_type(path.name)[0] or "image/jpeg"
    return _serve(request, path, "thumb", id, media_type, CACHE_THUMB)


@router.get("/{id}/file", operation_id="image_file", response_class=Response, responses=BINARY)
def image_file(request: Request, library: LibraryDep, id: IdPath) -> Response:
    """The original file, by catalog id only; with ETag and Cache-Control."""
    info: Any = library.get_image(id)
    path = FsPath(library.file_path(id))
    fmt = str(getattr(info, "format", "") or "").upper()
    media_type = (
        MEDIA_TYPES.get(fmt) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    return _serve(request, path, "file", id, media_type, CACHE_FILE)


@router.delete(
    "/{id}",
    operation_id="delete_image",
    status_code=204,
    response_class=Response,
    dependencies=[Depends(require_token)],
)
def delete_image(library: LibraryDep, id: IdPath) -> Response:
    """Remove an image from the catalog and the index (the file on disk is left alone)."""
    library.delete_image(id)
    return Response(status_code=204)
