"""Celery's own tools work on clipsearch's workers: ``celery -A clipsearch.indexer.worker_app``
reaches a running ``clipsearch worker`` on a real Redis broker, and the queues are the documented
ones (ingestion and embedding apart from index builds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from workerutil import running_worker, worker_config

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _celery(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "clipsearch.indexer.worker_app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_celery_inspect_reaches_a_running_worker(
    tmp_path: Path, tiny_model_dir: Path, redis_url: str
) -> None:
    config = worker_config(tmp_path / "data", str(tiny_model_dir), broker_url=redis_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env.update(
        CLIPSEARCH_DATA_DIR=str(tmp_path / "data"),
        CLIPSEARCH_BROKER_URL=redis_url,
        CLIPSEARCH_QUEUE_PREFIX=config.queue_prefix,
        CLIPSEARCH_MODEL=str(tiny_model_dir),
    )
    with running_worker(config) as worker:
        ping = _celery(env, "inspect", "ping", "--timeout", "10")
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "pong" in ping.stdout, ping.stdout
        assert f"clipsearch-{worker.popen.pid}@" in ping.stdout, ping.stdout

        queues = _celery(env, "inspect", "active_queues", "--timeout", "10")
        assert queues.returncode == 0, queues.stdout + queues.stderr
        prefix = config.queue_prefix
        assert f"'{prefix}clipsearch'" in queues.stdout, queues.stdout
        assert f"'{prefix}clipsearch.builds'" in queues.stdout, queues.stdout

    # another library's prefix on the same broker reaches no worker of this one
    other = {**env, "CLIPSEARCH_QUEUE_PREFIX": "someone-else-"}
    with running_worker(config):
        lonely = _celery(other, "inspect", "ping", "--timeout", "3")
    assert "pong" not in lonely.stdout, lonely.stdout
