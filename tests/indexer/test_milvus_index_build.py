"""Building a Milvus collection's vector index survives the answer getting lost: a build over a
large collection can outlive the connection, and asking again is refused by Milvus ("index
already exists"). A re-index that hit that must use the index, not fail the whole rebuild."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from clipsearch.indexer.errors import StoreUnavailable
from clipsearch.indexer.milvus_store import (
    MilvusStore,
    _create_collection,
    _create_index,
    _vector_indexes,
)

pytestmark = pytest.mark.milvus


def test_an_index_built_by_a_lost_request_is_used_when_asked_again(milvus_store: Any) -> None:
    config = milvus_store
    name = f"{config.milvus_collection}_idx"
    dim = 16
    _create_collection(config, name, dim)
    store = MilvusStore(config, name, dim)
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((300, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store.insert(np.arange(1, 301, dtype=np.int64), vecs, None)
    store.flush()
    _create_index(config, name, "IVF_FLAT", {"nlist": 8})
    assert _vector_indexes(config, name)
    # the same build asked again (what a retry after a dropped connection does): Milvus
    # answers "index already exists for field 'vector'"; the existing index is used
    _create_index(config, name, "IVF_FLAT", {"nlist": 8})
    assert store.count() == 300
    _, ids = store.search(vecs[:5], 1, nprobe=8)  # every list probed: exact
    assert ids[:, 0].tolist() == [1, 2, 3, 4, 5]


def test_an_index_on_a_missing_collection_still_fails(milvus_store: Any) -> None:
    with pytest.raises(StoreUnavailable):
        _create_index(milvus_store, f"{milvus_store.milvus_collection}_none", "FLAT", {})
