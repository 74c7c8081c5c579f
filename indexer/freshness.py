"""Index freshness: one object per library keeps what searches read up to date.

:class:`IndexFollower` runs one background thread that calls the library's refresh (a hot swap to
a newer active index version, else the catalog's changes since the served watermark: new vectors
into the exact delta, deletions out). It refreshes every ``interval_s`` on its own, and sooner when
a search finds the index due (:meth:`IndexFollower.due`), so a search never waits for a load or a
swap and never starts a thread. A failed refresh is logged and the current index keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["IDLE_TICK_S", "IndexFollower"]

#: The shortest pause between refreshes when no search asks for one (an interval of 0 means
#: "as fresh as each search": refreshed after every search, and at this pace in between).
IDLE_TICK_S = 0.5


class IndexFollower:
    """Calls ``refresh()`` from one daemon thread: every ``interval_s`` (at least
    :data:`IDLE_TICK_S`), and soon after :meth:`due` finds ``interval_s`` passed since the last."""

    def __init__(
        self,
        refresh: Callable[[], object],
        interval_s: float,
        name: str = "clipsearch-index-refresh",
    ) -> None:
        # A bound method is held weakly: a library nobody holds any more stops its thread.
        self._refresh: Callable[[], Callable[[], object] | None] = (
            weakref.WeakMethod(refresh) if hasattr(refresh, "__self__") else (lambda: refresh)
        )
        self.interval_s = max(0.0, float(interval_s))
        self._name = name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last = time.monotonic()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the thread (once; a no-op while it runs or after :meth:`stop`)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._last = time.monotonic()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def due(self) -> None:
        """Called by each search: wake the thread when the index is due for a refresh."""
        if time.monotonic() - self._last >= self.interval_s:
            self._wake.set()

    def refreshed(self) -> None:
        """Note a refresh made outside the thread (an explicit ``refresh_index()``)."""
        self._last = time.monotonic()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (waits up to ``timeout`` for a refresh under way)."""
        with self._lock:
            self._stop.set()
            self._wake.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(max(self.interval_s, IDLE_TICK_S))
            self._wake.clear()
            if self._stop.is_set():
                return
            self._last = time.monotonic()
            refresh = self._refresh()
            if refresh is None:
                return  # the library is gone
            try:
                refresh()
            except Exception as exc:  # a failed refresh keeps the current index serving
                log.warning("index refresh failed, keeping the current index: %s", exc)
            del refresh
