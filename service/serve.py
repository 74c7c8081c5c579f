"""``clipsearch serve``: the API and gallery, the embedded worker, and the first ingestion."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from clipsearch.indexer.worker import WorkerProcess, start_worker_process
from clipsearch.indexer.worker_supervisor import SupervisedWorker

from .runfile import remove_run_file, write_run_file
from .settings import Settings, is_loopback

if TYPE_CHECKING:
    import asyncio

    import uvicorn
    from fastapi import FastAPI
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from clipsearch.indexer.configs import WorkerConfig, WorkerOverrides
    from clipsearch.indexer.library import Library
    from clipsearch.indexer.types import JobInfo

log = logging.getLogger(__name__)


class ServeError(Exception):
    """serve cannot start; the message says what to do."""


def worker_config(settings: Settings, **overrides: Unpack[WorkerOverrides]) -> WorkerConfig:
    """The indexer's WorkerConfig for these settings (the tree's catalog, models, store, ocr
    and worker groups; ``overrides`` by WorkerConfig's field names)."""
    return settings.worker_config(**overrides)


def start_embedded_worker(settings: Settings) -> SupervisedWorker:
    """Start a worker child process (it stops when this process dies), started again when it
    ends on its own (a task past its hard time limit, a crash: indexer.worker_supervisor)."""
    config = worker_config(settings)

    def start() -> WorkerProcess:
        worker = start_worker_process(config, die_with_parent=True)
        log.info("embedded worker started (pid %d, log %s)", worker.pid, worker.log_path)
        return worker

    return SupervisedWorker(start)


@dataclass
class ServeHandle:
    """What ``prepare`` started: the library, the worker, the jobs submitted for --images."""

    library: Library
    worker: SupervisedWorker | None = None
    jobs: list[JobInfo] = field(default_factory=list)

    def stop(self) -> None:
        if self.worker is not None:
            try:
                self.worker.stop()
            except Exception:  # pragma: no cover - best effort on shutdown
                log.exception("stopping the embedded worker failed")
            self.worker = None


def prepare(settings: Settings, library: Library | None = None) -> ServeHandle:
    """Load the model (fail early, clearly), start the worker, queue the --images folders."""
    from .app import build_library

    for folder in settings.folders.images:
        if not folder.is_dir():
            raise ServeError(f"--images {folder}: no such folder")
    lib = library if library is not None else build_library(settings)
    handle = ServeHandle(library=lib)
    if settings.serve.preload_model:
        from clipsearch.model.errors import DownloadError

        from .first_run import offline_hint

        try:
            lib.model  # noqa: B018 - raises ModelError with the "how to get the weights" message
        except DownloadError as exc:  # offline: the demo's model works now (service.demo)
            raise ServeError(f"{exc}\n\n{offline_hint(list(settings.folders.images))}") from exc
    if settings.serve.embedded_worker:
        handle.worker = start_embedded_worker(settings)
    try:
        for folder in settings.folders.images:
            # kept in the catalog as a watched folder (across restarts); an ingest is queued
            # unless the folder was watched already and matches the catalog (no empty job at
            # every restart)
            watched = lib.add_watched_folder(str(folder), recursive=True, if_changed=True)
            job = watched.last_job
            if job is not None and job.state in ("queued", "running"):
                handle.jobs.append(job)
                log.info("ingesting %s as job %s", folder, job.id)
            else:
                log.info("%s: unchanged since its last scan", folder)
        if settings.folders.watch and hasattr(lib, "start_watcher"):
            lib.start_watcher(
                rescan_interval_s=settings.folders.rescan_interval_s,
                debounce_s=settings.folders.watch_debounce_s,
            )
    except BaseException:
        handle.stop()
        raise
    return handle


_BUSY_BODY = (
    b'{"detail":"the server is at its connection limit (CLIPSEARCH_MAX_CONNECTIONS) and every '
    b'connection is working on a request: retry in a moment"}'
)
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(_BUSY_BODY) + _BUSY_BODY
)


def guarded_protocol(header_timeout_s: float, max_connections: int | None = None) -> type:
    """uvicorn's h11 protocol with two guards against clients that hold connections and do
    nothing (uvicorn alone counts them against its limit until they time out, so a hundred idle
    sockets refused everybody else):

    - a connection whose request headers have not all arrived ``header_timeout_s`` after it
      opened (or after its previous response) is closed;
    - beyond ``max_connections`` open connections, a new one closes the connection that has been
      idle longest (waiting for its headers, or kept alive after a response): idle connections
      are shed before working ones. Only when every other connection is working on a request
      does the new one get a 503.

    Request bodies are bounded in the app (service.middleware.BodyTimeoutMiddleware), requests in
    progress by service.middleware.ConcurrencyMiddleware."""
    import time

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    idle: dict[Any, None] = {}  # idle connections of this server, the longest idle first
    last_warning = [0.0]

    def shed_for(newcomer: H11Protocol) -> bool:
        """Make room for ``newcomer`` beyond the limit; False when nothing could be shed."""
        if max_connections is None:
            return True
        open_ = sum(1 for c in newcomer.connections if not c.transport.is_closing())
        shed = 0
        while open_ > max_connections:
            victim = next((c for c in idle if c is not newcomer), None)
            if victim is None:
                return False
            idle.pop(victim, None)
            victim._disarm()
            victim.transport.close()
            open_ -= 1
            shed += 1
        if shed and time.monotonic() - last_warning[0] > 10:
            last_warning[0] = time.monotonic()
            log.warning(
                "%d connections open (CLIPSEARCH_MAX_CONNECTIONS): closing the longest idle ones",
                max_connections,
            )
        return True

    class GuardedH11Protocol(H11Protocol):
        _header_timer: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)
            idle.pop(self, None)
            idle[self] = None  # the newest idle last

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            idle.pop(self, None)

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            idle.pop(self, None)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info(
                    "request headers not complete after %.0f s: connection closed", header_timeout_s
                )
                self.transport.close()

        # H11Protocol narrows asyncio's BaseTransport to Transport the same way (and says so
        # with the same ignore): a stream connection's transport is always a Transport
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()
            if not shed_for(self):
                self._disarm()
                log.warning("connection limit reached with every connection busy: 503")
                transport.write(BUSY_RESPONSE)
                transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the headers are in: a working connection

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request's headers get the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_config(settings: Settings, app: FastAPI, number: int = 0) -> uvicorn.Config:
    """The uvicorn settings that bound what clients can hold: connections (idle ones shed
    first), header and body timeouts (the body one is in the app), idle keep-alive, header
    size. Requests in progress are limited in the app (service.middleware.ConcurrencyMiddleware).
    Every limit is per API process. With ``--workers`` above 1 each response names the API
    process that answered (``X-Clipsearch-Worker: 0`` is the first, ``number``)."""
    import uvicorn

    several = settings.serve.api_workers > 1
    return uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,  # the edge's logging (indexer.logs) stands; uvicorn's loggers join it
        log_level=None,
        access_log=False,  # the app's access log carries the request id (RequestIdMiddleware)
        lifespan="on",
        timeout_graceful_shutdown=10,
        http=guarded_protocol(settings.server.header_timeout_s, settings.server.max_connections),
        limit_concurrency=None,  # uvicorn's counts idle connections: see guarded_protocol
        timeout_keep_alive=int(max(1, settings.server.keepalive_timeout_s)),
        h11_max_incomplete_event_size=16 * 1024,
        server_header=False,
        headers=[(WORKER_HEADER, str(number))] if several else None,
        backlog=2048,
    )


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything slow starts, so a port already in use is
    reported at once (naming the port and --port) instead of after the model has loaded.

    Bound, not yet listening: while the model loads and the worker starts, a client's connection
    is refused at once instead of waiting unanswered in the kernel's queue. uvicorn makes it
    listen (asyncio's ``create_server``) once the app's start-up is done and it can answer."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is already in use (another clipsearch serve, or another "
                "program): stop it, or choose another port with --port N"
            ) from None
        if exc.errno == errno.EACCES:
            raise ServeError(
                f"not allowed to listen on port {port} on {host} (ports below 1024 need "
                "privileges): choose another port with --port N"
            ) from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(False)
    return sock


WORKER_HEADER = "X-Clipsearch-Worker"


def catalog_connections(settings: Settings) -> int:
    """PostgreSQL connections an API process keeps (indexer.catalog.engine.PG_POOL_SIZE): one
    per thread that reads the catalog at once -- the searches in progress
    (CLIPSEARCH_SEARCH_SLOTS), the inference threads -- and 4 for the rest (the index follower,
    the watcher, the jobs and admin routes). A serve holds at most ``api_workers`` times it, plus
    engine.PG_MAX_OVERFLOW each at a peak."""
    search = settings.search
    return search.search_slots + search.inference_threads + 4


def size_catalog_pool(settings: Settings, announce: bool = False) -> None:
    """This process's PostgreSQL pool, before its library is opened (SQLite keeps its own);
    ``announce``: log what a serve holds in all (its first process)."""
    from clipsearch.indexer.catalog.engine import PG_MAX_OVERFLOW, set_pg_pool_size

    connections = catalog_connections(settings)
    set_pg_pool_size(connections)
    if announce and settings.catalog.database_url:
        log.info(
            "catalog pool: %d connections per API process (+%d at a peak), %d API processes: "
            "at most %d in all besides the worker's (PostgreSQL's max_connections must allow "
            "them)",
            connections,
            PG_MAX_OVERFLOW,
            settings.serve.api_workers,
            settings.serve.api_workers * (connections + PG_MAX_OVERFLOW),
        )


def reader_settings(settings: Settings) -> Settings:
    """An extra API process's settings: it serves, and starts nothing else (no embedded worker,
    no folder watcher, no folders queued: the first process owns those)."""
    return settings.model_copy(
        update={
            "serve": settings.serve.model_copy(update={"embedded_worker": False}),
            "folders": settings.folders.model_copy(update={"images": [], "watch": False}),
        }
    )


def _reader_main(
    settings: Settings, sock: socket.socket, number: int, parent: int, level: int
) -> None:  # pragma: no cover - runs in a child process (tests/service/test_serve_workers.py)
    """An extra API process (``serve --workers N``): the app on the first process's socket."""
    import uvicorn

    from clipsearch.indexer.logs import configure_logging
    from clipsearch.indexer.pool_guard import die_with_parent

    from .app import build_library, create_app

    die_with_parent(signal.SIGTERM)  # a first process killed -9 leaves no API process behind
    if os.getppid() != parent:  # it died before the line above
        return
    configure_logging(level, settings.logs.format, stream=sys.stdout)
    size_catalog_pool(settings)
    library = build_library(settings)
    app = create_app(settings, library=library)
    log.info("API process %d (pid %d) serving", number, os.getpid())
    try:
        uvicorn.Server(uvicorn_config(settings, app, number)).run(sockets=[sock])
    finally:
        library.close()


class ReaderProcesses:
    """The API processes beyond the first (``serve --workers N``), on the first one's socket.

    Started with ``spawn`` (a fresh interpreter, never a fork of a process with threads and a
    loaded model), each loads the library's model, opens the saved index memory-mapped read-only
    (indexer.vector_index.files: the pages are shared, not copied) and follows the catalog's
    change sequence on its own (indexer.serving). One that crashes is started again (after 5 s
    if it ran less than 30 s); one that ended by a signal it handled (Ctrl-C, SIGTERM) is not.
    Each dies with the first process (``PR_SET_PDEATHSIG``)."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self.settings = reader_settings(settings)
        self.sock = sock
        self.count = settings.serve.api_workers - 1
        self._procs: dict[int, tuple[Any, float]] = {}  # number -> (process, started)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        for number in range(1, self.count + 1):
            self._spawn(number)
        self._monitor = threading.Thread(
            target=self._watch, name="clipsearch-api-processes", daemon=True
        )
        self._monitor.start()

    def _spawn(self, number: int) -> None:
        import multiprocessing
        import time

        ctx = multiprocessing.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()
        proc = ctx.Process(
            target=_reader_main,
            args=(self.settings, self.sock, number, os.getpid(), level),
            name=f"clipsearch-api-{number}",
        )
        with self._lock:
            if self._stop.is_set():
                return
            proc.start()
            self._procs[number] = (proc, time.monotonic())
        log.info("API process %d started (pid %d)", number, proc.pid)

    def _watch(self) -> None:
        import time

        while not self._stop.wait(1.0):
            with self._lock:
                ended = [(n, p, t) for n, (p, t) in self._procs.items() if not p.is_alive()]
            for number, proc, started in ended:
                code = proc.exitcode
                if code == 0:
                    log.info("API process %d (pid %d) stopped", number, proc.pid)
                    with self._lock:
                        self._procs.pop(number, None)
                    continue
                log.warning(
                    "API process %d (pid %d) ended with %s; starting another",
                    number,
                    proc.pid,
                    f"signal {-code}" if code is not None and code < 0 else f"exit code {code}",
                )
                if time.monotonic() - started < 30 and self._stop.wait(5.0):
                    return
                self._spawn(number)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [int(p.pid) for p, _ in self._procs.values() if p.pid is not None]

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every one (uvicorn's graceful shutdown), SIGKILL what is left after
        ``timeout_s``."""
        import time

        self._stop.set()
        with self._lock:
            procs = [p for p, _ in self._procs.values()]
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("API process (pid %d) did not stop: killed", proc.pid)
                proc.kill()
                proc.join(5)


class DataFolderLock:
    """One ``serve`` per data folder whose catalog and broker are the embedded SQLite files:
    a second one would run a second embedded worker and watcher on the same files. Held (flock)
    for the life of the process; released by the kernel if it dies. Deployments with a database
    server (API replicas sharing a volume) take no lock."""

    def __init__(self, data_dir: Path, port: int) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "serve.lock"
        self._fh = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise ServeError(
                f"another clipsearch serve is already using the data folder {data_dir} "
                f"({holder}); stop it first, or give this one its own --data-dir"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()}, port {port}")
        self._fh.flush()

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def run(settings: Settings, library: Library | None = None) -> None:
    """Serve until interrupted: this process (the first API process, with the embedded worker
    and the folder watcher) and ``serve.api_workers - 1`` more on the same socket."""
    import uvicorn

    from .app import create_app

    if settings.serve.api_workers > 1 and library is not None:
        raise ServeError("several API processes each open the library: give no library object")
    sock = listen(settings.server.host, settings.server.port)
    size_catalog_pool(settings, announce=True)
    lock: DataFolderLock | None = None
    try:
        if not settings.catalog.database_url:
            lock = DataFolderLock(
                Path(settings.catalog.data_dir).expanduser(), settings.server.port
            )
        handle = prepare(settings, library)
    except BaseException:
        sock.close()
        if lock is not None:
            lock.release()
        raise
    try:
        app = create_app(settings, library=handle.library)
        url_host = (
            settings.server.host if ":" not in settings.server.host else f"[{settings.server.host}]"
        )
        print(
            f"clipsearch: serving http://{url_host}:{settings.server.port}/ "
            f"(API docs at /docs, model {settings.models.spec}, data in {settings.catalog.data_dir})",
            file=sys.stderr,
            flush=True,
        )
        if not is_loopback(settings.server.host) and settings.server.api_token is None:
            print(
                "clipsearch: WARNING: listening beyond loopback without an API token (--insecure)",
                file=sys.stderr,
            )
        print(
            "clipsearch: answering to host names "
            + ", ".join(settings.server.effective_allowed_hosts)
            + " (CLIPSEARCH_ALLOWED_HOSTS adds others); "
            + (
                "reads and writes need the API token (sign in at /signin.html)"
                if settings.token and not settings.server.public_read
                else "reads are open, writes need the API token"
                if settings.token
                else "no API token: anyone who can connect may read and change the library"
            ),
            file=sys.stderr,
            flush=True,
        )
        # the run file: `clipsearch search` asks this server (service.runfile)
        run_file = write_run_file(
            settings.catalog.data_dir, settings.server.host, sock.getsockname()[1]
        )
        readers = ReaderProcesses(settings, sock) if settings.serve.api_workers > 1 else None
        try:
            if readers is not None:
                readers.start()
            uvicorn.Server(uvicorn_config(settings, app)).run(sockets=[sock])
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            # another program started listening on the port while this one was starting
            raise ServeError(
                f"port {settings.server.port} on {settings.server.host} was taken while clipsearch started "
                "(another program listens on it now): stop it, or choose another port with --port N"
            ) from None
        finally:
            if readers is not None:
                readers.stop()
            remove_run_file(run_file)
    finally:
        handle.stop()
        sock.close()
        if lock is not None:
            lock.release()
