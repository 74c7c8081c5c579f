"""``/api/health/live`` and ``/api/health/ready`` (issue 23), on real ``clipsearch serve``
processes: live answers whatever the catalog does; ready names the catalog or the broker when
PostgreSQL or Redis goes away (cut by a TCP relay the test owns) and is 200 again when it comes
back; the index named when its files went away while the server was down, until a reindex; 200
on a healthy embedded library. One in-process test: a hung check is waited for a bounded time,
and not started twice.

Every wait is bounded; nothing is asserted about how fast anything is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from testkit import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "probes-test-token-7d2e9a41c05b3f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START_DEADLINE_S = 240.0
FLIP_DEADLINE_S = 60.0

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="real sockets and processes")


class Relay:
    """A TCP relay from a local port to ``target`` that the test can cut and restore: cut closes
    the listening socket and every relayed connection (the server sees its peer gone, and new
    connections refused), restore listens on the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self._listener is not None
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    def close(self) -> None:
        if self._listener is not None:
            self.cut()


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _serve(base: Path, model_dir: Path, *args: str, **env_extra: str) -> Server:
    port = free_port()
    data_dir = base / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env.update(
        CLIPSEARCH_API_TOKEN=TOKEN,
        CLIPSEARCH_DEVICE="cpu",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        **env_extra,
    )
    cmd = [
        sys.executable, "-m", "clipsearch.service.cli", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--model", str(model_dir), "--data-dir", str(data_dir), *args,
    ]  # fmt: skip
    log_path = base / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(f"http://127.0.0.1:{port}", proc, data_dir, log_path)


def _stop(srv: Server) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(srv.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        srv.proc.wait(timeout=30)


def _wait_ready(srv: Server, status: int, deadline_s: float = FLIP_DEADLINE_S) -> httpx.Response:
    """Poll /api/health/ready (no token, as a probe asks) until it answers ``status``."""
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while True:
        assert srv.proc.poll() is None, f"serve exited:\n{srv.log()[-3000:]}"
        with contextlib.suppress(httpx.HTTPError):
            last = srv.get("/api/health/ready")
            if last.status_code == status:
                return last
        assert time.monotonic() < deadline, (
            f"ready never answered {status}: {getattr(last, 'text', last)}\n{srv.log()[-3000:]}"
        )
        time.sleep(0.3)


def _assert_live(srv: Server) -> None:
    for _ in range(3):
        r = srv.get("/api/health/live")
        assert r.status_code == 200 and r.json() == {"status": "alive"}, r.text


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model

    return Path(save_pretrained(tiny_model(seed=0), tmp_path_factory.mktemp("tiny-model")))


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_ready_names_the_catalog_and_the_broker_while_live_answers(
    tmp_path: Path, model_dir: Path, pg_url: str, redis_url: str
) -> None:
    host_port, _, rest = redis_url.removeprefix("redis://").partition("/")
    redis_host, _, redis_port = host_port.partition(":")
    pg = Relay(("127.0.0.1", 5432))
    redis = Relay((redis_host, int(redis_port)))
    assert ":5432/" in pg_url, pg_url
    srv = _serve(
        tmp_path,
        model_dir,
        "--no-worker",
        CLIPSEARCH_DATABASE_URL=pg_url.replace(":5432/", f":{pg.port}/"),
        CLIPSEARCH_BROKER_URL=f"redis://127.0.0.1:{redis.port}/{rest}",
    )
    try:
        ok = _wait_ready(srv, 200, START_DEADLINE_S).json()
        assert ok["status"] == "ready" and ok["failing"] == [], ok
        assert set(ok["parts"]) == {"model", "catalog", "broker", "index", "data"}, ok
        assert set(ok["parts"].values()) == {"ok"}, ok
        _assert_live(srv)

        # PostgreSQL goes away: the process still lives, and is not ready, for the catalog only
        pg.cut()
        _assert_live(srv)
        r = _wait_ready(srv, 503)
        body = r.json()
        assert body["status"] == "not ready" and body["failing"] == ["catalog"], body
        assert "catalog" in body["detail"] and "CLIPSEARCH_DATABASE_URL" in body["detail"], body
        assert body["parts"]["broker"] == "ok" and body["parts"]["data"] == "ok", body
        assert str(tmp_path) not in r.text and str(pg.port) not in r.text, r.text
        _assert_live(srv)
        # and comes back
        pg.restore()
        assert _wait_ready(srv, 200).json()["failing"] == []

        # Redis goes away: the broker is named, the catalog is fine
        redis.cut()
        _assert_live(srv)
        body = _wait_ready(srv, 503).json()
        assert body["failing"] == ["broker"], body
        assert "CLIPSEARCH_BROKER_URL" in body["parts"]["broker"], body
        redis.restore()
        assert _wait_ready(srv, 200).json()["status"] == "ready"
    finally:
        _stop(srv)
        pg.close()
        redis.close()


def _jpeg(path: Path, colour: tuple[int, int, int]) -> None:
    img = Image.new("RGB", (64, 48), colour)
    for x in range(0, 64, 8):
        img.putpixel((x, 24), (255 - colour[0], 40, 90))
    img.save(path, "JPEG", quality=90)


@pytest.mark.slow
def test_ready_on_a_healthy_embedded_library(tmp_path: Path, model_dir: Path) -> None:
    """``clipsearch serve`` as one command (SQLite, the embedded broker and worker), its photos
    ingested: live and ready both 200 without the token, every part ok."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 200, 40), (30, 40, 220)]):
        _jpeg(photos / f"p{i}.jpg", colour)
    srv = _serve(tmp_path, model_dir, "--images", str(photos))
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:  # the ingest done
            assert srv.proc.poll() is None, srv.log()[-3000:]
            assert time.monotonic() < deadline, srv.log()[-3000:]
            with contextlib.suppress(httpx.HTTPError, ValueError):
                jobs = srv.get("/api/jobs", headers=AUTH).json()
                if jobs and all(j["state"] in ("done", "failed") for j in jobs):
                    break
            time.sleep(0.3)
        assert srv.get("/api/health", headers=AUTH).json()["images"]["ready"] == 3
        r = _wait_ready(srv, 200)
        assert r.json() == {
            "status": "ready",
            "failing": [],
            "parts": dict.fromkeys(("model", "catalog", "broker", "index", "data"), "ok"),
            "detail": None,
        }
        _assert_live(srv)
        assert not list(srv.data_dir.glob(".ready-*"))  # the write probe leaves nothing behind
    finally:
        _stop(srv)


def _wait_jobs_done(srv: Server, deadline_s: float = START_DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        assert srv.proc.poll() is None, srv.log()[-3000:]
        assert time.monotonic() < deadline, srv.log()[-3000:]
        with contextlib.suppress(httpx.HTTPError, ValueError):
            jobs = srv.get("/api/jobs", headers=AUTH).json()
            if jobs and all(j["state"] in ("done", "failed") for j in jobs):
                return
        time.sleep(0.3)


def _reindex(srv: Server) -> None:
    r = httpx.post(srv.url + "/api/reindex", json={}, headers=AUTH, timeout=60)
    assert r.status_code == 202, r.text
    _wait_jobs_done(srv)


@pytest.mark.slow
def test_ready_names_index_files_gone_until_a_reindex(tmp_path: Path, model_dir: Path) -> None:
    """The index files deleted while the server is down: the next server lives and serves
    (exactly, from the catalog) but is not ready, naming the index and the repair; after
    `reindex` it is ready again."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 200, 40), (30, 40, 220)]):
        _jpeg(photos / f"p{i}.jpg", colour)
    srv = _serve(tmp_path, model_dir, "--images", str(photos))
    try:
        _wait_jobs_done(srv)
        _reindex(srv)
        deadline = time.monotonic() + FLIP_DEADLINE_S
        while not srv.get("/api/health").json()["index"]["version"]:
            assert time.monotonic() < deadline, srv.log()[-3000:]
            time.sleep(0.3)
        assert _wait_ready(srv, 200).json()["parts"]["index"] == "ok"
        _stop(srv)
        files = [p for p in (srv.data_dir / "index").rglob("*") if p.is_file()]
        assert files
        for f in files:
            f.unlink()
        srv = _serve(tmp_path, model_dir, "--images", str(photos))
        deadline = time.monotonic() + START_DEADLINE_S
        while "model" in (body := _wait_ready(srv, 503, START_DEADLINE_S).json())["failing"]:
            assert time.monotonic() < deadline, body  # still loading the model: not yet
            time.sleep(0.3)
        assert body["failing"] == ["index"], body
        assert "clipsearch reindex" in body["parts"]["index"], body
        _assert_live(srv)
        _reindex(srv)
        assert _wait_ready(srv, 200).json()["failing"] == []
    finally:
        _stop(srv)


def test_a_hung_check_is_waited_for_a_bounded_time_and_not_started_twice(
    make_client: Any, fake_library: Any, tmp_path: Path
) -> None:
    """A catalog whose connect never returns: ready answers 503 naming it after the check's
    time limit, live answers at once meanwhile, and a second probe waits on the same check
    instead of starting another thread."""
    release = threading.Event()
    connects: list[int] = []

    class HungEngine:
        def connect(self) -> Any:
            connects.append(1)
            release.wait(60)
            raise ConnectionError("gave up")

    class Store:
        def stats(self) -> dict[str, Any]:
            return {}

    class Celery:
        conf = type("Conf", (), {"task_default_queue": "q"})()

        def connection_for_write(self) -> Any:
            from kombu import Connection

            return Connection("memory://")

    fake_library.engine = HungEngine()
    fake_library.celery = Celery()
    fake_library.index = type("Index", (), {"index_damage": None, "served": None})()
    fake_library.data_dir = tmp_path
    client = make_client(fake_library, preload_model=False)
    try:
        for _ in range(2):
            r = client.get("/api/health/ready")
            assert r.status_code == 503, r.text
            assert r.json()["failing"] == ["catalog"], r.json()
            assert "did not answer within" in r.json()["parts"]["catalog"]
            assert client.get("/api/health/live").status_code == 200
        assert len(connects) == 1  # the second probe waited on the first one's check
    finally:
        release.set()
