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

``decode_many`` runs it over many files in a :class:`DecodePool` of worker processes
(forkserver/spawn, so safe beside threads and CUDA), restarting the pool and isolating the file if
a decoder ever crashes a worker. With ``workers=1`` it decodes in-process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import hashlib
import io
import logging
import multiprocessing
import os
import pickle
import stat
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from clipsearch.indexer import safe_files
from clipsearch.indexer.errors import IndexerError
from clipsearch.indexer.scan import OUTSIDE_ROOTS
from clipsearch.indexer.scan import sniff as _sniff

log = logging.getLogger(__name__)

# Formats we let Pillow open. Everything else (EPS via Ghostscript, PSD, ICO, ...) is refused.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF")
MAX_FILE_BYTES = 1 << 30  # 1 GiB: no photo is larger; refusing protects worker memory
THUMB_QUALITY = 82
OCR_DRAFT_SIDE = 1600  # with OCR, JPEGs are decoded at a scale keeping this long side (or full)
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
_REDUCIBLE = ("L", "LA", "La", "PA", "RGB", "RGBA", "RGBa", "RGBX", "I", "F", "CMYK", "YCbCr")
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME_DIGITIZED = 0x9004
_ORIENTATION = 0x0112

with contextlib.suppress(Exception):  # HEIC/HEIF when the optional plugin is installed
    import pillow_heif  # type: ignore[import-not-found]

    pillow_heif.register_heif_opener()


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


@functools.lru_cache(maxsize=1)
def _open_formats() -> tuple[str, ...]:
    """ALLOWED_FORMATS that this Pillow build (and its plugins) can open."""
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def _fail(path: str, problem: str, reason: str, **kw: Any) -> DecodeResult:
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


def _read_file(
    path: str, roots: Sequence[str] | None = None, expect: tuple[int, int] | None = None
) -> bytes | DecodeResult:
    if "\x00" in path:
        return _fail(path, "unreadable", "unreadable: the path contains a NUL character")
    try:
        fd = _open_checked(path, roots)
    except safe_files.UnsafeFile as exc:
        if exc.outside:
            return _fail(path, "unreadable", f"unreadable: {OUTSIDE_ROOTS}")
        return _fail(path, "gone", str(exc))
    except PermissionError:
        return _fail(
            path, "unreadable", "unreadable: permission denied (check the file's owner and mode)"
        )
    except FileNotFoundError:
        if os.path.islink(path):
            return _fail(
                path, "unreadable", "unreadable: broken symbolic link (its target is missing)"
            )
        return _fail(
            path,
            "gone",
            "the file disappeared after it was found (moved or deleted); re-scan the folder",
        )
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return _fail(
                path,
                "unreadable",
                "unreadable: symbolic link loop, or a link swapped in while it was being opened",
            )
        return _fail(path, "unreadable", f"unreadable: {exc.strerror or exc}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _fail(
                path, "unreadable", "unreadable: not a regular file (a pipe, socket or device)"
            )
        if expect is not None and (st.st_size, st.st_mtime_ns) != tuple(expect):
            return _fail(
                path,
                "changed",
                "the file changed after its folder was scanned (replaced or still being written); "
                "ingest the folder again",
            )
        if st.st_size == 0:
            return _fail(
                path, "empty", "empty file (0 bytes): it was probably not copied completely", size=0
            )
        if st.st_size > MAX_FILE_BYTES:
            return _fail(
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
                return _fail(
                    path, "too_large", "file too large (it grew past 1 GiB while being read)"
                )
        return b"".join(chunks)
    except PermissionError:
        return _fail(
            path, "unreadable", "unreadable: permission denied (check the file's owner and mode)"
        )
    except OSError as exc:
        return _fail(path, "unreadable", f"unreadable: {exc.strerror or exc} while reading")
    finally:
        os.close(fd)


def _exif_info(img: Image.Image) -> tuple[int, dt.datetime | None]:
    """(orientation 1..8, capture time) from EXIF; (1, None) when absent or malformed."""
    try:
        exif = img.getexif()
    except Exception:
        return 1, None
    orientation = 1
    with contextlib.suppress(Exception):
        o = int(exif.get(_ORIENTATION, 1))
        orientation = o if 1 <= o <= 8 else 1
    taken: dt.datetime | None = None
    with contextlib.suppress(Exception):
        sub = exif.get_ifd(_EXIF_IFD)
        for tag in (_DATETIME_ORIGINAL, _DATETIME_DIGITIZED):
            taken = _parse_exif_time(sub.get(tag))
            if taken is not None:
                break
    return orientation, taken


def _parse_exif_time(value: Any) -> dt.datetime | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip().strip("\x00").strip()
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        with contextlib.suppress(ValueError):
            t = dt.datetime.strptime(value[:19] if "S" in fmt else value[:16], fmt)
            if 1800 <= t.year <= 2200:
                return t
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB for any mode: transparency flattened onto white, 16-bit and float scaled to 8 bits."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        hi = 65535.0 if img.mode.startswith("I;16") or float(arr.max(initial=0)) > 255 else 255.0
        if img.mode == "F":
            hi = max(float(arr.max(initial=1.0)), 1e-6)
        img = Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


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


def pixel_bytes(mode: str, width: int, height: int) -> int:
    """The bytes of pixels decoding a ``mode`` image of ``width`` x ``height`` holds at once
    (see :data:`MAX_DECODE_BYTES`)."""
    n = int(width) * int(height)
    cost = n * _MODE_BYTES.get(mode, 4)
    if mode not in _REDUCIBLE:  # converted at full size before it can be reduced
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
        raise TooCostly(_too_many(w, h, limit).replace("decoded", what), "too_many_pixels")
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


def _load(img: Image.Image) -> Image.Image:
    img.load()
    return img


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orient(img: Image.Image, orientation: int) -> Image.Image:
    """``img`` as displayed for the EXIF ``orientation`` read from its header (a reduced image
    no longer carries its EXIF), as ``ImageOps.exif_transpose`` turns it."""
    method = _TRANSPOSE.get(orientation)
    return img if method is None else img.transpose(method)


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """``img.reduce(factor)``; with an alpha channel, strip by strip (Pillow reduces those through
    a full-size premultiplied copy: 324 MB more for an 81-megapixel RGBA picture)."""
    if img.mode not in ("LA", "RGBA"):
        return img.reduce(factor)
    w, h = img.size
    out = Image.new(img.mode, (-(-w // factor), -(-h // factor)))
    step = factor * max(1, (8 << 20) // max(1, 4 * w * factor))  # strips of about 8 MB
    for top in range(0, h, step):
        strip = img.crop((0, top, w, min(top + step, h)))
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def load_reduced(img: Image.Image, short_side: int, long_side: int) -> Image.Image:
    """Load ``img`` (its first frame) and reduce it in its own mode by the largest whole factor
    that keeps at least twice ``short_side`` on its short side and twice ``long_side`` on its
    long side (Pillow's ``reducing_gap`` of 2: the final resize still antialiases), so nothing
    after the decode works on all the pixels of a huge picture. Palette, 1-bit and 16-bit images
    are converted first (16-bit grey to 8 bits, scaled by 65535 as :func:`_to_rgb` does)."""
    img.load()
    sixteen = img.mode.startswith("I;16")
    if sixteen:
        img = img.convert("I")  # reduced, then scaled to 8 bits below
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode not in _REDUCIBLE:
        img = img.convert("RGBA" if "A" in img.mode else "RGB")
    w, h = img.size
    short, long_ = (w, h) if w <= h else (h, w)
    factor = min(short // max(1, 2 * short_side), long_ // max(1, 2 * long_side))
    if factor >= 2:
        img = _reduce(img, factor)
    if sixteen and img.mode == "I":
        arr = np.asarray(img, dtype=np.float32) * (255.0 / 65535.0)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    return img


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
    preprocess: Callable[[Image.Image], Any] | None = None,
    max_pixels: int | None = None,
    want_pixels: bool = True,
    roots: Sequence[str] | None = None,
    expect: tuple[int, int] | None = None,
    text: Any = None,
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
    data = _read_file(spath, roots, expect)
    if isinstance(data, DecodeResult):
        return data
    size = len(data)
    sha = hashlib.sha256(data).hexdigest()
    limit = int(max_pixels or Image.MAX_IMAGE_PIXELS or 89_478_485)
    meta: dict[str, Any] = {"sha256": sha, "size": size}

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=_open_formats())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return _fail(spath, "too_many_pixels", _bomb_reason(str(exc), limit), **meta)
        except UnidentifiedImageError:
            kind = _sniff(data[:32])
            if kind is not None:  # it starts like an image we read, but Pillow cannot parse it
                return _fail(
                    spath,
                    "truncated",
                    f"corrupt {kind.upper()} header: the file starts like a {kind.upper()} image "
                    "but its header cannot be read (damaged or not really an image)",
                    **meta,
                )
            return _fail(
                spath,
                "not_image",
                "not an image, or an image format clipsearch does not read (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/AVIF with their plugins)",
                **meta,
            )
        except Exception as exc:  # malformed headers raise anything: SyntaxError, struct.error...
            return _fail(
                spath,
                "truncated",
                f"corrupt image header ({type(exc).__name__}: {exc})"[:300],
                **meta,
            )

        w, h = img.size
        fmt = "JPEG" if img.format == "MPO" else (img.format or "unknown")
        if w <= 0 or h <= 0:
            return _fail(
                spath, "truncated", f"corrupt image header (size {w}x{h})", format=fmt, **meta
            )
        if w * h > limit:
            return _fail(
                spath,
                "too_many_pixels",
                _too_many(w, h, limit),
                width=w,
                height=h,
                format=fmt,
                **meta,
            )
        orientation, taken_at = _exif_info(img)
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
            pixels_in: Image.Image = load_reduced(img, short, long_) if draft else _load(img)
        except TooCostly as exc:
            return _fail(spath, exc.problem, str(exc), **meta)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return _fail(spath, "too_many_pixels", _bomb_reason(str(exc), limit), **meta)
        except OSError as exc:
            msg = str(exc)
            if "truncated" in msg or "broken data stream" in msg or "premature end" in msg.lower():
                return _fail(
                    spath,
                    "truncated",
                    "truncated file: the image data ends early (an interrupted copy or download?)",
                    **meta,
                )
            return _fail(spath, "truncated", f"corrupt image data ({msg})"[:300], **meta)
        except MemoryError:
            return _fail(spath, "too_many_pixels", "not enough memory to decode this image", **meta)
        except Exception as exc:
            return _fail(
                spath,
                "truncated",
                f"corrupt image data ({type(exc).__name__}: {exc})"[:300],
                **meta,
            )

        try:
            shown = _orient(pixels_in, orientation)
            rgb = _to_rgb(shown)
        except Exception as exc:
            return _fail(
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
            return _fail(spath, code, problem, **meta)
    return DecodeResult(path=spath, ok=True, pixels=pixels, thumbnail=thumb_key, **meta, **found)


# --------------------------------------------------------------------------------------------
# Browser previews: what the gallery shows for originals a browser cannot (TIFF, HEIC) or should
# not (tens of megapixels) load as they are.

PREVIEW_SIDE = 2048  # the longest side of a preview, in pixels
PREVIEW_QUALITY = 85


class PreviewError(IndexerError):
    """The file cannot be rendered as a preview; the message says why (and it is shown)."""


def preview_key(sha256: str, side: int = PREVIEW_SIDE) -> str:
    """Where a preview lives under the previews folder: by content hash, so a renamed or copied
    file reuses it and a changed one gets a new one."""
    return f"{sha256[:2]}/{sha256}-{int(side)}.jpg"


def render_preview(
    fh: Any,
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
            img = Image.open(fh, formats=_open_formats())
            w, h = img.size
            if w <= 0 or h <= 0:
                raise PreviewError(f"corrupt image header (size {w}x{h})")
            if w * h > limit:
                raise PreviewError(_too_many(w, h, limit).replace("decoded", "shown"))
            if img.format in ("JPEG", "MPO"):  # decode at the smallest DCT scale that suffices
                img.draft("RGB", (max_side, max_side))
            check_budget(img, limit, max_bytes, what="shown")
            orientation, _taken = _exif_info(img)
            rgb = _to_rgb(_orient(load_reduced(img, max_side // 2, max_side // 2), orientation))
        except TooCostly as exc:
            raise PreviewError(str(exc)) from None
        except PreviewError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PreviewError(_bomb_reason(str(exc), limit).replace("decoded", "shown")) from None
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


def _too_many(w: int, h: int, limit: int) -> str:
    return (
        f"too many pixels: {w}x{h} is {w * h / 1e6:,.0f} megapixels, above the limit of "
        f"{limit / 1e6:,.0f} (a possible decompression bomb); the file was not decoded"
    )


def _bomb_reason(msg: str, limit: int) -> str:
    import re

    m = re.search(r"\((\d+) pixels\)", msg)
    if m:
        n = int(m.group(1))
        return (
            f"too many pixels: {n / 1e6:,.0f} megapixels, above the limit of {limit / 1e6:,.0f} "
            "(a possible decompression bomb); the file was not decoded"
        )
    return "too many pixels (a possible decompression bomb); the file was not decoded"


@functools.lru_cache(maxsize=8)
def _default_preprocess(image_size: int) -> Callable[[Image.Image], Any]:
    from clipsearch.model.preprocess import Preprocess

    return Preprocess(image_size)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Parallel decoding


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _worker_init() -> None:
    from clipsearch.indexer import pool_guard

    pool_guard.die_with_parent()  # SIGKILL when the forkserver (or spawning owner) dies
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(1)


class DecodePool:
    """A pool of decoder processes sized to the cores (``workers=None``), created lazily.

    Uses the forkserver start method where available (spawn otherwise): never forks a process
    holding threads, locks or a CUDA context. Inside a daemonic process (a Celery prefork
    child, which may not have children) it uses threads instead: Pillow, hashlib and torch
    release the GIL for most of the work. ``workers=1`` decodes in the calling thread.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, workers: int | None = None, kind: str = "auto") -> None:
        self.workers = max(1, int(workers or default_workers()))
        if kind == "auto":
            kind = "process"
            if multiprocessing.current_process().daemon:
                kind = "thread"
        if kind not in ("process", "thread"):
            raise ValueError(f"unknown pool kind {kind!r}: use 'process' or 'thread'")
        self.kind = kind if self.workers > 1 else "inline"
        self._executor: Executor | None = None

    def _get(self) -> Executor:
        if self._executor is None:
            if self.kind == "thread":
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")
            else:
                methods = multiprocessing.get_all_start_methods()
                ctx = multiprocessing.get_context(
                    "forkserver" if "forkserver" in methods else "spawn"
                )
                if ctx.get_start_method() == "forkserver":
                    # the forkserver ends with this process, however it ends (pool_guard)
                    from clipsearch.indexer import pool_guard

                    os.environ[pool_guard.OWNER_ENV] = str(os.getpid())
                    ctx.set_forkserver_preload(["__main__", "clipsearch.indexer.pool_guard"])  # type: ignore[attr-defined]
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=ctx, initializer=_worker_init
                )
        return self._executor

    def _restart(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def map(self, fn: Callable[[str], DecodeResult], paths: Sequence[str]) -> list[DecodeResult]:
        """``[fn(p) for p in paths]`` in parallel, in order. A file that crashes a worker
        process gets a failed result instead of taking the batch down."""
        if self.kind == "inline" or len(paths) <= 1:
            return [fn(p) for p in paths]
        if self.kind == "process":
            try:
                pickle.dumps(fn)
            except Exception as exc:
                log.warning(
                    "decode function cannot be sent to worker processes (%s); using threads", exc
                )
                self.close()
                self.kind = "thread"
        results: list[DecodeResult | None] = [None] * len(paths)
        broken: list[int] = []
        try:
            futures = [self._get().submit(fn, p) for p in paths]
            for i, fut in enumerate(futures):
                try:
                    results[i] = fut.result()
                except BrokenProcessPool:
                    broken.append(i)
        except BrokenProcessPool:
            broken = [i for i, r in enumerate(results) if r is None]
        if broken:
            log.warning("a decoder process died; retrying %d file(s) one by one", len(broken))
            self._restart()
            for i in broken:  # one at a time, so the culprit is identified
                try:
                    results[i] = self._get().submit(fn, paths[i]).result()
                except BrokenProcessPool:
                    self._restart()
                    results[i] = _fail(
                        paths[i],
                        "crashed",
                        "the image decoder crashed on this file (a malformed or hostile image)",
                    )
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_many(
    paths: Sequence[str | os.PathLike[str]],
    image_size: int,
    thumb_dir: str | os.PathLike[str] | None,
    thumb_size: int = 256,
    draft: bool = True,
    *,
    pool: DecodePool | None = None,
    workers: int | None = None,
    preprocess: Callable[[Image.Image], Any] | None = None,
    max_pixels: int | None = None,
    roots: Sequence[str] | None = None,
    expect: Sequence[tuple[int, int]] | None = None,
    text: Any = None,
    want_pixels: bool = True,
) -> list[DecodeResult]:
    """``decode_file`` over many paths, in parallel, results in the order given. Pass a long-lived
    ``pool`` to avoid starting processes per call; otherwise one is made (``workers`` of them,
    default: the cores) and closed. ``roots`` and ``expect`` (one per path) as decode_file."""
    extra: dict[str, Any] = {}
    if text is not None:
        extra["text"] = text
    if not want_pixels:
        extra["want_pixels"] = False
    fn = functools.partial(
        decode_file if expect is None else _decode_expected,
        roots=None if roots is None else [os.fsdecode(r) for r in roots],
        image_size=image_size,
        thumb_dir=None if thumb_dir is None else os.fspath(thumb_dir),
        thumb_size=thumb_size,
        draft=draft,
        preprocess=preprocess,
        max_pixels=max_pixels,
        **extra,
    )
    names = [os.fsdecode(p) for p in paths]
    items = names
    if expect is not None:  # a NUL never occurs in a path: it carries the expectation along
        items = [f"{p}\x00{int(e[0])}\x00{int(e[1])}" for p, e in zip(names, expect, strict=True)]
    if pool is not None:
        results = pool.map(fn, items)
    else:
        with DecodePool(workers) as own:
            results = own.map(fn, items)
    for result, name in zip(results, names, strict=True):
        result.path = name
    return results


def _decode_expected(item: str, **kwargs: Any) -> DecodeResult:
    path, size, mtime_ns = item.split("\x00")
    return decode_file(path, expect=(int(size), int(mtime_ns)), **kwargs)
