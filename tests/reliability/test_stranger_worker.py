"""Issue 22, items 11 and 12: ``kill -9`` of a worker leaves no decoder process behind, and the
thumbnail temp files a killed decoder leaves are cleaned when a worker starts.

A real worker process (``python -m clipsearch.indexer.worker``) with a pool of two decoder
processes ingests real images; its descendants are read from /proc; it is SIGKILLed; every
descendant must be gone soon after (they were re-parented to PID 1 and alive minutes later).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "indexer") not in sys.path:
    sys.path.append(str(REPO / "tests" / "indexer"))

from workerutil import make_images, wait_for, worker_config, worker_log  # noqa: E402

from clipsearch.indexer.library import Library, LibraryConfig  # noqa: E402
from clipsearch.indexer.worker import start_worker_process  # noqa: E402

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def test_kill_9_of_a_worker_leaves_no_decoder_behind(tmp_path: Path, tiny_model_dir: Path) -> None:
    photos = tmp_path / "photos"
    make_images(photos, 12, seed=11)
    lib = Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            model_spec=str(tiny_model_dir),
            device="cpu",
            refresh_interval_s=3600,
        )
    )
    cfg = dataclasses.replace(
        worker_config(lib.data_dir, str(tiny_model_dir), lib.database_url), decode_workers=2
    )
    cfg = dataclasses.replace(cfg, queue_prefix=lib.config.queue_prefix)
    worker = start_worker_process(cfg, log_path=tmp_path / "worker.log", loglevel="INFO")
    leaked: set[int] = set()
    try:
        worker.wait_ready(180)
        job = lib.submit_ingest(str(photos))
        wait_for(lambda: lib.get_job(job.id).state == "done", 180, "the ingest", worker=worker)
        family = _descendants(worker.pid)
        assert len(family) >= 2, f"no decoder pool started: {family}\n{worker_log(worker)}"
        os.kill(worker.pid, signal.SIGKILL)
        worker.popen.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in family):
            time.sleep(0.1)  # polling /proc with a deadline
        leaked = {p for p in family if _alive(p)}
        assert not leaked, f"{len(leaked)} of {len(family)} worker descendants outlived it"
    finally:
        for pid in leaked:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if worker.popen.poll() is None:
            worker.kill()
        lib.close()


def test_thumbnail_temp_files_left_by_a_kill_are_removed_at_start(tmp_path: Path) -> None:
    from clipsearch.indexer import decode

    thumbs = tmp_path / "thumbnails"
    (thumbs / "ab").mkdir(parents=True)
    left = thumbs / "ab" / ".tmp-x1y2z3.jpg"  # what _write_thumbnail leaves when killed
    left.write_bytes(b"\xff\xd8 half a thumbnail")
    kept = thumbs / "ab" / ("ab" + "0" * 62 + ".jpg")
    kept.write_bytes(b"\xff\xd8 a thumbnail")
    fresh = thumbs / "ab" / ".tmp-being-written.jpg"
    fresh.write_bytes(b"\xff\xd8 being written right now by another worker")
    old = time.time() - 3600
    os.utime(left, (old, old))
    assert decode.clean_temp_files(thumbs) == 1
    assert not left.exists() and kept.exists() and fresh.exists()
