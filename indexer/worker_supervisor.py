"""The embedded worker kept running: ``clipsearch serve`` starts its worker as a child process,
and a child can end on its own: a task past its hard time limit ends it on purpose
(:data:`~clipsearch.indexer.time_limits.EXIT_HARD_LIMIT`, so that a fresh process takes over),
and a crash or the kernel's OOM killer end it by accident. In a deployment the container runtime
restarts a worker; here :class:`SupervisedWorker` does: it notices the exit within a second,
logs it with the status and what the status means, and starts a new worker after a backoff
(1 s, doubling up to 30 s while the worker keeps dying young; back to 1 s after a minute of
health). Unfinished jobs stay in the catalog and resume on the new worker."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .time_limits import EXIT_HARD_LIMIT
from .worker import WorkerProcess

log = logging.getLogger(__name__)

#: the first restart's delay and the most it grows to while workers keep dying young
BACKOFF_S = (1.0, 30.0)
#: a worker that ran this long was healthy: the next restart starts from the first delay again
HEALTHY_S = 60.0


def exit_reason(status: int | None) -> str:
    """What a worker's exit status means, in words."""
    if status == EXIT_HARD_LIMIT:
        return "a task ran past its hard time limit"
    if status is not None and status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}" + (" (out of memory?)" if -status == signal.SIGKILL else "")
    return f"exit status {status}"


class SupervisedWorker:
    """A worker process that is started again when it ends on its own (see the module's
    documentation). ``start`` makes one :class:`~clipsearch.indexer.worker.WorkerProcess`; it is
    called again for each restart. :meth:`stop` and :meth:`kill` end the supervision first."""

    def __init__(
        self,
        start: Callable[[], WorkerProcess],
        *,
        poll_s: float = 0.5,
        backoff_s: tuple[float, float] = BACKOFF_S,
        healthy_s: float = HEALTHY_S,
    ) -> None:
        self._start = start
        self._poll_s = poll_s
        self._backoff = backoff_s
        self._healthy_s = healthy_s
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.restarts = 0
        self.last_exit: str | None = None
        self.current = start()
        self._started_at = time.monotonic()
        self._thread = threading.Thread(
            target=self._watch, name="clipsearch-worker-supervisor", daemon=True
        )
        self._thread.start()

    # --- the WorkerProcess interface, for the current process

    @property
    def pid(self) -> int:
        return self.current.pid

    @property
    def log_path(self) -> Path | None:
        return self.current.log_path

    def is_alive(self) -> bool:
        return self.current.is_alive()

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.current.wait_ready(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        self._stopping.set()
        with self._lock:
            status = self.current.stop(timeout)
        self._thread.join(timeout=5)
        return status

    def kill(self) -> None:
        self._stopping.set()
        with self._lock:
            self.current.kill()
        self._thread.join(timeout=5)

    # --- supervision

    def _watch(self) -> None:
        delay = self._backoff[0]
        while not self._stopping.wait(self._poll_s):
            status = self.current.popen.poll()
            if status is None:
                continue
            lived = time.monotonic() - self._started_at
            if lived >= self._healthy_s:
                delay = self._backoff[0]
            self.last_exit = exit_reason(status)
            log.error(
                "the embedded worker (pid %d) ended after %.0f s: %s; starting a new one in "
                "%.0f s (unfinished jobs resume there; its log: %s)",
                self.current.pid, lived, self.last_exit, delay, self.current.log_path,
            )  # fmt: skip
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self.current = self._start()
                except Exception:
                    log.exception("starting a new embedded worker failed; trying again")
                    delay = min(delay * 2, self._backoff[1])
                    continue
                self._started_at = time.monotonic()
                self.restarts += 1
            log.info("embedded worker restarted (pid %d)", self.current.pid)
            delay = min(delay * 2, self._backoff[1])
