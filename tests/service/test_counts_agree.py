"""Every door gives the same counts for the same library (issue 24): a folder with good pictures,
one corrupt file and one link leading out of it, ingested and scanned again. The job's summary,
/api/health, the gallery's total (/api/images) and `clipsearch status` say the same numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from svc_testlib import TOKEN, ingest_now, write_images

from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".venv" / "bin" / "clipsearch"
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "clipsearch.service.cli"]


def test_job_health_gallery_and_status_count_the_same(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = tmp_path / "photos"
    good = write_images(root)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a picture")
    write_images(tmp_path / "elsewhere", {"outside": (10, 200, 10)})
    os.symlink(tmp_path / "elsewhere" / "outside.jpg", root / "link.jpg")
    settings = Settings(
        data_dir=tmp_path / "data",
        model=str(tiny_model_dir),
        images=[root],
        api_token=TOKEN,
        public_read=True,
        batch_window_ms=0.5,
    )
    lib = build_library(settings)
    try:
        first = ingest_now(lib, root)
        again = ingest_now(lib, root)
        with TestClient(create_app(settings, library=lib)) as client:
            health = client.get("/api/health").json()["images"]
            gallery = client.get("/api/images", params={"limit": 1}).json()["total"]
    finally:
        lib.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env.update(CLIPSEARCH_DATA_DIR=str(tmp_path / "data"), CLIPSEARCH_MODEL=str(tiny_model_dir))
    proc = subprocess.run(
        [*CLI, "status", "--json"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)["stats"]["images"]
    assert (first.state, first.done, first.failed) == ("done", len(good), 1)
    assert again.state == "done" and again.total == 0 and again.errors == []  # up to date
    # the pictures in the library, the files that could not be read, all catalogued files
    ready, failed = len(good), 1
    folder = again.params["scan"]["library"]
    assert (folder["ready"], folder["failed"], folder["total"]) == (ready, failed, ready + failed)
    assert (folder["skipped"], folder["problems"]) == (1, 2)  # the link, and with the corrupt
    for door in (health, status):
        assert (door["ready"], door["failed"], door["pending"]) == (ready, failed, 0)
        assert door["total"] == ready + failed == gallery
