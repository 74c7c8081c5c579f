# Types of the part of faiss clipsearch uses (faiss ships none: its Python module is SWIG's).
# The classes clipsearch's signatures name are declared; what the code only passes along or
# reads as numbers stays open (``__getattr__``), as it is without this file.
from typing import Any

import numpy as np

__version__: str
METRIC_INNER_PRODUCT: int
IO_FLAG_READ_ONLY: int
IO_FLAG_MMAP_IFC: int

class Index:
    d: int
    ntotal: int
    is_trained: bool
    def __getattr__(self, name: str) -> Any: ...

class IndexFlatIP(Index):
    def __init__(self, d: int) -> None: ...

class IndexIDMap(Index):
    index: Index
    def __init__(self, index: Index) -> None: ...

class IndexIVF(Index):
    nlist: int
    nprobe: int
    quantizer: Index
    invlists: Any

class IndexIVFFlat(IndexIVF):
    def __init__(self, quantizer: Index, d: int, nlist: int, metric: int = ...) -> None: ...

class IndexIVFPQ(IndexIVF):
    def __init__(
        self, quantizer: Index, d: int, nlist: int, m: int, nbits: int, metric: int = ...
    ) -> None: ...

class ScalarQuantizer:
    QT_8bit: int
    QT_fp16: int
    def __getattr__(self, name: str) -> Any: ...

class IndexIVFScalarQuantizer(IndexIVF):
    def __init__(
        self,
        quantizer: Index,
        d: int,
        nlist: int,
        qtype: int,
        metric: int = ...,
        by_residual: bool = ...,
    ) -> None: ...

class IDSelector:
    referenced_objects: list[object]
    def __getattr__(self, name: str) -> Any: ...

class IDSelectorBatch(IDSelector):
    def __init__(self, n: int, ids: Any) -> None: ...

class IDSelectorBitmap(IDSelector):
    def __init__(self, n: int, bitmap: Any) -> None: ...

class IDSelectorNot(IDSelector):
    def __init__(self, inner: IDSelector) -> None: ...

class IDSelectorAnd(IDSelector):
    def __init__(self, lhs: IDSelector, rhs: IDSelector) -> None: ...

class SearchParameters:
    sel: IDSelector | None
    referenced_objects: list[object]
    def __init__(self) -> None: ...
    def __getattr__(self, name: str) -> Any: ...

class SearchParametersIVF(SearchParameters):
    nprobe: int
    max_codes: int
    quantizer_params: SearchParameters | None

class SearchParametersHNSW(SearchParameters):
    efSearch: int

class IndexRefineSearchParameters(SearchParameters):
    k_factor: float
    base_index_params: SearchParameters | None

class Kmeans:
    centroids: np.ndarray
    def __init__(self, d: int, k: int, **kwargs: object) -> None: ...
    def __getattr__(self, name: str) -> Any: ...

def read_index(path: str, io_flags: int = ...) -> Index: ...
def write_index(index: Index, path: str) -> None: ...
def index_factory(d: int, description: str, metric: int = ...) -> Index: ...
def downcast_index(index: Index) -> Index: ...
def extract_index_ivf(index: Index) -> IndexIVF: ...
def __getattr__(name: str) -> Any: ...
