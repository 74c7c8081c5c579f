"""Helpers of the fault-injection tests (tests/reliability/test_faults.py).

Everything here is real: a Redis server of our own (a child process on a free port, so the system
Redis is never touched), a TCP proxy in front of PostgreSQL that we can cut, the API served by
uvicorn over a real socket (in this process, or as the ``clipsearch serve`` command in a child
process we can SIGKILL), and real worker processes (``python -m indexer.worker``).

Waiting is by polling with a deadline, never by sleeping a guessed time. What a test observed
(errors served, recovery times, images lost) is appended as one JSON line per fault to the file
named by ``$CLIPSEARCH_RELIABILITY_OUT`` (bench/reliability_report.py turns it into the table in
RELIABILITY.md) and printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]
# Reuse the indexer tests' helpers (real worker processes, generated images, wait_for).
_INDEXER_TESTS = str(REPO / "tests" / "indexer")
if _INDEXER_TESTS not in sys.path:
    sys.path.append(_INDEXER_TESTS)

from testkit import free_port  # noqa: E402
from workerutil import make_images, wait_for, worker_config, worker_log  # noqa: E402

from clipsearch.indexer.worker import WorkerConfig, WorkerProcess, start_worker_process  # noqa: E402

__all__ = [
    "ApiProcess",
    "ApiThread",
    "FullDisk",
    "Probe",
    "RedisServer",
    "TcpProxy",
    "catalog_truth",
    "free_port",
    "ingest_in_process",
    "make_images",
    "record",
    "search_ids",
    "started_worker",
    "via_proxy",
    "wait_for",
    "worker_config",
    "worker_log",
]

SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def record(fault: str, **figures: Any) -> dict[str, Any]:
    """Print what a fault test observed and append it to ``$CLIPSEARCH_RELIABILITY_OUT``."""
    row = {"fault": fault, **figures}
    line = json.dumps(row, default=str, sort_keys=True)
    print(f"reliability: {line}")
    out = os.environ.get("CLIPSEARCH_RELIABILITY_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    return row


# --------------------------------------------------------------------------------------------
# Workers


@contextlib.contextmanager
def started_worker(
    config: WorkerConfig, name: str, timeout: float = 180.0
) -> Iterator[WorkerProcess]:
    """A real worker process, ready to consume; SIGKILLed on exit (the test is over by then, and
    a warm shutdown costs seconds a fault test does not need)."""
    log_path = Path(config.data_dir) / f"{name}-{uuid.uuid4().hex[:6]}.log"
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    worker = start_worker_process(config, log_path=log_path, loglevel="INFO", die_with_parent=True)
    try:
        worker.wait_ready(timeout)
        yield worker
    finally:
        worker.kill()


# --------------------------------------------------------------------------------------------
# Redis of our own


class RedisServer:
    """``redis-server`` on a free 127.0.0.1 port, ours to SIGKILL and restart on the same port.

    ``persistent=True`` runs it as docker-compose.yml does (append-only file), so a restart keeps
    the queue; otherwise (``--save "" --appendonly no``) a restart comes back empty.
    """

    def __init__(self, folder: Path, persistent: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--daemonize", "no",
            "--protected-mode", "yes",
            *persistence,
        ]  # fmt: skip
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.starts += 1
        wait_for(self._pings, timeout, f"our redis-server on port {self.port} to answer")

    def _pings(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"redis-server exited with {self.proc.returncode}: "
                + (self.folder / "redis.log").read_text(errors="replace")[-2000:]
            )
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: Redis crashes (or its container is killed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def queue_length(self, key_prefix: str, queue: str) -> int:
        import redis

        return int(redis.Redis(port=self.port, socket_timeout=2).llen(f"{key_prefix}{queue}"))

    def close(self) -> None:
        self.kill()


# --------------------------------------------------------------------------------------------
# A TCP proxy we can cut


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; :meth:`cut` refuses new connections and drops
    the open ones (the database host is gone), :meth:`restore` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.accepted = 0

    def restore(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    start = restore

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)
            with contextlib.suppress(OSError):
                src.close()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        if self._thread is not None:
            self._thread.join(5)

    close = cut


# --------------------------------------------------------------------------------------------
# The API


class _Api:
    url: str

    def get(self, path: str, timeout: float = 60.0, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params or None, timeout=timeout)

    def post(self, path: str, timeout: float = 60.0, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=timeout, **kwargs)

    def job(self, job_id: int) -> dict[str, Any]:
        r = self.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200, (r.status_code, r.text)
        return dict(r.json())

    def finished_job(
        self, job_id: int, timeout: float, worker: WorkerProcess | None = None
    ) -> dict[str, Any]:
        return wait_for(
            lambda: (j := self.job(job_id))["state"] in ("done", "failed", "cancelled") and j,
            timeout,
            f"job {job_id} to finish",
            interval=0.1,
            worker=worker,
        )


class ApiThread(_Api):
    """The real app (``create_app`` over a real :class:`~indexer.library.Library`) served by
    uvicorn on a real socket, in this process: starts in a second, since torch is loaded here."""

    def __init__(self, **settings: Any) -> None:
        from clipsearch.service.app import create_app
        from clipsearch.service.settings import Settings

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings.setdefault("batch_window_ms", 0.5)
        self.settings = Settings(port=self.port, **settings)
        self.app = create_app(self.settings)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ApiThread:
        import uvicorn

        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, 120, "the API to listen")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)


class ApiProcess(_Api):
    """``clipsearch serve`` (``--no-worker`` unless ``worker``) as a child process, configured by
    ``CLIPSEARCH_*`` variables as a deployment configures it; ours to SIGKILL and start again on
    the same port."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, port: int | None = None, worker: bool = False
    ) -> None:
        self.worker = worker  # serve's embedded worker (its child process) or --no-worker
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
        self.env = {**base, **SINGLE_THREAD_ENV, **env}
        self.log_dir = Path(log_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 180.0) -> float:
        """Start it and wait until /api/health answers 200; returns the seconds that took."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.log_dir / f"api-{self.starts}.log", "ab")  # noqa: SIM115
        t0 = time.monotonic()
        args = [sys.executable, "-m", "clipsearch.service.cli", "serve", "--port", str(self.port)]
        if not self.worker:
            args.append("--no-worker")
        try:
            self.proc = subprocess.Popen(
                args,
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: see kill(group=True)
            )
        finally:
            log.close()
        wait_for(self._healthy, timeout, "the API process to answer /api/health", interval=0.1)
        return time.monotonic() - t0

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the API exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.get("/api/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        path = self.log_dir / f"api-{self.starts}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"

    def kill(self, group: bool = False) -> None:
        """SIGKILL the server; with ``group``, its whole process group at once (the embedded worker
        too), as when its container or machine dies."""
        if self.proc is None:
            return
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        elif self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def close(self) -> None:
        self.kill(group=True)


def search_ids(api: _Api, n: int, q: str = "a photo") -> list[int]:
    """Ids of a text search for ``n`` results (the whole library when it has at most ``n``: no
    relevance cut)."""
    r = api.get("/api/search", q=q, k=n, min_relevance=0)
    assert r.status_code == 200, (r.status_code, r.text)
    return [int(hit["id"]) for hit in r.json()["results"]]


# --------------------------------------------------------------------------------------------
# Watching what users get during a fault


@dataclass
class Probe:
    """Calls ``GET url`` every ``interval`` s in a thread and records what came back.

    ``outcomes`` holds ``(seconds since start, status code or exception name, detail)``.
    """

    url: str
    interval: float = 0.1
    timeout: float = 30.0
    outcomes: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    t0: float = 0.0

    def __enter__(self) -> Probe:
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def _loop(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                t = time.monotonic() - self.t0
                try:
                    r = client.get(self.url)
                    detail = ""
                    if r.status_code != 200:
                        with contextlib.suppress(ValueError):
                            detail = str(r.json().get("detail", ""))
                    self.outcomes.append((t, str(r.status_code), detail))
                except httpx.HTTPError as exc:
                    self.outcomes.append((t, type(exc).__name__, str(exc)[:200]))
                self._stop.wait(self.interval)

    def counts(self) -> dict[str, int]:
        return dict(Counter(status for _, status, _ in self.outcomes))

    def errors(self) -> list[tuple[float, str, str]]:
        return [o for o in self.outcomes if o[1] != "200"]


# --------------------------------------------------------------------------------------------
# The catalog's own view (the ground truth behind what the API says)


def catalog_truth(database_url: str) -> dict[str, Any]:
    """Counts straight from the catalog: images by state, embeddings, duplicates."""
    from clipsearch.indexer.catalog import Embedding, Image, make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            states = dict(
                conn.execute(sa.select(Image.state, sa.func.count()).group_by(Image.state)).all()
            )
            images = conn.scalar(sa.select(sa.func.count()).select_from(Image))
            paths = conn.scalar(sa.select(sa.func.count(sa.distinct(Image.path))))
            embeddings = conn.scalar(sa.select(sa.func.count()).select_from(Embedding))
            distinct = conn.scalar(
                sa.select(sa.func.count()).select_from(
                    sa.select(Embedding.sha256, Embedding.model_id).distinct().subquery()
                )
            )
    finally:
        engine.dispose()
    return {
        "images": int(images or 0),
        "distinct_paths": int(paths or 0),
        "states": {k: int(v) for k, v in states.items()},
        "embeddings": int(embeddings or 0),
        "distinct_embeddings": int(distinct or 0),
    }


def ingest_in_process(library: Any, folder: Path, database_url: str | None = None) -> int:
    """Ingest ``folder`` with the worker's own task functions, in this process (no broker, decoding
    inline): what a worker does, deterministically. ``database_url`` overrides the catalog the
    "worker" writes to (e.g. PostgreSQL directly while the API goes through a proxy)."""
    from clipsearch.indexer import runs
    from clipsearch.indexer.worker import WorkerContext

    job = library.submit_ingest(str(folder))
    overrides: dict[str, Any] = {"decode_workers": 1, "device": "cpu"}
    if database_url is not None:
        overrides["database_url"] = database_url
    ctx = WorkerContext(library.config.worker_config(**overrides))
    try:
        for batch in runs.run_ingest(ctx, None, job.id):
            runs.run_embed_batch(ctx, job.id, batch)
    finally:
        ctx.dispose()
    return int(job.id)


class FullDisk:
    """Stands in for the ``os`` module inside :mod:`indexer.decode`: the thumbnail writes whose
    ordinal (1-based) is in ``fail`` raise ``OSError(ENOSPC)`` from ``write()``, as write(2) does
    when the disk is full. Every other attribute is the real ``os``."""

    def __init__(self, fail: set[int]) -> None:
        self.fail = set(fail)
        self.writes = 0
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, *args: Any, **kwargs: Any) -> Any:
        fh = os.fdopen(fd, *args, **kwargs)
        self.writes += 1
        if self.writes in self.fail:
            self.refused += 1
            return _FullFile(fh)
        return fh


class _FullFile:
    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, data: Any) -> int:
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def via_proxy(database_url: str, proxy: TcpProxy) -> str:
    """``database_url`` with its host and port replaced by the proxy's."""
    url = sa.make_url(database_url)
    return url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
