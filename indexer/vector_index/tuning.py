"""nprobe tuning: the smallest number of IVF lists to scan per query whose recall@k against exact
search reaches a target for every kind of query (image and text queries are distributed
differently: the CLIP modality gap), and the query sets the tuning measures on."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from .common import KIND_FLAT, VectorIndexError, as_vectors
from .index import VectorIndex

__all__ = ["TuneResult", "augment_queries", "synthetic_text_queries", "tune_nprobe"]

log = logging.getLogger(__name__)

_SELF_MATCH = (
    1.0 - 1e-5
)  # an exact hit this close is the query itself (a held-out vector in the index)


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
    With compressed codes (SQ, PQ, and ivf-fastscan's 4-bit PQ re-ranked at its k_factor, with an
    HNSW quantizer) the prediction is only a lower bound where the search over nprobe starts:
    the nprobe chosen is the one whose *measured* recall reaches the target.
    """
    if index.kind == KIND_FLAT:
        return TuneResult(1, {kind: 1.0 for kind in queries}, recall_target, True, {}, {})
    nlist = int(index.metadata["nlist"])
    ids = np.asarray(ids, np.int64)
    prepared: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    timings = {"exact_s": 0.0, "predict_s": 0.0, "search_s": 0.0}
    t0 = time.perf_counter()
    for kind, qs in queries.items():
        q = as_vectors(qs, f"tuning queries {kind!r}", index.dim)
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
                # one more result where a query may find itself; ivf-fastscan then re-ranks
                # the same k x k_factor candidates a search for k results does
                extra = int(bool((self_ids != -2).any()))
                kf = None if index.k_factor is None else index.k_factor * k / (k + extra)
                _, got = index.search(q, k + extra, nprobe=p, k_factor=kf)
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
    ivf = index.ivf
    if ivf is None:
        raise VectorIndexError("nprobe is tuned on an IVF index, and this one is flat")
    nlist = int(ivf.nlist)
    invl: Any = ivf.invlists
    id_parts, list_parts = [], []
    for lst in range(nlist):
        size = invl.list_size(lst)
        if size:
            id_parts.append(faiss.rev_swig_ptr(invl.get_ids(lst), size).copy())
            list_parts.append(np.full(size, lst, dtype=np.int64))
    all_ids = index.catalog_ids(np.concatenate(id_parts))
    all_lists = np.concatenate(list_parts)
    order = np.argsort(all_ids)
    all_ids, all_lists = all_ids[order], all_lists[order]
    centroids = ivf.quantizer.reconstruct_n(0, nlist)
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
        # every list ranked by its centroid's inner product with the query, computed exactly
        # (an HNSW quantizer's own search is approximate and may not return all nlist lists)
        coarse = np.argsort(-(q @ centroids.T), axis=1, kind="stable")
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


def augment_queries(queries: np.ndarray, n_min: int, rng: np.random.Generator) -> np.ndarray:
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


def synthetic_text_queries(vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
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
    return np.asarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)
