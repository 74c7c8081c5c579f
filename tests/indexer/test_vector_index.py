"""The vector index: recall against exact search for image- and text-like queries, freshness
(delta, tombstones), rebuild consistency, atomic versioned persistence, hot swap under load.

Data are synthetic CLIP-shaped 512-d vectors (bench/synthetic_vectors.py): a narrow cone, concepts
of uneven size and spread, text queries offset from the image cone. Ground truth is brute-force
numpy inner products computed here, never by the index under test.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.synthetic_vectors import make_space
from clipsearch.indexer import vector_index as vi
from clipsearch.indexer.vector_index import (
    IndexStore,
    IndexStoreError,
    VectorIndexError,
    build_index,
)
from clipsearch.indexer.vector_index import files as index_files

DIM = 512
K = 10


def exact_topk(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int = K) -> np.ndarray:
    """Brute force in numpy, in blocks: the reference every recall figure is measured against."""
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for a in range(0, queries.shape[0], 256):
        sims = queries[a : a + 256] @ vectors.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        out[a : a + 256] = ids[np.take_along_axis(part, order, axis=1)]
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean(
            [
                len(set(f.tolist()) & set(t.tolist())) / len(t)
                for f, t in zip(found, truth, strict=True)
            ]
        )
    )


def assert_same_results(
    index: vi.VectorIndex, loaded: vi.VectorIndex, queries: np.ndarray, **kwargs: Any
) -> None:
    """``loaded`` (``index`` saved and loaded back) answers ``queries`` as ``index`` does: the
    same ids, scores to float rounding. ``kwargs`` go to both searches (allow, exclude)."""
    s1, i1 = index.search(queries, K, **kwargs)
    s2, i2 = loaded.search(queries, K, **kwargs)
    assert np.array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)


@pytest.fixture(scope="module")
def space():
    return make_space(dim=DIM, seed=0)


@pytest.fixture(scope="module")
def data30k(space):
    vectors = space.images(30_000, seed=1)
    ids = np.arange(30_000, dtype=np.int64) * 7 + 1000  # catalog-like ids, not positions
    return ids, vectors


@pytest.fixture(scope="module")
def ivf30k(space, data30k):
    ids, vectors = data30k
    tune = {"image": space.image_queries(500, seed=0), "text": space.text_queries(500, seed=0)}
    return build_index(ids, vectors, nlist=700, train_sample_per_list=30, tune_queries=tune)


# ---------------------------------------------------------------------------------------------
# recall


@pytest.mark.slow
def test_recall_at_10_on_100k_for_image_and_text_queries(space):
    n = 100_000
    vectors = space.images(n, seed=2)
    ids = np.arange(n, dtype=np.int64) + 1
    tune = {"image": space.image_queries(500, seed=0), "text": space.text_queries(500, seed=0)}
    index = build_index(
        ids, vectors, nlist=1265, train_sample_per_list=30, tune_queries=tune,
        fastscan_threshold=n + 1,  # IVF-Flat (from 100k the default is ivf-fastscan)
    )  # fmt: skip
    assert index.kind == "ivf" and len(index) == n
    assert 4 * np.sqrt(n) - 1 <= index.metadata["nlist"] <= 16 * np.sqrt(n)
    assert index.nprobe < index.metadata["nlist"] // 4  # really approximate, not a full scan
    # fresh queries, never seen by the tuning
    for kind, queries in (
        ("image", space.image_queries(600, seed=11)),
        ("text", space.text_queries(600, seed=11)),
    ):
        _, found = index.search(queries, K)
        r = recall_at_k(found, exact_topk(queries, vectors, ids))
        assert r >= 0.95, f"{kind} recall@10 {r:.3f} below 0.95 at nprobe={index.nprobe}"
        assert index.metadata["recall"][kind] >= 0.95


def test_ivf_recall_for_both_kinds_and_recorded_per_kind(space, data30k, ivf30k):
    ids, vectors = data30k
    meta = ivf30k.metadata
    assert meta["kind"] == "ivf" and meta["nlist"] == 700 and meta["n"] == 30_000
    assert set(meta["recall"]) == {"image", "text"} and meta["recall_target_met"] is True
    assert meta["train_vectors"] == 700 * 30
    for queries in (space.image_queries(1000, seed=21), space.text_queries(1000, seed=21)):
        _, found = ivf30k.search(queries, K)
        assert recall_at_k(found, exact_topk(queries, vectors, ids)) >= 0.95


def test_tuning_on_image_queries_alone_under_serves_text_queries(space, data30k, ivf30k):
    ids, vectors = data30k
    image_only = build_index(
        ids,
        vectors,
        nlist=700,
        train_sample_per_list=30,
        tune_queries={"image": space.image_queries(500, seed=0)},
        offset_queries=False,
    )
    assert set(image_only.metadata["recall"]) == {"image"}
    text = space.text_queries(1000, seed=21)
    truth = exact_topk(text, vectors, ids)
    _, found = image_only.search(text, K)
    assert recall_at_k(found, truth) < 0.95  # image-tuned nprobe fails text queries...
    assert ivf30k.nprobe > image_only.nprobe  # ...which is why both kinds are tuned
    _, found = ivf30k.search(text, K)
    assert recall_at_k(found, truth) >= 0.95


def test_without_text_queries_a_synthetic_offset_set_is_tuned_and_recorded(space, data30k):
    ids, vectors = data30k
    index = build_index(
        ids[:12_000], vectors[:12_000], flat_threshold=10_000, nlist=300, train_sample_per_list=30
    )
    recall = index.metadata["recall"]
    assert set(recall) == {"image", "offset"}
    assert all(r >= 0.95 for r in recall.values())
    assert index.metadata["tune_queries"] == {"image": 300, "offset": 300}


def test_a_small_prompt_set_is_topped_up_and_still_serves_fresh_text_queries(space, data30k):
    ids, vectors = data30k
    ids, vectors = ids[:12_000], vectors[:12_000]
    prompts = space.text_queries(50, seed=6)  # like the Library's built-in generic prompts
    index = build_index(
        ids,
        vectors,
        flat_threshold=10_000,
        nlist=300,
        train_sample_per_list=30,
        tune_queries={"text": prompts},
    )
    meta = index.metadata
    assert meta["tune_queries_given"] == {"text": 50, "image": 300}
    assert meta["tune_queries"] == {"text": 300, "image": 300}
    text = space.text_queries(1000, seed=22)
    _, found = index.search(text, K)
    assert recall_at_k(found, exact_topk(text, vectors, ids)) >= 0.95


def test_small_collection_is_exact_flat(space):
    vectors = space.images(3000, seed=3)
    ids = np.arange(3000, dtype=np.int64) + 50
    index = build_index(ids, vectors)
    assert index.kind == "flat" and index.nprobe == 1 and len(index) == 3000
    queries = space.text_queries(50, seed=3)
    scores, found = index.search(queries, K)
    assert np.array_equal(found, exact_topk(queries, vectors, ids))
    np.testing.assert_allclose(scores[:, 0], np.max(queries @ vectors.T, axis=1), rtol=1e-5)
    s1, i1 = index.search(queries[0], K)  # one query as a 1-d vector
    assert s1.shape == (K,) and np.array_equal(i1, found[0])


def test_unnormalised_input_is_normalised(space):
    vectors = space.images(500, seed=4)
    index = build_index(np.arange(500), vectors * 3.0)
    scores, found = index.search(vectors[7] * 0.1, 1)
    assert found[0] == 7 and scores[0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "ids, vectors, message",
    [
        ([1, 1], np.eye(2, DIM, dtype=np.float32), "duplicates"),
        ([1, -5], np.eye(2, DIM, dtype=np.float32), "non-negative"),
        ([1, 2, 3], np.eye(2, DIM, dtype=np.float32), "match"),
        ([1, 2], np.full((2, DIM), np.nan, dtype=np.float32), "NaN"),
        ([1, 2], np.zeros((2, DIM), dtype=np.float32), "zero vector"),
    ],
)
def test_bad_build_input_is_refused_with_a_reason(ids, vectors, message):
    with pytest.raises(VectorIndexError, match=message):
        build_index(ids, vectors)


def test_wrong_query_dimension_is_refused(ivf30k):
    with pytest.raises(VectorIndexError, match="dimension 256"):
        ivf30k.search(np.ones(256, np.float32), K)
    with pytest.raises(VectorIndexError, match="k must be"):
        ivf30k.search(np.ones(DIM, np.float32), 0)


def test_empty_index_returns_padding(space):
    index = build_index(np.zeros(0, np.int64), np.zeros((0, DIM), np.float32))
    scores, found = index.search(space.text_queries(2, seed=0), 3)
    assert len(index) == 0 and (found == -1).all() and np.isneginf(scores).all()
    index.add([9], space.images(1, seed=9))
    _, found = index.search(space.images(1, seed=9), 3)
    assert found[0].tolist() == [9, -1, -1]


# ---------------------------------------------------------------------------------------------
# freshness: delta and tombstones


def _fresh_copy(ivf30k) -> vi.VectorIndex:
    main, arrays, meta = ivf30k.export()
    return vi.VectorIndex(
        main, arrays["main_ids"], kind=ivf30k.kind, nprobe=ivf30k.nprobe, metadata=meta
    )


def test_removed_ids_are_never_returned_and_k_results_still_come_back(space, data30k, ivf30k):
    ids, _ = data30k
    index = _fresh_copy(ivf30k)
    queries = space.text_queries(40, seed=30)
    _, before = index.search(queries, K)
    few = np.unique(before[:, :3])  # the best hits of every query
    assert index.remove(few) == few.size
    _, after = index.search(queries, K)
    assert not np.isin(after, few).any()
    assert (after >= 0).all() and len(index) == ids.size - few.size
    # many deletions: more than the over-fetch path handles
    many = np.unique(np.concatenate([few, ids[::10], np.unique(after)]))
    index.remove(many)
    _, after = index.search(queries, K)
    assert not np.isin(after, many).any()
    assert (after >= 0).all() and (after.shape == (40, K))
    assert len(index) == ids.size - many.size
    kept = int(ids[~np.isin(ids, many)][0])
    assert int(many[0]) not in index and kept in index


def test_flat_index_honours_few_and_many_deletions_and_exclude(space):
    vectors = space.images(4000, seed=34)
    ids = np.arange(4000, dtype=np.int64) + 1
    index = build_index(ids, vectors)
    queries = space.image_queries(30, seed=34)
    for gone in (ids[:20], ids[:2500]):  # over-fetch path, then faiss-side filtering
        index.remove(gone)
        keep = ~np.isin(ids, gone)
        scores, found = index.search(queries, K, exclude=[int(ids[3000])])
        truth = exact_topk(
            queries, vectors[keep & (ids != ids[3000])], ids[keep & (ids != ids[3000])]
        )
        assert np.array_equal(found, truth)
        assert np.all(np.diff(scores, axis=1) <= 0)  # best first


def test_added_vectors_are_found_at_once_and_can_be_removed_or_replaced(space, data30k, ivf30k):
    ids, vectors = data30k
    index = _fresh_copy(ivf30k)
    new_vecs = space.images(200, seed=31)
    new_ids = np.arange(200, dtype=np.int64) + 10_000_000
    index.add(new_ids, new_vecs)
    assert index.delta_size == 200 and len(index) == ids.size + 200
    scores, found = index.search(new_vecs, K)
    assert np.array_equal(found[:, 0], new_ids)  # each new vector is its own best match
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    # merged ranking equals exact search over old + new
    all_vecs = np.concatenate([vectors, new_vecs])
    all_ids = np.concatenate([ids, new_ids])
    queries = space.image_queries(300, seed=32)
    _, found = index.search(queries, K)
    assert recall_at_k(found, exact_topk(queries, all_vecs, all_ids)) >= 0.95
    # removing a delta item
    index.remove(new_ids[:10])
    _, found = index.search(new_vecs[:10], K)
    assert not np.isin(found, new_ids[:10]).any()
    # re-adding an existing main id with a new vector: the old vector no longer answers for it
    target = int(ids[123])
    index.add([target], space.images(1, seed=33))
    _, found = index.search(vectors[123], 3)
    assert target not in found.tolist()
    _, found = index.search(space.images(1, seed=33)[0], 1)
    assert found.tolist() == [target]
    assert len(index) == ids.size + 190
    # exclude: "more like this" leaves the query image out
    _, found = index.search(vectors[7], K, exclude=[int(ids[7])])
    assert int(ids[7]) not in found.tolist() and (found >= 0).all()


def test_rebuild_on_the_same_data_gives_the_same_top_results(space, data30k, ivf30k):
    ids, vectors = data30k
    live = _fresh_copy(ivf30k)
    gone = ids[::50]
    new_vecs = space.images(300, seed=40)
    new_ids = np.arange(300, dtype=np.int64) + 20_000_000
    live.remove(gone)
    live.add(new_ids, new_vecs)
    keep = ~np.isin(ids, gone)
    cur_ids = np.concatenate([ids[keep], new_ids])
    cur_vecs = np.concatenate([vectors[keep], new_vecs])
    tune = {"image": space.image_queries(500, seed=0), "text": space.text_queries(500, seed=0)}
    rebuilt = build_index(cur_ids, cur_vecs, nlist=700, train_sample_per_list=30, tune_queries=tune)
    assert rebuilt.delta_size == 0 and len(rebuilt) == len(live)
    queries = np.concatenate([space.image_queries(300, seed=41), space.text_queries(300, seed=41)])
    truth = exact_topk(queries, cur_vecs, cur_ids)
    _, a = live.search(queries, K)
    _, b = rebuilt.search(queries, K)
    assert recall_at_k(a, truth) >= 0.95 and recall_at_k(b, truth) >= 0.95
    assert np.mean(a[:, 0] == b[:, 0]) >= 0.97  # same best hit
    assert recall_at_k(a, b) >= 0.93  # and mostly the same top 10


def test_concurrent_adds_removes_and_searches_have_no_errors(space, data30k, ivf30k):
    ids, _ = data30k
    index = _fresh_copy(ivf30k)
    queries = space.text_queries(20, seed=50)
    errors: list[BaseException] = []
    stop = threading.Event()
    removed: set[int] = set()

    def searcher() -> None:
        try:
            while not stop.is_set():
                _, found = index.search(queries, K)
                if (found < 0).any():
                    raise AssertionError("fewer than k results")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for step in range(30):
        vecs = space.images(20, seed=100 + step)
        index.add(np.arange(20) + 30_000_000 + 100 * step, vecs)
        batch = ids[step * 13 : step * 13 + 13]
        index.remove(batch)
        removed.update(batch.tolist())
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    _, found = index.search(queries, K)
    assert not np.isin(found, list(removed)).any()
    assert len(index) == ids.size - len(removed) + 600


# ---------------------------------------------------------------------------------------------
# persistence


def test_save_load_round_trip_keeps_results_delta_and_tombstones(tmp_path, space, data30k, ivf30k):
    index = _fresh_copy(ivf30k)
    index.add([77_000_001, 77_000_002], space.images(2, seed=60))
    index.remove([int(data30k[0][3])])
    store = IndexStore(tmp_path / "index")
    v = store.save(index)
    assert v == 1 and index.version == 1 and store.versions() == [1]
    loaded = store.load()
    assert loaded.version == 1 and loaded.kind == "ivf" and loaded.nprobe == index.nprobe
    assert len(loaded) == len(index) and loaded.delta_size == 2 and loaded.removed_count == 1
    assert loaded.metadata["recall"] == index.metadata["recall"]
    queries = np.concatenate([space.text_queries(30, seed=61), space.images(2, seed=60)])
    assert_same_results(index, loaded, queries)


def test_versions_increase_and_only_the_last_two_are_kept(tmp_path, space):
    store = IndexStore(tmp_path)
    vecs = space.images(100, seed=62)
    for n in (10, 20, 30, 40):
        store.save(build_index(np.arange(n), vecs[:n]))
    assert store.versions() == [3, 4]
    assert len(store.load()) == 40 and len(store.load(3)) == 30
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert files == [
        "manifest.json",
        "v000003.faiss",
        "v000003.npz",
        "v000004.faiss",
        "v000004.npz",
    ]
    with pytest.raises(IndexStoreError, match="version 1 is not"):
        store.load(1)


def test_crash_while_writing_leaves_the_previous_version_loadable(tmp_path, space, monkeypatch):
    store = IndexStore(tmp_path)
    vecs = space.images(50, seed=63)
    store.save(build_index(np.arange(20), vecs[:20]))

    def half_written(index, path):  # writes some bytes, then the disk "fails"
        Path(path).write_bytes(b"partial faiss data")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(index_files.faiss, "write_index", half_written)
    with pytest.raises(IndexStoreError, match="previous version is still in place"):
        store.save(build_index(np.arange(50), vecs))
    monkeypatch.undo()
    assert store.versions() == [1]
    assert len(store.load()) == 20
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]

    # a crash after the data files but before the manifest: the new files are not a version
    real_replace = index_files.os.replace

    def fail_manifest(src, dst):
        if str(dst).endswith("manifest.json"):
            raise OSError(5, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(index_files.os, "replace", fail_manifest)
    with pytest.raises(IndexStoreError):
        store.save(build_index(np.arange(50), vecs))
    monkeypatch.undo()
    assert store.versions() == [1] and len(store.load()) == 20
    # the next save skips the orphaned number and cleans it up
    assert store.save(build_index(np.arange(30), vecs[:30])) == 3
    assert len(store.load()) == 30 and not (tmp_path / "v000002.faiss").exists()


def test_damaged_or_hostile_store_files_are_refused(tmp_path, space):
    store = IndexStore(tmp_path)
    vecs = space.images(30, seed=64)
    store.save(build_index(np.arange(10), vecs[:10]))
    store.save(build_index(np.arange(30), vecs))
    data = bytearray((tmp_path / "v000002.faiss").read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "v000002.faiss").write_bytes(bytes(data))
    with pytest.raises(IndexStoreError, match="checksum"):
        store.load()
    assert len(store.load(1)) == 10
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["versions"][0]["files"]["faiss"]["name"] = "../../etc/passwd"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexStoreError, match="unexpected file"):
        store.load(1)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexStoreError, match="damaged"):
        store.versions()
    with pytest.raises(IndexStoreError, match="no saved index"):
        IndexStore(tmp_path / "empty").load()
