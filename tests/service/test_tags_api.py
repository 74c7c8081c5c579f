"""Tags through the doors: the REST routes (list, create, update, delete, run, a tag's pictures
with cursor paging, confirm/reject, a picture's tags) against a real library, and `clipsearch
tags list|add|run|show|remove` as a user runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from svc_testlib import ingest_now
from test_cli import _env, run

from clipsearch.model.finetune.synthetic import SyntheticConfig, write_folder
from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings

TOKEN = "tags-token-for-tests-0123456789"


class Env:
    def __init__(self, client: TestClient, lib: Any) -> None:
        self.client, self.lib = client, lib

    def run_job(self, job_id: int) -> None:
        from clipsearch.indexer import tag_jobs
        from clipsearch.indexer.worker import WorkerContext

        ctx = WorkerContext(self.lib.config.worker_config())
        try:
            tag_jobs.run_tags(ctx, job_id)
        finally:
            ctx.dispose()


@pytest.fixture()
def env(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Env]:
    root = tmp_path / "pictures"
    write_folder(SyntheticConfig(image_size=32), 12, root)
    settings = Settings(
        data_dir=tmp_path / "data", model=str(tiny_model_dir), allowed_roots=[root],
        batch_window_ms=0.5, api_token=TOKEN,
    )  # fmt: skip
    lib = build_library(settings)
    assert ingest_now(lib, root).state == "done"
    with TestClient(create_app(settings, library=lib)) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield Env(client, lib)
    lib.close()


def test_tags_routes_define_run_page_and_decide(env: Env) -> None:
    c = env.client
    listed = c.get("/api/tags").json()
    assert {"documents", "receipts", "dogs", "city at night"} <= {t["name"] for t in listed}
    assert all(t["threshold"] is None and t["assigned"] == 0 for t in listed)

    r = c.post("/api/tags", json={"name": "circles", "descriptions": ["circle", "round shape"],
                                  "group": "shape", "templates": "clip7"})  # fmt: skip
    assert r.status_code == 201, r.text
    tag = r.json()
    assert tag["descriptions"] == ["circle", "round shape"] and tag["group"] == "shape"
    assert c.post("/api/tags", json={"name": "circles"}).status_code == 409
    assert c.post("/api/tags", json={"name": "x", "templates": "nope"}).status_code == 422
    no_token = c.post("/api/tags", json={"name": "y"}, headers={"Authorization": ""})
    assert no_token.status_code == 401

    r = c.post("/api/tags/run")
    assert r.status_code == 202 and r.json()["kind"] == "tags"
    env.run_job(r.json()["id"])
    assert c.get(f"/api/jobs/{r.json()['id']}").json()["state"] == "done"
    after_run = c.get("/api/tags/circles").json()
    assert after_run["id"] == tag["id"] and after_run["precision"] is not None

    ids = [i["id"] for i in c.get("/api/images", params={"limit": 50}).json()["items"]]
    assert len(ids) == 12
    for image_id in ids[:5]:
        r = c.put(f"/api/tags/{tag['id']}/images/{image_id}", json={"state": "confirmed"})
        assert r.status_code == 200 and r.json()["state"] == "confirmed", r.text
    r = c.put(f"/api/tags/circles/images/{ids[1]}", json={"state": "rejected"})
    assert r.json()["state"] == "rejected"
    assert c.put("/api/tags/circles/images/999999", json={"state": "rejected"}).status_code == 404

    # cursor paging over the tag's pictures, rejected ones never shown
    page1 = c.get("/api/tags/circles/images", params={"limit": 2}).json()
    assert [i["image"]["id"] for i in page1["items"]] == [ids[0], ids[2]]
    assert page1["tag"]["assigned"] == 4
    page2 = c.get(
        "/api/tags/circles/images", params={"limit": 2, "after": page1["next_after"]}
    ).json()
    assert [i["image"]["id"] for i in page2["items"]] == [ids[3], ids[4]]
    assert c.get("/api/tags/circles/images", params={"limit": 201}).status_code == 422

    # tag= in browse and search: only the tag's pictures (by name or id), rejected never
    browsed = c.get("/api/images", params={"tag": "circles", "limit": 50}).json()["items"]
    assert [i["id"] for i in browsed] == [ids[0], ids[2], ids[3], ids[4]]
    by_id = c.get("/api/images", params={"tag": str(tag["id"]), "limit": 50}).json()["items"]
    assert [i["id"] for i in by_id] == [ids[0], ids[2], ids[3], ids[4]]
    found = c.get(
        "/api/search", params={"q": "a shape", "tag": "circles", "min_relevance": 0, "k": 20}
    ).json()["results"]
    assert found and {h["id"] for h in found} <= {ids[0], ids[2], ids[3], ids[4]}
    assert c.get("/api/images", params={"tag": "no such tag"}).json()["items"] == []

    mine = c.get(f"/api/images/{ids[1]}/tags").json()
    assert [(t["name"], t["state"]) for t in mine] == [("circles", "rejected")]
    assert c.get("/api/images/999999/tags").status_code == 404

    # a re-run keeps the person's decisions
    r = c.post("/api/tags/run")
    env.run_job(r.json()["id"])
    again = c.get("/api/tags/circles/images", params={"limit": 50}).json()
    got = {i["image"]["id"] for i in again["items"]}
    assert {ids[0], ids[2], ids[3], ids[4]} <= got and ids[1] not in got

    r = c.patch("/api/tags/circles", json={"name": "rounds", "group": ""})
    assert r.status_code == 200 and r.json()["name"] == "rounds" and r.json()["group"] is None
    assert c.delete("/api/tags/rounds").json()["name"] == "rounds"
    assert c.get("/api/tags/rounds").status_code == 404
    assert c.get(f"/api/images/{ids[1]}/tags").json() == []


def test_tags_cli_list_add_run_show_remove(tmp_path: Path, tiny_model_dir: Path) -> None:
    pictures = tmp_path / "pictures"
    write_folder(SyntheticConfig(image_size=32), 6, pictures)
    env = _env(tmp_path / "data", tiny_model_dir)
    ingest = run(["ingest", str(pictures), "--wait", "--quiet", "--timeout", "150"], env)
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr

    added = run(["tags", "add", "squares", "-d", "square", "-d", "box", "--group", "shape"], env)
    assert added.returncode == 0, added.stderr
    assert "added tag" in added.stdout and "'squares'" in added.stdout
    ran = run(["tags", "run", "--wait", "--quiet", "--timeout", "150"], env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "(tags): done" in ran.stdout

    listed = json.loads(run(["tags", "list", "--json"], env).stdout)
    squares = next(t for t in listed if t["name"] == "squares")
    assert squares["descriptions"] == ["square", "box"] and squares["precision"] is not None
    assert "dogs" in {t["name"] for t in listed}

    shown = run(["tags", "show", "squares", "--confirm", "1", "--reject", "2"], env)
    assert shown.returncode == 0, shown.stderr
    assert "picture 1: 'squares' confirmed" in shown.stdout
    page = json.loads(run(["tags", "show", "squares", "--json"], env).stdout)
    got = [i["image"]["id"] for i in page["items"]]
    assert 1 in got and 2 not in got  # confirmed kept, rejected never shown
    assert page["items"][0]["state"] == "confirmed"

    # `clipsearch search --tag`: the API's tag filter, from the command line
    tagged = {i["image"]["id"] for i in page["items"]}
    found = run(["search", "a shape", "--tag", "squares", "--min-relevance", "0", "-k", "50",
                 "--no-server", "--json"], env)  # fmt: skip
    assert found.returncode == 0, found.stderr
    got_ids = {h["id"] for h in json.loads(found.stdout)}
    assert got_ids == tagged and 2 not in got_ids  # every tagged picture, the rejected never
    nothing = run(["search", "a shape", "--tag", "no such tag", "--no-server", "--json"], env)
    assert nothing.returncode == 0 and json.loads(nothing.stdout) == []

    missing = run(["tags", "show", "no such tag"], env)
    assert missing.returncode == 2 and "no tag" in missing.stderr
    removed = run(["tags", "remove", "squares"], env)
    assert removed.returncode == 0 and "removed tag" in removed.stdout
