"""Queries: parsing ("beach -people"), combining weighted texts, and encoding them fast.

- :func:`parse_query` splits a query string into positive text and negative terms.
- :func:`combine` turns weighted, L2-normalised term embeddings into one query vector.
- :class:`EmbeddingCache` is a thread-safe LRU of text embeddings, keyed by model and text.
- :class:`TextEncoder` batches concurrent text queries: requests that arrive within a few
  milliseconds of each other are encoded in one ``embed_texts`` call on a worker thread, so the
  event loop never runs the model and N concurrent users cost about one forward pass, not N.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_NEGATIVE_WEIGHT = 0.5

# a term: -"quoted phrase", "quoted phrase", -word, word
_TERM_RE = re.compile(r'(-?)"([^"]*)"|(\S+)')


class QueryError(ValueError):
    """A query that cannot be searched; the message says what to change."""


@dataclass(frozen=True)
class ParsedQuery:
    """``text``: the positive part (may be empty); ``negative``: texts to steer away from."""

    text: str
    negative: tuple[str, ...] = field(default_factory=tuple)


def parse_query(q: str) -> ParsedQuery:
    """Split ``q`` into positive text and negative terms.

    ``beach -people`` -> text "beach", negative ("people",). ``-"red car"`` negates a phrase;
    a lone ``-`` or a word with inner dashes (``t-shirt``) is kept as text.
    """
    positive: list[str] = []
    negative: list[str] = []
    for match in _TERM_RE.finditer(q):
        dash, phrase, word = match.group(1), match.group(2), match.group(3)
        if phrase is not None:
            phrase = " ".join(phrase.split())
            if phrase:
                (negative if dash else positive).append(phrase)
        elif word is not None:
            if word.startswith("-") and len(word) > 1 and word[1:].strip("-"):
                negative.append(word[1:])
            else:
                positive.append(word)
    return ParsedQuery(" ".join(positive), tuple(dict.fromkeys(negative)))


def combine(
    vectors: np.ndarray,
    weights: Sequence[float],
) -> np.ndarray:
    """Weighted sum of rows of ``vectors`` (weights may be negative), L2-normalised.

    Raises :class:`QueryError` when the weights cancel out to a zero vector.
    """
    w = np.asarray(weights, dtype=np.float32).reshape(-1, 1)
    if w.shape[0] != vectors.shape[0]:
        raise QueryError(f"got {w.shape[0]} weights for {vectors.shape[0]} query terms")
    out = (w * vectors.astype(np.float32)).sum(axis=0)
    norm = float(np.linalg.norm(out))
    if not np.isfinite(norm) or norm < 1e-6:
        raise QueryError("the query terms cancel out: change the weights or drop a negative term")
    return (out / norm).astype(np.float32)


class EmbeddingCache:
    """A bounded, thread-safe LRU of embeddings keyed by any hashable key."""

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[object, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: object) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: object, value: np.ndarray) -> None:
        if self.maxsize <= 0:
            return
        value = np.array(value, dtype=np.float32, copy=True)
        value.setflags(write=False)
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


def query_embedder(model: Any, precision: str = "exact") -> Callable[[Sequence[str]], np.ndarray]:
    """The function that embeds query texts with ``model`` at ``precision``
    (``Settings.query_precision``: exact, int8 or fp16; see model.quantize): the model's
    ``text_embedder``, or its plain ``embed_texts`` for a model without one."""
    text_embedder = getattr(model, "text_embedder", None)
    if text_embedder is None:
        return cast(Callable[[Sequence[str]], np.ndarray], model.embed_texts)
    return cast(Callable[[Sequence[str]], np.ndarray], text_embedder(precision))


_STOP = object()


class TextEncoder:
    """Encode query texts on one background thread, batching requests that arrive together.

    ``embed`` is the model's batched helper (``model.embed_texts``: texts -> [N, D] normalised
    float32); ``model_name`` keys the cache so that a model swap never serves stale vectors.
    """

    def __init__(
        self,
        embed: Callable[[Sequence[str]], np.ndarray],
        model_name: str = "",
        cache: EmbeddingCache | None = None,
        window_ms: float = 2.0,
        max_batch: int = 32,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self._embed = embed
        self._on_start = on_start
        self.model_name = model_name
        self.cache = cache if cache is not None else EmbeddingCache()
        self.window_s = max(0.0, window_ms) / 1000.0
        self.max_batch = max(1, max_batch)
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0
        self.encoded = 0

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("text encoder is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="clipsearch-text-encoder", daemon=True
                )
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)

    # API -----------------------------------------------------------------------------------
    def submit(self, texts: Sequence[str]) -> Future[np.ndarray]:
        """A future of the [N, D] embeddings of ``texts`` (cached ones answered at once)."""
        future: Future[np.ndarray] = Future()
        if not texts:
            future.set_exception(QueryError("nothing to encode"))
            return future
        keys = [(self.model_name, t) for t in texts]
        cached = [self.cache.get(k) for k in keys]
        if all(c is not None for c in cached):
            future.set_result(np.stack(cached))  # type: ignore[arg-type]
            return future
        missing = list(dict.fromkeys(t for t, c in zip(texts, cached, strict=True) if c is None))
        inner: Future[np.ndarray] = Future()

        def _done(f: Future[np.ndarray]) -> None:
            exc = f.exception()
            if exc is not None:
                future.set_exception(exc)
                return
            fresh = dict(zip(missing, f.result(), strict=True))
            rows = [c if c is not None else fresh[t] for t, c in zip(texts, cached, strict=True)]
            future.set_result(np.stack(rows))

        inner.add_done_callback(_done)
        if self._closed:
            inner.set_exception(RuntimeError("text encoder is closed"))
            return future
        self.start()
        self._queue.put((missing, inner))
        return future

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Blocking form of :meth:`submit`."""
        return self.submit(texts).result()

    async def aencode(self, texts: Sequence[str]) -> np.ndarray:
        """Awaitable form of :meth:`submit`: the event loop is free while the model runs."""
        return await asyncio.wrap_future(self.submit(texts))

    # worker --------------------------------------------------------------------------------
    def _run(self) -> None:
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception:  # a tuning hook must not kill the encoder
                log.exception("text encoder start hook failed")
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            n_texts = len(item[0])  # type: ignore[index]
            deadline = time.monotonic() + self.window_s
            stop = False
            while n_texts < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
                n_texts += len(nxt[0])  # type: ignore[index]
            self._encode_batch(batch)  # type: ignore[arg-type]
            if stop:
                return

    def _encode_batch(self, batch: list[tuple[list[str], Future[np.ndarray]]]) -> None:
        unique = list(dict.fromkeys(t for texts, _ in batch for t in texts))
        try:
            vectors = np.asarray(self._embed(unique), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(unique):
                raise RuntimeError(
                    f"text encoder returned shape {vectors.shape} for {len(unique)} texts"
                )
        except BaseException as exc:  # hand every waiter the error, keep the thread alive
            log.exception("text encoding failed for a batch of %d texts", len(unique))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.batches += 1
        self.encoded += len(unique)
        by_text = {}
        for text, vec in zip(unique, vectors, strict=True):
            self.cache.put((self.model_name, text), vec)
            by_text[text] = vec
        for texts, fut in batch:
            if not fut.done():
                fut.set_result(np.stack([by_text[t] for t in texts]))
