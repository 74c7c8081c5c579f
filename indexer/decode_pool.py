"""Decoding many files in parallel: a :class:`DecodePool` of decoder processes (forkserver or
spawn, so safe beside threads and CUDA) that die with their owner (:mod:`indexer.pool_guard`),
restarted and the culprit isolated when a decoder crashes; :func:`decode_many` over it."""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import ForkServerContext, SpawnContext
from typing import TYPE_CHECKING, Any

from PIL import Image

from clipsearch.indexer.decode import DecodeResult, decode_file, fail

if TYPE_CHECKING:
    import torch

    from .configs import OcrConfig

log = logging.getLogger(__name__)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _worker_init() -> None:
    from clipsearch.indexer import pool_guard

    pool_guard.die_with_parent()  # SIGKILL when the forkserver (or spawning owner) dies
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(1)


def process_context() -> ForkServerContext | SpawnContext:
    """How decoder processes are started: the forkserver where available (spawn otherwise),
    never a fork of a process holding threads, locks or a CUDA context. The forkserver ends with
    this process, however it ends (:mod:`indexer.pool_guard`), and has this package's decoding
    modules imported, so a decoder forked from it is ready at once."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from clipsearch.indexer import pool_guard

    ctx = multiprocessing.get_context("forkserver")
    os.environ[pool_guard.OWNER_ENV] = str(os.getpid())
    preload = ["__main__", "clipsearch.indexer.pool_guard", "clipsearch.indexer.decode_isolated"]
    # run as ``python -m NAME``, each child runs NAME's module again: its imports preloaded,
    # that costs nothing (the forkserver only preloads a main module given by its path)
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main_spec is not None and main_spec.name and not main_spec.name.endswith("__main__"):
        preload.append(main_spec.name)
    ctx.set_forkserver_preload(preload)
    return ctx


class DecodePool:
    """A pool of decoder processes sized to the cores (``workers=None``), created lazily.

    Uses the forkserver start method where available (spawn otherwise): never forks a process
    holding threads, locks or a CUDA context. Inside a daemonic process (a Celery prefork
    child, which may not have children) it uses threads instead: Pillow, hashlib and torch
    release the GIL for most of the work. ``workers=1`` decodes in the calling thread.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, workers: int | None = None, kind: str = "auto") -> None:
        self.workers = max(1, int(workers or default_workers()))
        if kind == "auto":
            kind = "process"
            if multiprocessing.current_process().daemon:
                kind = "thread"
        if kind not in ("process", "thread"):
            raise ValueError(f"unknown pool kind {kind!r}: use 'process' or 'thread'")
        self.kind = kind if self.workers > 1 else "inline"
        self._executor: Executor | None = None

    def _get(self) -> Executor:
        if self._executor is None:
            if self.kind == "thread":
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")
            else:
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=process_context(), initializer=_worker_init
                )
        return self._executor

    def _restart(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def map(self, fn: Callable[[str], DecodeResult], paths: Sequence[str]) -> list[DecodeResult]:
        """``[fn(p) for p in paths]`` in parallel, in order. A file that crashes a worker
        process gets a failed result instead of taking the batch down."""
        if self.kind == "inline" or len(paths) <= 1:
            return [fn(p) for p in paths]
        if self.kind == "process":
            try:
                pickle.dumps(fn)
            except Exception as exc:
                log.warning(
                    "decode function cannot be sent to worker processes (%s); using threads", exc
                )
                self.close()
                self.kind = "thread"
        results: list[DecodeResult | None] = [None] * len(paths)
        broken: list[int] = []
        try:
            futures = [self._get().submit(fn, p) for p in paths]
            for i, fut in enumerate(futures):
                try:
                    results[i] = fut.result()
                except BrokenProcessPool:
                    broken.append(i)
        except BrokenProcessPool:
            broken = [i for i, r in enumerate(results) if r is None]
        if broken:
            log.warning("a decoder process died; retrying %d file(s) one by one", len(broken))
            self._restart()
            for i in broken:  # one at a time, so the culprit is identified
                try:
                    results[i] = self._get().submit(fn, paths[i]).result()
                except BrokenProcessPool:
                    self._restart()
                    results[i] = fail(
                        paths[i],
                        "crashed",
                        "the image decoder crashed on this file (a malformed or hostile image)",
                    )
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_many(
    paths: Sequence[str | os.PathLike[str]],
    image_size: int,
    thumb_dir: str | os.PathLike[str] | None,
    thumb_size: int = 256,
    draft: bool = True,
    *,
    pool: DecodePool | None = None,
    workers: int | None = None,
    preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
    max_pixels: int | None = None,
    roots: Sequence[str] | None = None,
    expect: Sequence[tuple[int, int]] | None = None,
    text: OcrConfig | None = None,
    want_pixels: bool = True,
) -> list[DecodeResult]:
    """``decode_file`` over many paths, in parallel, results in the order given. Pass a long-lived
    ``pool`` to avoid starting processes per call; otherwise one is made (``workers`` of them,
    default: the cores) and closed. ``roots`` and ``expect`` (one per path) as decode_file."""
    extra: dict[str, Any] = {}
    if text is not None:
        extra["text"] = text
    if not want_pixels:
        extra["want_pixels"] = False
    fn = functools.partial(
        decode_file if expect is None else _decode_expected,
        roots=None if roots is None else [os.fsdecode(r) for r in roots],
        image_size=image_size,
        thumb_dir=None if thumb_dir is None else os.fspath(thumb_dir),
        thumb_size=thumb_size,
        draft=draft,
        preprocess=preprocess,
        max_pixels=max_pixels,
        **extra,
    )
    names = [os.fsdecode(p) for p in paths]
    items = names
    if expect is not None:  # a NUL never occurs in a path: it carries the expectation along
        items = [f"{p}\x00{int(e[0])}\x00{int(e[1])}" for p, e in zip(names, expect, strict=True)]
    if pool is not None:
        results = pool.map(fn, items)
    else:
        with DecodePool(workers) as own:
            results = own.map(fn, items)
    for result, name in zip(results, names, strict=True):
        result.path = name
    return results


def _decode_expected(item: str, **kwargs: Any) -> DecodeResult:
    path, size, mtime_ns = item.split("\x00")
    return decode_file(path, expect=(int(size), int(mtime_ns)), **kwargs)
