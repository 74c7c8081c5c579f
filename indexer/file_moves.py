"""Moving a catalogued file (to the trash and back) so that no swapped link can redirect it.

A path checked and then renamed by its string can be redirected between the two calls: a folder
of the path replaced by a symbolic link to somewhere else makes ``os.rename`` act outside the
photo folders. :func:`move_confined` never renames a path string:

1. each side's folder is resolved once and must lie inside that side's allowed roots;
2. it is then opened one component at a time from ``/`` with ``O_NOFOLLOW | O_DIRECTORY``
   (``openat``), so a component that is a link now makes the open fail: the descriptor held is
   the checked folder (missing folders below a root are created through descriptors, for the
   trash);
3. the file is checked through its folder's descriptor (``fstatat``, no link followed): a
   regular file, the one expected (device and inode) when the caller opened it before;
4. it is renamed relative to the two descriptors, with ``renameat2(RENAME_NOREPLACE)`` where the
   platform has it (else ``linkat`` + ``unlinkat``, which cannot replace either), so an existing
   target is never overwritten; across file systems it is copied through descriptors and the
   source unlinked only once the copy is complete;
5. the result is verified before the caller changes the catalog: the target name holds the same
   file (device and inode), and both folders are still inside their roots (their current paths
   read from ``/proc/self/fd``: a folder moved out of the roots meanwhile is detected). A failed
   check moves the file back and refuses.

A refused move changes nothing on disk and raises :class:`MoveRefused` (a :class:`Conflict`)
whose message says why; it never names a resolved path outside the roots.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import Conflict

if TYPE_CHECKING:
    from collections.abc import Callable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_RENAME_NOREPLACE = 1
_COPY_CHUNK = 1 << 20


class MoveRefused(Conflict):
    """A file move was refused; nothing was changed on disk. ``reason`` is a short code:
    ``outside`` (a folder leads out of the allowed roots), ``link`` (a component is a symbolic
    link now), ``changed`` (not the file expected, or not a regular file), ``exists`` (the
    target name is taken), ``gone`` (the source is missing), ``io`` (the disk refused)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Moved:
    """A completed move: where the file is now, and its identity (device, inode)."""

    source: str
    target: str
    dev: int
    ino: int
    copied: bool = False


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _split(path: str) -> tuple[str, str]:
    text = os.path.abspath(os.fsdecode(path))
    if "\x00" in text:
        raise MoveRefused("the path contains a NUL character; nothing was moved", "changed")
    folder, name = os.path.split(text)
    if name in ("", ".", ".."):
        raise MoveRefused("the path does not name a file; nothing was moved", "changed")
    return folder, name


def _open_walk(real: str, *, create_below: str | None = None) -> int:
    """A descriptor of the absolute, symlink-free folder ``real``, opened component by
    component from ``/`` with ``O_NOFOLLOW``. Components below ``create_below`` that are
    missing are created (mode 0700) relative to their parent's descriptor. Raises OSError."""
    parts = [p for p in real.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise OSError(errno.EINVAL, "not a normalised path")
    depth_create = None
    if create_below is not None:
        depth_create = len([p for p in create_below.split("/") if p])
    fd = os.open("/", _DIR_FLAGS)
    try:
        for i, name in enumerate(parts):
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if depth_create is None or i < depth_create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=fd)
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def _fd_path(fd: int) -> str | None:
    """The folder's current absolute path (Linux ``/proc/self/fd``); None where unknown."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    if not path.startswith("/") or path.endswith(" (deleted)"):
        return None
    return path


@dataclass
class _Side:
    fd: int
    folder: str  # resolved when opened
    name: str
    roots: list[str]
    what: str

    def still_inside(self) -> bool:
        if not os.path.isdir("/proc/self/fd"):  # no /proc: the descriptor walk is the guarantee
            return True
        now = _fd_path(self.fd)
        return now is not None and any(_within(now, r) for r in self.roots)


def _open_side(path: str, roots: list[str], what: str, *, create_below: str | None = None) -> _Side:
    folder, name = _split(path)
    try:
        real = os.path.realpath(folder)
    except OSError:  # a link changed while it was being resolved
        raise MoveRefused(
            f"the {what} folder changed while it was being resolved; nothing was moved", "link"
        ) from None
    if create_below is not None and not _within(real, create_below):  # a link out exists
        raise MoveRefused(
            f"the {what} folder leads out of the folders this server may write; nothing was moved",
            "outside",
        )
    if not any(_within(real, r) for r in roots):
        raise MoveRefused(
            f"the {what} folder leads outside the folders this server may change (a symbolic "
            "link or a moved folder); nothing was moved",
            "outside",
        )
    try:
        fd = _open_walk(real, create_below=create_below)
    except FileNotFoundError:
        raise MoveRefused(
            f"the {what} folder does not exist any more; nothing was moved", "gone"
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise MoveRefused(
                f"the {what} folder was replaced by a symbolic link while it was being opened; "
                "nothing was moved",
                "link",
            ) from None
        raise MoveRefused(
            f"the {what} folder cannot be opened ({exc.strerror or exc}); nothing was moved", "io"
        ) from None
    return _Side(fd=fd, folder=real, name=name, roots=roots, what=what)


@functools.lru_cache(maxsize=1)
def _renameat2() -> Callable[..., int] | None:
    """libc's ``renameat2`` (glibc 2.28+), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename ``src`` (in folder ``src_fd``) to ``dst`` (in ``dst_fd``), never replacing an
    existing ``dst``: ``renameat2(RENAME_NOREPLACE)``, else ``linkat`` then ``unlinkat`` (a
    hard link fails on an existing name too). Raises OSError (``EEXIST``, ``EXDEV``, ...)."""
    fn = _renameat2()
    if fn is not None:
        rc = fn(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: the file system lacks the flag
            raise OSError(err, os.strerror(err))
    try:
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        # No hard links here (FAT, some network file systems): check, then rename. The
        # window is one system call wide and both names are relative to checked folders.
        with contextlib.suppress(FileNotFoundError):
            os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST)) from None
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    os.unlink(src, dir_fd=src_fd)


def _copy_across(src: _Side, dst: _Side, st: os.stat_result) -> os.stat_result:
    """Copy the file across file systems through descriptors (the target created exclusively,
    no link followed), fsynced, its times kept; then unlink the source if it is still the same
    file. Returns the copy's stat."""
    in_fd = os.open(src.name, _READ_FLAGS, dir_fd=src.fd)
    try:
        got = os.fstat(in_fd)
        if (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino):
            raise MoveRefused(
                f"the {src.what} file changed while it was being moved; nothing was moved",
                "changed",
            )
        out_fd = os.open(dst.name, _CREATE_FLAGS, 0o600, dir_fd=dst.fd)
        done = False
        try:
            offset = 0
            while True:
                data = os.pread(in_fd, _COPY_CHUNK, offset)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    n = os.write(out_fd, view)
                    view = view[n:]
                offset += len(data)
            if offset != got.st_size:
                raise MoveRefused(
                    f"the {src.what} file changed size while it was being copied; nothing was "
                    "moved",
                    "changed",
                )
            os.fchmod(out_fd, stat.S_IMODE(got.st_mode))
            os.utime(out_fd, ns=(got.st_atime_ns, got.st_mtime_ns))
            os.fsync(out_fd)
            copied = os.fstat(out_fd)
            done = True
        finally:
            os.close(out_fd)
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(dst.name, dir_fd=dst.fd)
    finally:
        os.close(in_fd)
    now = os.stat(src.name, dir_fd=src.fd, follow_symlinks=False)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        with contextlib.suppress(OSError):
            os.unlink(dst.name, dir_fd=dst.fd)
        raise MoveRefused(
            f"the {src.what} file was replaced while it was being copied; nothing was moved",
            "changed",
        )
    os.unlink(src.name, dir_fd=src.fd)
    return copied


def move_confined(
    source: str | os.PathLike[str],
    source_roots: Iterable[str | os.PathLike[str]],
    target: str | os.PathLike[str],
    target_roots: Iterable[str | os.PathLike[str]],
    *,
    expect: tuple[int, int] | None = None,
    create_target_folder: str | os.PathLike[str] | None = None,
) -> Moved:
    """Move the regular file ``source`` to ``target`` (see the module docstring).

    ``source_roots``/``target_roots``: the folders each side must lie in (resolved here).
    ``expect``: the (st_dev, st_ino) the caller checked, refused if the file is another now.
    ``create_target_folder``: a folder (one of the target roots, or inside one) under which
    the target's missing folders may be created (the trash); otherwise the target folder must
    exist. Raises :class:`MoveRefused`; on success nothing but the one rename happened."""
    src_roots = [os.path.realpath(os.fsdecode(r)) for r in source_roots]
    dst_roots = [os.path.realpath(os.fsdecode(r)) for r in target_roots]
    create_below = None
    if create_target_folder is not None:
        create_below = os.path.realpath(os.fsdecode(create_target_folder))
        if not any(_within(create_below, r) for r in dst_roots):
            raise MoveRefused(
                "the target folder lies outside its roots; nothing was moved", "outside"
            )
        os.makedirs(create_below, mode=0o700, exist_ok=True)
    with contextlib.ExitStack() as stack:
        src = _open_side(os.fsdecode(source), src_roots, "source")
        stack.callback(os.close, src.fd)
        dst = _open_side(os.fsdecode(target), dst_roots, "target", create_below=create_below)
        stack.callback(os.close, dst.fd)
        try:
            st = os.stat(src.name, dir_fd=src.fd, follow_symlinks=False)
        except FileNotFoundError:
            raise MoveRefused("the file is not there any more; nothing was moved", "gone") from None
        if not stat.S_ISREG(st.st_mode):
            raise MoveRefused(
                "the file was replaced by a symbolic link or something that is not a regular "
                "file; nothing was moved",
                "changed",
            )
        if expect is not None and (st.st_dev, st.st_ino) != tuple(expect):
            raise MoveRefused(
                "the file was replaced since it was checked; nothing was moved", "changed"
            )
        copied = False
        try:
            rename_noreplace(src.fd, src.name, dst.fd, dst.name)
            moved_st = None
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise MoveRefused(
                    f"another file is at the {dst.what} now; move it away first; nothing was moved",
                    "exists",
                ) from None
            if exc.errno == errno.ENOENT:
                raise MoveRefused(
                    "the file disappeared while it was being moved; nothing was moved", "gone"
                ) from None
            if exc.errno != errno.EXDEV:
                raise MoveRefused(
                    f"the file could not be moved ({exc.strerror or exc}); nothing was moved", "io"
                ) from None
            try:
                moved_st = _copy_across(src, dst, st)
            except FileExistsError:
                raise MoveRefused(
                    f"another file is at the {dst.what} now; move it away first; nothing was moved",
                    "exists",
                ) from None
            except OSError as exc2:
                raise MoveRefused(
                    f"the file could not be copied ({exc2.strerror or exc2}); nothing was moved",
                    "io",
                ) from None
            copied = True
        problem = _verify(src, dst, st, moved_st)
        if problem is not None:
            _undo(src, dst, copied)
            raise MoveRefused(problem + "; it was put back and nothing was moved", "changed")
        final = moved_st or st
        return Moved(
            source=os.path.join(src.folder, src.name),
            target=os.path.join(dst.folder, dst.name),
            dev=int(final.st_dev),
            ino=int(final.st_ino),
            copied=copied,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _verify(
    src: _Side, dst: _Side, st: os.stat_result, copied: os.stat_result | None
) -> str | None:
    try:
        now = os.stat(dst.name, dir_fd=dst.fd, follow_symlinks=False)
    except OSError:
        return "the moved file is not at the target any more"
    want = copied or st
    if (now.st_dev, now.st_ino) != (want.st_dev, want.st_ino) or not stat.S_ISREG(now.st_mode):
        return "the file at the target is not the one moved (it was swapped meanwhile)"
    if not dst.still_inside():
        return "the target folder was moved out of the allowed folders during the move"
    if not src.still_inside():
        return "the source folder was moved out of the allowed folders during the move"
    return None


def _undo(src: _Side, dst: _Side, copied: bool) -> None:
    with contextlib.suppress(OSError, MoveRefused):
        if copied:  # the source was unlinked after the copy: copy it back the same way
            _copy_across(dst, src, os.stat(dst.name, dir_fd=dst.fd, follow_symlinks=False))
        else:
            rename_noreplace(dst.fd, dst.name, src.fd, src.name)


def remove_empty_folder(
    path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]]
) -> bool:
    """Remove the empty folder ``path`` (inside ``roots``), relative to its parent's no-follow
    descriptor; False when it is not empty, gone, or not a plain folder."""
    try:
        side = _open_side(
            os.fsdecode(path), [os.path.realpath(os.fsdecode(r)) for r in roots], "folder"
        )
    except MoveRefused:
        return False
    try:
        os.rmdir(side.name, dir_fd=side.fd)
        return True
    except OSError:
        return False
    finally:
        os.close(side.fd)


__all__ = ["MoveRefused", "Moved", "move_confined", "remove_empty_folder", "rename_noreplace"]
