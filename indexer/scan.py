"""Finding images in a folder tree.

``scan_folder`` walks with ``os.scandir``; follows symbolic links to folders but never enters the
same folder twice (it remembers each folder's ``(st_dev, st_ino)``), so symlink loops end; skips
hidden entries (names starting with ".") and the system folders of NAS boxes, Windows, macOS and
Linux; and recognises images by their first bytes, not their extension. Entries it cannot read are
reported to ``on_problem`` (or collected in a list you pass) and the walk goes on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator

from clipsearch.indexer.errors import IngestError, PathNotAllowed
from clipsearch.indexer.types import FileInfo, ScanProblem

log = logging.getLogger(__name__)

SYSTEM_FOLDERS = frozenset(
    {
        "@eadir",  # Synology thumbnails
        "#recycle",
        "#snapshot",
        "$recycle.bin",
        "system volume information",
        "lost+found",
        "__macosx",
        "@recycle",
        "@recently-snapshot",
        ".@__thumb",
        "node_modules",
    }
)
SNIFF_BYTES = 32
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff"}
    | {".heic", ".heif", ".avif"}
)

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
OUTSIDE_ROOTS = (
    "symbolic link pointing outside the folders this server may read: not followed "
    "(add its target to the allowed folders to index it)"
)


def _heif_available() -> bool:
    try:
        import pillow_heif  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except Exception:
        return False
    return True


def _avif_available() -> bool:
    try:
        from PIL import features

        if features.check("avif"):
            return True
    except Exception:
        pass
    try:
        import pillow_avif  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except Exception:
        return _heif_available()
    return True


HEIF_SUPPORTED = _heif_available()
AVIF_SUPPORTED = _avif_available()


def sniff(head: bytes) -> str | None:
    """The image kind of a file from its first bytes, or None when it is not one we decode."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 18:
        dib = int.from_bytes(head[14:18], "little")
        if dib in _BMP_HEADER_SIZES:
            return "bmp"
        return None
    if head[4:8] == b"ftyp" and len(head) >= 12:
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, len(head) - 3, 4)}
        if brands & _AVIF_BRANDS and AVIF_SUPPORTED:
            return "avif"
        if brands & _HEIF_BRANDS and HEIF_SUPPORTED:
            return "heif"
    return None


def sniff_file(path: str | os.PathLike[str]) -> str | None:
    """Read a file's first bytes (never blocking on FIFOs or devices) and :func:`sniff` them."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return sniff(os.read(fd, SNIFF_BYTES))
    finally:
        os.close(fd)


def has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_skipped_name(name: str) -> bool:
    """Hidden entries and system folders are never scanned."""
    return name.startswith(".") or name.lower() in SYSTEM_FOLDERS


def _describe(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied: the indexer cannot read this entry"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    if isinstance(exc, FileNotFoundError):
        return "it disappeared while scanning, or is a broken symbolic link"
    return f"cannot read it ({exc.strerror or exc})"


def scan_folder(
    root: str | bytes | os.PathLike[str],
    recursive: bool = True,
    on_problem: Callable[[ScanProblem], None] | list[ScanProblem] | None = None,
    allowed_roots: Iterable[str | os.PathLike[str]] | None = None,
    known: Callable[[str, int, int], bool] | None = None,
) -> Iterator[FileInfo]:
    """Yield a :class:`FileInfo` for every image file under ``root`` (absolute, normalised paths;
    symlinks to files are reported under the link's own path). Raises :class:`IngestError` when
    ``root`` itself is missing or not a folder; problems below it go to ``on_problem``.
    With ``allowed_roots``, a symbolic link whose target lies outside all of them is not
    followed: it is reported as a problem (the API's confinement holds inside the tree too).
    ``known(path, size, mtime_ns)`` returning True means the catalog already holds this file
    unchanged: it is not opened to sniff its type again, so a rescan costs a stat per file."""
    if isinstance(on_problem, list):
        sink = on_problem
        report: Callable[[ScanProblem], None] = sink.append
    elif on_problem is None:

        def report(p: ScanProblem) -> None:
            log.warning("skipping %r: %s", p.path, p.reason)

    else:
        report = on_problem

    top = os.path.abspath(os.fsdecode(root))
    if "\x00" in top:
        raise IngestError("the folder path contains a NUL character; give a real folder path")
    try:
        st = os.stat(top)
    except FileNotFoundError:
        raise IngestError(
            f"folder not found: {top!r}; check the path (it must exist on the worker's machine)"
        ) from None
    except OSError as exc:
        raise IngestError(f"cannot open folder {top!r}: {_describe(exc)}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise IngestError(f"{top!r} is not a folder; give the folder that holds the images")

    confine = (
        None if allowed_roots is None else [os.path.realpath(os.fsdecode(r)) for r in allowed_roots]
    )
    seen_dirs: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            report(ScanProblem(folder, _describe(exc)))
            continue
        subdirs: list[str] = []
        for entry in entries:
            if is_skipped_name(entry.name):
                continue
            outside = False
            if confine is not None and entry.is_symlink():
                target = os.path.realpath(entry.path)
                # a link to nothing (a drive or share offline) is not "outside": it is reported
                # as a broken link below, and the images catalogued under it are kept
                outside = not any(_is_within(target, r) for r in confine)
                if outside and os.path.lexists(target):
                    report(ScanProblem(entry.path, OUTSIDE_ROOTS))
                    continue
            try:
                est = entry.stat(follow_symlinks=True)
            except OSError as exc:
                report(ScanProblem(entry.path, _describe(exc)))
                continue
            if outside:  # its target appeared since: still a link out of the roots
                report(ScanProblem(entry.path, OUTSIDE_ROOTS))
                continue
            if stat.S_ISDIR(est.st_mode):
                if not recursive:
                    continue
                key = (est.st_dev, est.st_ino)
                if key in seen_dirs:
                    log.debug("not entering %r again (symlink loop or second link)", entry.path)
                    continue
                seen_dirs.add(key)
                subdirs.append(entry.path)
            elif stat.S_ISREG(est.st_mode):
                if known is not None and known(entry.path, est.st_size, est.st_mtime_ns):
                    yield FileInfo(entry.path, est.st_size, est.st_mtime_ns, "known")
                    continue
                try:
                    kind = sniff_file(entry.path) if est.st_size else None
                except OSError as exc:
                    report(ScanProblem(entry.path, _describe(exc)))
                    continue
                if kind is None and has_image_extension(entry.name):
                    # named like an image but not one: catalogued so the user sees why it failed
                    kind = "empty" if est.st_size == 0 else "unknown"
                if kind is not None:
                    yield FileInfo(entry.path, est.st_size, est.st_mtime_ns, kind)
            # FIFOs, sockets and devices are not images: skipped silently
        stack.extend(reversed(subdirs))


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_path_allowed(
    path: str | os.PathLike[str], allowed_roots: Iterable[str | os.PathLike[str]] | None
) -> str:
    """The absolute form of ``path`` if it lies (after resolving symlinks and "..") inside one of
    ``allowed_roots``; :class:`PathNotAllowed` otherwise. ``None`` allows every path."""
    text = os.fsdecode(path)
    if "\x00" in text:
        raise PathNotAllowed("the path contains a NUL character")
    absolute = os.path.abspath(text)
    if allowed_roots is None:
        return absolute
    roots = [os.path.realpath(os.fsdecode(r)) for r in allowed_roots]
    real = os.path.realpath(absolute)
    if any(_is_within(real, r) for r in roots):
        return absolute
    listed = ", ".join(repr(r) for r in roots) or "(none configured)"
    raise PathNotAllowed(
        f"{absolute!r} is outside the folders this server may read ({listed}); "
        "ask the administrator to add it to the allowed folders"
    )


def file_signature(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, or None when it is gone."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    return None


__all__ = [
    "AVIF_SUPPORTED",
    "HEIF_SUPPORTED",
    "FileInfo",
    "ScanProblem",
    "check_path_allowed",
    "file_signature",
    "scan_folder",
    "sniff",
    "sniff_file",
]
