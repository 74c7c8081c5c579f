"""The vector index: exact flat search for small libraries, IVF for large ones, always fresh.

Vectors are L2-normalised float32 and compared by inner product (cosine). Ids are int64 catalog ids.
One module per idea:

* `index`: `VectorIndex`, the search structure. `search(queries, k, exclude=None, allow=None)`;
  vectors added after the build live in an exact "delta" merged at query time; removed ids are
  tombstoned and never returned. Searches run concurrently with adds/removes (immutable snapshots).
* `build`: `build_index(ids, vectors, ...)`, exact flat below `flat_threshold` vectors, IVF above
  it (nlist about 4-8 x sqrt(N), k-means on a sample of 30-256 vectors per list); from
  `fastscan_threshold` vectors on, 'ivf-fastscan': 4-bit fast-scan PQ codes under an HNSW
  quantizer (nlist ~2 x sqrt(N), two-level k-means), candidates re-ranked exactly from the floats.
* `tuning`: `tune_nprobe`, the smallest nprobe whose recall@k against exact search reaches the
  target for *every* kind of tuning query (image and text queries are distributed differently: the
  CLIP modality gap); the measured recall per kind goes into the index's metadata.
* `files`: `IndexStore(folder)` saves versions atomically (temp file + fsync + rename, a JSON
  manifest written last) and loads them, checksums verified.
* `common`: the error type, input checks and faiss GPU resources they share.

Pure numpy + faiss: this package knows nothing about the catalog or the model (the hot swap of a
new version is the Library's, through indexer.vector_store.FaissStore).
"""

from .build import (
    DEFAULT_FASTSCAN_THRESHOLD,
    DEFAULT_FLAT_THRESHOLD,
    build_index,
    default_nlist,
    fastscan_nlist,
)
from .common import KIND_FASTSCAN, KIND_FLAT, KIND_IVF, VectorIndexError
from .files import IndexStore, IndexStoreError
from .index import VectorIndex, rerank_factor
from .tuning import TuneResult, tune_nprobe

__all__ = [
    "DEFAULT_FASTSCAN_THRESHOLD",
    "DEFAULT_FLAT_THRESHOLD",
    "KIND_FASTSCAN",
    "KIND_FLAT",
    "KIND_IVF",
    "IndexStore",
    "IndexStoreError",
    "TuneResult",
    "VectorIndex",
    "VectorIndexError",
    "build_index",
    "default_nlist",
    "fastscan_nlist",
    "rerank_factor",
    "tune_nprobe",
]
