"""GET /api/duplicates and POST /api/duplicates/scan against a real library (tiny model, real
files, the duplicates job run in-process as a worker would), and a failed job's reason in
/api/jobs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageEnhance
from svc_testlib import ingest_now

from clipsearch.indexer import duplicates
from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings


def _photo(seed: int, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    arr = np.zeros((size, size, 3))
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        arr[..., c] = 0.5 + 0.4 * np.sin(3 * (a * x + b * y) + 6 * p)
    cx, cy = rng.uniform(0.3, 0.7, 2)
    arr[(x - cx) ** 2 + (y - cy) ** 2 < 0.03] = rng.uniform(0, 1, 3)
    return Image.fromarray((arr * 255).clip(0, 255).astype(np.uint8), "RGB")


class Env:
    def __init__(self, client: TestClient, lib: Any, root: Path) -> None:
        self.client, self.lib, self.root = client, lib, root

    def run_jobs(self, job_id: int) -> None:
        from clipsearch.indexer import duplicate_jobs
        from clipsearch.indexer.worker import WorkerContext

        ctx = WorkerContext(self.lib.config.worker_config())
        try:
            duplicate_jobs.run_duplicates(ctx, job_id)
        finally:
            ctx.dispose()


@pytest.fixture()
def env(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Env]:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(4):
        _photo(40 + i).save(root / f"p{i}.jpg", quality=92)
    (root / "backup").mkdir()
    shutil.copy(root / "p0.jpg", root / "backup" / "p0.jpg")
    ImageEnhance.Brightness(_photo(41)).enhance(1.1).save(root / "p1-edited.jpg", quality=75)
    settings = Settings(
        data_dir=tmp_path / "data", model=str(tiny_model_dir), allowed_roots=[root],
        batch_window_ms=0.5, api_token="dup-token-for-tests-0123456789",
    )  # fmt: skip
    lib = build_library(settings)
    assert ingest_now(lib, root).state == "done"
    with TestClient(create_app(settings, library=lib)) as client:
        client.headers["Authorization"] = "Bearer dup-token-for-tests-0123456789"
        yield Env(client, lib, root)
    lib.close()


def _names(group: dict[str, Any]) -> set[str]:
    return {Path(m["image"]["path"]).name + ("@backup" if "/backup/" in m["image"]["path"] else "")
            for m in group["members"]}  # fmt: skip


def test_scan_then_list_groups_then_remove_one(env: Env) -> None:
    before = env.client.get("/api/duplicates").json()
    assert before["items"] == [] and before["stale"] is True and before["job"] is None
    assert before["thresholds"]["near_similarity"] == pytest.approx(0.95)

    r = env.client.post("/api/duplicates/scan")
    assert r.status_code == 202 and r.json()["kind"] == "duplicates"
    job_id = r.json()["id"]
    # a second request while it is queued returns the same job instead of queueing another
    assert env.client.post("/api/duplicates/scan", json={"full": True}).json()["id"] == job_id
    env.run_jobs(job_id)

    page = env.client.get("/api/duplicates").json()
    assert page["stale"] is False and page["job"]["state"] == "done"
    # four pictures are too few to measure: the fixed values, and no pixel cut, are what it shows
    with env.lib.Session() as s:
        assert duplicates.applied_thresholds(s) is None
    shown = page["thresholds"]
    assert shown["mode"] == "default" and shown["pixel_match"] is None
    groups = {g["kind"]: g for g in page["items"]}
    assert set(groups) == {"exact", "near"}, page["items"]
    assert _names(groups["exact"]) == {"p0.jpg", "p0.jpg@backup"}
    assert _names(groups["near"]) == {"p1.jpg", "p1-edited.jpg"}
    for g in page["items"]:
        assert g["id"] == min(m["image"]["id"] for m in g["members"])
        assert all(m["reason"] and m["image"]["thumbnail_url"] for m in g["members"])
    assert [g["kind"] for g in env.client.get("/api/duplicates?kind=near").json()["items"]] == [
        "near"
    ]
    # keyset paging: a page of one, then the next after it
    first = env.client.get("/api/duplicates?limit=1").json()
    assert len(first["items"]) == 1 and first["next_after"] == first["items"][0]["id"]
    second = env.client.get(f"/api/duplicates?limit=1&after={first['next_after']}").json()
    assert second["items"][0]["id"] > first["items"][0]["id"]

    # Keep one: remove the backup copy with the remove API; the group is gone from the list.
    backup = next(
        m["image"]["id"] for m in groups["exact"]["members"] if "/backup/" in m["image"]["path"]
    )
    assert env.client.delete(f"/api/images/{backup}").status_code == 204
    kinds = [g["kind"] for g in env.client.get("/api/duplicates").json()["items"]]
    assert kinds == ["near"]
    assert env.client.get("/api/duplicates").json()["stale"] is True


def test_bad_parameters_get_422_and_writes_need_the_token(env: Env) -> None:
    for query in ("kind=bursts", "after=-1", "limit=0", "limit=201", "after=abc"):
        r = env.client.get(f"/api/duplicates?{query}")
        assert r.status_code == 422, (query, r.text)
    anonymous = TestClient(env.client.app)
    assert anonymous.post("/api/duplicates/scan").status_code == 401
    assert anonymous.get("/api/duplicates").status_code == 401


def test_a_failed_job_says_why_in_the_jobs_api(env: Env) -> None:
    from clipsearch.indexer import jobs, runs
    from clipsearch.indexer.worker import WorkerContext

    gone = env.root / "soon-gone"
    gone.mkdir()
    job = env.lib.submit_ingest(str(gone))
    gone.rmdir()
    ctx = WorkerContext(env.lib.config.worker_config())
    try:
        with pytest.raises(Exception) as info:
            runs.run_ingest(ctx, None, job.id)
        jobs.fail_job(ctx, job.id, info.value)
    finally:
        ctx.dispose()
    out = env.client.get(f"/api/jobs/{job.id}").json()
    assert out["state"] == "failed"
    assert "soon-gone" in out["message"], out
    listed = next(j for j in env.client.get("/api/jobs").json() if j["id"] == job.id)
    assert listed["message"] == out["message"]


def test_a_finished_ingest_queues_a_duplicates_job(env: Env) -> None:
    from clipsearch.indexer import runs
    from clipsearch.indexer.celery_app import TASK_DUPLICATES
    from clipsearch.indexer.worker import WorkerContext

    class App:
        def __init__(self) -> None:
            self.sent: list[tuple[str, list[int]]] = []

        def send_task(self, name: str, args: list[int]) -> None:
            self.sent.append((name, args))

    _photo(99).save(env.root / "new.jpg", quality=90)
    job = env.lib.submit_ingest(str(env.root))
    ctx = WorkerContext(env.lib.config.worker_config())
    app = App()
    try:
        for batch in runs.run_ingest(ctx, None, job.id):
            runs.run_embed_batch(ctx, job.id, batch, app)
    finally:
        ctx.dispose()
    dup_jobs = [a[0] for name, a in app.sent if name == TASK_DUPLICATES]
    assert len(dup_jobs) == 1
    assert env.client.get(f"/api/jobs/{dup_jobs[0]}").json()["kind"] == "duplicates"
