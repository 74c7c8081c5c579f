"""The embedding worker: configuration, the per-process context, recovery on start, and processes.

A worker is ``python -m clipsearch.indexer.worker`` (or ``clipsearch worker``): it reads the
settings tree (indexer.settings) from ``CLIPSEARCH_*`` environment variables once, at its start,
and runs with the :class:`WorkerConfig` built from it; re-enqueues the unfinished jobs
it finds in the catalog (so a broker that lost its queue, or a worker killed with SIGKILL, loses no
work), then consumes the clipsearch queue. The model is loaded once per process, lazily, on the
worker's device, and cached per spec.

:func:`start_worker_process` starts one as a child process (``clipsearch serve`` uses it for the
embedded worker; the tests use it to run a real worker against a real broker).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from celery import Celery

from .celery_app import (
    DEFAULT_TIME_LIMITS,
    TASK_EMBED,
    TASK_RESUME,
    TIME_LIMITS,
    batch_time_limits,
    is_embedded_broker,
    make_celery,
)
from .configs import WorkerConfig
from .context import WorkerContext
from .errors import IndexerError
from .settings import LibrarySettings
from .time_limits import TaskWatchdog
from .worker_metrics import start_worker_metrics

log = logging.getLogger(__name__)


def default_database_url(data_dir: Path) -> str:
    """The embedded catalog: a SQLite file in the data directory (see indexer.catalog)."""
    from .catalog import default_database_url as catalog_default

    return catalog_default(Path(data_dir).expanduser())


def worker_environment(config: WorkerConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a worker child needs besides ``environ`` (what it inherits) to read
    ``config`` from the settings tree: only those that differ there, then ``extra_env``."""
    from .settings import WORKER_FIELDS, LibrarySettings

    values: dict[str, Any] = {}
    for field_name, (group, name) in WORKER_FIELDS.items():
        value = getattr(config, field_name)
        if value is None and field_name in ("cache_dir", "offline", "allow_jit"):
            continue  # the model layer's default: the child finds the same one
        values.setdefault(group, {})[name] = value
    worker = values["worker"]
    worker["decode_workers"] = worker["decode_workers"] or 0
    catalog = values["catalog"]
    catalog["data_dir"] = Path(config.data_dir).expanduser().resolve()
    catalog["database_url"] = config.resolved_database_url
    catalog["broker_url"] = config.resolved_broker_url
    for group, typed in (("store", config.store), ("ocr", config.ocr)):
        # the indexer's dataclass and the settings group share their field names
        fields = LibrarySettings.model_fields[group].annotation.model_fields  # type: ignore[union-attr]
        values[group] = {k: v for k, v in asdict(typed).items() if k in fields}
    settings = LibrarySettings.from_env(environ, **values)
    env = settings.env_overrides(environ)
    env.update(config.extra_env)
    return env


def create_worker_app(config: WorkerConfig) -> Celery:
    """The Celery app with clipsearch's tasks registered and a :class:`WorkerContext` attached."""
    from . import album_jobs, duplicate_jobs, tag_jobs
    from .tasks import register_tasks

    app = make_celery(config.resolved_broker_url, queue_prefix=config.queue_prefix)
    app.clipsearch = WorkerContext(config)
    register_tasks(app)
    duplicate_jobs.register_tasks(app)
    tag_jobs.register_tasks(app)
    album_jobs.register_tasks(app)
    return app


def _other_workers_alive(app: Celery, timeout: float = 1.0) -> bool:
    """Whether some other worker answers a ping (only brokers with broadcast support it)."""
    if is_embedded_broker(app.conf.broker_url or ""):
        return False  # the embedded broker serves one worker, the one starting now
    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception as exc:  # pragma: no cover - broker trouble is logged, recovery goes on
        log.warning("could not ping other workers (%s); treating none as alive", exc)
        return False
    return bool(replies)


def recover_unfinished_jobs(app: Celery, now: datetime | None = None) -> list[int]:
    """Re-enqueue the catalog's unfinished jobs that no live worker is making progress on.

    When no other worker is alive every queued or running job is orphaned; otherwise only those
    without progress for ``stale_after_s``. Re-running a job is safe: tasks check the catalog and
    skip what is already done, so every image is embedded exactly once.
    """
    from .jobs import unfinished_job_ids

    ctx: WorkerContext = app.clipsearch
    others = _other_workers_alive(app)
    older_than = None
    if others:
        now = now or datetime.now(UTC)
        older_than = now - timedelta(seconds=ctx.config.stale_after_s)
    with ctx.session() as session:
        job_ids = unfinished_job_ids(session, older_than=older_than)
    for job_id in job_ids:
        app.send_task(TASK_RESUME, args=[job_id])
    if job_ids:
        log.info("re-enqueued unfinished jobs %s", job_ids)
    return job_ids


def recover_stale_jobs(app: Celery, now: datetime | None = None) -> list[int]:
    """Take over the unfinished jobs without progress for ``stale_after_s`` (a running worker's
    periodic check, see :class:`_StaleJobSweeper`).

    A worker killed with SIGKILL leaves its message unacknowledged; Redis hands it back only after
    the broker's visibility timeout (an hour), so the surviving workers would otherwise drain the
    queue and leave the job unfinished until then. Each job is claimed by moving its heartbeat to
    ``now`` in the same statement that checks it is stale, so of several idle workers only one
    re-enqueues it. Returns the ids re-enqueued.
    """
    import sqlalchemy as sa

    from .catalog import Job
    from .jobs import unfinished_job_ids

    ctx: WorkerContext = app.clipsearch
    now = now or datetime.now(UTC)
    older_than = now - timedelta(seconds=ctx.config.stale_after_s)
    taken: list[int] = []
    with ctx.session() as session:
        for job_id in unfinished_job_ids(session, older_than=older_than):
            claimed = session.execute(
                sa.update(Job)
                .where(
                    Job.id == job_id,
                    Job.state.in_(("queued", "running")),
                    sa.func.coalesce(Job.heartbeat_at, Job.updated_at) < older_than,
                )
                .values(heartbeat_at=now)
            )
            session.commit()
            assert isinstance(claimed, sa.CursorResult)  # an UPDATE's result
            if claimed.rowcount:
                taken.append(job_id)
    for job_id in taken:
        app.send_task(TASK_RESUME, args=[job_id])
    if taken:
        log.warning(
            "jobs %s made no progress for %.0f s (a worker died holding their work?): re-enqueued",
            taken,
            ctx.config.stale_after_s,
        )
    return taken


class _StaleJobSweeper:
    """While this worker is idle, look for stale jobs every ``stale_after_s / 3`` (1-30 s).

    Only an idle worker looks: a busy one means the queue still holds work, and a job whose
    messages are queued behind other work is slow, not lost.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        stale = float(app.clipsearch.config.stale_after_s)
        self.interval = min(30.0, max(1.0, stale / 3))
        self._lock = threading.Lock()
        self._running = 0
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="clipsearch-stale-jobs", daemon=True
        )

    def task_started(self, sender: object = None, **_: object) -> None:
        if getattr(sender, "app", None) is self.app:
            with self._lock:
                self._running += 1
                self._last = time.monotonic()

    def task_finished(self, sender: object = None, **_: object) -> None:
        if getattr(sender, "app", None) is self.app:
            with self._lock:
                self._running = max(0, self._running - 1)
                self._last = time.monotonic()

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self._running else time.monotonic() - self._last

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.idle_for() < self.interval:
                continue
            try:
                recover_stale_jobs(self.app)
            except Exception as exc:  # the catalog or broker is down: try again next round
                log.warning("could not look for stale jobs: %s", exc)

    def start(self) -> None:
        from celery import signals

        signals.task_prerun.connect(self.task_started, weak=False)
        signals.task_postrun.connect(self.task_finished, weak=False)
        self._thread.start()

    def stop(self) -> None:
        from celery import signals

        self._stop.set()
        signals.task_prerun.disconnect(self.task_started)
        signals.task_postrun.disconnect(self.task_finished)
        self._thread.join(5)


def _prune_embedded_broker(app: Celery) -> None:
    """Delete delivered messages that kombu's SQL transport keeps forever (single worker only)."""
    url = app.conf.broker_url or ""
    if not url.startswith("sqla+sqlite:///"):
        return
    import sqlite3

    path = url[len("sqla+sqlite:///") :]
    if not Path(path).exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
            conn.execute("DELETE FROM kombu_message WHERE visible = 0")
            conn.commit()
    except sqlite3.Error as exc:
        log.warning("could not prune the embedded broker %s: %s", path, exc)


def _keep_logging(**_: object) -> None:
    """A ``setup_logging`` receiver: its presence tells Celery to leave logging as it is."""


def run_worker(config: WorkerConfig, loglevel: str = "INFO") -> None:
    """Run a worker in this process until it is told to stop (SIGTERM/SIGINT): blocking."""
    from celery import signals

    app = create_worker_app(config)
    from clipsearch import model  # noqa: F401 - import torch and the model code now, not in the first task

    if is_embedded_broker(app.conf.broker_url or ""):
        _prune_embedded_broker(app)
    from .decode import clean_temp_files

    for derived in ("thumbnails", "previews"):  # half-written files of a killed worker
        clean_temp_files(Path(config.data_dir) / derived)
    try:
        # Create or upgrade the schema (serialised with the API's own init_db by a lock): a worker
        # may start first on an empty database, or run a newer release than the API.
        from . import catalog

        catalog.init_db(
            config.resolved_database_url,
            engine=app.clipsearch.engine,
            migrate=config.auto_migrate,
        )
        recover_unfinished_jobs(app)
    except catalog.SchemaNotCurrent:
        app.clipsearch.dispose()
        raise  # this release cannot run on that schema: `clipsearch migrate` first
    except IndexerError as exc:  # the catalog is down: consume anyway, tasks retry on their own
        log.error("could not look for unfinished jobs: %s", exc)
    sweeper = _StaleJobSweeper(app)

    def on_ready(sender: object = None, **_: object) -> None:
        if config.ready_file is not None and getattr(sender, "app", None) is app:
            path = Path(config.ready_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{os.getpid()}\n")

    signals.worker_ready.connect(on_ready, weak=False)
    # logging is configured by this process's edge (indexer.logs): Celery must not redo it
    signals.setup_logging.connect(_keep_logging, weak=False, dispatch_uid="clipsearch-logs")
    start_worker_metrics(app, config.metrics_port)
    # Threads, not prefork: forking a process that imported torch (or holds a CUDA context) is
    # unsafe, and one model in memory serves every thread. Decoding runs in its own process pool.
    pool = "solo" if config.concurrency == 1 else "threads"
    argv = [
        "worker",
        f"--pool={pool}",
        f"--concurrency={config.concurrency}",
        f"--loglevel={loglevel}",
        f"--hostname=clipsearch-{os.getpid()}@{socket.gethostname()}",
        "--without-gossip",
        "--without-mingle",
    ]
    # Celery's time limits need its prefork pool: the threads/solo pools get them here
    limits = {**TIME_LIMITS, TASK_EMBED: batch_time_limits(config.batch_time_limit_s)}
    watchdog = TaskWatchdog(app, limits, DEFAULT_TIME_LIMITS)
    watchdog.start()
    sweeper.start()
    from .broker_watch import BrokerRestartWatch

    broker_watch = BrokerRestartWatch(app)  # a Redis restarted empty: re-send at once
    broker_watch.start()
    try:
        app.worker_main(argv)
    finally:
        broker_watch.stop()
        watchdog.stop()
        sweeper.stop()
        signals.worker_ready.disconnect(on_ready)
        app.clipsearch.dispose()


class WorkerProcess:
    """A worker running as a child process (see :func:`start_worker_process`)."""

    def __init__(self, popen: subprocess.Popen[bytes], config: WorkerConfig, log_path: Path | None):
        self.popen = popen
        self.config = config
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the worker consumes its queue; raise if it exits or ``timeout`` passes."""
        if self.config.ready_file is None:
            raise IndexerError("this worker was started without a ready file")
        deadline = time.monotonic() + timeout
        ready = Path(self.config.ready_file)
        while time.monotonic() < deadline:
            if ready.exists() and ready.read_text().strip() == str(self.pid):
                return
            if not self.is_alive():
                raise IndexerError(
                    f"the worker exited with status {self.popen.returncode} before it was ready; "
                    f"see {self.log_path or 'its output'}"
                )
            time.sleep(0.05)
        raise IndexerError(f"the worker was not ready after {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """Warm shutdown (SIGTERM: finish the current task), SIGKILL after ``timeout``."""
        if self.is_alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in %.0f s; killing it", self.pid, timeout)
                self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-task, as in a crash."""
        if self.is_alive():
            self.popen.kill()
        self.popen.wait(30)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel send SIGTERM to the worker when its parent dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_worker_process(
    config: WorkerConfig,
    log_path: Path | None = None,
    loglevel: str | None = None,
    die_with_parent: bool = False,
) -> WorkerProcess:
    """Start ``python -m indexer.worker`` with ``config`` in its environment.

    The child logs to ``log_path`` (default: ``<data_dir>/logs/worker.log``), rotated by size
    (indexer.logs); what it prints before its logging is set up is appended there too. Call
    :meth:`WorkerProcess.wait_ready` to wait until it consumes, :meth:`WorkerProcess.stop` to
    stop it cleanly. With ``die_with_parent`` (Linux) it also stops when this process dies.
    """
    data_dir = Path(config.data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if config.ready_file is None:
        run_dir = data_dir / "run"
        run_dir.mkdir(exist_ok=True)
        config = replace(
            config, ready_file=run_dir / f"worker-{os.getpid()}-{time.monotonic_ns()}.ready"
        )
    if log_path is None:
        (data_dir / "logs").mkdir(exist_ok=True)
        log_path = data_dir / "logs" / "worker.log"
    env = dict(os.environ)
    env.update(worker_environment(config, env))
    log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clipsearch.indexer.worker",
                *(["--loglevel", loglevel] if loglevel else []),
                "--log-file",
                str(log_path),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if die_with_parent and sys.platform == "linux" else None,
        )
    finally:
        log_file.close()
    return WorkerProcess(popen, config, log_path)


def main(argv: list[str] | None = None) -> int:
    """``python -m clipsearch.indexer.worker [--loglevel LEVEL]``: run a worker configured from
    the environment (the library's groups of the settings tree, read once here).

    Unknown ``CLIPSEARCH_*`` variables are reported by the edge that reads the whole tree
    (``clipsearch worker``, ``clipsearch serve``, the API): this module knows only the library's
    groups, and a child of ``serve`` inherits the API's variables, which are no typos."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m clipsearch.indexer.worker", description=__doc__
    )
    parser.add_argument("--loglevel", default=None, help="default: CLIPSEARCH_LOG_LEVEL, INFO")
    parser.add_argument(
        "--log-file", type=Path, default=None, help="log there, rotated by size (default: stdout)"
    )
    args = parser.parse_args(argv)
    from .logs import configure_logging

    try:
        config = LibrarySettings.from_env().worker_config()
    except IndexerError as exc:
        configure_logging("INFO", stream=sys.stdout, file=args.log_file)
        log.error("%s", exc)
        return 2
    level = (args.loglevel or config.log_level or "INFO").upper()
    json_lines = config.log_format == "json"
    configure_logging(
        level, "json" if json_lines else "text", stream=sys.stdout, file=args.log_file
    )
    try:
        run_worker(config, loglevel=level)
    except IndexerError as exc:  # a schema this release cannot run on, said once
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy, so that the tasks and the worker
    # share one set of classes.
    from clipsearch.indexer.worker import main as _main

    sys.exit(_main())
