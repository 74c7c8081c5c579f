"""Saved index versions: each version's files written atomically (temp file, fsync, rename), a
JSON manifest written last that alone makes a version visible, checksums verified on load."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .common import FORMAT_VERSION, KIND_FLAT, KINDS, VectorIndexError
from .index import VectorIndex

__all__ = ["IndexStore", "IndexStoreError"]

log = logging.getLogger(__name__)


class IndexStoreError(VectorIndexError):
    """A saved index version cannot be written or read."""


_FILE_RE = re.compile(r"^v(\d{6,})\.(faiss|npz)$")
_MANIFEST = "manifest.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temp file in the same folder, fsync, rename over `path`, fsync the folder."""
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


# The index's vectors and codes (flat, IVF lists, fast-scan codes and their re-ranking vectors)
# stay in the file, mapped read-only: every process that loads the same version shares its pages
# (an API worker adds no copy of the index). A saved version is never written again (a new one
# is a new file, renamed in; pruning unlinks, and a mapping outlives the name).
_MMAP_FLAGS = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY


def _read_shared(path: Path) -> faiss.Index:
    """The faiss index in ``path``, memory-mapped read-only where faiss can (it reads the
    others into memory, logged)."""
    try:
        return faiss.read_index(str(path), _MMAP_FLAGS)
    except RuntimeError as exc:
        if not path.exists():
            raise FileNotFoundError(path) from None
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    try:
        main = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexStoreError(f"cannot read {path}: {exc}; re-index to rebuild it") from exc
    log.info(
        "%s cannot be memory-mapped (%s); read into memory instead (each process keeps its own "
        "copy)",
        path,
        why,
    )
    return main


class IndexStore:
    """Versioned, atomically written index files in one folder.

    Each version is `vNNNNNN.faiss` (the main faiss index) + `vNNNNNN.npz` (ids, tombstones, delta,
    metadata); `manifest.json`, replaced atomically after both are on disk, is the only thing that
    makes a version visible. A crash mid-save leaves the previous version loadable.
    """

    def __init__(self, folder: str | os.PathLike[str], keep: int = 2) -> None:
        self.folder = Path(folder)
        if keep < 1:
            raise IndexStoreError(f"keep must be at least 1, got {keep}")
        self.keep = int(keep)

    # ---- manifest

    def _read_manifest(self) -> dict[str, Any]:
        path = self.folder / _MANIFEST
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            if self.folder.exists() and not self.folder.is_dir():
                raise IndexStoreError(
                    f"{self.folder} is not a folder (a file took its place); re-index to rebuild "
                    "the index files from the catalog"
                ) from None
            return {"format": FORMAT_VERSION, "versions": []}
        except OSError as exc:
            raise IndexStoreError(f"cannot read the index manifest {path}: {exc}") from exc
        try:
            data = json.loads(raw.decode("utf-8"))  # invalid UTF-8 is a ValueError here
            versions = data["versions"]
            if not isinstance(versions, list):
                raise TypeError("versions is not a list")
            for entry in versions:
                int(entry["version"])
            if not isinstance(data, dict):
                raise TypeError("the manifest is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexStoreError(
                f"the index manifest {path} is damaged ({exc}); delete the folder's index files and "
                "re-index to rebuild them from the catalog"
            ) from exc
        return data

    def versions(self) -> list[int]:
        """Saved versions, oldest first."""
        return sorted(int(e["version"]) for e in self._read_manifest()["versions"])

    def _set_aside(self, path: Path, why: str) -> None:
        """Rename a damaged derived file (or whatever took the folder's place) out of the way,
        never deleting it: ``<name>.damaged-<UTC time>``."""
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        os.rename(path, aside)
        log.warning("%s %s; set aside as %s and rebuilt", path, why, aside.name)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        if (self.folder.is_symlink() or self.folder.exists()) and not self.folder.is_dir():
            self._set_aside(self.folder, "is not a folder")  # a file, or a link to none
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # ---- save / load

    def save(self, index: VectorIndex) -> int:
        """Write `index` as a new version and return it; older versions beyond `keep` are pruned."""
        try:
            with self._locked():
                try:
                    manifest = self._read_manifest()
                except IndexStoreError as exc:  # derived data: rebuilt beside, never a dead end
                    self._set_aside(self.folder / _MANIFEST, f"is damaged ({exc})")
                    manifest = {"format": FORMAT_VERSION, "versions": []}
                known = [int(e["version"]) for e in manifest["versions"]]
                on_disk = [
                    int(m.group(1)) for p in self.folder.iterdir() if (m := _FILE_RE.match(p.name))
                ]
                version = max([0, *known, *on_disk]) + 1
                main, arrays, meta = index.export()
                meta["version"] = version
                meta["saved_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
                faiss_path = self.folder / f"v{version:06d}.faiss"
                npz_path = self.folder / f"v{version:06d}.npz"
                _atomic_write(faiss_path, lambda tmp: faiss.write_index(main, str(tmp)))
                meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)

                def write_npz(tmp: Path) -> None:
                    with open(tmp, "wb") as f:
                        np.savez(f, meta=meta_bytes, **arrays)

                _atomic_write(npz_path, write_npz)
                entry = {
                    "version": version,
                    "files": {
                        "faiss": {"name": faiss_path.name, "sha256": _sha256(faiss_path)},
                        "npz": {"name": npz_path.name, "sha256": _sha256(npz_path)},
                    },
                    "saved_at": meta["saved_at"],
                    "kind": meta["kind"],
                    "n": meta.get("n"),
                }
                manifest["versions"] = [*manifest["versions"], entry]
                manifest["format"] = FORMAT_VERSION
                self._write_manifest(manifest)
                index.mark_saved(version)
                self._prune(manifest)
        except OSError as exc:
            raise IndexStoreError(
                f"cannot save the index to {self.folder}: {exc}; check the folder exists, is writable "
                "and has free space (the previous version is still in place)"
            ) from exc
        log.info("saved index version %d to %s", version, self.folder)
        return version

    def _write_manifest(self, manifest: Mapping[str, object]) -> None:
        body = json.dumps(manifest, indent=1).encode("utf-8")

        def write(tmp: Path) -> None:
            tmp.write_bytes(body)

        _atomic_write(self.folder / _MANIFEST, write)

    def _prune(self, manifest: dict[str, Any]) -> None:
        entries = sorted(manifest["versions"], key=lambda e: int(e["version"]))
        keep_entries = entries[-self.keep :]
        if len(keep_entries) != len(entries):
            manifest["versions"] = keep_entries
            self._write_manifest(manifest)
        keep_names = {f["name"] for e in keep_entries for f in e["files"].values()}
        for p in self.folder.iterdir():
            stale = (_FILE_RE.match(p.name) and p.name not in keep_names) or (
                p.name.startswith(".tmp-") and p.name.endswith(".part")
            )
            if stale:
                with contextlib.suppress(OSError):
                    p.unlink()
                    log.debug("pruned %s", p)

    def load(self, version: int | None = None, verify: bool = True) -> VectorIndex:
        """Load `version` (default: the latest). Raises IndexStoreError if there is none or it is damaged."""
        for attempt in range(3):
            manifest = self._read_manifest()
            entries = {int(e["version"]): e for e in manifest["versions"]}
            if not entries:
                raise IndexStoreError(
                    f"no saved index in {self.folder}; run a re-index to build one"
                )
            v = max(entries) if version is None else int(version)
            if v not in entries:
                raise IndexStoreError(
                    f"index version {v} is not in {self.folder} (available: {sorted(entries)})"
                )
            try:
                return self._load_entry(v, entries[v], verify)
            except FileNotFoundError:
                if attempt == 2:  # pruned under us three times: give up
                    raise IndexStoreError(
                        f"index version {v} disappeared from {self.folder} while loading"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _file(self, entry: Mapping[str, Any], key: str, v: int) -> tuple[Path, str]:
        try:
            info = entry["files"][key]
            name, digest = str(info["name"]), str(info["sha256"])
        except (KeyError, TypeError) as exc:
            raise IndexStoreError(
                f"the manifest entry for version {v} in {self.folder} is damaged"
            ) from exc
        m = _FILE_RE.match(name)
        if not m or int(m.group(1)) != v or m.group(2) != key:  # never follow a path from the file
            raise IndexStoreError(
                f"the manifest in {self.folder} names an unexpected file {name!r}"
            )
        return self.folder / name, digest

    def _load_entry(self, v: int, entry: Mapping[str, Any], verify: bool) -> VectorIndex:
        faiss_path, faiss_sha = self._file(entry, "faiss", v)
        npz_path, npz_sha = self._file(entry, "npz", v)
        if verify:
            for path, digest in ((faiss_path, faiss_sha), (npz_path, npz_sha)):
                if _sha256(path) != digest:
                    raise IndexStoreError(
                        f"{path} does not match its checksum (damaged or partly written); "
                        "re-index to rebuild it from the catalog"
                    )
        try:
            with np.load(npz_path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode("utf-8"))
                arrays = {
                    name: z[name] for name in ("main_ids", "main_banned", "delta_ids", "delta_vecs")
                }
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise IndexStoreError(f"cannot read {npz_path}: {exc}; re-index to rebuild it") from exc
        if not faiss_path.exists():
            raise FileNotFoundError(faiss_path)
        main = _read_shared(faiss_path)
        kind = str(meta.get("kind", KIND_FLAT))
        if kind not in KINDS or main.ntotal != arrays["main_ids"].size:
            raise IndexStoreError(
                f"{faiss_path} and {npz_path} do not belong together; re-index to rebuild them"
            )
        meta["version"] = v
        idx = VectorIndex(
            main,
            arrays["main_ids"],
            kind=kind,
            nprobe=int(meta.get("nprobe", 1)),
            metadata=meta,
            main_banned=arrays["main_banned"],
            delta_ids=arrays["delta_ids"],
            delta_vecs=arrays["delta_vecs"],
        )
        log.info("loaded index version %d (%s, %d vectors) from %s", v, kind, len(idx), self.folder)
        return idx
