"""The search structure: a main faiss index (exact flat, IVF, or IVF fast-scan PQ with exact
re-ranking), an exact "delta" of vectors added since it was built, and tombstones for removed ids,
answering top-k by inner product.

Searches run concurrently with adds and removes: a mutation publishes a new immutable snapshot
under a lock, and a search reads whichever snapshot is current when it starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from .common import (
    KIND_FASTSCAN,
    KIND_FLAT,
    KIND_IVF,
    KINDS,
    VectorIndexError,
    as_ids,
    as_vectors,
    gpu_resources,
    isin_sorted,
    use_gpu,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["DEFAULT_K_FACTOR", "VectorIndex", "quantizer_ef", "rerank_factor"]

log = logging.getLogger(__name__)

# With a few tombstones the main index is asked for k + their number of results; with many, faiss
# filters them during the scan (an IDSelector) so the cost does not grow with the deletions.
_OVERFETCH_LIMIT = 1024

# ivf-fastscan: candidates re-ranked exactly per result wanted. 4-bit PQ codes of 2 dimensions each
# order neighbours roughly; 64 x k candidates were needed for recall@10 >= 0.95 on text queries at
# 1M (bench/results/ivf_candidates.md: k_factor 4 and 16 never reached it).
DEFAULT_K_FACTOR = 64
# ... per result up to the 10 results that figure is for; a longer list needs fewer per result
# (its tail is re-ranked from a pool already much deeper than the first ten need): beyond 10,
# max(k_factor x 10, 8 x k) candidates. Measured at 100k (ivf-fastscan, nprobe 173): recall@100
# 0.987 text / 0.998 image with 800 candidates against 0.988 / 0.999 with 6,400 at 4x the time;
# recall@200 0.984 / 0.996 with 1,600 against 0.985 / 0.997 with 12,800 (10.5 ms -> 2.2 ms).
_RERANK_REF_K = 10
_RERANK_MIN_PER_RESULT = 8


def rerank_factor(k_factor: float, k: int) -> float:
    """The k_factor an ivf-fastscan search for ``k`` results re-ranks with (the note above)."""
    if k <= _RERANK_REF_K:
        return k_factor
    return max(k_factor * _RERANK_REF_K, _RERANK_MIN_PER_RESULT * k) / k


# ivf-fastscan, filtered: up to this many allowed ids are scored row by row where their float
# vectors lie; more, by one faiss pass over all vectors with a bitmap of the allowed ones (a few
# thousand rows cost less than a pass over 1M; tens of thousands of scattered rows cost more)
_GATHER_LIMIT = 4096


def quantizer_ef(nprobe: int) -> int:
    """The HNSW coarse quantizer's search beam for `nprobe` lists: twice the lists wanted."""
    return max(32, 2 * int(nprobe))


@dataclass(frozen=True)
class _Snapshot:
    """Everything a search reads; replaced (never edited in place) by add/remove."""

    main_banned: np.ndarray  # sorted unique ids in the main index that must not be returned
    selector: (
        faiss.IDSelector | None
    )  # faiss IDSelector excluding main_banned, built when it is large
    delta_vecs: np.ndarray  # buffer; rows [:delta_n] are valid
    delta_ids: np.ndarray  # buffer; [:delta_n]
    delta_alive: np.ndarray  # bool [delta_n]
    delta_n: int


class VectorIndex:
    """A searchable set of (id, unit vector): a main faiss index, an exact delta and tombstones.

    Build one with `build_index` or load one with `IndexStore.load`.
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
        if kind not in KINDS:
            raise VectorIndexError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        self._main = main
        self._dim = int(main.d)
        self._main_ids = np.sort(np.asarray(main_ids, dtype=np.int64))
        self._kind = kind
        self._nprobe = int(nprobe)
        self._meta = dict(metadata)
        self._lock = threading.Lock()
        self._params_cache: dict[tuple[int, float], Any] = {}
        self._gpu_main: Any = None
        self._gpu_search_lock = threading.Lock()
        self._k_factor = float(self._meta.get("k_factor") or DEFAULT_K_FACTOR)
        # ivf-fastscan: faiss's own ids inside the IDMap are positions 0..n-1 (IndexRefineFlat
        # takes no ids); selectors work on positions, so keep position <-> catalog id both ways
        self._pos_ids = np.zeros(0, np.int64)  # position -> catalog id
        self._pos_order = np.zeros(0, np.int64)  # rank in the sorted ids -> position
        self._exact: Any = None  # the re-ranking float vectors (IndexFlatIP, by position)
        if kind == KIND_FASTSCAN:
            idmap: Any = main
            self._pos_ids = faiss.vector_to_array(idmap.id_map).astype(np.int64, copy=False)
            self._pos_order = np.argsort(self._pos_ids, kind="stable")
            if not np.array_equal(self._pos_ids[self._pos_order], self._main_ids):
                raise VectorIndexError("the index's ids do not match the ids given with it")
            refine: Any = faiss.downcast_index(idmap.index)
            self._exact = faiss.downcast_index(refine.refine_index)
        # faiss GPU indexes have no HNSW quantizer nor fast-scan codes: that kind stays on the CPU
        if use_gpu() and kind != KIND_FASTSCAN:  # pragma: no cover - needs a GPU build of faiss
            try:
                self._gpu_main = faiss.index_cpu_to_gpu(gpu_resources(), 0, main)
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
        banned = banned[isin_sorted(banned.astype(np.int64), self._main_ids)]
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
        """'flat' (exact), 'ivf' (IVF-Flat/SQ/PQ) or 'ivf-fastscan' (4-bit PQ + exact re-rank)."""
        return self._kind

    @property
    def k_factor(self) -> float | None:
        """ivf-fastscan: candidates re-ranked exactly per result asked for (None otherwise)."""
        return self._k_factor if self._kind == KIND_FASTSCAN else None

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
        """version, built_at, n, kind, nlist, nprobe, compression, recall per query kind, ...;
        for ivf-fastscan also factory, k_factor and quantizer_ef (the HNSW quantizer's beam)."""
        meta = dict(self._meta)
        meta.update(
            kind=self._kind,
            nprobe=self._nprobe,
            size=len(self),
            delta=self.delta_size,
            removed=self.removed_count,
        )
        if self._kind == KIND_FASTSCAN:
            kf = self._k_factor
            meta.update(
                k_factor=int(kf) if kf.is_integer() else kf,
                quantizer_ef=quantizer_ef(self._nprobe),
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
        return bool(isin_sorted(ids, self._main_ids)[0] and not isin_sorted(ids, s.main_banned)[0])

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
        k_factor: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product. Returns (scores float32, ids int64), [n, k] or [k] for one query.

        Rows with fewer than k live vectors are padded with id -1 and score -inf. `exclude` ids are
        left out (for example the query image itself); removed ids never come back. `allow` (ids):
        only these are candidates, skipped during the scan by a faiss IDSelectorBatch; an IVF
        index then probes every list, so the answer is exact over the allowed ids however few
        they are (the scan checks one id per vector and scores only the allowed ones); an
        ivf-fastscan index scans its float vectors (kept for re-ranking) the same way.
        `nprobe` and (ivf-fastscan) `k_factor`, candidates re-ranked per result, override the
        index's own for this call (the index's own k_factor is for up to 10 results; a longer
        list re-ranks max(k_factor x 10, 8 x k) candidates: :func:`rerank_factor`).
        """
        single = np.ndim(queries) == 1
        q = as_vectors(queries, "queries", self._dim)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise VectorIndexError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        probe = self._nprobe if nprobe is None else int(nprobe)
        if probe < 1:
            raise VectorIndexError(f"nprobe must be at least 1, got {nprobe!r}")
        kf = rerank_factor(self._k_factor, k) if k_factor is None else float(k_factor)
        if not kf >= 1.0:
            raise VectorIndexError(f"k_factor must be at least 1, got {k_factor!r}")
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
            ms, mi = self._search_main(q, k, s, excl, probe, kf)
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

    def _params(
        self, probe: int, sel: faiss.IDSelector | None, kf: float
    ) -> faiss.SearchParameters:
        if sel is None:  # read-only during a search, so one object per nprobe can be shared
            cached = self._params_cache.get((probe, kf))
            if cached is None:
                cached = self._new_params(probe, None, kf)
                if len(self._params_cache) < 256:  # one per (nprobe, k_factor) in use
                    self._params_cache[(probe, kf)] = cached
            return cached
        return self._new_params(probe, sel, kf)

    def _new_params(
        self, probe: int, sel: faiss.IDSelector | None, kf: float | None = None
    ) -> faiss.SearchParameters:
        if self._kind == KIND_FASTSCAN:
            # the selector (on positions) and nprobe go to the IVF under the re-ranking step;
            # swig does not keep nested parameter objects alive, so the outer one holds them
            ivf = faiss.SearchParametersIVF()
            ivf.nprobe = probe
            hnsw = faiss.SearchParametersHNSW()
            hnsw.efSearch = quantizer_ef(probe)
            ivf.quantizer_params = hnsw
            if sel is not None:
                ivf.sel = sel
            refine = faiss.IndexRefineSearchParameters()
            refine.k_factor = self._k_factor if kf is None else kf
            refine.base_index_params = ivf
            refine.referenced_objects = [ivf, hnsw, sel]
            return refine
        p: faiss.SearchParameters
        if self._kind == KIND_IVF:
            p = ivf_params = faiss.SearchParametersIVF()
            ivf_params.nprobe = probe
        else:
            p = faiss.SearchParameters()
        if sel is not None:
            p.sel = sel
        return p

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """ivf-fastscan: the faiss positions of `ids` (sorted, all in the main index)."""
        return self._pos_order[np.searchsorted(self._main_ids, ids)]

    def _position_bitmap(self, positions: np.ndarray, member: bool) -> faiss.IDSelector:
        """An IDSelectorBitmap over positions: `positions` are in (member) or out (not member)."""
        n = int(self._main_ids.size)
        mask = np.zeros(n, dtype=bool) if member else np.ones(n, dtype=bool)
        mask[positions] = member
        bits = np.packbits(mask, bitorder="little")  # faiss reads bit (i & 7) of byte i >> 3
        sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
        sel.referenced_objects = [bits]
        return sel

    def catalog_ids(self, faiss_ids: np.ndarray) -> np.ndarray:
        """The catalog ids of ids as faiss's inverted lists hold them (positions for
        ivf-fastscan, catalog ids already otherwise); -1 stays -1."""
        arr = np.asarray(faiss_ids, dtype=np.int64)
        if self._kind != KIND_FASTSCAN:
            return arr
        return np.where(arr >= 0, self._pos_ids[np.maximum(arr, 0)], -1)

    def _search_main(
        self, q: np.ndarray, k: int, s: _Snapshot, excl: np.ndarray, probe: int, kf: float
    ) -> tuple[np.ndarray, np.ndarray]:
        n = q.shape[0]
        ntotal = int(self._main_ids.size)
        if ntotal == 0:
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        banned = s.main_banned
        extra = excl[isin_sorted(excl, self._main_ids)] if excl.size else excl
        n_ban = int(banned.size + extra.size)
        sel = None
        if n_ban == 0:
            fetch = min(k, ntotal)
        elif self._kind == KIND_FASTSCAN:
            # always filtered during the scan: over-fetching would re-rank k_factor x more
            fetch = min(k, ntotal)
            sel = s.selector
            if extra.size:  # `exclude`d ids (often one: the query image) ruled out as well
                pos = np.ascontiguousarray(self._positions(extra))
                inner = faiss.IDSelectorBatch(pos.size, faiss.swig_ptr(pos))
                out: Any = faiss.IDSelectorNot(inner)
                refs: list[Any] = [inner, pos]
                if sel is not None:
                    refs += [sel, out]
                    out = faiss.IDSelectorAnd(sel, out)
                out.referenced_objects = refs
                sel = out
        elif s.selector is not None and self._gpu_main is None:
            # Many tombstones: faiss skips them during the scan, so k results still come back
            # without asking for k + (number of deletions); only `exclude` is over-fetched.
            fetch = min(k + int(extra.size), ntotal)
            sel = s.selector
        else:
            fetch = min(k + n_ban, ntotal)  # few tombstones: over-fetch and filter
        params = self._params(probe, sel, kf)
        if self._gpu_main is not None and sel is None:  # pragma: no cover - GPU only
            with self._gpu_search_lock:
                if self._kind == KIND_IVF:
                    self._gpu_main.nprobe = min(probe, 2048)
                dist, lab = self._gpu_main.search(q, min(fetch, 2048))
        else:
            dist, lab = self._main.search(q, fetch, params=params)
        if n_ban and self._kind != KIND_FASTSCAN:
            drop = np.zeros(lab.shape, dtype=bool)
            if sel is None and banned.size:
                drop |= isin_sorted(lab.ravel(), banned).reshape(lab.shape)
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
        ids = allowed[isin_sorted(allowed, self._main_ids)]
        if ids.size and s.main_banned.size:
            ids = ids[~isin_sorted(ids, s.main_banned)]
        if ids.size and excl.size:
            ids = ids[~isin_sorted(ids, excl)]
        if ids.size == 0:
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        if self._kind == KIND_FASTSCAN:
            # exact over the allowed ids, from the float vectors kept for re-ranking
            pos = self._positions(ids)
            kk = min(k, int(ids.size))
            if ids.size <= _GATHER_LIMIT:  # few: score their rows where they lie
                pos = np.ascontiguousarray(pos, dtype=np.int64)
                sims = np.empty((n, ids.size), dtype=np.float32)
                xb = self._exact.get_xb()
                for r in range(n):
                    faiss.fvec_inner_products_by_idx(
                        faiss.swig_ptr(sims[r]), faiss.swig_ptr(q[r]), xb,
                        faiss.swig_ptr(pos), self._dim, 1, int(ids.size),
                    )  # fmt: skip
                if kk < ids.size:
                    part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
                else:
                    part = np.broadcast_to(np.arange(ids.size), (n, ids.size))
                return np.take_along_axis(sims, part, axis=1).astype(np.float32), ids[part]
            # many: one pass over all of them, faiss scoring the members of a position bitmap
            p: Any = faiss.SearchParameters()
            p.sel = self._position_bitmap(pos, member=True)
            dist, lab = self._exact.search(q, kk, params=p)
            lab = self.catalog_ids(lab)
            dist = np.where(lab < 0, -np.inf, dist)
            return dist.astype(np.float32, copy=False), lab
        arr = np.ascontiguousarray(ids, dtype=np.int64)
        sel = faiss.IDSelectorBatch(arr.size, faiss.swig_ptr(arr))
        probe = int(faiss.extract_index_ivf(self._main).nlist) if self._kind == KIND_IVF else 1
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
            dead = dead | ~isin_sorted(dids, allowed)
        if dead.any():
            sims[:, dead] = -np.inf
        kk = min(k, dn)
        if kk < dn:
            part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(dn), (n, dn))
        return np.take_along_axis(sims, part, axis=1).astype(np.float32), dids[part]

    # ---- mutation

    def _make_selector(self, banned: np.ndarray) -> faiss.IDSelector | None:
        if self._kind == KIND_FASTSCAN:  # a bitmap of the live positions, however few are gone
            return (
                None if banned.size == 0 else self._position_bitmap(self._positions(banned), False)
            )
        if banned.size + 1 <= _OVERFETCH_LIMIT or not hasattr(faiss, "IDSelectorBatch"):
            return None
        arr = np.ascontiguousarray(banned, dtype=np.int64)
        inner = faiss.IDSelectorBatch(arr.size, faiss.swig_ptr(arr))
        sel = faiss.IDSelectorNot(inner)
        sel.referenced_objects = [inner]  # keep the inner selector alive with the outer one
        return sel

    def add(self, ids: ArrayLike, vectors: ArrayLike) -> None:
        """Make vectors searchable now (exact delta). An id already present gets the new vector."""
        v = as_vectors(vectors, "vectors", self._dim)
        i = as_ids(ids, v.shape[0])
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
            superseded = i[isin_sorted(i, self._main_ids)]
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

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
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
            in_main = arr[isin_sorted(arr, self._main_ids)]
            new_ban = in_main[~isin_sorted(in_main, s.main_banned)]
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

    # ---- tuning and persistence (used by the build and by IndexStore)

    @property
    def ivf(self) -> faiss.IndexIVF | None:
        """The main index's inverted-file part (coarse quantizer and lists) when it is IVF, else
        None. Read it, never change it: nprobe tuning looks up which list holds each vector (ids
        in the lists are faiss's: see `catalog_ids`)."""
        return None if self._kind == KIND_FLAT else faiss.extract_index_ivf(self._main)

    def set_nprobe(self, nprobe: int, **measured: object) -> None:
        """Adopt a tuned nprobe and record in the metadata how it was measured."""
        if int(nprobe) < 1:
            raise VectorIndexError(f"nprobe must be at least 1, got {nprobe!r}")
        self._nprobe = int(nprobe)
        self._meta.update(measured, nprobe=self._nprobe)

    def export(self) -> tuple[faiss.Index, dict[str, Any], dict[str, Any]]:
        """(main faiss index, arrays, metadata): what a saved version holds. The arrays are the
        main ids, the tombstones and the live delta (ids and vectors), copied."""
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

    def mark_saved(self, version: int) -> None:
        """Record the store version this index was saved as."""
        self._meta["version"] = int(version)
