"""Restarting `clipsearch serve --images DIR` on an unchanged folder adds no job; a folder that
changed while nothing watched it gets one. Run as a user runs it: real files, the real command,
successive starts on one data folder; the job list read through the API and `clipsearch status`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
from svc_testlib import write_images
from test_cli import _env, _poll, _start_serve, _stop, run
from testkit import free_port


def _jobs(base: str) -> list[dict]:
    return httpx.get(f"{base}/api/jobs", timeout=5).json()


def _settled(base: str, proc: subprocess.Popen[str]) -> list[dict] | None:
    """The job list once no job is queued or running (None until then)."""
    if proc.poll() is not None:
        raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read()}")
    jobs = _jobs(base)
    return None if any(j["state"] in ("queued", "running") for j in jobs) else jobs


def _watching(base: str) -> bool:
    folders = httpx.get(f"{base}/api/folders", timeout=5).json()
    return bool(folders) and all(f["state"] == "watching" for f in folders)


def _ready(base: str) -> set[str]:
    items = httpx.get(f"{base}/api/images", params={"limit": 100}, timeout=5).json()["items"]
    return {Path(i["path"]).name for i in items if i["state"] == "ready"}


def test_restarting_serve_on_an_unchanged_folder_adds_no_job(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    names = {p.name for p in write_images(photos)}
    env = _env(tmp_path / "data", tiny_model_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    # first start: the folder is ingested
    proc = _start_serve(photos, port, env)
    try:
        _poll(lambda: _ready(base) == names, 150, "the --images folder ingested")
        first = _poll(lambda: _settled(base, proc), 120, "the first start's jobs finished")
        assert any(j["kind"] == "ingest" and j["done"] == len(names) for j in first)
    finally:
        _stop(proc)

    # second start, nothing changed on disk: served and watched, and no new job at all
    proc = _start_serve(photos, port, env)
    try:
        _poll(lambda: _watching(base), 120, "the folder watched after the restart")
        after = _poll(lambda: _settled(base, proc), 60, "the restart settled")
        assert [j["id"] for j in after] == [j["id"] for j in first]
        assert _ready(base) == names
    finally:
        _stop(proc)
    status = run(["status", "--json"], env)
    assert status.returncode == 0, status.stderr
    assert [j["id"] for j in json.loads(status.stdout)["jobs"]] == [j["id"] for j in first]

    # a file added while nothing watched: the next start queues an ingest that picks it up
    Image.new("RGB", (60, 40), (250, 120, 10)).save(photos / "added-offline.jpg", quality=90)
    proc = _start_serve(photos, port, env)
    try:
        _poll(lambda: "added-offline.jpg" in _ready(base), 150, "the added file ingested")
        jobs = _poll(lambda: _settled(base, proc), 120, "the third start's jobs finished")
        known = {j["id"] for j in first}
        new_ingests = [j for j in jobs if j["kind"] == "ingest" and j["id"] not in known]
        assert len(new_ingests) == 1, jobs
        assert new_ingests[0]["params"]["scan"]["found"] == len(names) + 1
    finally:
        _stop(proc)
