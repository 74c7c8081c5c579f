"""Search by an uploaded image: reading the upload within its byte limit, decoding it at the
smallest size that serves the model, and a gate that bounds how many decode at once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings
from collections.abc import AsyncIterator
from typing import Any

from fastapi import HTTPException, UploadFile

from .deps import ServiceState

UPLOAD_CHUNK = 256 * 1024


UPLOAD_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF")
QUERY_SIDE = 448  # decoded size kept for a query image: the model needs 224 px


def decode_upload(data: bytes, max_pixels: int) -> Any:
    """Decode a query image at the smallest size that serves the model.

    JPEGs are decoded in draft mode (DCT scaling: 1/2 to 1/8 of each side, for a fraction of the
    time and memory); ``max_pixels`` bounds the pixels actually decoded, so a 7000x7000 PNG (which
    cannot be decoded smaller) is refused from its header, before any pixel is decoded, while a
    48-megapixel phone JPEG is decoded at 1/8. The result is reduced to about QUERY_SIDE px."""
    from PIL import Image, UnidentifiedImageError

    import clipsearch.indexer.decode_limits  # noqa: F401 - registers the HEIC opener when pillow-heif is installed

    Image.init()
    formats = tuple(f for f in UPLOAD_FORMATS if f in Image.OPEN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Any = Image.open(io.BytesIO(data), formats=formats)
            width, height = img.size
            if img.format in ("JPEG", "MPO"):
                img.draft("RGB", (QUERY_SIDE, QUERY_SIDE))  # never below the requested size
            dw, dh = img.size  # what will be decoded
            if dw * dh > max_pixels:
                raise HTTPException(
                    413,
                    detail=f"image is {width}x{height} = {width * height} pixels; a search image "
                    f"may have at most {max_pixels} pixels (JPEGs count at 1/8 of each side): "
                    "send a smaller image (a few hundred pixels is plenty for searching)",
                )
            from clipsearch.indexer.decode_limits import TooCostly, check_budget

            try:  # memory for its mode and bit depth; pages counted with a cap, never n_frames
                check_budget(img, max_pixels)
            except TooCostly as exc:
                raise HTTPException(413, detail=str(exc)) from None
            img.load()  # the first frame only
            if max(img.size) > 2 * QUERY_SIDE:
                factor = max(1, max(img.size) // QUERY_SIDE)
                img = img.reduce(factor) if img.mode in ("RGB", "L", "RGBA", "P") else img
            return img.convert("RGB")
    except HTTPException:
        raise
    except UnidentifiedImageError as exc:
        raise HTTPException(
            415,
            detail="the upload is not an image this server can read (JPEG, PNG, WebP, GIF, BMP, "
            "TIFF, HEIC)",
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise HTTPException(413, detail=f"image has too many pixels (limit {max_pixels})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise HTTPException(
            400, detail=f"the image could not be decoded (truncated or corrupt file?): {exc}"
        ) from exc


class DecodeGate:
    """At most ``slots`` upload decodes at once, at most ``queue`` waiting; beyond, 503 with
    Retry-After (a burst of uploads costs bounded CPU and memory, whatever its size)."""

    def __init__(self, slots: int, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self._sem: asyncio.Semaphore | None = None
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        busy = {"Retry-After": "2"}
        if self._sem.locked() and self.waiting >= self.queue:
            raise HTTPException(
                503,
                detail="too many image searches at once: retry in a few seconds",
                headers=busy,
            )
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), UPLOAD_WAIT_S)
        except TimeoutError:
            raise HTTPException(
                503, detail="the server is busy decoding other images: retry shortly", headers=busy
            ) from None
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._sem.release()


UPLOAD_WAIT_S = 20.0


def upload_gate(state: ServiceState) -> DecodeGate:
    gate = getattr(state, "upload_gate", None)
    if gate is None:
        gate = DecodeGate(
            state.settings.limits.upload_decode_slots, state.settings.limits.upload_queue
        )
        state.upload_gate = gate
    return gate


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
