"""Albums through the doors: the REST routes (create hand-picked and smart albums, page them
with a cursor, pin/exclude/remove, export a zip and a folder of links, the errors a user meets)
against a real library, and `clipsearch albums …` as a user runs it."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from svc_testlib import ingest_now
from test_cli import _env, run

from clipsearch.indexer import catalog
from clipsearch.model.finetune.synthetic import SyntheticConfig, write_folder
from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings

TOKEN = "albums-token-for-tests-0123456789"


class Env:
    def __init__(self, client: TestClient, lib: Any, root: Path) -> None:
        self.client, self.lib, self.root = client, lib, root

    def run_job(self, job_id: int) -> None:
        from clipsearch.indexer import album_jobs
        from clipsearch.indexer.worker import WorkerContext

        ctx = WorkerContext(self.lib.config.worker_config())
        try:
            album_jobs.run_albums(ctx, job_id)
        finally:
            ctx.dispose()


@pytest.fixture()
def env(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Env]:
    root = tmp_path / "pictures"
    write_folder(SyntheticConfig(image_size=32), 8, root / "a")
    write_folder(SyntheticConfig(image_size=32, seed=3), 4, root / "b")
    settings = Settings(
        data_dir=tmp_path / "data", model=str(tiny_model_dir), allowed_roots=[root],
        batch_window_ms=0.5, api_token=TOKEN,
    )  # fmt: skip
    lib = build_library(settings)
    assert ingest_now(lib, root).state == "done"
    with TestClient(create_app(settings, library=lib)) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield Env(client, lib, root)
    lib.close()


def _page_ids(c: TestClient, album: str, **params: Any) -> list[int]:
    r = c.get(f"/api/albums/{album}/images", params={"limit": 50, **params})
    assert r.status_code == 200, r.text
    return [i["image"]["id"] for i in r.json()["items"]]


def test_albums_routes_create_page_change_and_export(env: Env) -> None:
    c = env.client
    images = c.get("/api/images", params={"limit": 50}).json()["items"]
    ids = [i["id"] for i in images]
    assert len(ids) == 12
    r = c.post("/api/albums", json={"name": "Trip"})
    assert r.status_code == 201 and r.json()["kind"] == "manual", r.text
    assert c.post("/api/albums", json={"name": "Trip"}).status_code == 409
    assert c.post("/api/albums", json={"name": ""}).status_code == 422
    no_token = c.post("/api/albums", json={"name": "x"}, headers={"Authorization": ""})
    assert no_token.status_code == 401
    r = c.post("/api/albums/Trip/images", json={"action": "add", "ids": ids[:5]})
    assert r.status_code == 200 and r.json()["size"] == 5, r.text
    assert (
        c.post("/api/albums/Trip/images", json={"action": "add", "ids": [10**9]}).status_code == 404
    )

    # cursor paging
    p1 = c.get("/api/albums/Trip/images", params={"limit": 2}).json()
    p2 = c.get("/api/albums/Trip/images", params={"limit": 2, "after": p1["next_after"]}).json()
    assert [i["image"]["id"] for i in p1["items"] + p2["items"]] == ids[:4]
    assert c.get("/api/albums/Trip/images", params={"limit": 201}).status_code == 422
    assert c.get("/api/albums/nope/images").status_code == 404
    c.post("/api/albums/Trip/images", json={"action": "remove", "ids": [ids[0]]})
    assert _page_ids(c, "Trip") == ids[1:5]

    # the zip holds the files as they are on disk
    r = c.get("/api/albums/Trip/export.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = sorted(zf.namelist())
        assert len(names) == 4
        first = images[1]
        path = catalog.path_from_db(first["path"])
        assert zf.read(f"{first['id']}-{Path(path).name}") == Path(path).read_bytes()

    # links: a new folder inside the allowed folders only
    dest = env.root / "exports" / "trip"
    (env.root / "exports").mkdir()
    r = c.post("/api/albums/Trip/export", json={"destination": str(dest)})
    assert r.status_code == 200 and r.json()["linked"] == 4, r.text
    assert sorted(os.readlink(p) for p in dest.iterdir()) == sorted(
        catalog.path_from_db(i["path"]) for i in images[1:5]
    )
    again = c.post("/api/albums/Trip/export", json={"destination": str(dest)})
    assert again.status_code == 409 and "not an empty folder" in again.json()["detail"]
    outside = c.post("/api/albums/Trip/export", json={"destination": "/tmp/elsewhere-album"})
    assert outside.status_code == 403

    # a smart album: every picture of folder b, computed by the albums job
    b = str((env.root / "b").resolve())
    r = c.post("/api/albums", json={"name": "B", "query": {"text": "a picture",
               "filters": {"folder": b}, "min_relevance": 0}})  # fmt: skip
    assert r.status_code == 201 and r.json()["kind"] == "smart", r.text
    assert r.json()["computed_at"] is None
    jobs = c.get("/api/jobs", params={"limit": 5}).json()
    job = next(
        j for j in (jobs["items"] if isinstance(jobs, dict) else jobs) if j["kind"] == "albums"
    )
    env.run_job(job["id"])
    in_b = {i["id"] for i in images if catalog.path_from_db(i["path"]).startswith(b + "/")}
    assert len(in_b) == 4 and set(_page_ids(c, "B")) == in_b
    assert c.get("/api/albums/B").json()["computed_at"] is not None
    pinned, excluded = ids[0], sorted(in_b)[0]
    c.post("/api/albums/B/images", json={"action": "pin", "ids": [pinned]})
    c.post("/api/albums/B/images", json={"action": "exclude", "ids": [excluded]})
    r = c.post("/api/albums/refresh")
    assert r.status_code == 202 and r.json()["kind"] == "albums"
    env.run_job(r.json()["id"])
    assert set(_page_ids(c, "B")) == (in_b - {excluded}) | {pinned}
    assert _page_ids(c, "B", excluded=True) == [excluded]
    bad = c.post("/api/albums", json={"name": "C", "query": {"text": "  "}})
    assert bad.status_code == 400 and "empty" in bad.json()["detail"]
    assert c.patch("/api/albums/Trip", json={"query": {"text": "dog"}}).status_code == 400

    listed = c.get("/api/albums").json()
    assert [(a["name"], a["size"]) for a in listed] == [("B", 4), ("Trip", 4)]
    assert c.delete("/api/albums/Trip").json()["name"] == "Trip"
    assert c.get("/api/albums/Trip").status_code == 404
    assert len(c.get("/api/images", params={"limit": 50}).json()["items"]) == 12


def test_albums_cli_create_add_show_export_delete(tmp_path: Path, tiny_model_dir: Path) -> None:
    pictures = tmp_path / "pictures"
    write_folder(SyntheticConfig(image_size=32), 4, pictures)
    env = _env(tmp_path / "data", tiny_model_dir)
    ingest = run(["ingest", str(pictures), "--wait", "--quiet", "--timeout", "150"], env)
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr

    made = run(["albums", "create", "Best"], env)
    assert made.returncode == 0 and "Best (hand-picked): 0 pictures" in made.stdout, made.stderr
    added = run(["albums", "add", "Best", "1", "3"], env)
    assert added.returncode == 0 and "2 pictures" in added.stdout, added.stderr
    page = json.loads(run(["albums", "show", "Best", "--json"], env).stdout)
    assert [i["image"]["id"] for i in page["items"]] == [1, 3]
    assert [i["state"] for i in page["items"]] == ["pinned", "pinned"]

    smart = run(["albums", "create", "All", "--query", "a picture", "--min-relevance", "0",
                 "--wait", "--quiet", "--timeout", "150"], env)  # fmt: skip
    assert smart.returncode == 0, smart.stdout + smart.stderr
    listed = run(["albums", "list"], env).stdout
    assert "All (smart): 4 pictures" in listed and "Best (hand-picked): 2 pictures" in listed
    excluded = run(["albums", "exclude", "All", "2"], env)
    assert "3 pictures, 1 excluded" in excluded.stdout, excluded.stdout + excluded.stderr

    target = tmp_path / "best.zip"
    exported = run(["albums", "export", "Best", "--zip", str(target)], env)
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(target) as zf:
        assert len(zf.namelist()) == 2
    twice = run(["albums", "export", "Best", "--zip", str(target)], env)
    assert twice.returncode == 2 and "exists" in twice.stderr
    missing = run(["albums", "show", "no such album"], env)
    assert missing.returncode == 2 and "no album" in missing.stderr
    no_ids = run(["albums", "pin", "Best"], env)
    assert no_ids.returncode == 2 and "needs picture ids" in no_ids.stderr
    gone = run(["albums", "delete", "Best"], env)
    assert gone.returncode == 0 and "deleted album" in gone.stdout
