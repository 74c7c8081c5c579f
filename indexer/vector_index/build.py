"""Building a :class:`VectorIndex` from (ids, vectors): exact flat below a threshold, IVF above it
(k-means on a sample, optional compression), with nprobe tuned to a recall target."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import faiss
import numpy as np

from .common import (
    FORMAT_VERSION,
    VectorIndexError,
    as_ids,
    as_vectors,
    gpu_resources,
    use_gpu,
)
from .index import VectorIndex
from .tuning import augment_queries, synthetic_text_queries, tune_nprobe

__all__ = ["COMPRESSIONS", "DEFAULT_FLAT_THRESHOLD", "build_index", "default_nlist"]

log = logging.getLogger(__name__)

# Below this many vectors the index is exact (flat). Measured on the 2-core dev machine
# (bench/results/index.md): a single-thread exact query over 20k x 512 float32 takes about 2 ms,
# the latency goal; above it IVF is needed to stay under 2 ms, below it exact search is as fast as
# the goal asks, needs no training, and is never wrong.
DEFAULT_FLAT_THRESHOLD = 20_000
COMPRESSIONS: tuple[str | None, ...] = (None, "sq8", "fp16", "pq")
_TRAIN_BUDGET = 131_072  # training sample size the automatic per-list count aims for


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
    gpu = use_gpu()
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
    vi = VectorIndex(index, i, kind="ivf", nprobe=1, metadata=base_meta)

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
        gpu=gpu,
    )
    log.info(
        "built IVF index: n=%d nlist=%d nprobe=%d recall=%s in %.1fs",
        n,
        nl,
        tune.nprobe,
        vi.metadata["recall"],
        vi.metadata["build_seconds"],
    )
    return vi


# --------------------------------------------------------------------------------------------
