"""Query parsing, combination, the embedding cache and the batching text encoder."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from clipsearch.service.query import EmbeddingCache, QueryError, TextEncoder, combine, parse_query


@pytest.mark.parametrize(
    ("q", "text", "negative"),
    [
        ("beach -people", "beach", ("people",)),
        ("  sunset   over sea ", "sunset over sea", ()),
        ('dog -"red ball" -cat', "dog", ("red ball", "cat")),
        ("t-shirt on a line", "t-shirt on a line", ()),
        ("a - b", "a - b", ()),
        ("-people", "", ("people",)),
        ("x -y -y", "x", ("y",)),
        ('"city at night"', "city at night", ()),
    ],
)
def test_parse_query(q: str, text: str, negative: tuple[str, ...]) -> None:
    parsed = parse_query(q)
    assert parsed.text == text
    assert parsed.negative == negative


def test_combine_subtracts_negative_terms_and_normalises() -> None:
    a = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    b = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    v = combine(np.stack([a, b]), [1.0, -0.5])
    assert v.dtype == np.float32
    assert np.isclose(np.linalg.norm(v), 1.0, atol=1e-6)
    # moving away from b: less similar to b than a is
    assert float(v @ b) < float(a @ b)
    # hand-computed: a - 0.5 b = (0.7, -0.4, 0) -> normalised
    expected = np.array([0.7, -0.4, 0.0]) / np.hypot(0.7, 0.4)
    assert np.allclose(v, expected, atol=1e-6)


def test_combine_refuses_cancelling_terms_and_wrong_weight_count() -> None:
    a = np.array([[1.0, 0.0]], dtype=np.float32)
    with pytest.raises(QueryError, match="cancel out"):
        combine(np.concatenate([a, a]), [1.0, -1.0])
    with pytest.raises(QueryError, match="2 weights for 1"):
        combine(a, [1.0, 2.0])


def test_cache_is_lru_and_bounded() -> None:
    cache = EmbeddingCache(maxsize=2)
    cache.put("a", np.ones(2))
    cache.put("b", np.zeros(2))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", np.ones(2))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2
    stored = cache.get("a")
    assert stored is not None
    with pytest.raises(ValueError):
        stored[0] = 5.0  # cached vectors are read-only: callers cannot corrupt them


class RecordingEmbed:
    """A fake text tower: one-hot-ish vectors, records every batch; the first batch can be held."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.hold_first = hold_first

    def __call__(self, texts):
        self.batches.append(list(texts))
        if self.hold_first and len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(10)
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, hash(t) % 8] = 1.0
        return out


def _deadline_wait(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.005)


def test_concurrent_queries_are_encoded_in_one_batch() -> None:
    embed = RecordingEmbed(hold_first=True)
    enc = TextEncoder(embed, model_name="m", window_ms=1.0, max_batch=32)
    try:
        first = enc.submit(["first"])
        assert embed.entered.wait(10)
        # while the model is busy, 7 more users ask
        futures = [enc.submit([f"query {i}"]) for i in range(7)]
        _deadline_wait(lambda: enc._queue.qsize() == 7)
        embed.release.set()
        results = [f.result(10) for f in futures]
        first.result(10)
    finally:
        enc.close()
    assert embed.batches[0] == ["first"]
    assert sorted(embed.batches[1]) == sorted(f"query {i}" for i in range(7))
    assert len(embed.batches) == 2
    for i, r in enumerate(results):
        assert r.shape == (1, 8)
        assert r[0, hash(f"query {i}") % 8] == 1.0  # each caller got its own vector


def test_cached_queries_skip_the_model_and_models_do_not_share_cache() -> None:
    embed = RecordingEmbed()
    cache = EmbeddingCache(100)
    enc = TextEncoder(embed, model_name="m1", cache=cache, window_ms=0)
    try:
        v1 = enc.encode(["beach", "people"])
        v2 = enc.encode(["people", "beach"])
        assert np.array_equal(v1[0], v2[1]) and np.array_equal(v1[1], v2[0])
        assert len(embed.batches) == 1
        enc.encode(["beach", "dog"])  # only the new text goes to the model
        assert embed.batches[-1] == ["dog"]
    finally:
        enc.close()
    other = TextEncoder(embed, model_name="m2", cache=cache, window_ms=0)
    try:
        other.encode(["beach"])
        assert embed.batches[-1] == ["beach"]
    finally:
        other.close()


def test_encoder_errors_reach_every_waiter_and_the_thread_survives() -> None:
    calls = {"n": 0}

    def flaky(texts):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("tower exploded")
        return np.ones((len(texts), 4), dtype=np.float32) / 2

    enc = TextEncoder(flaky, window_ms=0)
    try:
        with pytest.raises(RuntimeError, match="tower exploded"):
            enc.encode(["a"])
        assert enc.encode(["b"]).shape == (1, 4)
    finally:
        enc.close()


def test_many_threads_get_their_own_answers() -> None:
    embed = RecordingEmbed()
    enc = TextEncoder(embed, window_ms=2.0, max_batch=8)
    try:
        with ThreadPoolExecutor(16) as pool:
            out = list(pool.map(lambda i: (i, enc.encode([f"t{i % 20}"])), range(200)))
    finally:
        enc.close()
    for i, v in out:
        assert v[0, hash(f"t{i % 20}") % 8] == 1.0
    assert all(len(b) <= 8 for b in embed.batches)
    assert sum(len(b) for b in embed.batches) < 100  # batching + cache: far fewer than 200 encodes
