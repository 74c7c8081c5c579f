"""The clipsearch command line, run as a user runs it: a subprocess, checking its output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from svc_testlib import write_images
from testkit import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".venv" / "bin" / "clipsearch"
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "clipsearch.service.cli"]


def _env(data_dir: Path, model_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env["CLIPSEARCH_DATA_DIR"] = str(data_dir)
    if model_dir is not None:
        env["CLIPSEARCH_MODEL"] = str(model_dir)
    env.update(extra)
    return env


def run(
    args: list[str], env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("clipsearch: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_help_lists_every_command(tmp_path: Path) -> None:
    proc = run(["--help"], _env(tmp_path))
    assert proc.returncode == 0
    for cmd in (
        "serve",
        "ingest",
        "reindex",
        "worker",
        "status",
        "search",
        "embed",
        "remove",
        "removed",
        "restore",
        "folders",
        "watch",
        "unwatch",
        "duplicates",
        "finetune",
        "eval",
        "demo",
    ):
        assert cmd in proc.stdout
    serve = run(["serve", "--help"], _env(tmp_path))
    assert serve.returncode == 0
    for flag in (
        "--images",
        "--host",
        "--port",
        "--model",
        "--data-dir",
        "--insecure",
        "--no-worker",
    ):
        assert flag in serve.stdout


def test_user_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    assert_user_error(run(["ingest", str(tmp_path / "nope")], env), "no such folder")
    (tmp_path / "file.txt").write_text("x")
    assert_user_error(run(["ingest", str(tmp_path / "file.txt")], env), "not a folder")
    assert_user_error(run(["serve", "--host", "0.0.0.0"], env), "API token", "--insecure")
    assert_user_error(
        run(["serve", "--host", "0.0.0.0"], {**env, "CLIPSEARCH_API_TOKEN": "short"}),
        "16 characters",
    )
    assert_user_error(run(["embed", "--model", "x"], env), "nothing to embed")
    assert_user_error(
        run(["embed", "--model", str(tmp_path / "no-model"), "--text", "a"], env), "no-model"
    )
    assert_user_error(run(["embed", "--image", str(tmp_path / "missing.jpg")], env), "missing.jpg")
    bad = run(["search"], env)  # argparse's own usage error
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_embed_prints_normalised_vectors(tmp_path: Path, tiny_model_dir: Path) -> None:
    img = write_images(tmp_path / "imgs", {"red": (220, 10, 10)})[0]
    proc = run(
        [
            "embed",
            "--model",
            str(tiny_model_dir),
            "--text",
            "a dog",
            "--text",
            "a cat",
            "--image",
            str(img),
        ],
        _env(tmp_path / "data"),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dim"] == 32
    assert [t["text"] for t in out["texts"]] == ["a dog", "a cat"]
    assert out["images"][0]["path"] == str(img)
    vecs = np.array([t["embedding"] for t in out["texts"]] + [out["images"][0]["embedding"]])
    assert vecs.shape == (3, 32)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(vecs[0], vecs[1])


def test_ingest_wait_status_search(tmp_path: Path, tiny_model_dir: Path) -> None:
    photos = tmp_path / "photos"
    write_images(photos)
    (photos / "notes.jpg").write_bytes(b"not an image at all")
    env = _env(tmp_path / "data", tiny_model_dir)
    proc = run(["ingest", str(photos), "--wait", "--quiet", "--timeout", "150"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(ingest): done, 6 done, 1 failed of 7" in proc.stdout
    assert "notes.jpg" in proc.stdout  # the failure is named

    status = run(["status"], env)
    assert status.returncode == 0, status.stderr
    assert "images: 7 total, 6 ready, 0 pending, 1 failed" in status.stdout
    assert "(ingest): done" in status.stdout

    search = run(["search", "a red square", "-k", "3", "--min-relevance", "0"], env)
    assert search.returncode == 0, search.stderr
    lines = search.stdout.strip().splitlines()
    assert len(lines) == 3
    for rank, line in enumerate(lines, 1):
        assert line.split()[0] == str(rank)
        assert str(photos) in line


def _poll(fn, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout} s (last: {last})")


@pytest.fixture()
def served(
    tmp_path: Path, tiny_model_dir: Path
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    photos = tmp_path / "photos"
    write_images(photos)
    port = free_port()
    env = _env(tmp_path / "data", tiny_model_dir)
    proc = subprocess.Popen(
        [*CLI, "serve", "--images", str(photos), "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc, photos
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_serve_one_command(served: tuple[str, subprocess.Popen[str], Path]) -> None:
    base, proc, photos = served

    def health() -> dict | None:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read()}")
        r = httpx.get(f"{base}/api/health", timeout=5)
        return r.json() if r.status_code == 200 else None

    _poll(health, 90, "API up")
    jobs = _poll(
        lambda: [
            j
            for j in httpx.get(f"{base}/api/jobs", timeout=5).json()
            if j["kind"] == "ingest" and j["state"] == "done"  # a duplicates pass follows it
        ],
        150,
        "the --images folder ingested by the embedded worker",
    )
    assert jobs[0]["kind"] == "ingest" and jobs[0]["done"] == 6
    assert jobs[0]["params"]["path"] == str(photos.resolve())

    def search() -> list | None:
        params = {"q": "green", "k": 4, "min_relevance": 0}  # any 4 images: no cut
        r = httpx.get(f"{base}/api/search", params=params, timeout=30)
        assert r.status_code == 200
        found = r.json()["results"]
        return found if len(found) == 4 else None  # a file-name match can come before vectors

    # the API process picks up newly embedded vectors on its index refresh (every 2 s)
    results = _poll(search, 30, "the new images searchable")
    assert len(results) == 4
    page = httpx.get(f"{base}/", timeout=5)
    assert page.status_code == 200 and "<html" in page.text.lower()
    # the folder given to serve is the allowed root: its parent is not
    r = httpx.post(f"{base}/api/ingest", json={"path": str(photos.parent)}, timeout=5)
    assert r.status_code == 403
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


def _start_serve(
    photos: Path, port: int, env: dict[str, str], *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "serve", "--images", str(photos), "--port", str(port), *extra],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_a_removed_image_stays_gone_after_restarting_serve_until_restored(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    photos = tmp_path / "photos"
    write_images(photos)
    env = _env(tmp_path / "data", tiny_model_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def ingested(n_jobs: int) -> list | None:
        jobs = httpx.get(f"{base}/api/jobs", timeout=5).json()
        done = [j for j in jobs if j["kind"] == "ingest" and j["state"] == "done"]
        return done if len(done) >= n_jobs else None

    def paths() -> set[str]:
        items = httpx.get(f"{base}/api/images", params={"limit": 100}, timeout=5).json()["items"]
        return {i["path"] for i in items if i["state"] == "ready"}

    proc = _start_serve(photos, port, env)
    try:
        _poll(lambda: ingested(1), 150, "the --images folder ingested")
        items = httpx.get(f"{base}/api/images", params={"limit": 100}, timeout=5).json()["items"]
        victim = next(i for i in items if i["path"].endswith("red.jpg"))
        assert httpx.delete(f"{base}/api/images/{victim['id']}", timeout=10).status_code == 204
    finally:
        _stop(proc)

    # a photo added meanwhile: the restart scans the folder again (an unchanged one is not)
    write_images(photos, {"added": (240, 200, 20)})
    proc = _start_serve(photos, port, env)
    try:
        done = _poll(lambda: ingested(2), 150, "the --images folder scanned again at restart")
        assert done[0]["params"]["scan"]["removed_by_user"] == 1
        assert victim["path"] not in paths() and len(paths()) == 6
        listed = run(["removed"], env)
        assert listed.returncode == 0, listed.stderr
        removal_id = listed.stdout.split()[0]
        assert f"image {victim['id']}" in listed.stdout and "red.jpg" in listed.stdout
        restored = run(["restore", removal_id], env)
        assert restored.returncode == 0, restored.stderr
        assert "restored" in restored.stdout and "red.jpg" in restored.stdout
        # the serving process's worker ingests the folder again: red is back and searchable
        _poll(lambda: victim["path"] in paths(), 120, "the restored image back in the library")
        assert run(["removed"], env).stdout.strip() == "no removed images"
    finally:
        _stop(proc)


def test_serve_watches_its_folders_and_those_added_through_the_api_and_cli(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    write_images(photos)
    more = tmp_path / "more"
    more.mkdir()
    env = _env(tmp_path / "data", tiny_model_dir, CLIPSEARCH_WATCH_DEBOUNCE_S="0.3")
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def ready_paths() -> set[str]:
        items = httpx.get(f"{base}/api/images", params={"limit": 100}, timeout=5).json()["items"]
        return {i["path"] for i in items if i["state"] == "ready"}

    def folders() -> list[dict]:
        return httpx.get(f"{base}/api/folders", timeout=5).json()

    proc = _start_serve(photos, port, env, "--allowed-root", str(more))
    try:
        _poll(lambda: len(ready_paths()) == 6, 150, "the --images folder ingested")
        watched = _poll(
            lambda: [f for f in folders() if f["state"] == "watching"], 30, "the folder watched"
        )
        assert [f["path"] for f in watched] == [str(photos.resolve())]
        # a file copied into the watched folder is searchable without any API call
        Image.new("RGB", (50, 40), (200, 30, 200)).save(photos / "dropped.jpg", quality=90)
        _poll(
            lambda: str((photos / "dropped.jpg").resolve()) in ready_paths(),
            60,
            "the copied file ingested by the watcher",
        )
        # a folder added through the API is ingested and watched too
        r = httpx.post(f"{base}/api/folders", json={"path": str(more)}, timeout=10)
        assert r.status_code == 202, r.text
        added = r.json()
        assert added["path"] == str(more.resolve()) and added["last_job"]["kind"] == "ingest"
        _poll(
            lambda: any(f["id"] == added["id"] and f["state"] == "watching" for f in folders()),
            30,
            "the added folder watched",
        )
        Image.new("RGB", (50, 40), (20, 230, 90)).save(more / "later.jpg", quality=90)
        _poll(lambda: str((more / "later.jpg").resolve()) in ready_paths(), 60, "later.jpg")
        # outside the allowed roots: refused
        r = httpx.post(f"{base}/api/folders", json={"path": str(tmp_path)}, timeout=10)
        assert r.status_code == 403
        # the CLI sees the same list, and stops watching one
        listed = run(["folders"], env)
        assert listed.returncode == 0 and str(more.resolve()) in listed.stdout, listed.stderr
        assert "watching" in listed.stdout
        assert run(["unwatch", str(added["id"])], env).returncode == 0
        assert [f["path"] for f in folders()] == [str(photos.resolve())]
    finally:
        _stop(proc)


def test_the_cli_remembers_the_librarys_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    photos = tmp_path / "photos"
    write_images(photos)
    with_model = _env(tmp_path / "data", tiny_model_dir, CLIPSEARCH_OFFLINE="1")
    proc = run(["ingest", str(photos), "--wait", "--quiet", "--timeout", "150"], with_model)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # no --model: the catalog's model is used (the default ViT-B-32 is not even downloadable)
    plain = _env(tmp_path / "data", None, CLIPSEARCH_OFFLINE="1")
    status = run(["status"], plain)
    assert status.returncode == 0, status.stderr
    assert f"model: {tiny_model_dir.resolve()}" in status.stdout
    search = run(["search", "a red square", "-k", "2", "--min-relevance", "0"], plain)
    assert search.returncode == 0, search.stderr
    assert len(search.stdout.strip().splitlines()) == 2
    # another model asked for: said, with how to switch, and the library's model still answers
    other = run(
        ["search", "a red square", "-k", "2", "--min-relevance", "0", "--model", "ViT-B-32"], plain
    )
    assert other.returncode == 0, other.stderr
    assert "this library uses the model" in other.stderr
    assert "clipsearch reindex --model ViT-B-32" in other.stderr
    assert len(other.stdout.strip().splitlines()) == 2
