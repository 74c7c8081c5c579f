"""Opening catalogued files at request time without trusting what is on the disk now.

A file that was scanned can be swapped before it is read: replaced by a symbolic link to
``/etc/passwd``, its folder replaced by a link out of the photo folders, or rewritten. Every read
of an original, a thumbnail or a file being decoded goes through :func:`open_confined`:

1. the path is resolved (``os.path.realpath``) and must lie inside one of the allowed roots
   (themselves resolved), so links that stay inside the photo folders keep working;
2. the resolved, symlink-free path is then opened one component at a time from ``/`` with
   ``O_NOFOLLOW`` (``openat``), so a component swapped for a link after step 1 makes the open
   fail instead of being followed: what is opened is exactly the checked path;
3. the opened descriptor must be a regular file (``fstat``), and callers compare it with the
   catalog: :func:`matches_catalog` (size and mtime, falling back to the sha256 of the content).

:func:`media_type` says what a file may be served as: only the format the decoder recognised
when the image was embedded, confirmed by the file's first bytes now; never a type guessed from
the file's name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import NotFound
from .scan import sniff

READ_CHUNK = 256 * 1024
SNIFF_BYTES = 32

#: Media type of each format the decoder recognises (Pillow's names; MPO is stored as JPEG).
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heif",
    "AVIF": "image/avif",
}
#: What :func:`indexer.scan.sniff` calls each of them.
_SNIFFED = {
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
    "heif": "HEIF",
    "avif": "AVIF",
}

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS |= getattr(os, "O_PATH", 0)  # no read permission needed to walk through a folder
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class UnsafeFile(NotFound):
    """The file may not be served or read now. ``rescan``: the disk no longer matches the
    catalog (a link out of the roots, another file, changed content): its folder needs a scan.

    The message never names a resolved path: it goes to clients."""

    def __init__(self, message: str, *, rescan: bool = False, outside: bool = False) -> None:
        super().__init__(message)
        self.rescan = rescan
        self.outside = outside


@dataclass
class OpenedFile:
    """An open, checked regular file. Close it (or use ``with``); :meth:`chunks` reads it."""

    fd: int
    real_path: str
    st: os.stat_result

    @property
    def size(self) -> int:
        return int(self.st.st_size)

    def head(self, n: int = SNIFF_BYTES) -> bytes:
        return os.pread(self.fd, n, 0)

    def chunks(self, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        """The file's bytes, at most the size it had when opened (a file that grows meanwhile
        is not read past it), then the descriptor is closed."""
        try:
            offset, remaining = 0, self.size
            while remaining > 0:
                data = os.pread(self.fd, min(chunk, remaining), offset)
                if not data:
                    break
                offset += len(data)
                remaining -= len(data)
                yield data
        finally:
            self.close()

    def sha256(self) -> str:
        digest = hashlib.sha256()
        offset = 0
        while True:
            data = os.pread(self.fd, READ_CHUNK, offset)
            if not data:
                return digest.hexdigest()
            digest.update(data)
            offset += len(data)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def open_nofollow(real: str) -> int:
    """Open the absolute, symlink-free path ``real`` read-only, following no link in any of its
    components (each is opened with ``O_NOFOLLOW`` relative to its parent). Raises OSError
    (``ELOOP``/``ENOTDIR`` when a component is a link now)."""
    if not real.startswith("/") or "\x00" in real:
        raise OSError(errno.EINVAL, "not an absolute path")
    parts = real.split("/")[1:]
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise OSError(errno.EINVAL, "not a normalised path")
    fd = os.open("/", _DIR_FLAGS)
    try:
        for name in parts[:-1]:
            nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


def resolve_roots(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    return [os.path.realpath(os.fsdecode(r)) for r in roots]


def open_confined(
    path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]], what: str = "file"
) -> OpenedFile:
    """Open ``path`` if it resolves to a regular file inside ``roots`` (module docstring).

    Raises :class:`UnsafeFile`: ``outside`` when it leads out of the roots, ``rescan`` when the
    disk changed under the catalog (a link appeared, not a regular file); plain ``NotFound``
    semantics (``rescan`` False) when it is simply gone."""
    text = os.path.abspath(os.fsdecode(path))
    if "\x00" in text:
        raise UnsafeFile(f"the {what} path is not valid")
    try:
        real = os.path.realpath(text)
    except OSError:  # a link in the path changed (or vanished) while it was being resolved
        raise UnsafeFile(
            f"the {what} path changed while it was being resolved (a link swapped meanwhile); "
            "it is not served until its folder is scanned again",
            rescan=True,
        ) from None
    real_roots = resolve_roots(roots)
    if not any(is_within(real, r) for r in real_roots):
        raise UnsafeFile(
            f"the {what} now leads outside the folders this server may read (a symbolic link "
            "or a moved folder); it is not served until its folder is scanned again",
            rescan=True,
            outside=True,
        )
    try:
        fd = open_nofollow(real)
    except FileNotFoundError:
        raise UnsafeFile(
            f"the {what} is no longer on disk; ingest its folder again to update the catalog",
            rescan=True,
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise UnsafeFile(
                f"the {what} was replaced by a symbolic link while being opened; it is not "
                "served until its folder is scanned again",
                rescan=True,
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UnsafeFile(
                f"the {what} is not readable by the server (permission denied)"
            ) from None
        raise UnsafeFile(f"the {what} cannot be opened ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeFile(
            f"the {what} is not a regular file any more (a pipe, device or folder)", rescan=True
        )
    return OpenedFile(fd=fd, real_path=real, st=st)


def matches_catalog(
    opened: OpenedFile, size: int | None, mtime_ns: int | None, sha256: str | None
) -> bool:
    """The opened file is the one the catalog describes: same size and mtime, or (mtime
    differs, as after a copy or ``touch``) same size and same sha256 of its content."""
    if size is None or opened.size != int(size):
        return False
    if mtime_ns is not None and opened.st.st_mtime_ns == int(mtime_ns):
        return True
    return bool(sha256) and opened.sha256() == sha256


def media_type(opened: OpenedFile, fmt: str | None) -> str | None:
    """The media type to serve the file as: that of ``fmt`` (the format the decoder recognised)
    when the file's first bytes are still of that format; None otherwise (serve it only as a
    download, never inline)."""
    if not fmt:
        return None
    fmt = "JPEG" if fmt.upper() == "MPO" else fmt.upper()
    kind = sniff(opened.head())
    if kind is None or _SNIFFED.get(kind) != fmt:
        return None
    return MEDIA_TYPES.get(fmt)


__all__ = [
    "MEDIA_TYPES",
    "OpenedFile",
    "UnsafeFile",
    "is_within",
    "matches_catalog",
    "media_type",
    "open_confined",
    "open_nofollow",
]
