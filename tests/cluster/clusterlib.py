"""A clipsearch cluster on one machine, without Docker: what docker-compose.yml runs, as processes.

Every member is a real process started from the real command line: ``clipsearch worker`` (the
compose ``worker-*`` services) and ``clipsearch serve --no-worker`` (the ``api`` service), all
configured only through ``CLIPSEARCH_*`` environment variables, sharing one data folder, one
PostgreSQL catalog and one Redis broker. Used by tests/cluster/test_cluster.py and
bench/scaling.py. Waiting is by polling with a deadline, never by sleeping a guessed time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from testkit import free_port

REPO = Path(__file__).resolve().parents[2]
_SCRIPT = REPO / ".venv" / "bin" / "clipsearch"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "clipsearch.service.cli"]
TOKEN = "cluster-test-token-0123456789abcdef"

T = TypeVar("T")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Member:
    """One process of the cluster: a worker or an API server."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str | None = None  # API servers only
    ready_file: Path | None = None  # workers only

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a worker finishes its task, uvicorn drains), SIGKILL after ``timeout``."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def kill9(self) -> int:
        """SIGKILL: no shutdown code runs, whatever the process held is left as it was."""
        os.kill(self.pid, signal.SIGKILL)
        return self.popen.wait(30)


@dataclass
class Cluster:
    """The shared configuration of a cluster, and the members started from it."""

    data_dir: Path
    model_dir: Path
    database_url: str
    broker_url: str
    allowed_root: Path
    queue_prefix: str = field(default_factory=lambda: f"c{uuid.uuid4().hex[:8]}-")
    token: str = TOKEN
    extra_env: dict[str, str] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment every member gets, as compose's ``x-clipsearch-env`` block."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
        env.update(
            CLIPSEARCH_DATA_DIR=str(self.data_dir),
            CLIPSEARCH_DATABASE_URL=self.database_url,
            CLIPSEARCH_BROKER_URL=self.broker_url,
            CLIPSEARCH_QUEUE_PREFIX=self.queue_prefix,
            CLIPSEARCH_MODEL=str(self.model_dir),
            CLIPSEARCH_DEVICE="cpu",
            CLIPSEARCH_ALLOWED_ROOTS=str(self.allowed_root),
            CLIPSEARCH_CACHE=str(self.data_dir / "models-cache"),
            CLIPSEARCH_OFFLINE="1",
            # One thread per process: several processes share the machine's cores.
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> Member:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(
                [*CLI, *argv],
                env=dict(env),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return Member(name, popen, log_path)

    def start_worker(self, name: str, **env: str) -> Member:
        """``clipsearch worker``; ready once its ready file holds its pid (it consumes)."""
        run = self.data_dir / "run"
        run.mkdir(parents=True, exist_ok=True)
        ready = run / f"{name}-{uuid.uuid4().hex[:6]}.ready"
        member = self._spawn(
            name,
            ["worker", "--loglevel", "INFO"],
            self.env(CLIPSEARCH_WORKER_READY_FILE=str(ready), **env),
        )
        member.ready_file = ready
        self.members.append(member)
        return member

    def start_api(self, name: str, **env: str) -> Member:
        """``clipsearch serve --no-worker`` on a free loopback port, with the API token."""
        port = free_port()
        member = self._spawn(
            name,
            ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)],
            self.env(CLIPSEARCH_API_TOKEN=self.token, **env),
        )
        member.url = f"http://127.0.0.1:{port}"
        self.members.append(member)
        return member

    def wait_worker_ready(self, member: Member, timeout: float = 120.0) -> None:
        assert member.ready_file is not None

        def ready() -> bool:
            if not member.alive():
                raise AssertionError(
                    f"worker {member.name} exited with {member.popen.returncode}:\n{member.log()}"
                )
            return member.ready_file.exists() and member.ready_file.read_text().strip() == str(
                member.pid
            )

        wait_for(ready, timeout, f"worker {member.name} to consume its queue", member=member)

    def wait_api_ready(self, member: Member, timeout: float = 120.0) -> dict[str, Any]:
        def up() -> dict[str, Any] | None:
            try:
                r = httpx.get(f"{member.url}/api/health", timeout=5)
            except httpx.HTTPError:
                return None
            body = r.json() if r.status_code == 200 else None
            return body if body and body.get("status") == "ok" else None

        return wait_for(up, timeout, f"API {member.name} healthy", member=member)

    def stop_all(self) -> None:
        for member in reversed(self.members):
            with contextlib.suppress(Exception):
                member.stop(timeout=20)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.2,
    member: Member | None = None,
    members: list[Member] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``.

    A watched member that died meanwhile fails the wait at once, with its log.
    """
    watched = ([member] if member is not None else []) + list(members or [])
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for m in watched:
            if not m.alive():
                raise AssertionError(
                    f"{m.name} exited ({m.popen.returncode}) while waiting for {what}:\n{m.log()}"
                )
        if time.monotonic() > deadline:
            logs = "".join(f"\n--- {m.name}:\n{m.log(2500)}" for m in watched)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{logs}")
        time.sleep(interval)


def make_images(folder: Path, count: int, seed: int = 0, size: int = 32) -> list[Path]:
    """``count`` distinct small images, alternately PNG and JPEG, each its own noise pattern."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        base = rng.integers(0, 256, size=(1, 1, 3))
        noise = rng.integers(0, 256, size=(size // 4, size // 4, 3))
        pixels = np.clip(0.4 * base + 0.6 * noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels, "RGB").resize((size, size), Image.NEAREST)
        if i % 2:
            path = folder / f"img_{seed}_{i:05d}.jpg"
            img.save(path, "JPEG", quality=95)
        else:
            path = folder / f"img_{seed}_{i:05d}.png"
            img.save(path, "PNG")
        paths.append(path)
    return paths


@contextlib.contextmanager
def running(cluster: Cluster) -> Iterator[Cluster]:
    try:
        yield cluster
    finally:
        cluster.stop_all()
