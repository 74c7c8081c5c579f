"""Streaming a checked file (an original, a thumbnail, a preview) as an HTTP response: ETag,
caching and the headers that keep a file from ever running as a page. Used by the image and
removal routes alike (neither imports the other)."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from clipsearch.indexer.safe_files import OpenedFile

CACHE_THUMB = "private, max-age=86400"
CACHE_FILE = "private, max-age=3600"


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


#: On every original and thumbnail: never sniffed into another type, never run as a page (a
#: file that is also HTML or SVG gets no script, no plugin, no same-origin access).
FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Referrer-Policy": "no-referrer",
}


def _disposition(kind: str, name: str) -> str:
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def serve_file(
    request: Request,
    opened: OpenedFile,
    kind: str,
    image_id: int,
    media_type: str | None,
    cache: str,
    name: str | None = None,
) -> Response:
    """Stream an already opened and checked file (never re-opened by name). ``media_type`` None:
    not a recognised image, so only a download (octet-stream, attachment)."""
    etag = _etag(kind, image_id, opened.st)
    headers = {"ETag": etag, "Cache-Control": cache, **FILE_HEADERS}
    if _not_modified(request, etag):
        opened.close()
        return Response(status_code=304, headers=headers)
    if name is not None or media_type is None:
        shown = name or f"image-{image_id}"
        headers["Content-Disposition"] = _disposition(
            "inline" if media_type is not None else "attachment", shown
        )
    headers["Content-Length"] = str(opened.size)
    return StreamingResponse(
        opened.chunks(),
        media_type=media_type or "application/octet-stream",
        headers=headers,
        background=BackgroundTask(opened.close),
    )
