"""One writer into Milvus: of the API processes following the catalog, only the holder of the
collection's lease (a catalog mark) writes the repairs; the others only read. When the holder
stops (closed, or killed and its lease expired), another takes over and nothing is missed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_scale import fill
from workerutil import Env

from clipsearch.indexer import vector_store
from clipsearch.indexer.library import Library

pytestmark = pytest.mark.milvus


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path, milvus_store: Any
) -> Iterator[tuple[Env, Library]]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    env = Env(tmp_path / "data", tiny_model_dir, url, milvus_store)
    other = Library(env.lib.config)
    try:
        yield env, other
    finally:
        other.close()
        env.close()


def _count_writes(lib: Library) -> dict[str, int]:
    """Wrap the served store's upsert to count the rows this process writes to Milvus."""
    served = lib._ensure_served()
    written = {"rows": 0}
    upsert = served.store.upsert

    def counting(ids: Any, vectors: Any, fields: Any = None) -> None:
        written["rows"] += len(ids)
        upsert(ids, vectors, fields)

    served.store.upsert = counting  # type: ignore[method-assign]
    return written


def test_one_api_process_repairs_milvus_and_another_takes_over_when_it_stops(
    replicas: tuple[Env, Library], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, b = replicas
    a = env.lib
    wrote_a, wrote_b = _count_writes(a), _count_writes(b)
    served = a._ensure_served()
    dim = served.store.dim
    rng = np.random.default_rng(5)
    # images committed by a worker that died before writing them to Milvus
    first = fill(a, 40, 0, rng, served.model_id, dim)
    assert a.refresh_index() == 40  # a takes the lease and writes the repair
    assert b.refresh_index() == 0  # b reads only: nothing left, and not its job
    b.refresh_index()
    assert (wrote_a["rows"], wrote_b["rows"]) == (40, 0)
    for lib in (a, b):  # both replicas find them: they read the one collection
        assert lib.search(a.image_vector(first[7]), k=1)[0].id == first[7]
    assert b.stats().index.entities == 40

    # more missed writes: still only the holder writes them, once
    second = fill(a, 10, 40, rng, served.model_id, dim)
    assert b.refresh_index() == 0
    assert a.refresh_index() == 10
    assert (wrote_a["rows"], wrote_b["rows"]) == (50, 0)

    # the holder is killed (no release): its lease runs out, then b repairs what a missed
    third = fill(a, 5, 50, rng, served.model_id, dim)
    assert b.refresh_index() == 0  # the lease is still a's
    now = vector_store._clock()
    monkeypatch.setattr(vector_store, "_clock", lambda: now + b.index._lease_ttl_s + 1)
    assert b.refresh_index() == 5
    assert (wrote_a["rows"], wrote_b["rows"]) == (50, 5)
    assert a.refresh_index() == 0  # a, back, finds the lease taken: it writes nothing
    assert wrote_a["rows"] == 50
    assert b.search(a.image_vector(third[2]), k=1)[0].id == third[2]
    assert b.search(a.image_vector(second[3]), k=1)[0].id == second[3]

    # a clean shutdown hands the lease over at once
    monkeypatch.undo()
    fourth = fill(a, 3, 55, rng, served.model_id, dim)
    b.close()
    assert a.refresh_index() == 3
    assert wrote_a["rows"] == 53
    assert a.search(a.image_vector(fourth[0]), k=1)[0].id == fourth[0]
    assert a.stats().index.entities == 58
