"""Building a :class:`VectorIndex` from (ids, vectors): exact flat below a threshold, IVF above it
(k-means on a sample, optional compression), with nprobe tuned to a recall target. Large libraries
get an IVF of 4-bit fast-scan PQ codes under an HNSW coarse quantizer whose candidates are
re-ranked exactly from the float vectors ('ivf-fastscan')."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from .common import (
    FORMAT_VERSION,
    KIND_FASTSCAN,
    KIND_FLAT,
    KIND_IVF,
    VectorIndexError,
    as_ids,
    as_vectors,
    gpu_resources,
    use_gpu,
)
from .index import DEFAULT_K_FACTOR, VectorIndex
from .tuning import augment_queries, synthetic_text_queries, tune_nprobe

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_FASTSCAN_THRESHOLD",
    "DEFAULT_FLAT_THRESHOLD",
    "build_index",
    "default_nlist",
    "fastscan_nlist",
]

log = logging.getLogger(__name__)

# Below this many vectors the index is exact (flat). Measured on the 2-core dev machine
# (bench/results/index.md): a single-thread exact query over 20k x 512 float32 takes about 2 ms,
# the latency goal; above it IVF is needed to stay under 2 ms, below it exact search is as fast as
# the goal asks, needs no training, and is never wrong.
DEFAULT_FLAT_THRESHOLD = 20_000
COMPRESSIONS: tuple[str | None, ...] = (None, "sq8", "fp16", "pq")
_TRAIN_BUDGET = 131_072  # training sample size the automatic per-list count aims for
# From this many vectors on, the default (compression=None) IVF is 'ivf-fastscan': 4-bit PQ codes
# (2 dimensions per code) scanned with SIMD under an HNSW coarse quantizer, k_factor x k candidates
# re-ranked exactly from the float vectors. Measured side by side (bench/results/index.md): at 1M
# p50 1.05 ms vs IVF-Flat's 2.93, build 38 s vs 90; at 100k both answer in 0.4-0.5 ms and
# ivf-fastscan builds 4x faster with more recall (text 0.966 vs 0.961); at 50k both answer in
# 0.35 ms and IVF-Flat has the larger text-recall margin (0.968 vs 0.960). Below 100k IVF-Flat
# stays: as fast, built in seconds, its recall curve predicted exactly from nprobe.
DEFAULT_FASTSCAN_THRESHOLD = 100_000
_FASTSCAN_PER_LIST = 32  # two-level k-means sample per list...
_FASTSCAN_MAX_TRAIN = 262_144  # ...capped: the two levels need far fewer points than one k-means
_PQ_TRAIN = 65_536  # vectors the 4-bit PQ codebooks are trained on


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


def fastscan_nlist(n: int) -> int:
    """ivf-fastscan lists for n vectors: the power of two nearest 2*sqrt(n), at most n/32.

    Fewer lists than IVF-Flat (whose default is 4-8 x sqrt(n)): a probed list costs one SIMD pass
    over 128-byte codes instead of 2 KiB floats, and spherical k-means with an inner-product
    quantizer keeps text queries' neighbours in few lists (bench/results/ivf_candidates.md).
    """
    if n < 64:
        return 1
    nl = 2 ** round(math.log2(2.0 * math.sqrt(n)))
    while nl > 1 and nl > n // 32:
        nl //= 2
    return int(nl)


def _fastscan_m(dim: int) -> int:
    """PQ sub-quantizers: 2 dimensions per 4-bit code (coarser codes miss the recall target)."""
    return dim // 2 if dim % 2 == 0 else dim


def _two_level_kmeans(x: np.ndarray, nlist: int, niter: int, seed: int) -> np.ndarray:
    """nlist spherical k-means centroids of x: sqrt(nlist) clusters first, then each cluster
    split into a number of centroids in proportion to its size (exactly nlist in all).

    Two small k-means instead of one over all lists: each point is compared with ~2 sqrt(nlist)
    centroids per iteration instead of nlist, so training costs seconds, not minutes, at 1M.
    """
    d = x.shape[1]
    top_k = max(1, min(round(math.sqrt(nlist)), x.shape[0]))
    top = faiss.Kmeans(
        d, top_k, niter=niter, seed=seed, spherical=True, verbose=False,
        max_points_per_centroid=2000,
    )  # fmt: skip
    top.train(x)
    assign = top.index.search(x, 1)[1].ravel()
    counts = np.bincount(assign, minlength=top_k)
    alloc = np.floor(counts * nlist / counts.sum()).astype(np.int64)
    alloc = np.minimum(np.maximum(alloc, (counts > 0).astype(np.int64)), counts)
    while alloc.sum() < nlist:  # the rest to the clusters with the most points per centroid
        room = np.where(alloc < counts, counts / (alloc + 1), -1.0)
        alloc[int(np.argmax(room))] += 1
    while alloc.sum() > nlist:  # back from the clusters with the most centroids
        alloc[int(np.argmax(np.where(alloc > 1, alloc, -1)))] -= 1
    with _omp_threads(1):  # small k-means each: one thread (see _make_fastscan)
        parts = [
            _split_cluster(x[assign == c], int(alloc[c]), niter, seed)
            for c in np.flatnonzero(alloc)
        ]
    return np.ascontiguousarray(np.vstack(parts), dtype=np.float32)


def _split_cluster(pts: np.ndarray, k: int, niter: int, seed: int) -> np.ndarray:
    """k spherical centroids of one first-level cluster's points (k <= len(pts))."""
    if k == 1:
        mean = pts.mean(axis=0, keepdims=True)
        return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12))
    km = faiss.Kmeans(
        pts.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False,
        min_points_per_centroid=1, max_points_per_centroid=256,
    )  # fmt: skip
    km.train(np.ascontiguousarray(pts))
    return np.asarray(km.centroids, dtype=np.float32)


def _make_fastscan(dim: int, centroids: np.ndarray, pq_sample: np.ndarray) -> faiss.Index:
    """IndexIDMap(IndexRefineFlat(IVF{nlist}_HNSW32,PQ{dim/2}x4fs)), inner product, trained."""
    nlist = int(centroids.shape[0])
    factory = f"IVF{nlist}_HNSW32,PQ{_fastscan_m(dim)}x4fs,RFlat"
    refine: Any = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(refine)
    ivf.quantizer.add(centroids)  # builds the HNSW graph over the centroids
    # The quantizer is full, so this trains only the PQ codebooks: dim/2 tiny k-means (16
    # centroids in 2-d) whose parallel regions are too short to share. One thread does it in
    # about a second; two threads on a busy 2-core machine took several times longer (OpenMP
    # workers waiting for each other at every step).
    with _omp_threads(1):
        refine.train(pq_sample)
    refine.k_factor = float(DEFAULT_K_FACTOR)
    return faiss.IndexIDMap(refine)  # IndexRefineFlat takes no ids: the IDMap maps positions


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


@contextlib.contextmanager
def _omp_threads(n: int) -> Iterator[None]:
    """faiss's OpenMP threads for parallel regions this thread starts (OpenMP's setting is per
    thread: searches running in other threads keep theirs)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def build_index(
    ids: ArrayLike,
    vectors: ArrayLike,
    *,
    flat_threshold: int = DEFAULT_FLAT_THRESHOLD,
    fastscan_threshold: int = DEFAULT_FASTSCAN_THRESHOLD,
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
    kind in `tune_queries` (e.g. {'image': held-out image vectors, 'text': encoded prompts}).

    From `fastscan_threshold` vectors on, without compression, the IVF is 'ivf-fastscan' instead:
    `nlist` (default `fastscan_nlist(N)`) centroids from a two-level spherical k-means on
    `train_sample_per_list` (8-256, default 32) vectors per list (262,144 at most) held by an HNSW
    quantizer, 4-bit fast-scan PQ codes of 2 dimensions each, and DEFAULT_K_FACTOR x k candidates
    re-ranked exactly from the float vectors (scores stay exact inner products); nprobe is tuned by
    measured recall at that k_factor. Without
    an 'image' set, `n_tune` held-out data vectors are used; without any other kind, a synthetic
    offset set ('offset', see `tuning.synthetic_text_queries`) stands in for text queries unless `offset_queries`
    is False. `meta` is stored in metadata['extra'] (JSON-serialisable).
    """
    t0 = time.perf_counter()
    v = as_vectors(vectors, "vectors")
    n, dim = v.shape
    if dim == 0:
        raise VectorIndexError(
            "cannot build an index without knowing the dimension: pass a [0, D] array"
        )
    i = as_ids(ids, n)
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
        "built_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
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
        return VectorIndex(flat, i, kind=KIND_FLAT, nprobe=1, metadata=base_meta)

    fastscan = compression is None and n >= fastscan_threshold
    auto_nl = fastscan_nlist(n) if fastscan else default_nlist(n)
    nl = int(nlist) if nlist is not None else auto_nl
    if not 1 <= nl <= n // 30:
        raise VectorIndexError(
            f"nlist={nl} needs at least 30 training vectors per list; {n} vectors allow at most {n // 30}"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    gpu = use_gpu()
    t_train = time.perf_counter()
    index: Any
    if fastscan:
        index_kind = KIND_FASTSCAN
        per_list = _FASTSCAN_PER_LIST if train_sample_per_list is None else train_sample_per_list
        per_list = int(min(256, max(8, per_list)))
        n_train = min(n, nl * per_list, max(_FASTSCAN_MAX_TRAIN, nl))
        sample = v[np.sort(perm[:n_train])]
        centroids = _two_level_kmeans(sample, nl, niter, seed)
        del sample
        n_pq = min(n, _PQ_TRAIN)  # the PQ codebooks on a random sample (the k-means one and more)
        index = _make_fastscan(dim, centroids, v[np.sort(perm[:n_pq])])
        per_list = n_train // nl
    else:
        index_kind = KIND_IVF
        per_list = (
            train_sample_per_list if train_sample_per_list is not None else _TRAIN_BUDGET // nl
        )
        per_list = int(min(256, max(30, per_list)))
        n_train = min(n, nl * per_list)
        sample = v[np.sort(perm[:n_train])]
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
    # faiss GPU indexes have no HNSW quantizer nor fast-scan codes: ivf-fastscan adds on the CPU
    if gpu and index_kind == KIND_IVF:  # pragma: no cover - needs a GPU build of faiss
        try:
            target = faiss.index_cpu_to_gpu(gpu_resources(), 0, index)
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
    if index_kind == KIND_FASTSCAN:
        base_meta.update(
            factory=f"IVF{nl}_HNSW32,PQ{_fastscan_m(dim)}x4fs,RFlat",
            k_factor=DEFAULT_K_FACTOR,
            kmeans="two-level spherical",
            pq_train_vectors=int(min(n, _PQ_TRAIN)),
        )
    vi = VectorIndex(index, i, kind=index_kind, nprobe=1, metadata=base_meta)

    # nprobe tuning on every query kind
    t_tune = time.perf_counter()
    tq: dict[str, np.ndarray] = {key: np.asarray(val) for key, val in (tune_queries or {}).items()}
    held_out = perm[n_train:] if n - n_train >= n_tune else perm
    if "image" not in tq:
        tq["image"] = v[np.sort(held_out[:n_tune])]
    if len(tq) == 1 and offset_queries:
        tq["offset"] = synthetic_text_queries(v, n_tune, rng)
    given = {kind: int(np.shape(val)[0]) if np.ndim(val) == 2 else 1 for kind, val in tq.items()}
    for kind in list(tq):
        tq[kind] = augment_queries(tq[kind], n_tune, rng)
    tune = tune_nprobe(vi, v, i, tq, k=k, recall_target=recall_target)
    vi.set_nprobe(
        tune.nprobe,
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
        gpu=gpu and index_kind == KIND_IVF,
    )
    log.info(
        "built %s index: n=%d nlist=%d nprobe=%d recall=%s in %.1fs",
        index_kind,
        n,
        nl,
        tune.nprobe,
        vi.metadata["recall"],
        vi.metadata["build_seconds"],
    )
    return vi


# --------------------------------------------------------------------------------------------
