"""Browser previews: what the gallery shows for originals a browser cannot (TIFF, HEIC) or should
not (tens of megapixels) load as they are. Rendered under the decode budget
(:mod:`indexer.decode_limits`) and cached by content hash under the previews folder."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from clipsearch.indexer import safe_files
from clipsearch.indexer.decode_frames import exif_info, load_reduced, orient, to_rgb
from clipsearch.indexer.decode_limits import (
    TooCostly,
    bomb_reason,
    check_budget,
    open_formats,
    too_many_pixels,
)
from clipsearch.indexer.errors import IndexerError

if TYPE_CHECKING:
    from typing import IO

PREVIEW_SIDE = 2048  # the longest side of a preview, in pixels
PREVIEW_QUALITY = 85


class PreviewError(IndexerError):
    """The file cannot be rendered as a preview; the message says why (and it is shown)."""


def preview_key(sha256: str, side: int = PREVIEW_SIDE) -> str:
    """Where a preview lives under the previews folder: by content hash, so a renamed or copied
    file reuses it and a changed one gets a new one."""
    return f"{sha256[:2]}/{sha256}-{int(side)}.jpg"


def render_preview(
    fh: IO[bytes],
    max_side: int = PREVIEW_SIDE,
    max_pixels: int | None = None,
    quality: int = PREVIEW_QUALITY,
    max_bytes: int | None = None,
) -> bytes:
    """A JPEG of the image in the open binary file ``fh``: its first frame, EXIF orientation
    applied, transparency flattened onto white, the longest side at most ``max_side`` (never
    enlarged). Only the formats of :data:`ALLOWED_FORMATS` are opened, and the pixel count is
    checked from the header before decoding (``max_pixels``, default Pillow's limit; with the
    pixel memory ``max_bytes`` and the page count, :func:`check_budget`), so a decompression bomb
    is refused, not decoded; a big picture is reduced in its own mode right after decoding.
    Raises :class:`PreviewError`."""
    limit = int(max_pixels or Image.MAX_IMAGE_PIXELS or 89_478_485)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fh, formats=open_formats())
            w, h = img.size
            if w <= 0 or h <= 0:
                raise PreviewError(f"corrupt image header (size {w}x{h})")
            if w * h > limit:
                raise PreviewError(too_many_pixels(w, h, limit).replace("decoded", "shown"))
            if img.format in ("JPEG", "MPO"):  # decode at the smallest DCT scale that suffices
                img.draft("RGB", (max_side, max_side))
            check_budget(img, limit, max_bytes, what="shown")
            orientation, _taken = exif_info(img)
            rgb = to_rgb(orient(load_reduced(img, max_side // 2, max_side // 2), orientation))
        except TooCostly as exc:
            raise PreviewError(str(exc)) from None
        except PreviewError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PreviewError(bomb_reason(str(exc), limit).replace("decoded", "shown")) from None
        except UnidentifiedImageError:
            raise PreviewError(
                "not an image clipsearch can show (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/AVIF "
                "with their plugins): download the original instead"
            ) from None
        except MemoryError:
            raise PreviewError("not enough memory to decode this image for a preview") from None
        except Exception as exc:  # malformed files raise anything: OSError, SyntaxError, ...
            raise PreviewError(
                f"the image cannot be decoded for a preview ({type(exc).__name__}: {exc})"[:300]
            ) from None
    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=quality, optimize=True, progressive=True)
    return buf.getvalue()


def store_derived(target: Path, data: bytes) -> None:
    """Write a derived file (a preview) once, via a temporary file and an atomic rename, so a
    reader never sees half of it. Raises OSError."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=target.suffix, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def store_preview(folder: Path, target: Path, data: bytes) -> None:
    """Cache a rendered preview, only inside the previews ``folder``: a folder under it swapped
    for a link out of it is not written through. Raises OSError."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not safe_files.is_within(os.path.realpath(target.parent), os.path.realpath(folder)):
        raise PermissionError(errno.EACCES, "the previews folder leads out of itself")
    store_derived(target, data)
