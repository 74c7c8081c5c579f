"""The bounded queue in front of costly work (searches; decodes of uploaded images): at most
``slots`` in progress and ``queue`` waiting for one; beyond, or after waiting ``wait_s``, a fast
503 with Retry-After instead of a growing wait (Elasticsearch's search thread pool and queue, in
one process). One admission rule, used by every gate of the service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import HTTPException


class AdmissionGate:
    """At most ``slots`` holders at once and ``queue`` waiting. ``full`` and ``timed_out`` are
    the refusals' messages (``timed_out`` may hold ``{wait_s}``); both say what to do."""

    def __init__(
        self,
        slots: int,
        queue: int,
        wait_s: float,
        *,
        full: str,
        timed_out: str,
        retry_after_s: int = 1,
    ) -> None:
        self.slots = max(1, int(slots))
        self.queue = max(0, int(queue))
        self.wait_s = float(wait_s)
        self.full = full
        self.timed_out = timed_out
        self.retry_after_s = retry_after_s
        self._sem: asyncio.Semaphore | None = None
        self.waiting = 0  # admitted, not yet in a slot
        self.admitted = 0  # in a slot or waiting for one
        self.refused = 0

    def _busy(self, detail: str) -> HTTPException:
        self.refused += 1
        return HTTPException(503, detail=detail, headers={"Retry-After": str(self.retry_after_s)})

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        # Admission is counted before the first await: a crowd arriving in one moment is cut at
        # exactly slots + queue (the semaphore alone says "locked" only once an acquirer ran)
        if self.admitted >= self.slots + self.queue:
            raise self._busy(self.full)
        self.admitted += 1
        try:
            self.waiting += 1
            try:
                await asyncio.wait_for(self._sem.acquire(), self.wait_s)
            except TimeoutError:
                raise self._busy(self.timed_out.format(wait_s=self.wait_s)) from None
            finally:
                self.waiting -= 1
            try:
                yield
            finally:
                self._sem.release()
        finally:
            self.admitted -= 1


def make_search_gate(slots: int, queue: int, wait_s: float = 10.0) -> AdmissionGate:
    """The gate in front of a server's searches (encoding and search alike)."""
    return AdmissionGate(
        slots,
        queue,
        wait_s,
        full=(
            f"the server is busy ({max(1, slots)} searches in progress and {max(0, queue)} "
            "waiting, CLIPSEARCH_SEARCH_QUEUE): retry in a moment"
        ),
        timed_out="the server is busy (no search slot freed within {wait_s:g} s): retry in a moment",
    )


def make_upload_gate(slots: int, queue: int, wait_s: float = 20.0) -> AdmissionGate:
    """The gate in front of the decodes of uploaded images (each in a process of its own)."""
    return AdmissionGate(
        slots,
        queue,
        wait_s,
        full="too many image searches at once: retry in a few seconds",
        timed_out="the server is busy decoding other images: retry shortly",
        retry_after_s=2,
    )
