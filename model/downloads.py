"""Verified, atomic downloads, and the stamps that spare re-hashing a verified file.

:func:`download` streams a URL into a temporary file beside its destination while hashing it,
and moves it into place (``os.replace``) only when the transfer is complete and the SHA256 is the
expected one: an interrupted or corrupted transfer never leaves a file that could be taken for a
model. With no hash recorded, :func:`published_hash` asks a Hugging Face-style server for the one
it publishes (a large file's LFS SHA256, or a small file's git blob id).

A stamp beside a verified file records (sha256, size, mtime) at verification, so later checks
(:func:`is_verified`) need not re-hash gigabytes; a file changed since is hashed again.
Nothing here knows model names: :mod:`model.registry` maps names to URLs and hashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.client import HTTPMessage
from pathlib import Path
from typing import IO

from clipsearch.model.errors import DownloadError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_SHA_RE = SHA_RE

Progress = Callable[[int, "int | None"], None]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fmt_size(n: int | None) -> str:
    return "size not listed" if n is None else f"about {n / 1e6:.0f} MB"


def download(
    url: str,
    sha256: str,
    dest: str | os.PathLike[str],
    *,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> Path:
    """Fetch ``url`` to ``dest``, verified against ``sha256``, atomically.

    The bytes stream into a temporary file in ``dest``'s folder while being hashed; only if the
    transfer is complete (Content-Length honoured) and the hash matches is the file moved to
    ``dest`` with ``os.replace``. On any failure the temporary file is removed, ``dest`` is left
    as it was, and :class:`DownloadError` says what happened. ``progress(done, total)`` is called
    after each block.
    """
    expected = sha256.lower()
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"refusing to download {url!r}: only http and https URLs are fetched")
    blob_id: str | None = None
    if not expected:  # no hash recorded: the one the hub publishes for the file
        kind, value = published_hash(url, timeout)
        if kind == "sha256":
            expected = value
        else:
            blob_id = value
    elif not _SHA_RE.match(expected):
        raise DownloadError(f"expected sha256 must be 64 hex digits, got {sha256!r}")
    dest = Path(dest).expanduser()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create the folder {dest.parent} for {dest.name}: {exc}"
        ) from exc
    if dest.is_dir():
        raise DownloadError(f"cannot download to {dest}: it is a folder")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise DownloadError(f"cannot write in {dest.parent}: {exc}") from exc
    tmp = Path(tmp_name)
    log.info("downloading %s -> %s", url, dest)
    try:
        with os.fdopen(fd, "wb") as out:
            got, total, actual = _stream(url, out, timeout, progress)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and got != total:
            raise DownloadError(
                f"download of {url} was cut short: got {got} of {total} bytes; try again"
            )
        if blob_id is not None:
            got_id = git_blob_id(tmp)
            if got_id != blob_id:
                raise DownloadError(
                    f"download of {url} does not match the git blob id the server published "
                    f"for it (got {got_id}, expected {blob_id}); nothing was saved"
                )
            expected = actual
        if actual != expected:
            raise DownloadError(
                f"download of {url} does not match its published sha256 (got {actual}, expected "
                f"{expected}); nothing was saved. The transfer was corrupted or the file at that "
                "URL changed."
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _write_stamp(dest, expected)
    log.info("saved %s (%s, sha256 verified)", dest, fmt_size(got))
    return dest


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> None:
        return None


def published_hash(url: str, timeout: float = 30.0) -> tuple[str, str]:
    """The hash a Hugging Face-style server publishes for a file, from a HEAD request that does
    not follow the redirect to the storage host: ``("sha256", hex)`` from ``X-Linked-Etag`` (a
    large file's LFS SHA256) or ``("git-sha1", hex)`` from the ``ETag`` of a small file kept in
    git (its blob id). DownloadError when the server publishes neither."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "clipsearch"})
    try:
        with opener.open(request, timeout=timeout) as response:
            headers = response.headers
    except urllib.error.HTTPError as exc:
        if not 300 <= exc.code < 400:
            raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
        headers = exc.headers
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url}: {exc.reason}") from exc
    except (http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise DownloadError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
    for name, kind, pattern in (
        ("X-Linked-Etag", "sha256", _SHA_RE),
        ("ETag", "git-sha1", re.compile(r"^[0-9a-f]{40}$")),
        ("ETag", "sha256", _SHA_RE),
    ):
        value = (headers.get(name) or "").strip()
        value = value[2:] if value.startswith("W/") else value
        value = value.strip('"').lower()
        if pattern.match(value):
            return kind, value
    raise DownloadError(
        f"{url}: the server published no hash for this file (no X-Linked-Etag or ETag), so it "
        "cannot be verified; nothing was downloaded"
    )


def git_blob_id(path: str | os.PathLike[str]) -> str:
    """The git blob id (sha1 of ``blob <size>\\0`` + bytes) of a file."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _stream(
    url: str, out: IO[bytes], timeout: float, progress: Progress | None
) -> tuple[int, int | None, str]:
    digest = hashlib.sha256()
    got = 0
    total: int | None = None
    request = urllib.request.Request(url, headers={"User-Agent": "clipsearch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit():
                total = int(length)
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                digest.update(block)
                out.write(block)
                got += len(block)
                if progress is not None:
                    progress(got, total)
                if total and got * 10 // total > (got - len(block)) * 10 // total:
                    log.info("downloading %s: %d%%", url.rsplit("/", 1)[-1], got * 100 // total)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url}: {exc.reason}") from exc
    except http.client.IncompleteRead as exc:
        raise DownloadError(
            f"download of {url} was cut short after {got + len(exc.partial)} bytes; try again"
        ) from exc
    except (http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise DownloadError(f"download of {url} failed: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:  # writing: disk full, permissions
        raise DownloadError(f"download of {url} failed while writing: {exc}") from exc
    return got, total, digest.hexdigest()


# A stamp beside a verified file records (size, mtime) at verification, so later resolves need
# not re-hash gigabytes; a file changed since (size or mtime) is hashed again.


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _write_stamp(path: Path, sha256: str) -> None:
    try:
        st = path.stat()
        _stamp_path(path).write_text(
            json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        )
    except OSError as exc:  # a read-only cache still works, it just re-hashes
        log.debug("cannot write verification stamp for %s: %s", path, exc)


def is_verified(path: Path, sha256: str) -> bool:
    """True if ``path`` holds the bytes with this hash (hashing only when the stamp is stale).
    An empty ``sha256`` (a hub file verified against the hash the hub published when it was
    downloaded) means: the hash its stamp recorded then."""
    if not path.is_file():
        return False
    st = path.stat()
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        sha256 = sha256 or str(stamp.get("sha256", ""))
        if stamp == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
            return True
    except (OSError, ValueError, AttributeError):
        pass
    if not sha256:  # never verified: fetch it again
        return False
    if sha256_file(path) == sha256:
        _write_stamp(path, sha256)
        return True
    log.warning("%s does not match its sha256; fetching it again", path)
    return False


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """An advisory inter-process lock (POSIX flock); a no-op where flock is unavailable."""
    try:
        import fcntl  # POSIX only: absent on Windows
    except ImportError:  # Windows: downloads stay atomic, only not de-duplicated
        yield
        return
    try:
        fh = open(lock_path, "a+b")  # noqa: SIM115 - held for the duration of the with-block
    except OSError as exc:
        log.debug("cannot create lock %s (%s); downloading without it", lock_path, exc)
        yield
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        fh.close()  # releases the lock


def remove_stale_parts(weights: Path) -> None:
    """Temporary files of downloads killed mid-way (we hold the lock, so nobody is writing)."""
    for part in weights.parent.glob(f".{weights.name}.*.part"):
        with contextlib.suppress(OSError):
            part.unlink()
            log.info("removed %s, left by an interrupted download", part)


def atomic_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (mode 0644)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
