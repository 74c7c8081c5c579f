"""Search by an uploaded image: reading the upload within its byte limit, decoding it in a
process of its own (killed on a deadline, its memory bounded: indexer.decode_isolated) at the
smallest size that serves the model, and a gate that bounds how many decode at once."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, UploadFile
from PIL import Image

from clipsearch.indexer.decode_isolated import DecodeRefused, IsolationLimits, decode_query_image

from .deps import ServiceState
from .settings import Settings

UPLOAD_CHUNK = 256 * 1024


#: HTTP status for each way a decode is refused (indexer.decode_isolated.DecodeRefused.problem).
_STATUS = {"too_costly": 413, "memory": 413, "not_image": 415, "corrupt": 400}


def isolation_limits(settings: Settings, deadline_s: float) -> IsolationLimits:
    """The limits of one isolated decode from the settings (read here, at the edge)."""
    return IsolationLimits(deadline_s, settings.limits.decode_memory_mb << 20)


def refused_http(exc: DecodeRefused) -> HTTPException:
    """The answer for a refused decode: 413 over a budget or the memory limit, 415 not an image,
    400 corrupt, 422 past the deadline or a crashed decoder; the message names the limit."""
    return HTTPException(_STATUS.get(exc.problem, 422), detail=str(exc))


async def decode_upload(state: ServiceState, data: bytes) -> Image.Image:
    """Decode a search upload in a decoder process of its own (indexer.decode_isolated), killed
    past ``limits.upload_decode_seconds``, its memory bounded by ``limits.decode_memory_mb``;
    the wait runs on a thread of its own, so searches keep their pools meanwhile. An RGB
    picture of about 448 px, or an HTTPException that says why not."""
    limits = state.settings.limits
    isolation = isolation_limits(state.settings, limits.upload_decode_seconds)
    try:
        return await asyncio.to_thread(
            decode_query_image, data, limits.max_upload_pixels, isolation
        )
    except DecodeRefused as exc:
        raise refused_http(exc) from None


async def read_upload(file: UploadFile, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await file.read(UPLOAD_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise HTTPException(
                413,
                detail=f"upload is larger than the limit of {limit} bytes: send a smaller image",
            )
        chunks.append(chunk)
    if size == 0:
        raise HTTPException(400, detail="the uploaded file is empty")
    return b"".join(chunks)
