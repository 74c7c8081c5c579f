"""Queries: parsing ("beach -people"), combining weighted texts, and encoding them fast.

- :func:`parse_query` and :func:`combine` (decided once, for every door, in
  indexer.search_terms) are re-exported here.
- :class:`EmbeddingCache` is a thread-safe LRU of text embeddings, keyed by model, query
  language and text.
- :class:`TextEncoder` batches concurrent text queries: requests that arrive within a few
  milliseconds of each other are encoded in one ``embed_texts`` call per query language on a
  worker thread, so the event loop never runs the model and N concurrent users cost about one
  forward pass, not N.
- :func:`query_languages` and :func:`resolve_language`: which query languages the model takes
  (NLLB-SigLIP: FLORES-200 codes such as ``fra_Latn``) and what a request's ``lang`` means.
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from clipsearch.indexer.search_terms import (
    DEFAULT_NEGATIVE_WEIGHT,
    ParsedQuery,
    QueryError,
    combine,
    parse_query,
)

if TYPE_CHECKING:
    from clipsearch.model.base import EmbeddingModel

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_NEGATIVE_WEIGHT",
    "EmbeddingCache",
    "LanguageError",
    "ParsedQuery",
    "QueryError",
    "ResolvedLanguage",
    "TextEncoder",
    "combine",
    "parse_query",
    "query_embedder",
    "query_languages",
    "resolve_language",
]


class LanguageError(QueryError):
    """A query language (``lang``) that is not a code the model knows; the message names the
    parameter and where the valid codes are listed."""


# FLORES-200 codes, as NLLB writes them: three lower-case letters (ISO 639-3), "_", a script
# (ISO 15924, capitalised): eng_Latn, fra_Latn, jpn_Jpan, zho_Hant.
LANGUAGE_CODE = re.compile(r"[a-z]{3}_[A-Z][a-z]{3}")
LANGUAGES_HINT = "GET /api/search/languages lists the codes this server's model takes"


@dataclass(frozen=True)
class QueryLanguages:
    """The query languages of a model: ``languages`` (sorted FLORES-200 codes; empty for a
    model that takes no language code) and the ``default`` a query is read as."""

    languages: tuple[str, ...] = ()
    default: str | None = None

    @property
    def language_aware(self) -> bool:
        return bool(self.languages)


def query_languages(model: object) -> QueryLanguages:
    """What ``lang`` can be for ``model``: its ``languages`` and ``default_language``
    (model.nllb.NLLBSigLIP); nothing for a model without them."""
    languages = getattr(model, "languages", None)
    if not languages:
        return QueryLanguages()
    default = getattr(model, "default_language", None)
    return QueryLanguages(tuple(languages), str(default) if default else None)


def check_language_code(lang: str, where: str = "lang", hint: str = LANGUAGES_HINT) -> str:
    """``lang`` if it is written as a FLORES-200 code (``fra_Latn``); :class:`LanguageError`
    naming ``where`` otherwise (bounded: a long or binary value is not echoed whole)."""
    if not isinstance(lang, str) or LANGUAGE_CODE.fullmatch(lang) is None:
        shown = (
            repr(lang[:24] + ("..." if len(lang) > 24 else "")) if isinstance(lang, str) else "?"
        )
        raise LanguageError(
            f"{where}: {shown} is not a FLORES-200 language code: write three lower-case letters, "
            f"'_' and the script, such as fra_Latn, deu_Latn, jpn_Jpan or zho_Hans ({hint})"
        )
    return lang


@dataclass(frozen=True)
class ResolvedLanguage:
    """What a request's ``lang`` comes to: ``language``, the code to hand ``embed_texts`` (None:
    the model's default, so equal queries share cache entries); ``shown``, the language the query
    is read as (None for a model that takes none); ``ignored``, a ``lang`` given to such a model."""

    language: str | None = None
    shown: str | None = None
    ignored: str | None = None

    def describe(self, query: dict[str, object]) -> dict[str, object]:
        """``query`` (a search response's) with ``lang`` or ``lang_ignored`` added."""
        if self.shown is not None:
            query["lang"] = self.shown
        if self.ignored is not None:
            query["lang_ignored"] = self.ignored
        return query


def resolve_language(
    model: object, lang: str | None, where: str = "lang", hint: str = LANGUAGES_HINT
) -> ResolvedLanguage:
    """A request's query language for ``model``.

    - none given: the model's default (shown, not passed on);
    - not written as a FLORES-200 code: :class:`LanguageError`, whatever the model;
    - a language-aware model (NLLB-SigLIP) that lacks the code: :class:`LanguageError`;
    - a model that takes no language code (CLIP, SigLIP, ...): ignored, and said so
      (``ignored``), so that a link made on a multilingual server still works on another.
    """
    info = query_languages(model)
    if lang is None or lang == "":
        return ResolvedLanguage(None, info.default, None)
    code = check_language_code(lang, where, hint)
    if not info.language_aware:
        return ResolvedLanguage(None, None, code)
    if code not in info.languages:
        raise LanguageError(
            f"{where}: unknown language code {code!r}: this model reads {len(info.languages)} "
            f"FLORES-200 codes such as eng_Latn, fra_Latn, deu_Latn, jpn_Jpan ({hint})"
        )
    return ResolvedLanguage(None if code == info.default else code, code, None)


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


def query_embedder(
    model: EmbeddingModel, precision: str = "exact"
) -> Callable[[Sequence[str]], np.ndarray]:
    """The function that embeds query texts with ``model`` at ``precision``
    (``Settings.query_precision``: exact, int8 or fp16; see model.quantize): the model's
    ``text_embedder``, or its plain ``embed_texts`` for a model without one. For a
    language-aware model it also takes ``language=`` (see :func:`resolve_language`)."""
    text_embedder = getattr(model, "text_embedder", None)
    if text_embedder is None:
        return cast(Callable[[Sequence[str]], np.ndarray], model.embed_texts)
    return cast(Callable[[Sequence[str]], np.ndarray], text_embedder(precision))


_STOP = object()


class TextEncoder:
    """Encode query texts on one background thread, batching requests that arrive together.

    ``embed`` is the model's batched helper (``model.embed_texts``: texts -> [N, D] normalised
    float32); ``model_name`` keys the cache so that a model swap never serves stale vectors.
    A query language (``language=``, a code the model takes) is handed to ``embed`` as
    ``embed(texts, language=...)``: texts of one batch are encoded once per language, and the
    cache keys hold the language, so a text in two languages is two entries.
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
    def submit(self, texts: Sequence[str], language: str | None = None) -> Future[np.ndarray]:
        """A future of the [N, D] embeddings of ``texts`` read as ``language`` (None: the
        model's default), cached ones answered at once."""
        future: Future[np.ndarray] = Future()
        if not texts:
            future.set_exception(QueryError("nothing to encode"))
            return future
        keys = [(self.model_name, language, t) for t in texts]
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
        self._queue.put((missing, inner, language))
        return future

    def encode(self, texts: Sequence[str], language: str | None = None) -> np.ndarray:
        """Blocking form of :meth:`submit`."""
        return self.submit(texts, language).result()

    async def aencode(self, texts: Sequence[str], language: str | None = None) -> np.ndarray:
        """Awaitable form of :meth:`submit`: the event loop is free while the model runs."""
        return await asyncio.wrap_future(self.submit(texts, language))

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

    def _encode_batch(self, batch: list[tuple[list[str], Future[np.ndarray], str | None]]) -> None:
        by_language: dict[str | None, list[tuple[list[str], Future[np.ndarray]]]] = {}
        for texts, fut, language in batch:
            by_language.setdefault(language, []).append((texts, fut))
        for language, requests in by_language.items():
            self._encode_language(requests, language)

    def _encode_language(
        self, batch: list[tuple[list[str], Future[np.ndarray]]], language: str | None
    ) -> None:
        unique = list(dict.fromkeys(t for texts, _ in batch for t in texts))
        try:
            if language is None:
                vectors = np.asarray(self._embed(unique), dtype=np.float32)
            else:
                embed = cast(Callable[..., np.ndarray], self._embed)
                vectors = np.asarray(embed(unique, language=language), dtype=np.float32)
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
            self.cache.put((self.model_name, language, text), vec)
            by_text[text] = vec
        for texts, fut in batch:
            if not fut.done():
                fut.set_result(np.stack([by_text[t] for t in texts]))
