"""`clipsearch serve` refuses at once, with a message saying what to do, a port already in use
(before loading any model) and a second serve on the same data folder; run as a user runs it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
from test_cli import CLI, REPO, _env, _poll
from testkit import free_port


def test_a_port_in_use_is_named_before_any_model_is_loaded(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        # a model that does not exist: had serve loaded it first, this would be the error
        env = _env(tmp_path / "data", None, CLIPSEARCH_MODEL=str(tmp_path / "no-such-model"))
        started = time.monotonic()
        proc = subprocess.run(
            [*CLI, "serve", "--port", str(port)],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert f"port {port}" in proc.stderr and "--port" in proc.stderr, proc.stderr
    assert "no-such-model" not in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60


def test_a_second_serve_on_the_same_data_folder_is_refused(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    env = _env(tmp_path / "data", tiny_model_dir)
    port = free_port()
    first = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def up() -> bool:
            if first.poll() is not None:
                raise AssertionError(f"the first serve exited: {first.stderr.read()}")
            return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200

        _poll(up, 120, "the first serve up")
        other_port = free_port()
        second = subprocess.run(
            [*CLI, "serve", "--port", str(other_port)],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert "already using the data folder" in second.stderr, second.stderr
        assert f"port {port}" in second.stderr and "--data-dir" in second.stderr
        # the first one is unharmed
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
    finally:
        first.send_signal(signal.SIGINT)
        try:
            first.wait(30)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait(10)
    # once it stopped, the folder is free again: the lock died with the process
    port3 = free_port()
    third = subprocess.Popen(
        [*CLI, "serve", "--port", str(port3)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _poll(
            lambda: httpx.get(f"http://127.0.0.1:{port3}/api/health", timeout=5).status_code == 200,
            120,
            "a new serve on the freed data folder",
        )
    finally:
        third.send_signal(signal.SIGINT)
        try:
            third.wait(30)
        except subprocess.TimeoutExpired:
            third.kill()
            third.wait(10)
