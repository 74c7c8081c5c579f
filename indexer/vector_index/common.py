"""What every part of the vector index shares: its error, the checks on ids and vectors given to
it, and the process's faiss GPU resources (when faiss was built with CUDA and a GPU is present)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from clipsearch.indexer.errors import IndexerError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "KIND_FASTSCAN",
    "KIND_FLAT",
    "KIND_IVF",
    "VectorIndexError",
    "as_ids",
    "as_vectors",
    "gpu_resources",
    "isin_sorted",
    "use_gpu",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of the saved files and of the metadata a build records

# What a VectorIndex's main faiss index is (its `kind`, saved with it and shown in health/stats):
KIND_FLAT = "flat"  # exact: IndexIDMap(IndexFlatIP)
KIND_IVF = (
    "ivf"  # IndexIVF{Flat,ScalarQuantizer,PQ} with a flat inner-product quantizer, catalog ids
)
# IndexIDMap(IndexRefineFlat(IndexIVFPQFastScan with an HNSW quantizer)): 4-bit PQ codes scanned
# with SIMD, the best k_factor x k candidates re-ranked exactly from the float vectors; inside the
# IDMap the ids are positions (0..n-1), mapped to catalog ids by the IDMap
KIND_FASTSCAN = "ivf-fastscan"
KINDS = (KIND_FLAT, KIND_IVF, KIND_FASTSCAN)


class VectorIndexError(IndexerError):
    """The vector index cannot do what was asked (bad input, unusable parameters)."""


def as_vectors(x: ArrayLike, what: str, dim: int | None = None) -> np.ndarray:
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


def as_ids(ids: ArrayLike, n: int, what: str = "ids") -> np.ndarray:
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


def isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Boolean mask: which of `values` are in the sorted unique array `sorted_set`."""
    if sorted_set.size == 0 or values.size == 0:
        return np.zeros(values.shape, dtype=bool)
    pos = np.searchsorted(sorted_set, values)
    pos = np.minimum(pos, sorted_set.size - 1)
    return np.asarray(sorted_set[pos] == values)


def use_gpu() -> bool:
    try:
        return faiss.get_num_gpus() > 0 and hasattr(faiss, "StandardGpuResources")
    except Exception:  # pragma: no cover - odd builds
        return False


_gpu_resources: Any = None
_gpu_lock = threading.Lock()


def gpu_resources() -> Any:  # pragma: no cover - needs a GPU build of faiss
    global _gpu_resources
    with _gpu_lock:
        if _gpu_resources is None:
            _gpu_resources = faiss.StandardGpuResources()
        return _gpu_resources


# --------------------------------------------------------------------------------------------
# the index
