"""Browse the catalog and fetch images: files are served only by catalog id, never by a path."""

from __future__ import annotations

import os
import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response

from clipsearch.indexer import safe_files

from ..auth import ReadAccess, VisibleImage, audited, require_token
from ..deps import LibraryDep, SettingsDep
from ..files import CACHE_FILE, CACHE_THUMB, FILE_HEADERS, serve_file
from ..schemas import ImageOut, ImagePage, MonthOut, RestoreOut, TimelineOut
from ..search_params import FiltersDep, to_filters
from .common import ERRORS, MAX_ID, image_out, restore_out

router = APIRouter(prefix="/api/images", tags=["images"], responses=ERRORS)

IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Catalog id of the image.")]

BINARY: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/*": {}}, "description": "The image bytes."},
    304: {"description": "Not modified"},
}


@router.get("", operation_id="list_images", response_model=ImagePage, dependencies=[ReadAccess])
def list_images(
    request: Request,
    library: LibraryDep,
    settings: SettingsDep,
    offset: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_ID,
            description="Skip this many images (reads past them: prefer `after` for deep pages).",
        ),
    ] = 0,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_ID,
            description="Start after this image id: pass the previous page's `next_after`.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, description="Page size.")] = 50,
    state: Annotated[
        Literal["pending", "ready", "failed"] | None,
        Query(description="Only images in this state."),
    ] = None,
    filters: FiltersDep = None,
    sort: Annotated[
        Literal["id", "date_desc", "date_asc"],
        Query(description="id (the order images were added), or capture date (undated last)."),
    ] = "id",
    after_key: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Date orders: start after this cursor (the previous page's "
            "`next_after_key`).",
        ),
    ] = None,
) -> ImagePage:
    """Browse the catalog in id order (the order images were added) or by capture date, with the
    searches' filters (`folder`, `date_from`, `date_to`, `format`). Page with `after` (id order)
    or `after_key` (date orders): each page is a range read on an index, as quick at image
    100,000 as at image 1. `total` counts the library (or `state`), not the filters."""
    if limit > settings.limits.list_limit_max:
        raise HTTPException(
            422, detail=f"limit must be at most {settings.limits.list_limit_max} (got {limit})"
        )
    if filters is not None or sort != "id" or after_key is not None:
        if offset:
            raise HTTPException(
                422, detail="offset does not go with filters or sort: page with after/after_key"
            )
        items, total, next_after, next_key = library.browse_images(
            limit=limit,
            state=state,
            filters=to_filters(filters),
            sort=sort,
            after=after,
            after_key=after_key,
        )
        return ImagePage(
            items=[image_out(request, i) for i in items],
            total=int(total),
            offset=0,
            limit=limit,
            next_after=next_after,
            next_after_key=next_key,
        )
    items, total = library.list_images(offset=offset, limit=limit, state=state, after=after)
    return ImagePage(
        items=[image_out(request, i) for i in items],
        total=int(total),
        offset=offset,
        limit=limit,
        next_after=items[-1].id if len(items) == limit else None,
    )


@router.get(
    "/timeline",
    operation_id="image_timeline",
    response_model=TimelineOut,
    dependencies=[ReadAccess],
)
def image_timeline(
    library: LibraryDep,
    filters: FiltersDep = None,
    sort: Annotated[
        Literal["date_desc", "date_asc"], Query(description="Newest or oldest month first.")
    ] = "date_desc",
    state: Annotated[
        Literal["pending", "ready", "failed"] | None,
        Query(description="Only images in this state."),
    ] = None,
) -> TimelineOut:
    """The months that hold pictures (narrowed by the searches' filters), each with the
    `after_key` that starts a `GET /api/images?sort=...` page there: what the gallery's date
    scrubber jumps with. One index seek per month: it never reads the whole library."""
    found = library.timeline(state=state, filters=to_filters(filters), sort=sort)
    return TimelineOut(
        months=[
            MonthOut(month=f"{m.year:04d}-{m.month:02d}", after_key=m.after_key)
            for m in found.months
        ],
        undated=found.undated,
        undated_after_key=found.undated_after_key,
        more=found.more,
    )


@router.get(
    "/{id}",
    operation_id="get_image",
    response_model=ImageOut,
    dependencies=[ReadAccess, VisibleImage],
)
def get_image(request: Request, library: LibraryDep, id: IdPath) -> ImageOut:
    """One image's metadata and state (with the failure reason when it could not be read)."""
    return image_out(request, library.get_image(id))


@router.get(
    "/{id}/thumbnail",
    operation_id="image_thumbnail",
    response_class=Response,
    responses=BINARY,
    dependencies=[ReadAccess, VisibleImage],
)
def image_thumbnail(request: Request, library: LibraryDep, id: IdPath) -> Response:
    """The thumbnail (about 256 px JPEG), with ETag and Cache-Control; 304 on a matching
    If-None-Match."""
    opened = library.open_thumbnail(id)
    return serve_file(request, opened, "thumb", id, "image/jpeg", CACHE_THUMB)


@router.get(
    "/{id}/file",
    operation_id="image_file",
    response_class=Response,
    responses=BINARY,
    dependencies=[ReadAccess, VisibleImage],
)
def image_file(request: Request, library: LibraryDep, id: IdPath) -> Response:
    """The original file, by catalog id only; with ETag and Cache-Control. Served inline only
    as the image format the decoder recognised (checked again against the file's first bytes);
    a file that failed to decode is a download (application/octet-stream). 404 when the file on
    disk no longer is the one catalogued (then its folder needs a new ingest)."""
    opened, media_type = library.open_file(id)
    name = os.path.basename(opened.real_path)
    info: Any = None
    try:
        info = library.get_image(id)
    except Exception:  # the row just went away: the name on disk is all we have
        info = None
    if info is not None and getattr(info, "path", None):
        name = os.path.basename(os.fsencode(str(info.path)).decode("utf-8", "replace"))
    return serve_file(request, opened, "file", id, media_type, CACHE_FILE, name)


#: Previews rendered at once (each in a decoder process that may decode a large original): the
#: rest wait their turn.
_PREVIEW_SLOTS = threading.BoundedSemaphore(2)
#: One rendering of a preview at a time: the other requests for it wait, then read the cache
#: (striped by key: two previews that share a lock only take turns).
_PREVIEW_KEYS = tuple(threading.Lock() for _ in range(64))


@router.get(
    "/{id}/preview",
    operation_id="image_preview",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The preview (JPEG)."},
        304: {"description": "Not modified"},
        422: {"description": "The file cannot be rendered (the reason is in `detail`)."},
    },
    dependencies=[ReadAccess, VisibleImage],
)
def image_preview(
    request: Request, library: LibraryDep, settings: SettingsDep, id: IdPath
) -> Response:
    """A browser-displayable rendition of the original: a JPEG, its longest side at most 2048
    px, EXIF orientation applied. What the gallery shows for formats browsers cannot display
    (TIFF, HEIC) and for very large originals; `/file` stays the original. Rendered once per
    content (cached in the data folder's `previews/`, keyed by sha256) from the original opened
    and checked as `/file` does (no link followed, inside the served folders, still the file
    catalogued); a decompression bomb is refused (422), not decoded. It is rendered in a decoder
    process of its own, killed past `CLIPSEARCH_PREVIEW_DECODE_SECONDS` and bounded by
    `CLIPSEARCH_DECODE_MEMORY_MB` (422 naming the limit), which writes it into the cache; the
    API process only streams the cached file."""
    from clipsearch.indexer import decode_preview
    from clipsearch.indexer.decode_isolated import DecodeRefused, render_preview_isolated

    from ..uploads import isolation_limits

    opened, media_type = library.open_file(id)
    try:
        if media_type is None:
            raise HTTPException(
                422,
                detail=f"image {id} is not a decoded image (it failed or is not processed yet): "
                "no preview; download the original from its /file URL",
            )
        sha = library.get_image(id).sha256 or opened.sha256()
        folder = library.data_dir / "previews"
        target = folder / decode_preview.preview_key(sha)
        if not target.is_file():
            with _PREVIEW_KEYS[hash(sha) % len(_PREVIEW_KEYS)]:
                if not target.is_file():  # rendered meanwhile by another request
                    # cached by the catalogued content's hash: rendered only from that content
                    # (a file rewritten at the same size and mtime passes open_file's check)
                    if opened.sha256() != sha:
                        raise HTTPException(
                            404,
                            detail=f"image {id}: the file changed on disk since it was scanned; "
                            "no preview until its folder is ingested again",
                        )
                    limits = isolation_limits(settings, settings.limits.preview_decode_seconds)
                    key = decode_preview.preview_key(sha)
                    with _PREVIEW_SLOTS:
                        try:
                            data = render_preview_isolated(opened.fd, folder, key, limits)
                        except DecodeRefused as exc:
                            raise HTTPException(422, detail=f"image {id}: {exc}") from None
                    if data is not None:  # a full or read-only data folder: still show it
                        headers = {"Cache-Control": "no-store", **FILE_HEADERS}
                        return Response(data, media_type="image/jpeg", headers=headers)
    finally:
        opened.close()
    try:
        cached = safe_files.open_confined(target, [folder], "preview")
    except safe_files.UnsafeFile as exc:
        raise HTTPException(404, detail=f"image {id}: {exc}") from None
    return serve_file(request, cached, "preview", id, "image/jpeg", CACHE_THUMB)


@router.delete(
    "/{id}",
    operation_id="delete_image",
    status_code=204,
    response_class=Response,
    dependencies=[Depends(require_token), audited("image-removed")],
)
def delete_image(
    library: LibraryDep,
    id: IdPath,
    from_disk: Annotated[
        bool,
        Query(
            description="Also move the file into the trash folder of the server's data folder "
            "(never deleted; restore puts it back). Refused (409) when the file on disk is no "
            "longer the one catalogued."
        ),
    ] = False,
) -> Response:
    """Remove an image from the library: out of search, browse and counts, and remembered, so
    rescans, watched folders and restarts do not add the file again (nor a copy of it) until it
    is restored (GET /api/removed, POST /api/images/{id}/restore). The file on disk is left
    alone unless `from_disk=true`."""
    library.delete_image(id, from_disk=from_disk)
    return Response(status_code=204)


@router.post(
    "/{id}/restore",
    operation_id="restore_image",
    status_code=202,
    response_model=RestoreOut,
    dependencies=[Depends(require_token), audited("image-restored")],
)
def restore_image(request: Request, library: LibraryDep, id: IdPath) -> RestoreOut:
    """Restore a removed image by the id it had: see POST /api/removed/{id}/restore."""
    return restore_out(request, library.restore_image(id))
