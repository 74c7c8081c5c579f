"""Filtered search through the embedded FAISS store: a selective folder filter becomes a FAISS id
selector over the catalog's matching ids (exact over them, whatever nprobe the IVF index was
tuned to), so a filter matching one image in 20,000 still finds it; the catalog read behind it is
an index range, never the library. With Milvus the filter runs inside Milvus, probing every IVF
list, with the same result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from test_scale import captured, fill, plan_problems
from workerutil import Env

from clipsearch.indexer import catalog
from clipsearch.indexer.catalog import Image
from clipsearch.indexer.types import SearchFilters
from clipsearch.indexer.vector_index import build_index


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_an_allow_list_of_one_id_in_an_ivf_index_returns_it_at_nprobe_1() -> None:
    rng = np.random.default_rng(0)
    ids = np.arange(1, 20_001, dtype=np.int64)
    vecs = _unit(rng, ids.size, 64)
    index = build_index(ids, vecs, flat_threshold=1000)
    assert index.kind == "ivf"
    needle = 12_345
    query = -vecs[needle - 1]  # the needle is among the worst matches of the whole library
    _, plain = index.search(query, 10, nprobe=1)
    assert needle not in plain.tolist()
    scores, got = index.search(query, 10, nprobe=1, allow=np.array([needle]))
    assert got[0] == needle and got[1:].tolist() == [-1] * 9
    assert scores[0] == pytest.approx(-1.0, abs=1e-5)
    # several allowed ids: the exact order among them, excluded and removed ones left out
    allowed = np.array([7, 70, 700, 7000, needle])
    exact = sorted(allowed.tolist(), key=lambda i: -float(vecs[i - 1] @ query))
    _, got = index.search(query, 5, allow=allowed)
    assert got.tolist() == exact
    index.remove([exact[0]])
    _, got = index.search(query, 5, allow=allowed, exclude=[exact[1]])
    assert got.tolist() == [*exact[2:], -1, -1]
    # the exact delta obeys the allow-list too (a new and a re-embedded image)
    index.add([30_000, 70], _unit(rng, 2, 64))
    _, got = index.search(query, 10, allow=np.array([30_000]))
    assert got[0] == 30_000 and got[1] == -1
    _, got = index.search(query, 10, allow=np.array([70, 71]))
    assert sorted(got[:2].tolist()) == [70, 71] and got[2] == -1


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("sqlite+milvus", marks=pytest.mark.milvus),
    ]
)
def big_env(request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path) -> Iterator[Env]:
    db, _, store_kind = request.param.partition("+")
    url = None if db == "sqlite" else request.getfixturevalue("pg_url")
    store = request.getfixturevalue("milvus_store") if store_kind == "milvus" else None
    env = Env(tmp_path / "data", tiny_model_dir, url, store)
    yield env
    env.close()


def test_a_folder_holding_one_image_in_20000_is_found_through_an_ivf_index(
    big_env: Env,
) -> None:
    lib = big_env.lib
    served = lib._ensure_served()
    dim = served.store.dim
    rng = np.random.default_rng(3)
    ids = fill(lib, 19_999, 0, rng, served.model_id, dim)
    (needle,) = fill(lib, 1, 19_999, rng, served.model_id, dim)
    with lib.Session() as s:  # move the last one into a folder of its own
        s.execute(
            sa.update(Image)
            .where(Image.id == needle)
            .values(folder="/library/needle", path="/library/needle/p.jpg")
        )
        s.commit()
    big_env.reindex()
    lib.refresh_index()
    served = lib._served
    # an IVF index tuned for unfiltered queries (FAISS, or Milvus IVF_FLAT)
    assert served is not None and "ivf" in served.store.stats()["kind"]
    query = -lib.image_vector(needle)  # as far from the needle as a query can be
    assert needle not in [h.id for h in lib.search(query, k=50)]
    with captured(lib.engine) as stmts:
        hits = lib.search(query, k=10, filters=SearchFilters(folder="/library/needle"))
    assert [h.id for h in hits] == [needle]
    assert hits[0].path.endswith("/library/needle/p.jpg")
    assert plan_problems(lib.engine, stmts, max_rows=50) == []
    # a folder of about 206 images: the ten best of them, in the exact order
    folder = "/library/f5"
    with lib.Session() as s:
        members = list(s.scalars(sa.select(Image.id).where(Image.folder == folder)))
        member_ids, vecs = catalog.load_vectors(s, served.model_id, members)
    assert 150 < len(members) < 300 and set(members) <= set(ids)
    order = np.argsort(-(vecs @ query), kind="stable")[:10]
    want = [int(member_ids[i]) for i in order]
    hits = lib.search(query, k=10, filters=SearchFilters(folder=folder))
    assert [h.id for h in hits] == want
    # a broad filter (the whole library) is over-fetched as before and still answers
    hits = lib.search(query, k=10, filters=SearchFilters(folder="/library"))
    assert len(hits) == 10 and needle not in [h.id for h in hits]
