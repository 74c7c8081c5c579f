"""Decoding image files for embedding: pixels, metadata, a thumbnail, or a reason it failed.

``decode_file`` reads a file once (hashing its bytes with sha256 on the way), refuses
decompression bombs from the header before decoding, decodes the first frame (JPEGs in "draft"
mode at the smallest DCT scale that still covers the model input and the thumbnail, unless
``draft=False``), applies the EXIF orientation, flattens transparency onto white, and returns the
model's preprocessed pixels (float32 [3, R, R]) with width, height, format, EXIF capture time and
a content-addressed thumbnail written once (``<thumb_dir>/ab/abcdef....jpg``, via a temporary
file and an atomic rename; not fsynced, as thumbnails are derived data).
Any failure is a :class:`DecodeResult` with ``ok=False`` and a ``reason`` a user understands;
it never raises for a bad file.

The budget a decode must fit is in :mod:`indexer.decode_limits`, turning a frame into RGB in
:mod:`indexer.decode_frames`, browser previews in :mod:`indexer.decode_preview`, decoding many
files in parallel in :mod:`indexer.decode_pool` (``decode_many``), and decoding an untrusted
upload or a preview in a process killed on a deadline in :mod:`indexer.decode_isolated`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import hashlib
import io
import logging
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from clipsearch.indexer import safe_files
from clipsearch.indexer.decode_frames import exif_info, load_full, load_reduced, orient, to_rgb
from clipsearch.indexer.decode_limits import (
    MAX_FILE_BYTES,
    TooCostly,
    bomb_reason,
    check_budget,
    open_formats,
    too_many_pixels,
)
from clipsearch.indexer.scan import OUTSIDE_ROOTS
from clipsearch.indexer.scan import sniff as _sniff

if TYPE_CHECKING:
    import torch

    from .configs import OcrConfig

log = logging.getLogger(__name__)

THUMB_QUALITY = 82
OCR_DRAFT_SIDE = 1600  # with OCR, JPEGs are decoded at a scale keeping this long side (or full)


@dataclass
class DecodeResult:
    """The outcome of decoding one file. ``reason`` is set exactly when ``ok`` is False."""

    path: str
    ok: bool
    pixels: np.ndarray | None = None  # float32 [3, R, R]
    sha256: str | None = None
    size: int | None = None
    width: int | None = None  # as displayed (after EXIF orientation), full resolution
    height: int | None = None
    format: str | None = None  # Pillow's name: JPEG, PNG, GIF, WEBP, BMP, TIFF, AVIF, HEIF
    taken_at: dt.datetime | None = None  # EXIF DateTimeOriginal (camera wall clock)
    thumbnail: str | None = None  # key relative to thumb_dir: "ab/abcdef....jpg"
    reason: str | None = None
    problem: str | None = None  # short code: empty, truncated, not_image, too_many_pixels,
    #                             unreadable, gone, too_large, disk_full, thumbnail, crashed, changed
    # With ``text=`` (indexer.ocr): the words Tesseract read and the captions found beside the file
    ocr_state: str | None = None  # done | failed | skipped | unavailable; None: not asked
    ocr_text: str | None = None
    ocr_error: str | None = None
    caption: str | None = None


def fail(path: str, problem: str, reason: str, **kw: Any) -> DecodeResult:
    return DecodeResult(path=path, ok=False, problem=problem, reason=reason, **kw)


def thumbnail_key(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256}.jpg"


def _open_checked(path: str, roots: Sequence[str] | None) -> int:
    """Open for reading without following a link swapped in after the path was resolved: the
    resolved path is opened component by component with ``O_NOFOLLOW`` (and must lie inside
    ``roots`` when given). Raises OSError like ``os.open``; UnsafeFile outside the roots."""
    if roots is not None:
        opened = safe_files.open_confined(path, roots)
        return opened.fd
    return safe_files.open_nofollow(os.path.realpath(path))


def read_file(
    path: str, roots: Sequence[str] | None = None, expect: tuple[int, int] | None = None
) -> bytes | DecodeResult:
    if "\x00" in path:
        return fail(path, "unreadable", "unreadable: the path contains a NUL character")
    try:
        fd = _open_checked(path, roots)
    except safe_files.UnsafeFile as exc:
        if exc.outside:
            return fail(path, "unreadable", f"unreadable: {OUTSIDE_ROOTS}")
        return fail(path, "gone", str(exc))
    except PermissionError:
        return fail(
            path, "unreadable", "unreadable: permission denied (check the file's owner and mode)"
        )
    except FileNotFoundError:
        if os.path.islink(path):
            return fail(
                path, "unreadable", "unreadable: broken symbolic link (its target is missing)"
            )
        return fail(
            path,
            "gone",
            "the file disappeared after it was found (moved or deleted); re-scan the folder",
        )
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return fail(
                path,
                "unreadable",
                "unreadable: symbolic link loop, or a link swapped in while it was being opened",
            )
        return fail(path, "unreadable", f"unreadable: {exc.strerror or exc}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return fail(
                path, "unreadable", "unreadable: not a regular file (a pipe, socket or device)"
            )
        if expect is not None and (st.st_size, st.st_mtime_ns) != tuple(expect):
            return fail(
                path,
                "changed",
                "the file changed after its folder was scanned (replaced or still being written); "
                "ingest the folder again",
            )
        if st.st_size == 0:
            return fail(
                path, "empty", "empty file (0 bytes): it was probably not copied completely", size=0
            )
        if st.st_size > MAX_FILE_BYTES:
            return fail(
                path,
                "too_large",
                f"file too large ({st.st_size / 2**30:.1f} GiB; the limit is 1 GiB)",
                size=st.st_size,
            )
        chunks = []
        remaining = st.st_size + 1
        while True:
            chunk = os.read(fd, min(remaining, 1 << 24) if remaining > 0 else 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
            if sum(map(len, chunks)) > MAX_FILE_BYTES:
                return fail(
                    path, "too_large", "file too large (it grew past 1 GiB while being read)"
                )
        return b"".join(chunks)
    except PermissionError:
        return fail(
            path, "unreadable", "unreadable: permission denied (check the file's owner and mode)"
        )
    except OSError as exc:
        return fail(path, "unreadable", f"unreadable: {exc.strerror or exc} while reading")
    finally:
        os.close(fd)


#: How the failures to write a thumbnail begin: they come from this machine (the data folder full or
#: not writable), not from the file, so the next ingest of the folder tries such an image again.
THUMBNAIL_FAILURES = ("disk full writing the thumbnail", "cannot write the thumbnail")


def retry_on_rescan(reason: str | None) -> bool:
    """Whether an image that failed with ``reason`` is decoded again when its folder is ingested
    again although the file did not change (see :data:`THUMBNAIL_FAILURES`)."""
    return bool(reason) and str(reason).startswith(THUMBNAIL_FAILURES)


def _write_thumbnail(rgb: Image.Image, thumb_dir: Path, key: str, thumb_size: int) -> str | None:
    """Write the thumbnail unless it exists. Returns a failure reason, or None on success."""
    target = thumb_dir / key
    with contextlib.suppress(OSError):
        if target.stat().st_size > 0:  # written before (an empty one is a crash leftover)
            return None
    tmp_name = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        rgb.thumbnail((thumb_size, thumb_size), Image.Resampling.BICUBIC, reducing_gap=2.0)
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=False)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".jpg", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getbuffer())  # no fsync: a thumbnail is derived data, rewritten if lost
        os.replace(tmp_name, target)
        tmp_name = None
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return (
                f"disk full writing the thumbnail to {thumb_dir}: free some space, then ingest "
                "the folder again"
            )
        return (
            f"cannot write the thumbnail to {thumb_dir}: {exc.strerror or exc}; fix that, then "
            "ingest the folder again"
        )
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def clean_temp_files(folder: str | os.PathLike[str], older_than_s: float = 600.0) -> int:
    """Remove the temporary files (``.tmp-*``) a killed writer left in a thumbnail or preview
    folder (``<folder>/ab/.tmp-....jpg``), if older than ``older_than_s`` (a live worker may be
    writing one now). No link is followed. Returns how many were removed."""
    import time

    removed = 0
    cutoff = time.time() - older_than_s
    try:
        shards = list(os.scandir(folder))
    except OSError:
        return 0
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        try:
            entries = list(os.scandir(shard.path))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(".tmp-"):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        log.info("removed %d temporary file(s) left in %s by a stopped writer", removed, folder)
    return removed


def decode_file(
    path: str | os.PathLike[str],
    image_size: int,
    thumb_dir: str | os.PathLike[str] | None,
    thumb_size: int = 256,
    draft: bool = True,
    *,
    preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
    max_pixels: int | None = None,
    want_pixels: bool = True,
    roots: Sequence[str] | None = None,
    expect: tuple[int, int] | None = None,
    text: OcrConfig | None = None,
    max_bytes: int | None = None,
) -> DecodeResult:
    """Decode one file; see the module docstring. ``preprocess`` defaults to
    ``model.preprocess.Preprocess(image_size)``; pass ``model.preprocessor`` to use a checkpoint's
    own mean/std. ``thumb_dir=None`` writes no thumbnail. ``max_pixels`` defaults to Pillow's
    ``Image.MAX_IMAGE_PIXELS``; ``max_bytes`` (default :data:`MAX_DECODE_BYTES`) bounds the
    pixel memory for the image's mode and bit depth, and a file of more than :data:`MAX_FRAMES`
    pages is refused; ``draft`` also reduces a big image in its own mode right after decoding
    (:func:`load_reduced`). ``roots``: the file must resolve inside them (a link out is
    refused); ``expect``: the (size, mtime_ns) the scan saw, else the file is reported changed.
    Either way the file is opened with no link followed after its path was resolved.
    ``text`` (an :class:`indexer.ocr.OcrConfig`): also read the captions beside and inside the
    file and, when OCR is on and Tesseract available, the text inside the image."""
    spath = os.fsdecode(path)
    ocr_on = False
    if text is not None:
        from clipsearch.indexer import ocr as _ocr

        ocr_on = text.enabled and _ocr.probe(text).available
    data = read_file(spath, roots, expect)
    if isinstance(data, DecodeResult):
        return data
    size = len(data)
    sha = hashlib.sha256(data).hexdigest()
    limit = int(max_pixels or Image.MAX_IMAGE_PIXELS or 89_478_485)
    meta: dict[str, Any] = {"sha256": sha, "size": size}

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=open_formats())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return fail(spath, "too_many_pixels", bomb_reason(str(exc), limit), **meta)
        except UnidentifiedImageError:
            kind = _sniff(data[:32])
            if kind is not None:  # it starts like an image we read, but Pillow cannot parse it
                return fail(
                    spath,
                    "truncated",
                    f"corrupt {kind.upper()} header: the file starts like a {kind.upper()} image "
                    "but its header cannot be read (damaged or not really an image)",
                    **meta,
                )
            return fail(
                spath,
                "not_image",
                "not an image, or an image format clipsearch does not read (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/AVIF with their plugins)",
                **meta,
            )
        except Exception as exc:  # malformed headers raise anything: SyntaxError, struct.error...
            return fail(
                spath,
                "truncated",
                f"corrupt image header ({type(exc).__name__}: {exc})"[:300],
                **meta,
            )

        w, h = img.size
        fmt = "JPEG" if img.format == "MPO" else (img.format or "unknown")
        if w <= 0 or h <= 0:
            return fail(
                spath, "truncated", f"corrupt image header (size {w}x{h})", format=fmt, **meta
            )
        if w * h > limit:
            return fail(
                spath,
                "too_many_pixels",
                too_many_pixels(w, h, limit),
                width=w,
                height=h,
                format=fmt,
                **meta,
            )
        orientation, taken_at = exif_info(img)
        caption = None
        if text is not None:
            from clipsearch.indexer import ocr as _ocr

            caption = (
                " ".join(c for c in (_ocr.exif_caption(img), _ocr.read_caption(spath)) if c) or None
            )
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        meta.update(width=w, height=h, format=fmt, taken_at=taken_at)
        # What the model, the thumbnail and OCR need: the short side >= the model input, the
        # long side >= the thumbnail (and OCR_DRAFT_SIDE with OCR: text must stay legible).
        short = image_size
        long_ = max(image_size, thumb_size if thumb_dir is not None else 0)
        if ocr_on:
            long_ = max(long_, OCR_DRAFT_SIDE)
        try:
            if draft and img.format in ("JPEG", "MPO"):
                # Smallest DCT scale that still covers it (in stored orientation).
                sw, sh = img.size
                img.draft("RGB", (long_, short) if sw >= sh else (short, long_))
            check_budget(img, limit, max_bytes)
            pixels_in: Image.Image = load_reduced(img, short, long_) if draft else load_full(img)
        except TooCostly as exc:
            return fail(spath, exc.problem, str(exc), **meta)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return fail(spath, "too_many_pixels", bomb_reason(str(exc), limit), **meta)
        except OSError as exc:
            msg = str(exc)
            if "truncated" in msg or "broken data stream" in msg or "premature end" in msg.lower():
                return fail(
                    spath,
                    "truncated",
                    "truncated file: the image data ends early (an interrupted copy or download?)",
                    **meta,
                )
            return fail(spath, "truncated", f"corrupt image data ({msg})"[:300], **meta)
        except MemoryError:
            return fail(spath, "too_many_pixels", "not enough memory to decode this image", **meta)
        except Exception as exc:
            return fail(
                spath,
                "truncated",
                f"corrupt image data ({type(exc).__name__}: {exc})"[:300],
                **meta,
            )

        try:
            shown = orient(pixels_in, orientation)
            rgb = to_rgb(shown)
        except Exception as exc:
            return fail(
                spath,
                "truncated",
                f"corrupt image data ({type(exc).__name__}: {exc})"[:300],
                **meta,
            )

    pixels = None
    if want_pixels:
        if preprocess is None:
            preprocess = _default_preprocess(image_size)
        out = preprocess(rgb)
        pixels = out.numpy() if hasattr(out, "numpy") else np.asarray(out)
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)

    found: dict[str, Any] = {}
    if text is not None:
        from clipsearch.indexer import ocr as _ocr

        found["caption"] = caption
        if ocr_on:
            got = _ocr.recognise(rgb, text)
        else:
            got = _ocr.OcrResult("unavailable", error=_ocr.probe(text).error)
        found.update(ocr_state=got.state, ocr_text=got.text, ocr_error=got.error)

    thumb_key = None
    if thumb_dir is not None:
        thumb_key = thumbnail_key(sha)
        problem = _write_thumbnail(rgb, Path(thumb_dir), thumb_key, thumb_size)
        if problem is not None:
            code = "disk_full" if problem.startswith("disk full") else "thumbnail"
            return fail(spath, code, problem, **meta)
    return DecodeResult(path=spath, ok=True, pixels=pixels, thumbnail=thumb_key, **meta, **found)


@functools.lru_cache(maxsize=8)
def _default_preprocess(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    from clipsearch.model.preprocess import Preprocess

    return Preprocess(image_size)
