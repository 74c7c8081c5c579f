"""The vector index: exact flat search for small libraries, IVF for large ones, always fresh.

Vectors are L2-normalised float32 and compared by inner product (cosine). Ids are int64 catalog ids.

* `build_index(ids, vectors, ...)` builds an exact flat index below `flat_threshold` vectors and an
  IVF index above it (nlist about 4-8 x sqrt(N), k-means on a sample of 30-256 vectors per list).
  For IVF it picks `nprobe` as the smallest value whose recall@k against exact search reaches the
  target for *every* kind of tuning query (image queries and text queries are distributed
  differently: the CLIP modality gap), and records the measured recall per kind in the metadata.
* `VectorIndex` answers `search(queries, k, exclude=None)`. Vectors added after the build live in an
  exact "delta" merged at query time; removed ids are tombstoned and never returned, from the main
  index or the delta. Searches run concurrently with adds/removes: mutations publish a new immutable
  snapshot under a lock, searches read whichever snapshot is current when they start.
* `IndexStore(folder)` saves versions atomically (temp file + fsync + rename, a JSON manifest written
  last) and loads the latest; `SwappableIndex` holds the live index and swaps to a newer version by
  a reference assignment, so a query in flight keeps the object it started with.

This module is pure numpy + faiss: it knows nothing about the catalog or the model.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexer.errors import IndexerError

__all__ = [
    "DEFAULT_FLAT_THRESHOLD",
    "IndexStore",
    "IndexStoreError",
    "SwappableIndex",
    "TuneResult",
    "VectorIndex",
    "VectorIndexError",
    "build_index",
    "default_nlist",
    "tune_nprobe",
]

log = logging.getLogger(__name__)

# Below this many vectors the index is exact (flat). Measured on the 2-core dev machine
# (bench/results/index.md): a single-thread exact query over 20k x 512 float32 takes about 2 ms,
# the latency goal; above it IVF is needed to stay under 2 ms, below it exact search is as fast as
# the goal asks, needs no training, and is never wrong.
DEFAULT_FLAT_THRESHOLD = 20_000
COMPRESSIONS: tuple[str | None, ...] = (None, "sq8", "fp16", "pq")
FORMAT_VERSION = 1
# With a few tombstones the main index is asked for k + their number of results; with many, faiss
# filters them during the scan (an IDSelector) so the cost does not grow with the deletions.
_OVERFETCH_LIMIT = 1024
_TRAIN_BUDGET = 131_072  # training sample size the automatic per-list count aims for
_SELF_MATCH = (
    1.0 - 1e-5
)  # an exact hit this close is the query itself (a held-out vector in the index)


class VectorIndexError(IndexerError):
    """The vector index cannot do what was asked (bad input, unusable parameters)."""


class IndexStoreError(VectorIndexError):
    """A saved index version cannot be written or read."""


# --------------------------------------------------------------------------------------------
# input checking


def _as_vectors(x: Any, what: str, dim: int | None = None) -> np.ndarray:
    """float32 C-contiguous [n, D], finite, unit norm (normalised here if it is not)."""
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise VectorIndexError(f"{what} must be a numeric array: {exc}") from exc
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise VectorIndexError(f"{what} must be a [n, D] array, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise VectorIndexError(
            f"{what} have dimension {arr.shape[1]} but the index holds {dim}-d vectors; "
            "embed them with the model the index was built with, or rebuild the index"
        )
    if arr.shape[0] == 0:
        return np.ascontiguousarray(arr)
    if arr.shape[1] == 0:
        raise VectorIndexError(f"{what} have dimension 0")
    norms = np.sqrt(np.einsum("ij,ij->i", arr, arr))
    if (np.abs(norms - 1.0) <= 1e-3).all():  # the common case: already unit vectors
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    if not np.all(np.isfinite(norms)):
        raise VectorIndexError(f"{what} contain NaN or infinite values")
    if np.any(norms < 1e-6):
        bad = int(np.argmin(norms))
        raise VectorIndexError(
            f"{what} row {bad} is a zero vector and has no direction to search by"
        )
    if np.any(np.abs(norms - 1.0) > 1e-3):
        arr = arr / norms[:, None]
    return np.ascontiguousarray(arr, dtype=np.float32)


def _as_ids(ids: Any, n: int, what: str = "ids") -> np.ndarray:
    try:
        arr = np.asarray(ids)
    except (TypeError, ValueError) as exc:
        raise VectorIndexError(f"{what} must be integers: {exc}") from exc
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise VectorIndexError(f"{what} must be a 1-d array of integer catalog ids")
    arr = arr.astype(np.int64, copy=False)
    if arr.shape[0] != n:
        raise VectorIndexError(
            f"got {arr.shape[0]} {what} for {n} vectors; they must match one to one"
        )
    if arr.size and arr.min() < 0:
        raise VectorIndexError(f"{what} must be non-negative catalog ids (got {int(arr.min())})")
    if np.unique(arr).size != arr.size:
        raise VectorIndexError(f"{what} contain duplicates; each catalog id may appear once")
    return np.ascontiguousarray(arr)


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Boolean mask: which of `values` are in the sorted unique array `sorted_set`."""
    if sorted_set.size == 0 or values.size == 0:
        return np.zeros(values.shape, dtype=bool)
    pos = np.searchsorted(sorted_set, values)
    pos = np.minimum(pos, sorted_set.size - 1)
    return sorted_set[pos] == values


def _use_gpu() -> bool:
    try:
        return faiss.get_num_gpus() > 0 and hasattr(faiss, "StandardGpuResources")
    except Exception:  # pragma: no cover - odd builds
        return False


_gpu_resources: Any = None
_gpu_lock = threading.Lock()


def _gpu_res() -> Any:  # pragma: no cover - needs a GPU build of faiss
    global _gpu_resources
    with _gpu_lock:
        if _gpu_resources is None:
            _gpu_resources = faiss.StandardGpuResources()
        return _gpu_resources


# --------------------------------------------------------------------------------------------
# the index


@dataclass(frozen=True)
class _Snapshot:
    """Everything a search reads; replaced (never edited in place) by add/remove."""

    main_banned: np.ndarray  # sorted unique ids in the main index that must not be returned
    selector: Any  # faiss IDSelector excluding main_banned, built when it is large
    delta_vecs: np.ndarray  # buffer; rows [:delta_n] are valid
    delta_ids: np.ndarray  # buffer; [:delta_n]
    delta_alive: np.ndarray  # bool [delta_n]
    delta_n: int


@dataclass
class TuneResult:
    """Outcome of `tune_nprobe`: the chosen nprobe and the recall@k it measured per query kind."""

    nprobe: int
    recall: dict[str, float]
    target: float
    target_met: bool
    curve: dict[int, dict[str, float]] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class VectorIndex:
    """A searchable set of (id, unit vector): a main faiss index, an exact delta and tombstones.

    Build one with `build_index` or load one with `IndexStore.load`; the constructor is internal.
    """

    def __init__(
        self,
        main: faiss.Index,
        main_ids: np.ndarray,
        *,
        kind: str,
        nprobe: int,
        metadata: dict[str, Any],
        main_banned: np.ndarray | None = None,
        delta_ids: np.ndarray | None = None,
        delta_vecs: np.ndarray | None = None,
    ) -> None:
        self._main = main
        self._dim = int(main.d)
        self._main_ids = np.sort(np.asarray(main_ids, dtype=np.int64))
        self._kind = kind
        self._nprobe = int(nprobe)
        self._meta = dict(metadata)
        self._lock = threading.Lock()
        self._params_cache: dict[int, Any] = {}
        self._gpu_main: Any = None
        self._gpu_search_lock = threading.Lock()
        if _use_gpu():  # pragma: no cover - needs a GPU build of faiss
            try:
                self._gpu_main = faiss.index_cpu_to_gpu(_gpu_res(), 0, main)
            except Exception as exc:
                log.warning("faiss GPU search unavailable for this index (%s); using the CPU", exc)
        d_ids = np.zeros(0, np.int64) if delta_ids is None else np.asarray(delta_ids, np.int64)
        d_vecs = (
            np.zeros((0, self._dim), np.float32)
            if delta_vecs is None
            else np.ascontiguousarray(delta_vecs, np.float32)
        )
        self._delta_pos: dict[int, int] = {int(i): p for p, i in enumerate(d_ids.tolist())}
        banned = np.zeros(0, np.int64) if main_banned is None else np.unique(main_banned)
        self._state = _Snapshot(
            main_banned=banned.astype(np.int64),
            selector=self._make_selector(banned),
            delta_vecs=d_vecs.copy(),
            delta_ids=d_ids.copy(),
            delta_alive=np.ones(d_ids.size, dtype=bool),
            delta_n=int(d_ids.size),
        )

    # ---- properties

    @property
    def kind(self) -> str:
        """'flat' (exact) or 'ivf'."""
        return self._kind

    @property
    def nprobe(self) -> int:
        """Lists scanned per query (1 for a flat index)."""
        return self._nprobe

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def version(self) -> int | None:
        """The store version this index was saved as or loaded from (None if never saved)."""
        v = self._meta.get("version")
        return None if v is None else int(v)

    @property
    def delta_size(self) -> int:
        """Vectors added since the build (live ones)."""
        s = self._state
        return int(np.count_nonzero(s.delta_alive))

    @property
    def removed_count(self) -> int:
        """Ids of the main index that are tombstoned (removed or superseded by the delta)."""
        return int(self._state.main_banned.size)

    @property
    def metadata(self) -> dict[str, Any]:
        """version, built_at, n, kind, nlist, nprobe, compression, recall per query kind, ..."""
        meta = dict(self._meta)
        meta.update(
            kind=self._kind,
            nprobe=self._nprobe,
            size=len(self),
            delta=self.delta_size,
            removed=self.removed_count,
        )
        return meta

    def __len__(self) -> int:
        s = self._state
        return int(self._main_ids.size - s.main_banned.size + np.count_nonzero(s.delta_alive))

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, (int, np.integer)):
            return False
        s = self._state
        pos = self._delta_pos.get(int(item))
        if pos is not None and pos < s.delta_n and s.delta_alive[pos]:
            return True
        ids = np.array([int(item)], np.int64)
        return bool(
            _isin_sorted(ids, self._main_ids)[0] and not _isin_sorted(ids, s.main_banned)[0]
        )

    def __repr__(self) -> str:
        return (
            f"VectorIndex(kind={self._kind!r}, size={len(self)}, nprobe={self._nprobe}, "
            f"delta={self.delta_size}, version={self.version})"
        )

    # ---- search

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        exclude: Iterable[int] | np.ndarray | None = None,
        *,
        nprobe: int | None = None,
        allow: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product. Returns (scores float32, ids int64), [n, k] or [k] for one query.

        Rows with fewer than k live vectors are padded with id -1 and score -inf. `exclude` ids are
        left out (for example the query image itself); removed ids never come back. `allow` (ids):
        only these are candidates, skipped during the scan by a faiss IDSelectorBatch; an IVF
        index then probes every list, so the answer is exact over the allowed ids however few
        they are (the scan checks one id per vector and scores only the allowed ones).
        """
        single = np.ndim(queries) == 1
        q = _as_vectors(queries, "queries", self._dim)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise VectorIndexError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        probe = self._nprobe if nprobe is None else int(nprobe)
        if probe < 1:
            raise VectorIndexError(f"nprobe must be at least 1, got {nprobe!r}")
        s = self._state  # one consistent snapshot for the whole call
        excl = np.zeros(0, np.int64)
        if exclude is not None:
            excl = np.unique(
                np.asarray(
                    list(exclude) if not isinstance(exclude, np.ndarray) else exclude, np.int64
                )
            )
        n = q.shape[0]
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        ids = np.full((n, k), -1, dtype=np.int64)
        if n == 0:
            return (scores[0], ids[0]) if single else (scores, ids)
        allowed = None if allow is None else np.unique(np.asarray(allow, np.int64).reshape(-1))
        if allowed is None:
            ms, mi = self._search_main(q, k, s, excl, probe)
        else:
            ms, mi = self._search_main_allowed(q, k, s, excl, allowed)
        ds, di = self._search_delta(q, k, s, excl, allowed)
        plain = allowed is None and (excl.size + s.main_banned.size) == 0
        if di.shape[1] == 0 and ms.shape[1] == k and plain:
            mi[~np.isfinite(ms)] = -1  # fast path: faiss' own top-k, already best first
            return (ms[0], mi[0]) if single else (ms, mi)
        allS = np.concatenate([ms, ds], axis=1)
        allI = np.concatenate([mi, di], axis=1)
        order = np.argsort(-allS, axis=1, kind="stable")[:, :k]
        top_s = np.take_along_axis(allS, order, axis=1)
        top_i = np.take_along_axis(allI, order, axis=1)
        m = top_s.shape[1]
        scores[:, :m] = top_s
        ids[:, :m] = top_i
        ids[~np.isfinite(scores)] = -1
        return (scores[0], ids[0]) if single else (scores, ids)

    def _params(self, probe: int, sel: Any) -> Any:
        if sel is None:  # read-only during a search, so one object per nprobe can be shared
            cached = self._params_cache.get(probe)
            if cached is None:
                cached = self._params_cache[probe] = self._new_params(probe, None)
            return cached
        return self._new_params(probe, sel)

    def _new_params(self, probe: int, sel: Any) -> Any:
        p: Any
        if self._kind == "ivf":
            p = faiss.SearchParametersIVF()
            p.nprobe = probe
        else:
            p = faiss.SearchParameters()
        if sel is not None:
            p.sel = sel
        return p

    def _search_main(
        self, q: np.ndarray, k: int, s: _Snapshot, excl: np.ndarray, probe: int
    ) -> tuple[np.ndarray, np.ndarray]:
        n = q.shape[0]
        ntotal = int(self._main_ids.size)
        if ntotal == 0:
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        banned = s.main_banned
        extra = excl[_isin_sorted(excl, self._main_ids)] if excl.size else excl
        n_ban = int(banned.size + extra.size)
        sel = None
        if n_ban == 0:
            fetch = min(k, ntotal)
        elif s.selector is not None and self._gpu_main is None:
            # Many tombstones: faiss skips them during the scan, so k results still come back
            # without asking for k + (number of deletions); only `exclude` is over-fetched.
            fetch = min(k + int(extra.size), ntotal)
            sel = s.selector
        else:
            fetch = min(k + n_ban, ntotal)  # few tombstones: over-fetch and filter
        params = self._params(probe, sel)
        if self._gpu_main is not None and sel is None:  # pragma: no cover - GPU only
            with self._gpu_search_lock:
                if self._kind == "ivf":
                    self._gpu_main.nprobe = min(probe, 2048)
                dist, lab = self._gpu_main.search(q, min(fetch, 2048))
        else:
            dist, lab = self._main.search(q, fetch, params=params)
        if n_ban:
            drop = np.zeros(lab.shape, dtype=bool)
            if sel is None and banned.size:
                drop |= _isin_sorted(lab.ravel(), banned).reshape(lab.shape)
            if extra.size:
                drop |= np.isin(lab, extra)
            dist = np.where(drop, -np.inf, dist)
        missing = lab < 0
        if missing.any():
            dist = np.where(missing, -np.inf, dist)
        return dist.astype(np.float32, copy=False), lab

    def _search_main_allowed(
        self, q: np.ndarray, k: int, s: _Snapshot, excl: np.ndarray, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The main index restricted to ``allowed`` ids (less tombstones and ``excl``)."""
        n = q.shape[0]
        ids = allowed[_isin_sorted(allowed, self._main_ids)]
        if ids.size and s.main_banned.size:
            ids = ids[~_isin_sorted(ids, s.main_banned)]
        if ids.size and excl.size:
            ids = ids[~_isin_sorted(ids, excl)]
        if ids.size == 0:
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        arr = np.ascontiguousarray(ids, dtype=np.int64)
        sel = faiss.IDSelectorBatch(arr.size, faiss.swig_ptr(arr))
        probe = int(faiss.extract_index_ivf(self._main).nlist) if self._kind == "ivf" else 1
        params = self._new_params(probe, sel)
        dist, lab = self._main.search(q, min(k, int(arr.size)), params=params)
        dist = np.where(lab < 0, -np.inf, dist)
        return dist.astype(np.float32, copy=False), lab

    @staticmethod
    def _search_delta(
        q: np.ndarray, k: int, s: _Snapshot, excl: np.ndarray, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        n = q.shape[0]
        dn = s.delta_n
        if dn == 0 or not s.delta_alive.any():
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        vecs = s.delta_vecs[:dn]
        dids = s.delta_ids[:dn]
        sims = q @ vecs.T
        dead = ~s.delta_alive
        if excl.size:
            dead = dead | np.isin(dids, excl)
        if allowed is not None:
            dead = dead | ~_isin_sorted(dids, allowed)
        if dead.any():
            sims[:, dead] = -np.inf
        kk = min(k, dn)
        if kk < dn:
            part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(dn), (n, dn))
        return np.take_along_axis(sims, part, axis=1).astype(np.float32), dids[part]

    # ---- mutation

    @staticmethod
    def _make_selector(banned: np.ndarray) -> Any:
        if banned.size + 1 <= _OVERFETCH_LIMIT or not hasattr(faiss, "IDSelectorBatch"):
            return None
        arr = np.ascontiguousarray(banned, dtype=np.int64)
        inner = faiss.IDSelectorBatch(arr.size, faiss.swig_ptr(arr))
        sel: Any = faiss.IDSelectorNot(inner)
        sel.referenced_objects = [inner]  # keep the inner selector alive with the outer one
        return sel

    def add(self, ids: Any, vectors: Any) -> None:
        """Make vectors searchable now (exact delta). An id already present gets the new vector."""
        v = _as_vectors(vectors, "vectors", self._dim)
        i = _as_ids(ids, v.shape[0])
        if i.size == 0:
            return
        with self._lock:
            s = self._state
            alive = s.delta_alive.copy()
            for pos in (self._delta_pos.get(int(x)) for x in i.tolist()):
                if pos is not None:
                    alive[pos] = False
            n_old = s.delta_n
            n_new = n_old + i.size
            vecs, dids = s.delta_vecs, s.delta_ids
            if n_new > vecs.shape[0]:  # grow geometrically; readers keep the old buffers
                cap = max(n_new, 2 * vecs.shape[0], 256)
                grown = np.empty((cap, self._dim), np.float32)
                grown[:n_old] = vecs[:n_old]
                gids = np.empty(cap, np.int64)
                gids[:n_old] = dids[:n_old]
                vecs, dids = grown, gids
            # rows past n_old are invisible to current readers, so writing them in place is safe
            vecs[n_old:n_new] = v
            dids[n_old:n_new] = i
            alive = np.concatenate([alive, np.ones(i.size, bool)])
            for p, x in enumerate(i.tolist(), start=n_old):
                self._delta_pos[x] = p
            superseded = i[_isin_sorted(i, self._main_ids)]
            banned = s.main_banned
            if superseded.size:
                banned = np.union1d(banned, superseded)
            self._state = _Snapshot(
                main_banned=banned,
                selector=s.selector if banned is s.main_banned else self._make_selector(banned),
                delta_vecs=vecs,
                delta_ids=dids,
                delta_alive=alive,
                delta_n=n_new,
            )

    def remove(self, ids: Any) -> int:
        """Tombstone ids (main index and delta): they are never returned again. Returns how many were present."""
        arr = np.unique(
            np.asarray(
                list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64
            ).ravel()
        )
        if arr.size == 0:
            return 0
        with self._lock:
            s = self._state
            alive = s.delta_alive
            removed_delta = set()
            for x in arr.tolist():
                pos = self._delta_pos.pop(x, None)
                if pos is not None and alive[pos]:
                    if alive is s.delta_alive:
                        alive = alive.copy()
                    alive[pos] = False
                    removed_delta.add(x)
            in_main = arr[_isin_sorted(arr, self._main_ids)]
            new_ban = in_main[~_isin_sorted(in_main, s.main_banned)]
            banned = np.union1d(s.main_banned, new_ban) if new_ban.size else s.main_banned
            self._state = _Snapshot(
                main_banned=banned,
                selector=s.selector if banned is s.main_banned else self._make_selector(banned),
                delta_vecs=s.delta_vecs,
                delta_ids=s.delta_ids,
                delta_alive=alive,
                delta_n=s.delta_n,
            )
        present = removed_delta | set(new_ban.tolist())
        return len(present)

    # ---- persistence helpers (used by IndexStore)

    def _export(self) -> tuple[faiss.Index, dict[str, Any], dict[str, Any]]:
        with self._lock:
            s = self._state
            live = s.delta_alive
            arrays = {
                "main_ids": self._main_ids,
                "main_banned": s.main_banned,
                "delta_ids": s.delta_ids[: s.delta_n][live].copy(),
                "delta_vecs": s.delta_vecs[: s.delta_n][live].copy(),
            }
            meta = dict(self._meta)
            meta["kind"] = self._kind
            meta["nprobe"] = self._nprobe
        return self._main, arrays, meta

    def _set_version(self, version: int) -> None:
        self._meta["version"] = int(version)


# --------------------------------------------------------------------------------------------
# building and tuning


def default_nlist(n: int) -> int:
    """IVF lists for n vectors.

    8*sqrt(n) up to 250k vectors (smaller lists, faster queries), 4*sqrt(n) above (k-means and
    assignment time grow with nlist * n), never more than n/30 so every list gets 30 training vectors.
    """
    if n < 30:
        return 1
    mult = 8.0 if n <= 250_000 else 4.0
    nl = min(round(mult * math.sqrt(n)), n // 30)
    return max(1, nl)


def _exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    dist, lab = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return dist, lab


def _recall_rows(approx: np.ndarray, exact: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """Per query |approx top-k ∩ exact top-k| / k, ignoring the query's own id where it is indexed."""
    out = np.ones(len(approx), dtype=np.float64)
    for r, (a_row, e_row, me) in enumerate(zip(approx, exact, self_ids, strict=True)):
        e = [x for x in e_row.tolist() if x != me and x >= 0][:k]
        a = [x for x in a_row.tolist() if x != me and x >= 0][:k]
        if e:
            out[r] = len(set(a) & set(e)) / len(e)
    return out


def tune_nprobe(
    index: VectorIndex,
    vectors: np.ndarray,
    ids: np.ndarray,
    queries: Mapping[str, np.ndarray],
    *,
    k: int = 10,
    recall_target: float = 0.95,
    confidence_z: float = 2.0,
    max_margin: float = 0.02,
) -> TuneResult:
    """Smallest nprobe whose recall@k against exact search reaches the target for every query kind.

    `vectors`/`ids` are what the index was built from (ground truth is exact search over them).
    A query that is itself indexed (exact top-1 score ~1) is not counted as its own neighbour.
    A kind meets the target when its mean recall minus `confidence_z` standard errors (at most
    `max_margin`) does, so that fresh queries of the same kind meet it too (a few hundred queries
    give a noisy mean; the cap keeps a small query set from demanding near-perfect recall). If no
    nprobe reaches it (heavy compression), the smallest nprobe within 0.005 of the best recall is
    taken and `target_met` is False.

    For IVF-Flat the whole recall-vs-nprobe curve follows from where each true neighbour's list
    ranks among the query's coarse lists (a true top-k neighbour in a probed list is always
    returned), so one coarse search predicts the answer; it is then confirmed by a real search.
    With compressed codes the prediction is only the starting point of a search over nprobe.
    """
    if index.kind != "ivf":
        return TuneResult(1, {kind: 1.0 for kind in queries}, recall_target, True, {}, {})
    nlist = int(index._meta["nlist"])
    ids = np.asarray(ids, np.int64)
    prepared: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    timings = {"exact_s": 0.0, "predict_s": 0.0, "search_s": 0.0}
    t0 = time.perf_counter()
    for kind, qs in queries.items():
        q = _as_vectors(qs, f"tuning queries {kind!r}", index.dim)
        if q.shape[0] == 0:
            continue
        dist, lab = _exact_topk(q, vectors, k + 1)
        exact_ids = ids[lab]
        self_ids = np.where(dist[:, 0] >= _SELF_MATCH, exact_ids[:, 0], -2)
        prepared[kind] = (q, exact_ids, self_ids)
    if not prepared:
        raise VectorIndexError("no tuning queries: pass at least one non-empty query set")
    timings["exact_s"] = time.perf_counter() - t0
    curve: dict[int, dict[str, float]] = {}
    lower: dict[int, dict[str, float]] = {}

    def measure(p: int) -> dict[str, float]:
        if p not in curve:
            res, low = {}, {}
            for kind, (q, exact_ids, self_ids) in prepared.items():
                t = time.perf_counter()
                _, got = index.search(q, k + 1, nprobe=p)
                timings["search_s"] += time.perf_counter() - t
                rows = _recall_rows(got, exact_ids, self_ids, k)
                res[kind] = float(rows.mean())
                se = float(rows.std(ddof=1) / math.sqrt(rows.size)) if rows.size > 1 else 0.0
                low[kind] = res[kind] - min(confidence_z * se, max_margin)
            curve[p], lower[p] = res, low
            log.debug("nprobe %d: recall %s", p, res)
        return curve[p]

    def ok(p: int) -> bool:
        measure(p)
        return all(r >= recall_target for r in lower[p].values())

    p = 1
    t0 = time.perf_counter()
    try:
        p = _predict_nprobe(index, prepared, k, recall_target, confidence_z, max_margin)
    except Exception as exc:  # pragma: no cover - unusual inverted lists; fall back to searching
        log.debug("nprobe prediction unavailable: %s", exc)
    timings["predict_s"] = time.perf_counter() - t0
    lo, hi = p - 1, None  # lo: largest nprobe assumed to fail
    while True:
        if ok(p):
            hi = p
            break
        lo = p
        if p >= nlist:
            break
        p = min(nlist, p * 2)
    if hi is None:  # unreachable: take the knee of the curve
        best = measure(nlist)
        cands = sorted(curve)
        chosen = nlist
        for c in cands:
            if all(curve[c][kd] >= best[kd] - 0.005 for kd in best):
                chosen = c
                break
        # refine between the powers of two
        lo_c = max([c for c in cands if c < chosen], default=0)
        while chosen - lo_c > 1:
            mid = (lo_c + chosen) // 2
            if all(measure(mid)[kd] >= best[kd] - 0.005 for kd in best):
                chosen = mid
            else:
                lo_c = mid
        log.warning(
            "recall@%d target %.3f not reachable with this index (best %s); nprobe=%d",
            k,
            recall_target,
            best,
            chosen,
        )
        return TuneResult(
            chosen,
            measure(chosen),
            recall_target,
            False,
            dict(sorted(curve.items())),
            {kd: v[0].shape[0] for kd, v in prepared.items()},
            {name: round(x, 3) for name, x in timings.items()},
        )
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return TuneResult(
        hi,
        measure(hi),
        recall_target,
        True,
        dict(sorted(curve.items())),
        {kd: v[0].shape[0] for kd, v in prepared.items()},
        {name: round(x, 3) for name, x in timings.items()},
    )


def _predict_nprobe(
    index: VectorIndex,
    prepared: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    k: int,
    recall_target: float,
    confidence_z: float,
    max_margin: float,
) -> int:
    """Smallest nprobe at which exact IVF-Flat scanning would meet the target for every kind."""
    ivf = faiss.extract_index_ivf(index._main)
    nlist = int(ivf.nlist)
    invl: Any = ivf.invlists
    id_parts, list_parts = [], []
    for lst in range(nlist):
        size = invl.list_size(lst)
        if size:
            id_parts.append(faiss.rev_swig_ptr(invl.get_ids(lst), size).copy())
            list_parts.append(np.full(size, lst, dtype=np.int64))
    all_ids = np.concatenate(id_parts)
    all_lists = np.concatenate(list_parts)
    order = np.argsort(all_ids)
    all_ids, all_lists = all_ids[order], all_lists[order]
    need = 1
    for q, exact_ids, self_ids in prepared.values():
        nq = q.shape[0]
        neigh = np.full((nq, k), -1, dtype=np.int64)
        for r in range(nq):
            row = [x for x in exact_ids[r].tolist() if x != self_ids[r] and x >= 0][:k]
            neigh[r, : len(row)] = row
        valid = neigh >= 0
        pos = np.clip(np.searchsorted(all_ids, np.where(valid, neigh, 0)), 0, all_ids.size - 1)
        lists = all_lists[pos]
        _, coarse = ivf.quantizer.search(q, nlist)
        rank = np.empty_like(coarse)
        rank[np.arange(nq)[:, None], coarse] = np.arange(nlist)[None, :]
        first_p = np.take_along_axis(rank, lists, axis=1) + 1  # nprobe at which it is scanned
        hist = np.zeros((nq, nlist + 1), dtype=np.float64)
        rows = np.broadcast_to(np.arange(nq)[:, None], first_p.shape)
        np.add.at(hist, (rows[valid], first_p[valid]), 1.0)
        denom = np.maximum(valid.sum(axis=1), 1)[:, None]
        per_query = np.cumsum(hist, axis=1) / denom  # [nq, p]: recall at nprobe p
        per_query[valid.sum(axis=1) == 0] = 1.0
        mean = per_query.mean(axis=0)
        se = per_query.std(axis=0, ddof=1) / math.sqrt(nq) if nq > 1 else np.zeros_like(mean)
        passing = np.nonzero(mean - np.minimum(confidence_z * se, max_margin) >= recall_target)[0]
        need = max(need, int(passing[0]) if passing.size else nlist)
    return max(1, min(need, nlist))


def _augment(queries: np.ndarray, n_min: int, rng: np.random.Generator) -> np.ndarray:
    """A small query set (e.g. 50 prompts) topped up to `n_min` with mixes of two of its queries.

    A mix of two prompts reads like a compound prompt ("a dog on a beach") and stays in that kind's
    cone; more queries make the measured recall less noisy, so the tuned nprobe is more reliable.
    """
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[0] < 2 or q.shape[0] >= n_min:
        return q
    m = n_min - q.shape[0]
    a = rng.integers(0, q.shape[0], size=m)
    b = (a + rng.integers(1, q.shape[0], size=m)) % q.shape[0]  # never mixed with itself
    w = rng.uniform(0.3, 0.7, size=(m, 1)).astype(np.float32)
    mixed = w * q[a] + (1 - w) * q[b]
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    keep = norms[:, 0] > 1e-6
    return np.concatenate([q, mixed[keep] / norms[keep]]).astype(np.float32)


def _offset_queries(vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic text-like queries when no real ones are given: pushed out of the data's cone.

    Each is one data vector with the common mean direction removed (a caption shares a photo's
    content, not the "photo look"), mixed with an attribute-like direction (a random combination of
    the data's main axes of variation: prompts often name a colour, a light, a style that cuts
    across subjects), plus a large component along a direction the data does not use (the modality
    gap), as CLIP's text vectors are.
    """
    sample = vectors[rng.choice(vectors.shape[0], size=min(vectors.shape[0], 4096), replace=False)]
    mu = sample.mean(axis=0)
    mu_hat = mu / max(float(np.linalg.norm(mu)), 1e-12)
    centred = sample - mu
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    top = min(64, vt.shape[0])
    attr = (rng.standard_normal((n, top)) * sing[:top]) @ vt[:top]
    attr /= np.maximum(np.linalg.norm(attr, axis=1, keepdims=True), 1e-12)
    gap = rng.standard_normal(size=(vectors.shape[1],))
    gap -= gap.dot(mu_hat) * mu_hat
    gap -= vt[:top].T @ (vt[:top] @ gap)
    gap /= np.linalg.norm(gap)
    a = vectors[rng.integers(0, vectors.shape[0], size=n)].astype(np.float64)
    a -= np.outer(a @ mu_hat, mu_hat)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    w = rng.uniform(0.2, 1.0, size=(n, 1))
    sem = a + w * attr
    sem /= np.maximum(np.linalg.norm(sem, axis=1, keepdims=True), 1e-12)
    q = 0.8 * gap[None, :] + 0.42 * sem + 0.12 * mu_hat[None, :]
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _make_ivf(dim: int, nlist: int, compression: str | None) -> tuple[faiss.Index, faiss.Index]:
    quantizer = faiss.IndexFlatIP(dim)
    ip = faiss.METRIC_INNER_PRODUCT
    index: Any
    if compression is None:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    elif compression == "sq8":
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, ip, True
        )
    elif compression == "fp16":
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, ip, False
        )
    elif compression == "pq":
        m = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m >= 1 and dim % m == 0)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, ip)
        # codebook k-means in 8-d sub-spaces is slow per point; 100 points per centroid is plenty
        index.pq.cp.max_points_per_centroid = 100
        index.pq.cp.niter = 15
    else:  # pragma: no cover - checked by the caller
        raise VectorIndexError(f"unknown compression {compression!r}")
    return index, quantizer


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def build_index(
    ids: Any,
    vectors: Any,
    *,
    flat_threshold: int = DEFAULT_FLAT_THRESHOLD,
    nlist: int | None = None,
    train_sample_per_list: int | None = None,
    compression: str | None = None,
    recall_target: float = 0.95,
    tune_queries: Mapping[str, np.ndarray] | None = None,
    n_tune: int = 300,
    offset_queries: bool = True,
    k: int = 10,
    seed: int = 0,
    niter: int = 10,
    meta: Mapping[str, Any] | None = None,
) -> VectorIndex:
    """Build a VectorIndex over (ids, vectors).

    Fewer than `flat_threshold` vectors: exact flat index. Otherwise IVF with `nlist` lists
    (default `default_nlist(N)`), k-means (spherical, `niter` iterations) on a sample of
    `train_sample_per_list` (30-256; default ~131k/nlist clamped) vectors per list, optional
    compression ('sq8', 'fp16', 'pq'), and nprobe tuned so recall@k reaches `recall_target` for each
    kind in `tune_queries` (e.g. {'image': held-out image vectors, 'text': encoded prompts}). Without
    an 'image' set, `n_tune` held-out data vectors are used; without any other kind, a synthetic
    offset set ('offset', see `_offset_queries`) stands in for text queries unless `offset_queries`
    is False. `meta` is stored in metadata['extra'] (JSON-serialisable).
    """
    t0 = time.perf_counter()
    v = _as_vectors(vectors, "vectors")
    n, dim = v.shape
    if dim == 0:
        raise VectorIndexError(
            "cannot build an index without knowing the dimension: pass a [0, D] array"
        )
    i = _as_ids(ids, n)
    if compression not in COMPRESSIONS:
        raise VectorIndexError(
            f"compression must be one of None, 'sq8', 'fp16', 'pq'; got {compression!r}"
        )
    if not 0.0 < recall_target <= 1.0:
        raise VectorIndexError(f"recall_target must be in (0, 1], got {recall_target}")
    extra = dict(meta or {})
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise VectorIndexError(f"meta must be JSON-serialisable: {exc}") from exc
    base_meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "version": None,
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n": int(n),
        "dim": int(dim),
        "metric": "inner_product",
        "faiss": faiss.__version__,
        "seed": int(seed),
        "extra": extra,
    }
    if n < flat_threshold:
        flat = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        if n:
            flat.add_with_ids(v, i)
        base_meta.update(
            nlist=0,
            compression=None,
            recall={},
            recall_target=recall_target,
            recall_target_met=True,
            build_seconds=round(time.perf_counter() - t0, 3),
        )
        if compression is not None:
            log.info(
                "index of %d vectors is exact (flat); compression %r applies to IVF only",
                n,
                compression,
            )
        return VectorIndex(flat, i, kind="flat", nprobe=1, metadata=base_meta)

    nl = int(nlist) if nlist is not None else default_nlist(n)
    if not 1 <= nl <= n // 30:
        raise VectorIndexError(
            f"nlist={nl} needs at least 30 training vectors per list; {n} vectors allow at most {n // 30}"
        )
    per_list = train_sample_per_list if train_sample_per_list is not None else _TRAIN_BUDGET // nl
    per_list = int(min(256, max(30, per_list)))
    n_train = min(n, nl * per_list)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    train_idx = np.sort(perm[:n_train])
    sample = v[train_idx]
    gpu = _use_gpu()
    t_train = time.perf_counter()
    km = faiss.Kmeans(
        dim,
        nl,
        niter=niter,
        seed=seed,
        spherical=True,
        gpu=gpu,
        verbose=False,
        min_points_per_centroid=min(30, per_list),
        max_points_per_centroid=256,
    )
    km.train(sample)
    index, quantizer = _make_ivf(dim, nl, compression)
    quantizer.add(np.ascontiguousarray(km.centroids, dtype=np.float32))
    index.train(sample)  # the quantizer is ready, so this trains only the SQ/PQ codec
    del sample
    train_s = time.perf_counter() - t_train
    t_add = time.perf_counter()
    target = index
    if gpu:  # pragma: no cover - needs a GPU build of faiss
        try:
            target = faiss.index_cpu_to_gpu(_gpu_res(), 0, index)
        except Exception as exc:
            log.warning("faiss GPU add unavailable (%s); using the CPU", exc)
            target = index
    for a, b in _chunks(n, 65536):
        target.add_with_ids(v[a:b], i[a:b])
    if target is not index:  # pragma: no cover
        index = faiss.index_gpu_to_cpu(target)
    add_s = time.perf_counter() - t_add
    base_meta.update(
        nlist=nl,
        compression=compression,
        train_vectors=int(n_train),
        train_per_list=per_list,
        kmeans_niter=int(niter),
    )
    vi = VectorIndex(index, i, kind="ivf", nprobe=1, metadata=base_meta)

    # nprobe tuning on every query kind
    t_tune = time.perf_counter()
    tq: dict[str, np.ndarray] = {key: np.asarray(val) for key, val in (tune_queries or {}).items()}
    held_out = perm[n_train:] if n - n_train >= n_tune else perm
    if "image" not in tq:
        tq["image"] = v[np.sort(held_out[:n_tune])]
    if len(tq) == 1 and offset_queries:
        tq["offset"] = _offset_queries(v, n_tune, rng)
    given = {kind: int(np.shape(val)[0]) if np.ndim(val) == 2 else 1 for kind, val in tq.items()}
    for kind in list(tq):
        tq[kind] = _augment(tq[kind], n_tune, rng)
    tune = tune_nprobe(vi, v, i, tq, k=k, recall_target=recall_target)
    vi._nprobe = tune.nprobe
    vi._meta.update(
        nprobe=tune.nprobe,
        recall={kd: round(r, 4) for kd, r in tune.recall.items()},
        recall_k=k,
        recall_target=recall_target,
        recall_target_met=tune.target_met,
        tune_queries=tune.queries,
        tune_queries_given=given,
        tune_timings=tune.timings,
        tune_curve={
            str(p): {kd: round(r, 4) for kd, r in c.items()} for p, c in tune.curve.items()
        },
        train_seconds=round(train_s, 3),
        add_seconds=round(add_s, 3),
        tune_seconds=round(time.perf_counter() - t_tune, 3),
        build_seconds=round(time.perf_counter() - t0, 3),
        gpu=gpu,
    )
    log.info(
        "built IVF index: n=%d nlist=%d nprobe=%d recall=%s in %.1fs",
        n,
        nl,
        tune.nprobe,
        vi._meta["recall"],
        vi._meta["build_seconds"],
    )
    return vi


# --------------------------------------------------------------------------------------------
# persistence

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
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"format": FORMAT_VERSION, "versions": []}
        except OSError as exc:
            raise IndexStoreError(f"cannot read the index manifest {path}: {exc}") from exc
        try:
            data = json.loads(raw)
            versions = data["versions"]
            if not isinstance(versions, list):
                raise TypeError("versions is not a list")
            for entry in versions:
                int(entry["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexStoreError(
                f"the index manifest {path} is damaged ({exc}); delete the folder's index files and "
                "re-index to rebuild them from the catalog"
            ) from exc
        return data

    def versions(self) -> list[int]:
        """Saved versions, oldest first."""
        return sorted(int(e["version"]) for e in self._read_manifest()["versions"])

    def latest_version(self) -> int | None:
        vs = self.versions()
        return vs[-1] if vs else None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

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
                manifest = self._read_manifest()
                known = [int(e["version"]) for e in manifest["versions"]]
                on_disk = [
                    int(m.group(1)) for p in self.folder.iterdir() if (m := _FILE_RE.match(p.name))
                ]
                version = max([0, *known, *on_disk]) + 1
                main, arrays, meta = index._export()
                meta["version"] = version
                meta["saved_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
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
                index._set_version(version)
                self._prune(manifest)
        except OSError as exc:
            raise IndexStoreError(
                f"cannot save the index to {self.folder}: {exc}; check the folder exists, is writable "
                "and has free space (the previous version is still in place)"
            ) from exc
        log.info("saved index version %d to %s", version, self.folder)
        return version

    def _write_manifest(self, manifest: Mapping[str, Any]) -> None:
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

    def load_latest(self) -> VectorIndex:
        return self.load(None)

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
        try:
            main = faiss.read_index(str(faiss_path))
        except RuntimeError as exc:
            raise IndexStoreError(
                f"cannot read {faiss_path}: {exc}; re-index to rebuild it"
            ) from exc
        kind = str(meta.get("kind", "flat"))
        if kind not in ("flat", "ivf") or main.ntotal != arrays["main_ids"].size:
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


class SwappableIndex:
    """The live index of a process: searches use the current object, `refresh()` swaps in a newer one.

    A swap is a reference assignment under a lock: a search already running keeps the index it
    started with, the next one gets the new index. Loading happens outside the lock, so no query
    waits for it; a failed load is logged and the old index stays.
    """

    def __init__(self, index: VectorIndex | None = None, store: IndexStore | None = None) -> None:
        self._index = index
        self._store = store
        self._swap_lock = threading.Lock()
        self._refresh_lock = threading.Lock()

    @property
    def current(self) -> VectorIndex | None:
        return self._index

    @property
    def version(self) -> int | None:
        idx = self._index
        return None if idx is None else idx.version

    def swap(self, new: VectorIndex) -> VectorIndex | None:
        """Make `new` the live index; returns the previous one."""
        with self._swap_lock:
            old, self._index = self._index, new
        return old

    def refresh(self, prepare: Callable[[VectorIndex], None] | None = None) -> bool:
        """Swap to the store's latest version if it is newer. Returns True if a swap happened.

        `prepare(new_index)` runs before the swap (for example to re-add vectors the catalog gained
        after that version was built). Never raises for a missing or damaged version: it logs and
        keeps serving the current index.
        """
        if self._store is None:
            raise VectorIndexError("this SwappableIndex has no IndexStore to refresh from")
        if not self._refresh_lock.acquire(blocking=False):
            return False  # another thread is already refreshing
        try:
            try:
                latest = self._store.latest_version()
                current = self.version
                if latest is None or (current is not None and latest <= current):
                    return False
                new = self._store.load(latest)
                if prepare is not None:
                    prepare(new)
            except IndexerError as exc:
                log.warning(
                    "index refresh from %s failed, keeping version %s: %s",
                    self._store.folder,
                    self.version,
                    exc,
                )
                return False
            self.swap(new)
            log.info("swapped to index version %s", new.version)
            return True
        finally:
            self._refresh_lock.release()

    def _require(self) -> VectorIndex:
        idx = self._index
        if idx is None:
            raise VectorIndexError("no vector index is loaded yet; run a re-index to build one")
        return idx

    def search(
        self, queries: np.ndarray, k: int = 10, exclude: Iterable[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._require().search(queries, k, exclude)

    def add(self, ids: Any, vectors: Any) -> None:
        self._require().add(ids, vectors)

    def remove(self, ids: Any) -> int:
        return self._require().remove(ids)

    def __len__(self) -> int:
        idx = self._index
        return 0 if idx is None else len(idx)
