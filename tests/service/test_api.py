"""The REST API against a real Library and catalog (SQLite), a tiny model saved to a folder,
and real image files ingested by the indexer's own task functions."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from svc_testlib import COLOURS, ingest_now, png_bytes, write_dated_jpeg, write_images

from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings


class Env:
    def __init__(self, client: TestClient, lib: Any, root: Path, files: dict[str, Path]):
        self.client = client
        self.lib = lib
        self.root = root
        self.files = files

    def id_of(self, name: str) -> int:
        target = str(self.files[name].resolve())
        items, _ = self.lib.list_images(limit=100)
        return next(i.id for i in items if i.path == target)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("api")
    root = base / "photos"
    files = {p.stem: p for p in write_images(root)}
    sub = root / "sub"
    files["dated"] = write_dated_jpeg(sub / "dated.jpg", "2021:06:01 12:00:00")
    png = sub / "logo.png"
    png.write_bytes(png_bytes((40, 40), (10, 120, 250)))
    files["logo"] = png
    # the mechanics of the API on every image: this server's default relevance cut is 0 (the
    # default cut of every door, 0.5, is checked in test_one_search.py)
    settings = Settings(
        data_dir=base / "data",
        model=str(tiny_model_dir),
        allowed_roots=[root],
        batch_window_ms=0.5,
        gallery_min_relevance=0.0,
    )
    lib = build_library(settings)
    job = ingest_now(lib, root)
    assert job.state == "done" and job.done == len(files), job
    with TestClient(create_app(settings, library=lib)) as client:
        yield Env(client, lib, root, files)
    lib.close()


def test_health_reports_model_counts_and_index(env: Env) -> None:
    r = env.client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["device"] == "cpu"
    assert body["images"]["ready"] == body["images"]["total"] >= len(env.files) - 1
    assert body["index"]["size"] + body["index"]["delta"] == body["images"]["ready"]


def test_text_search_get(env: Env) -> None:
    # the vectors alone: ranked by score (the default, hybrid, lifts red.jpg by its name)
    r = env.client.get("/api/search", params={"q": "a red photo", "k": 5, "mode": "semantic"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["text"] == "a red photo"
    assert body["took_ms"] >= 0
    results = body["results"]
    assert len(results) == 5
    scores = [h["score"] for h in results]
    assert scores == sorted(scores, reverse=True)
    assert len({h["id"] for h in results}) == 5
    for h in results:
        assert h["thumbnail_url"] == f"/api/v1/images/{h['id']}/thumbnail"
        assert h["file_url"] == f"/api/v1/images/{h['id']}/file"
        assert Path(h["path"]).is_relative_to(env.root.resolve())


def test_paging_is_consistent(env: Env) -> None:
    full = env.client.get("/api/search", params={"q": "sky", "k": 6}).json()["results"]
    first = env.client.get("/api/search", params={"q": "sky", "k": 3}).json()["results"]
    second = env.client.get("/api/search", params={"q": "sky", "k": 3, "offset": 3}).json()[
        "results"
    ]
    assert [h["id"] for h in first + second] == [h["id"] for h in full]


def test_negative_terms_change_the_ranking_vector(env: Env) -> None:
    plain = env.client.post("/api/search", json={"text": "beach", "k": 8}).json()
    neg = env.client.post("/api/search", json={"text": "beach -people", "k": 8}).json()
    same = env.client.post(
        "/api/search", json={"text": "beach", "negative": ["people"], "weights": [1, 0.5], "k": 8}
    ).json()
    assert neg["query"]["negative"] == ["people"]
    assert [h["score"] for h in plain["results"]] != [h["score"] for h in neg["results"]]
    # "-people" in the text and negative=["people"] with the default weights are the same query
    assert [(h["id"], round(h["score"], 5)) for h in neg["results"]] == [
        (h["id"], round(h["score"], 5)) for h in same["results"]
    ]
    r = env.client.post(
        "/api/search", json={"text": "beach", "negative": ["beach"], "weights": [1, 1]}
    )
    assert r.status_code == 400 and "cancel out" in r.json()["detail"]
    r = env.client.post("/api/search", json={"text": "beach", "weights": [1, 2]})
    assert r.status_code == 422 and "one weight per term" in r.json()["detail"]


def test_min_score_and_filters(env: Env) -> None:
    all_hits = env.client.post("/api/search", json={"text": "photo", "k": 50}).json()["results"]
    assert len(all_hits) == len(env.files)
    cut = all_hits[2]["score"]
    above = env.client.post("/api/search", json={"text": "photo", "k": 50, "min_score": cut}).json()
    assert [h["id"] for h in above["results"]] == [h["id"] for h in all_hits if h["score"] >= cut]

    def ids(filters: dict) -> set[int]:
        r = env.client.post("/api/search", json={"text": "photo", "k": 50, "filters": filters})
        assert r.status_code == 200, r.text
        return {h["id"] for h in r.json()["results"]}

    assert ids({"formats": ["png"]}) == {env.id_of("logo")}
    assert ids({"folder": str(env.root / "sub")}) == {env.id_of("logo"), env.id_of("dated")}
    assert ids({"date_from": "2021-05-01", "date_to": "2021-06-30"}) == {env.id_of("dated")}
    assert ids({"date_from": "2022-01-01"}) == set()
    r = env.client.post(
        "/api/search",
        json={"text": "x", "filters": {"date_from": "2022-01-01", "date_to": "2021-01-01"}},
    )
    assert r.status_code == 422


def test_filters_as_query_parameters_on_get_image_and_similar_search(env: Env) -> None:
    """GET /api/search, search by image and "more like this" take the same filters as POST."""
    sub = {env.id_of("logo"), env.id_of("dated")}

    def ids(r: Any) -> set[int]:
        assert r.status_code == 200, r.text
        return {h["id"] for h in r.json()["results"]}

    get = env.client.get
    assert ids(get("/api/search", params={"q": "photo", "k": 50, "format": "png"})) == {
        env.id_of("logo")
    }
    folder = str(env.root / "sub")
    assert ids(get("/api/search", params={"q": "photo", "k": 50, "folder": folder})) == sub
    everything = ids(get("/api/search", params={"q": "photo", "k": 50}))
    assert len(everything) == len(env.files)
    both = get("/api/search", params={"q": "photo", "k": 50, "format": ["PNG", "jpeg"]})
    assert ids(both) == everything  # repeatable, case-insensitive
    dated = {"date_from": "2021-05-01", "date_to": "2021-06-30"}
    assert ids(get("/api/search", params={"q": "photo", "k": 50, **dated})) == {env.id_of("dated")}
    red = env.id_of("red")
    similar = get(f"/api/images/{red}/similar", params={"k": 50, "folder": folder})
    assert ids(similar) == sub
    data = env.files["green"].read_bytes()
    upload = env.client.post(
        "/api/search/image",
        files={"file": ("g.jpg", data, "image/jpeg")},
        params={"k": 50, "folder": folder},
    )
    assert ids(upload) == sub  # the green photo itself is outside the folder
    bad = get(
        "/api/search", params={"q": "photo", "date_from": "2022-01-01", "date_to": "2021-01-01"}
    )
    assert bad.status_code == 422 and "date_from" in bad.json()["detail"]
    assert get("/api/search", params={"q": "x", "date_from": "June"}).status_code == 422
    too_many = get("/api/search", params={"q": "x", "format": ["PNG"] * 17})
    assert too_many.status_code == 422 and "16" in too_many.json()["detail"]


def test_image_search_finds_the_same_image_first(env: Env) -> None:
    data = env.files["green"].read_bytes()
    r = env.client.post(
        "/api/search/image", files={"file": ("g.jpg", data, "image/jpeg")}, params={"k": 3}
    )
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["id"] == env.id_of("green")
    assert top["score"] > 0.99


def test_more_like_this_excludes_the_example(env: Env) -> None:
    red = env.id_of("red")
    r = env.client.get(f"/api/images/{red}/similar", params={"k": 50})
    assert r.status_code == 200
    ids = [h["id"] for h in r.json()["results"]]
    assert red not in ids
    assert len(ids) == len(env.files) - 1
    assert env.client.get("/api/images/999999/similar").status_code == 404


def test_browse_and_get(env: Env) -> None:
    page = env.client.get("/api/images", params={"limit": 3}).json()
    assert page["total"] == len(env.files) and page["limit"] == 3 and len(page["items"]) == 3
    rest = env.client.get("/api/images", params={"limit": 50, "offset": 3}).json()["items"]
    assert len(rest) == len(env.files) - 3
    assert not {i["id"] for i in page["items"]} & {i["id"] for i in rest}
    ready = env.client.get("/api/images", params={"state": "failed"}).json()
    assert ready["total"] == 0
    img = env.client.get(f"/api/images/{env.id_of('dated')}").json()
    assert img["state"] == "ready" and img["format"] == "JPEG"
    assert img["width"] == 40 and img["height"] == 40
    assert img["taken_at"].startswith("2021-06-01T12:00:00")
    assert img["size"] == env.files["dated"].stat().st_size
    assert re.fullmatch(r"[0-9a-f]{64}", img["sha256"])
    r = env.client.get("/api/images/424242")
    assert r.status_code == 404 and "424242" in r.json()["detail"]
    r = env.client.get("/api/images", params={"limit": 100000})
    assert r.status_code == 422


def test_browse_pages_by_cursor(env: Env) -> None:
    """Walking GET /api/images with `after` = the previous page's `next_after` visits every image
    once, in id order, and the last page says there is no next one."""
    seen: list[int] = []
    after = None
    for _ in range(len(env.files) + 1):
        params = {"limit": 2} if after is None else {"limit": 2, "after": after}
        page = env.client.get("/api/images", params=params).json()
        seen += [i["id"] for i in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == len(env.files)
    assert env.client.get("/api/images", params={"after": -1}).status_code == 422
    jobs = env.client.get("/api/jobs", params={"limit": 1}).json()
    if jobs:
        older = env.client.get("/api/jobs", params={"before": jobs[0]["id"]}).json()
        assert all(j["id"] < jobs[0]["id"] for j in older)


def test_file_and_thumbnail_with_etag(env: Env) -> None:
    blue = env.id_of("blue")
    r = env.client.get(f"/api/images/{blue}/file")
    assert r.status_code == 200
    assert r.content == env.files["blue"].read_bytes()
    assert r.headers["content-type"] == "image/jpeg"
    assert "max-age" in r.headers["cache-control"]
    etag = r.headers["etag"]
    again = env.client.get(f"/api/images/{blue}/file", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = env.client.get(f"/api/images/{blue}/file", headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200

    t = env.client.get(f"/api/images/{blue}/thumbnail")
    assert t.status_code == 200 and t.headers["content-type"].startswith("image/")
    from PIL import Image

    thumb = Image.open(io.BytesIO(t.content))
    assert max(thumb.size) <= 256
    assert t.headers["etag"] != etag
    assert (
        env.client.get(
            f"/api/images/{blue}/thumbnail", headers={"If-None-Match": t.headers["etag"]}
        ).status_code
        == 304
    )


def test_ingest_job_lifecycle_with_a_bad_file(env: Env) -> None:
    extra = env.root / "more"
    write_images(extra, {"cyan": (0, 220, 220)})
    (extra / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    r = env.client.post("/api/ingest", json={"path": str(extra)})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and job["kind"] == "ingest"
    assert env.client.get(f"/api/jobs/{job['id']}").json()["state"] == "queued"
    # a worker picks it up (here: the same task functions, in this process)
    from clipsearch.indexer import runs
    from clipsearch.indexer.worker import WorkerContext

    ctx = WorkerContext(env.lib.config.worker_config())
    try:
        for batch in runs.run_ingest(ctx, None, job["id"]):
            runs.run_embed_batch(ctx, job["id"], batch)
    finally:
        ctx.dispose()
    done = env.client.get(f"/api/jobs/{job['id']}").json()
    assert done["state"] == "done"
    assert (done["done"], done["failed"]) == (1, 1)
    assert done["errors"][0]["path"].endswith("broken.jpg")
    assert done["errors"][0]["reason"]
    assert done["finished_at"] is not None
    listed = env.client.get("/api/jobs").json()
    assert listed[0]["id"] == job["id"]
    failed = env.client.get("/api/images", params={"state": "failed"}).json()["items"]
    assert [i["path"].endswith("broken.jpg") for i in failed] == [True]
    assert failed[0]["error"]
    assert env.client.get("/api/jobs/987654").status_code == 404


def test_metrics_count_searches_and_latency(env: Env) -> None:
    for q in ("one", "two", "three"):
        env.client.get("/api/search", params={"q": q})
    text = env.client.get("/metrics").text
    searches = re.search(r'^clipsearch_searches_total\{kind="text"\} (\S+)$', text, re.M)
    assert searches and float(searches.group(1)) >= 3
    assert (
        'clipsearch_http_request_duration_seconds_count{method="GET",route="/api/search",status="200"}'
        in text
    )
    assert re.search(r'^clipsearch_images\{state="ready"\} [1-9]', text, re.M)
    assert re.search(r'^clipsearch_jobs\{state="queued"\} \S+$', text, re.M)
    assert re.search(r"^clipsearch_index_vectors [1-9]", text, re.M)
    # the search's stages were timed
    assert re.search(
        r'^clipsearch_search_stage_duration_seconds_count\{stage="encode"\} [1-9]', text, re.M
    )
    assert re.search(
        r'^clipsearch_search_stage_duration_seconds_count\{stage="vector_search"\} [1-9]',
        text,
        re.M,
    )
    assert re.search(
        r'^clipsearch_search_stage_duration_seconds_count\{stage="catalog"\} [1-9]', text, re.M
    )
    assert "clipsearch_catalog_up 1.0" in text


def test_gallery_and_docs_are_served(env: Env) -> None:
    r = env.client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    spec = env.client.get("/openapi.json").json()
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert ops >= {
        "search_get", "search_post", "search_image", "similar_images", "list_images", "get_image",
        "image_thumbnail", "image_file", "delete_image", "ingest", "list_jobs", "get_job",
        "reindex", "health",
    }  # fmt: skip
    assert env.client.get("/docs").status_code == 200


def test_delete_removes_from_search_and_catalog(env: Env) -> None:
    yellow = env.id_of("yellow")
    data = env.files["yellow"].read_bytes()
    before = env.client.post(
        "/api/search/image", files={"file": ("y.jpg", data)}, params={"k": 1}
    ).json()
    assert before["results"][0]["id"] == yellow
    assert env.client.delete(f"/api/images/{yellow}").status_code == 204
    assert env.client.get(f"/api/images/{yellow}").status_code == 404
    assert env.client.get(f"/api/images/{yellow}/file").status_code == 404
    after = env.client.post(
        "/api/search/image", files={"file": ("y.jpg", data)}, params={"k": 50}
    ).json()
    assert yellow not in {h["id"] for h in after["results"]}
    assert env.files["yellow"].exists()  # the file on disk is left alone
    assert env.client.delete(f"/api/images/{yellow}").status_code == 404


def test_model_that_cannot_load_is_a_503_with_a_message(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", model=str(tmp_path / "no-such-model"))
    lib = build_library(settings)
    try:
        with TestClient(create_app(settings, library=lib)) as client:
            r = client.get("/api/search", params={"q": "cat"})
            assert r.status_code == 503
            assert "no-such-model" in r.json()["detail"]
            assert client.get("/api/images").status_code == 200  # browsing still works
    finally:
        lib.close()


def test_catalog_down_is_a_503(tmp_path: Path, tiny_model_dir: Path) -> None:
    db = tmp_path / "catalog.sqlite"
    settings = Settings(
        data_dir=tmp_path / "d", model=str(tiny_model_dir), database_url=f"sqlite:///{db}"
    )
    lib = build_library(settings)
    try:
        with TestClient(create_app(settings, library=lib)) as client:
            assert client.get("/api/health").status_code == 200
            db.unlink()
            db.mkdir()  # the catalog file is gone and cannot be recreated
            lib.engine.dispose()
            r = client.get("/api/images")
            assert r.status_code == 503, r.text
            assert "catalog" in r.json()["detail"]
            assert client.get("/api/health").status_code == 503
    finally:
        lib.close()


def test_colours_fixture_is_what_the_tests_assume() -> None:
    assert {"red", "green", "blue", "yellow"} <= set(COLOURS)


def test_removal_sticks_across_rescans_and_restore_brings_it_back(env: Env) -> None:
    folder = env.root / "kept"
    files = write_images(folder, {"teal": (0, 128, 128), "olive": (128, 128, 0)})
    ingest_now(env.lib, folder)
    teal = next(
        i.id for i in env.lib.list_images(limit=200)[0] if i.path == str(files[0].resolve())
    )
    data = files[0].read_bytes()

    def top_ids() -> list[int]:
        r = env.client.post("/api/search/image", files={"file": ("t.png", data)}, params={"k": 50})
        return [h["id"] for h in r.json()["results"]]

    total = env.client.get("/api/health").json()["images"]["total"]
    assert env.client.delete(f"/api/images/{teal}").status_code == 204
    assert env.client.get("/api/health").json()["images"]["total"] == total - 1
    page = env.client.get("/api/removed").json()
    removal = page["items"][0]
    assert removal["image_id"] == teal and removal["path"].endswith(files[0].name)
    assert removal["in_trash"] is False
    thumb = env.client.get(removal["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    # A rescan of the folder (what a restart of `serve --images` runs) does not add it back.
    job = ingest_now(env.lib, folder)
    assert job.params["scan"]["removed_by_user"] == 1
    assert teal not in top_ids()
    assert all(i["id"] != teal for i in env.client.get("/api/images?limit=200").json()["items"])
    # Restore by the id it had: 202 with the ingest job; once it ran, the image is searchable.
    r = env.client.post(f"/api/images/{teal}/restore")
    assert r.status_code == 202, r.text
    body = r.json()
    assert [x["id"] for x in body["restored"]] == [removal["id"]]
    from clipsearch.indexer import runs
    from clipsearch.indexer.worker import WorkerContext

    ctx = WorkerContext(env.lib.config.worker_config())
    try:
        for batch in runs.run_ingest(ctx, None, body["jobs"][0]["id"]):
            runs.run_embed_batch(ctx, body["jobs"][0]["id"], batch)
    finally:
        ctx.dispose()
    env.lib.refresh_index()
    back = top_ids()[0]
    assert back != teal and env.client.get(f"/api/images/{back}").json()["path"] == str(
        files[0].resolve()
    )
    assert env.client.post(f"/api/removed/{removal['id']}/restore").status_code == 404
    # From disk: the file moves into the data folder's trash, and restore puts it back.
    assert env.client.delete(f"/api/images/{back}", params={"from_disk": "true"}).status_code == 204
    assert not files[0].exists()
    moved = env.client.get("/api/removed").json()["items"][0]
    assert moved["in_trash"] is True and moved["image_id"] == back
    assert env.client.post(f"/api/removed/{moved['id']}/restore").status_code == 202
    assert files[0].read_bytes() == data


def test_removed_routes_need_the_token_to_change_anything(make_client: Any, tmp_path: Path) -> None:
    from svc_testlib import FakeLibrary

    client = make_client(FakeLibrary(), api_token="s3cret-token-for-tests")
    assert client.get("/api/removed").status_code == 401
    assert client.post("/api/removed/1/restore").status_code == 401
    assert client.post("/api/images/1/restore").status_code == 401
    assert client.delete("/api/images/1", params={"from_disk": "true"}).status_code == 401
