"""Decoding what a stranger sends (a search upload) or asks to see (a preview) in a process of its
own, killed on a deadline, its memory bounded, so the process that answers requests neither
stalls nor grows.

Each decode gets a fresh decoder process from the decode pool's forkserver
(:func:`indexer.decode_pool.process_context`; it preloads this module, so a fork is ready at
once). The child asks to die with its parent (:mod:`indexer.pool_guard`), limits its address
space to what it has plus ``memory_bytes`` (``RLIMIT_AS``: an allocation beyond is a
``MemoryError``, reported, not a swapping machine), says it is ready, then does one job. The
caller waits at most ``deadline_s`` for the answer and kills the child (``SIGKILL``) past it.
The budget checked from the header (:mod:`indexer.decode_limits`) still applies inside.

* :func:`decode_query_image`: an uploaded search image, returned as a small RGB picture.
* :func:`render_preview_isolated`: a preview of an open file (its descriptor is handed over, the
  file is never re-opened by name), written by the child into the previews cache.

Failures raise :class:`DecodeRefused` with a ``problem`` code and a message naming the limit.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import time
import warnings
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from clipsearch.indexer.decode_frames import to_rgb
from clipsearch.indexer.decode_limits import TooCostly, check_budget, open_formats
from clipsearch.indexer.decode_preview import PreviewError, render_preview, store_preview
from clipsearch.indexer.errors import IndexerError

#: Formats a search upload may be (AVIF aside: no browser sends one as a query).
UPLOAD_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF")
QUERY_SIDE = 448  # decoded size kept for a query image: the model needs 224 px
#: How long a decoder process may take to start and say it is ready (not the decode deadline).
START_TIMEOUT_S = 60.0


class DecodeRefused(IndexerError):
    """The decode was refused or stopped. ``problem``: ``too_costly`` (over the pixel, page or
    byte budget), ``not_image``, ``corrupt``, ``timeout`` (past the deadline, killed),
    ``memory`` (over the memory limit), ``crashed`` (the decoder died)."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class IsolationLimits:
    """What one isolated decode may take: ``deadline_s`` of wall time once its process is
    ready, ``memory_bytes`` of address space beyond the process's own (0: no memory limit)."""

    deadline_s: float
    memory_bytes: int


def _limit_memory(extra: int) -> None:
    if extra <= 0:
        return
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
        limit = size + int(extra)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _query_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode a query image at the smallest size that serves the model (in the child).

    JPEGs are decoded in draft mode (DCT scaling: 1/2 to 1/8 of each side); ``max_pixels``
    bounds the pixels actually decoded, so a 7000x7000 PNG is refused from its header while a
    48-megapixel phone JPEG is decoded at 1/8. The result is reduced to about QUERY_SIDE px and
    made RGB as ingestion makes it (:func:`decode_frames.to_rgb`: transparency onto white)."""
    formats = tuple(f for f in UPLOAD_FORMATS if f in open_formats())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Any = Image.open(io.BytesIO(data), formats=formats)
            width, height = img.size
            if img.format in ("JPEG", "MPO"):
                img.draft("RGB", (QUERY_SIDE, QUERY_SIDE))  # never below the requested size
            dw, dh = img.size  # what will be decoded
            if dw * dh > max_pixels:
                raise DecodeRefused(
                    f"image is {width}x{height} = {width * height} pixels; a search image may "
                    f"have at most {max_pixels} pixels (JPEGs count at 1/8 of each side): send a "
                    "smaller image (a few hundred pixels is plenty for searching)",
                    "too_costly",
                )
            try:  # memory for its mode and bit depth; pages counted with a cap, never n_frames
                check_budget(img, max_pixels)
            except TooCostly as exc:
                raise DecodeRefused(str(exc), "too_costly") from None
            img.load()  # the first frame only
            if max(img.size) > 2 * QUERY_SIDE:
                factor = max(1, max(img.size) // QUERY_SIDE)
                img = img.reduce(factor) if img.mode in ("RGB", "L", "RGBA", "P") else img
            return to_rgb(img)  # transparency onto white, as the library's pictures are
    except DecodeRefused:
        raise
    except UnidentifiedImageError:
        raise DecodeRefused(
            "the upload is not an image this server can read (JPEG, PNG, WebP, GIF, BMP, TIFF, "
            "HEIC)",
            "not_image",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecodeRefused(
            f"image has too many pixels (limit {max_pixels})", "too_costly"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DecodeRefused(
            f"the image could not be decoded (truncated or corrupt file?): {exc}", "corrupt"
        ) from None


def _child(conn: Connection, memory_bytes: int) -> None:
    """The decoder process: one job, answered on ``conn``."""
    from clipsearch.indexer import pool_guard

    pool_guard.die_with_parent()
    _limit_memory(memory_bytes)
    conn.send(("ready",))
    try:
        job = conn.recv()
        if job[0] == "query":
            img = _query_image(job[1], int(job[2]))
            conn.send(("ok", img.mode, img.size, img.tobytes()))
        elif job[0] == "preview":
            fd = reduction.recv_handle(conn)
            folder, key = Path(job[1]), str(job[2])
            with os.fdopen(fd, "rb") as fh:
                data = render_preview(fh)
            try:
                store_preview(folder, folder / key, data)
                conn.send(("ok", None))
            except OSError:  # a full or read-only data folder: hand the preview back
                conn.send(("ok", data))
    except DecodeRefused as exc:
        conn.send(("refused", exc.problem, str(exc)))
    except PreviewError as exc:
        conn.send(("refused", "preview", str(exc)))
    except MemoryError:
        conn.send(("refused", "memory", ""))
    finally:
        conn.close()


def _run(job: tuple[Any, ...], limits: IsolationLimits, fd: int | None = None) -> tuple[Any, ...]:
    """Start a decoder process, hand it ``job`` (and ``fd``), and wait for its answer within the
    deadline; the process is gone when this returns."""
    from clipsearch.indexer.decode_pool import process_context

    ctx = process_context()
    ours, theirs = ctx.Pipe(duplex=True)
    proc = ctx.Process(
        target=_child, args=(theirs, int(limits.memory_bytes)), name="clipsearch-decode"
    )
    proc.daemon = True
    proc.start()
    theirs.close()
    try:
        if not ours.poll(START_TIMEOUT_S):
            raise DecodeRefused("the decoder process did not start: retry shortly", "crashed")
        ours.recv()  # ready
        started = time.monotonic()
        try:
            ours.send(job)
            if fd is not None:
                reduction.send_handle(ours, fd, proc.pid)
        except OSError:  # it stopped reading: it may have said why (no memory for the job)
            if not ours.poll(1.0):
                raise
        if not ours.poll(max(0.0, limits.deadline_s - (time.monotonic() - started))):
            raise DecodeRefused(
                f"decoding took longer than the limit of {limits.deadline_s:g} s and was "
                "stopped (a hostile or very slow image); send a smaller or simpler image",
                "timeout",
            )
        answer: tuple[Any, ...] = ours.recv()
    except (EOFError, OSError):
        proc.join(1.0)
        if proc.exitcode is not None and proc.exitcode < 0:  # killed: the kernel's OOM killer?
            raise DecodeRefused(
                f"the decoder was killed (signal {-proc.exitcode}) decoding this image",
                "crashed",
            ) from None
        raise DecodeRefused("the decoder crashed on this image", "crashed") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5.0)
        ours.close()
        with contextlib.suppress(Exception):
            proc.close()
    if answer[0] == "refused":
        problem, message = str(answer[1]), str(answer[2])
        if problem == "memory":
            mb = limits.memory_bytes / 2**20
            message = (
                f"decoding this image needs more memory than the limit of {mb:,.0f} MiB a "
                "decode may use; send a smaller image"
            )
        raise DecodeRefused(message, problem)
    return answer


def decode_query_image(data: bytes, max_pixels: int, limits: IsolationLimits) -> Image.Image:
    """An uploaded search image decoded in a decoder process (module docstring): an RGB picture
    of about :data:`QUERY_SIDE` px. Raises :class:`DecodeRefused`."""
    _ok, mode, size, raw = _run(("query", data, int(max_pixels)), limits)
    return Image.frombytes(mode, tuple(size), raw)


def render_preview_isolated(
    fd: int, folder: Path, key: str, limits: IsolationLimits
) -> bytes | None:
    """Render the preview of the open file ``fd`` in a decoder process, which writes it into the
    cache at ``folder / key``. Returns None when it is cached, or the JPEG itself when the cache
    could not be written (a full or read-only data folder). Raises :class:`DecodeRefused`
    (``problem`` ``preview``: the file cannot be shown, with why)."""
    _ok, data = _run(("preview", os.fspath(folder), key), limits, fd=fd)
    return data if isinstance(data, bytes) else None
