"""Per-task time limits for the pools ``clipsearch worker`` runs (threads, or solo for one
task at a time), which do not enforce Celery's ``soft_time_limit``/``time_limit`` (only the
prefork pool does, and a process that imported torch must not fork).

:class:`TaskWatchdog` follows each task of its app from ``task_prerun`` to ``task_postrun`` and,
from one thread, looks every half second at how long each has run against its limits
(celery_app.TIME_LIMITS):

- **soft**: :class:`TaskTimeLimit` (a SoftTimeLimitExceeded) is raised inside the task's thread
  (CPython's ``PyThreadState_SetAsyncExc``). It takes effect at the task's next Python step: a
  call running in C (a decoder, a model's forward pass, a sleep) finishes first. The task's
  error handling fails its job with that message (indexer.jobs.run_guarded).
- **hard**: the task did not end within its hard limit even so (stuck in C, or catching the
  exception): the worker process logs which task and exits with status :data:`EXIT_HARD_LIMIT`,
  as a prefork pool replaces a child. Its supervisor (compose's ``restart``, systemd) starts a
  new one, which resumes the job from the catalog. ``clipsearch serve``'s embedded worker is
  not restarted: restart ``serve``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

log = logging.getLogger(__name__)

__all__ = ["EXIT_HARD_LIMIT", "TaskTimeLimit", "TaskWatchdog"]

EXIT_HARD_LIMIT = 70  # EX_SOFTWARE


class TaskTimeLimit(SoftTimeLimitExceeded):
    """A task ran past its soft time limit."""

    def __str__(self) -> str:
        return (
            "the task ran past its time limit (celery_app.TIME_LIMITS; "
            "CLIPSEARCH_BATCH_TIME_LIMIT_S for an embedding batch) and was stopped"
        )


@dataclass
class _Running:
    name: str
    thread_id: int
    started: float
    soft: float
    hard: float
    soft_sent: bool = False


def _raise_in(thread_id: int) -> bool:
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(TaskTimeLimit)
    )
    return int(done) == 1


class TaskWatchdog:
    """Enforces ``limits`` (task name -> (soft, hard) seconds; ``default`` for the others) on
    ``app``'s tasks in this process."""

    def __init__(
        self,
        app: Celery,
        limits: Mapping[str, tuple[float, float]],
        default: tuple[float, float],
        interval_s: float = 0.5,
        exit_process: Callable[[int], object] = os._exit,
    ) -> None:
        self.app = app
        self.limits = dict(limits)
        self.default = default
        self.interval_s = interval_s
        self._exit = exit_process
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="clipsearch-time-limits", daemon=True
        )

    def task_started(self, sender: object = None, task_id: str = "", **_: object) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        name = str(getattr(sender, "name", ""))
        soft, hard = self.limits.get(name, self.default)
        with self._lock:
            self._running[task_id] = _Running(
                name, threading.get_ident(), time.monotonic(), soft, hard
            )

    def task_ended(self, sender: object = None, task_id: str = "", **_: object) -> None:
        with self._lock:
            self._running.pop(task_id, None)

    def check(self, now: float | None = None) -> None:
        """One look at the running tasks (the loop calls it every ``interval_s``)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            running = list(self._running.items())
        for task_id, run in running:
            elapsed = now - run.started
            if elapsed >= run.hard:
                log.critical(
                    "task %s (%s) ran %.0f s, past its hard time limit of %.0f s: this worker "
                    "exits so that a new one takes over (the job resumes from the catalog)",
                    run.name,
                    task_id,
                    elapsed,
                    run.hard,
                )
                logging.shutdown()
                self._exit(EXIT_HARD_LIMIT)
                return
            if elapsed >= run.soft and not run.soft_sent:
                run.soft_sent = True
                log.error(
                    "task %s (%s) ran %.0f s, past its time limit of %.0f s: stopping it",
                    run.name,
                    task_id,
                    elapsed,
                    run.soft,
                )
                if not _raise_in(run.thread_id):
                    log.error("task %s: its thread is gone; nothing to stop", task_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # pragma: no cover - the watchdog must keep watching
                log.exception("time limit check failed")

    def start(self) -> None:
        from celery import signals

        signals.task_prerun.connect(self.task_started, weak=False)
        signals.task_postrun.connect(self.task_ended, weak=False)
        self._thread.start()

    def stop(self) -> None:
        from celery import signals

        self._stop.set()
        signals.task_prerun.disconnect(self.task_started)
        signals.task_postrun.disconnect(self.task_ended)
        self._thread.join(5)
