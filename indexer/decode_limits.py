"""How much decoding a file may cost, decided from its header before any pixel is decoded: the
formats opened at all, the largest file, the pages or frames counted (with a cap, never
``n_frames``), the pixels, and the bytes of pixels for the image's mode and bit depth.
Every decoder (ingestion, previews, search uploads) checks the same budget: :func:`check_budget`.
"""

from __future__ import annotations

import contextlib
import functools

from PIL import Image

from clipsearch.indexer.errors import IndexerError

# Formats we let Pillow open. Everything else (EPS via Ghostscript, PSD, ICO, ...) is refused.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF")
MAX_FILE_BYTES = 1 << 30  # 1 GiB: no photo is larger; refusing protects worker memory
#: Pages or frames a file may have. Counting stops one past it (never ``n_frames``, which walks
#: every page of a TIFF, quadratically): a file with more is refused, whatever its size.
MAX_FRAMES = 1000
#: Bytes of pixels one decode may hold at once: the decoded image in Pillow's storage for its mode
#: and bit depth (1 byte a pixel for L and P, 2 for 16-bit grey, 4 for RGB, RGBA, 32-bit and
#: float), plus a full-size working copy when the mode must be converted before it can be reduced
#: (palette, 1-bit, 16-bit). An 81-megapixel RGBA PNG is 324 MB; 16-bit grey at the same size, 486.
MAX_DECODE_BYTES = 384 << 20
#: Pillow's bytes per pixel for each mode (its storage, not the file's).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
#: Modes ``Image.reduce`` works on in place of a full-size conversion.
REDUCIBLE_MODES = ("L", "LA", "La", "PA", "RGB", "RGBA", "RGBa", "RGBX", "I", "F", "CMYK", "YCbCr")

with contextlib.suppress(Exception):  # HEIC/HEIF when the optional plugin is installed
    import pillow_heif  # type: ignore[import-not-found, unused-ignore]

    pillow_heif.register_heif_opener()


@functools.lru_cache(maxsize=1)
def open_formats() -> tuple[str, ...]:
    """ALLOWED_FORMATS that this Pillow build (and its plugins) can open."""
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def pixel_bytes(mode: str, width: int, height: int) -> int:
    """The bytes of pixels decoding a ``mode`` image of ``width`` x ``height`` holds at once
    (see :data:`MAX_DECODE_BYTES`)."""
    n = int(width) * int(height)
    cost = n * _MODE_BYTES.get(mode, 4)
    if mode not in REDUCIBLE_MODES:  # converted at full size before it can be reduced
        cost += n * 4
    return cost


def frame_count(img: Image.Image, cap: int = MAX_FRAMES) -> int:
    """How many frames or pages ``img`` has, counted up to ``cap + 1`` and no further.

    A count the header declares (WebP, APNG, MPO) is taken as it is; TIFF pages are counted by
    seeking at most ``cap + 1`` of them (``n_frames`` would walk all of them, quadratically: a
    490,000-page file took hours); a GIF's frames can only be counted by decoding them, and only
    its first is ever read, so it counts as 1. The image is left on its first frame."""
    known = getattr(img, "_n_frames", None)
    if isinstance(known, int) and known > 0:
        return min(known, cap + 1)
    if img.format != "TIFF":
        return 1
    n = 1
    try:
        for i in range(1, cap + 1):
            img.seek(i)
            n = i + 1
    except EOFError:
        pass
    finally:
        img.seek(0)
    return n


class TooCostly(IndexerError):
    """The image would take more pages, pixels or memory to decode than its budget allows.
    ``problem``: ``too_many_pixels`` or ``too_many_frames``."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


def check_budget(
    img: Image.Image,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    max_frames: int = MAX_FRAMES,
    what: str = "decoded",
) -> None:
    """Refuse, from the header and before any pixel is decoded, an image over its budget of
    pixels (``max_pixels``, default Pillow's limit), pixel memory for its mode (``max_bytes``,
    default :data:`MAX_DECODE_BYTES`) or frames (``max_frames``). Raises :class:`TooCostly`.
    Call it after ``draft`` (a JPEG's budget is that of the scale it will be decoded at)."""
    limit = int(max_pixels or Image.MAX_IMAGE_PIXELS or 89_478_485)
    budget = int(max_bytes or MAX_DECODE_BYTES)
    w, h = img.size
    if w * h > limit:
        raise TooCostly(too_many_pixels(w, h, limit).replace("decoded", what), "too_many_pixels")
    cost = pixel_bytes(img.mode, w, h)
    if cost > budget:
        raise TooCostly(
            f"too much memory: {w}x{h} in mode {img.mode} takes {cost / 2**20:,.0f} MiB to "
            f"decode, above the limit of {budget / 2**20:,.0f} MiB (a possible decompression "
            f"bomb); the file was not {what}",
            "too_many_pixels",
        )
    frames = frame_count(img, max_frames)
    if frames > max_frames:
        raise TooCostly(
            f"too many pages or frames: more than {max_frames:,} (a photo has a handful); the "
            f"file was not {what}",
            "too_many_frames",
        )


def too_many_pixels(w: int, h: int, limit: int) -> str:
    return (
        f"too many pixels: {w}x{h} is {w * h / 1e6:,.0f} megapixels, above the limit of "
        f"{limit / 1e6:,.0f} (a possible decompression bomb); the file was not decoded"
    )


def bomb_reason(msg: str, limit: int) -> str:
    import re

    m = re.search(r"\((\d+) pixels\)", msg)
    if m:
        n = int(m.group(1))
        return (
            f"too many pixels: {n / 1e6:,.0f} megapixels, above the limit of {limit / 1e6:,.0f} "
            "(a possible decompression bomb); the file was not decoded"
        )
    return "too many pixels (a possible decompression bomb); the file was not decoded"
