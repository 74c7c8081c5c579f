"""One search behind every door (issue 21): the REST API and the CLI (asking the running server,
or searching on its own) give the same ids in the same order under the same cut, in every mode;
results are ordered by the relevance they show and cut on it; every page answers down to the
documented depth in every mode; the CLI's ingest refuses a link out of its folder as the
server's does."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from svc_testlib import ingest_now, write_images
from testkit import free_port

from clipsearch.indexer import catalog
from clipsearch.indexer.relevance import DEFAULT_MIN_RELEVANCE
from clipsearch.service.app import build_library, create_app
from clipsearch.service.cli import main
from clipsearch.service.runfile import RUN_FILE, remove_run_file, write_run_file
from clipsearch.service.settings import Settings

N_FILLED = 2000
MODES = ("semantic", "text", "hybrid")


def _fill(lib: Any, n: int, word: str, seed: int = 0) -> None:
    """``n`` ready images named ``<word>_<i>.jpg``, with random vectors of the served model,
    through the catalog's tables (the rows an ingest writes, without decoding; the keyword index
    follows the names by its triggers)."""
    with lib.Session() as s:
        model_id, dim = s.execute(
            sa.select(catalog.Embedding.model_id, sa.func.length(catalog.Embedding.vector))
        ).first()
    dim //= 4  # float32 bytes
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    now = catalog.utcnow()
    rows = [
        {
            "path": f"/filled/f{i // 500}/{word}_{i}.jpg",
            "folder": f"/filled/f{i // 500}",
            "size": 1000,
            "mtime_ns": 1,
            "sha256": f"f{i:063x}",
            "width": 64,
            "height": 64,
            "format": "JPEG",
            "state": "ready",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(n)
    ]
    with lib.Session() as s:
        s.execute(sa.insert(catalog.Image), rows)
        s.execute(
            sa.insert(catalog.Embedding),
            [
                {
                    "sha256": r["sha256"],
                    "model_id": model_id,
                    "vector": catalog.vector_to_bytes(v),
                    "created_at": now,
                }
                for r, v in zip(rows, vecs, strict=True)
            ],
        )
        s.commit()
    lib.refresh_index()


class Env:
    def __init__(self, client: TestClient, lib: Any, settings: Settings, model: Path) -> None:
        self.client = client
        self.lib = lib
        self.settings = settings
        self.common = ["--data-dir", str(settings.data_dir), "--model", str(model)]

    def api(self, q: str, **params: Any) -> dict[str, Any]:
        r = self.client.get("/api/search", params={"q": q, **params})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("one-search")
    root = base / "photos"
    write_images(root)  # red.jpg, green.jpg, ... : their names are keywords too
    write_images(root / "more", {"red_sunset": (230, 80, 40), "blue_sunset": (40, 60, 200)})
    settings = Settings(
        data_dir=base / "data", model=str(tiny_model_dir), allowed_roots=[root], batch_window_ms=0.5
    )
    lib = build_library(settings)
    job = ingest_now(lib, root)
    assert job.state == "done", job
    _fill(lib, N_FILLED, "sunset")
    with TestClient(create_app(settings, library=lib)) as client:
        yield Env(client, lib, settings, tiny_model_dir)
    lib.close()


@pytest.fixture(scope="module")
def server(env: Env) -> Iterator[str]:
    """The same app served on a socket, recorded in the data folder's run file as `clipsearch
    serve` records itself: what the CLI finds and asks."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        create_app(env.settings, library=env.lib), host="127.0.0.1", port=port, log_level="error"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    path = write_run_file(env.settings.data_dir, "127.0.0.1", port)
    assert path is not None and path.name == RUN_FILE
    yield f"http://127.0.0.1:{port}"
    remove_run_file(path)
    srv.should_exit = True
    thread.join(10)


def _cli(env: Env, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["search", *args, "--json", *env.common]) == 0, capsys.readouterr().err
    out = capsys.readouterr()
    return json.loads(out.out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("cut", [None, 0.0])
@pytest.mark.parametrize("mode", MODES)
def test_api_and_cli_give_the_same_page(
    env: Env, server: str, capsys: pytest.CaptureFixture[str], mode: str, cut: float | None
) -> None:
    query = "red sunset"
    params: dict[str, Any] = {"k": 15, "mode": mode}
    flags = ["-k", "15", "--mode", mode]
    if cut is not None:
        params["min_relevance"] = cut
        flags += ["--min-relevance", str(cut)]
    api = env.api(query, **params)
    assert api["min_relevance"] == (DEFAULT_MIN_RELEVANCE if cut is None else cut)
    assert api["query"]["min_relevance"] == api["min_relevance"]
    assert api["mode"] == mode
    want = [(h["id"], h["relevance"]) for h in api["results"]]
    if cut == 0.0:
        assert len(want) == 15  # every image is a result without a cut
    via_server = _cli(env, capsys, query, *flags)
    local = _cli(env, capsys, query, *flags, "--no-server")
    assert [(h["id"], h["relevance"]) for h in via_server] == want
    assert [h["id"] for h in local] == [i for i, _ in want]
    for a, b in zip(local, api["results"], strict=True):
        assert a["relevance"] == pytest.approx(b["relevance"], abs=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_results_are_ordered_and_cut_by_the_relevance_they_show(env: Env, mode: str) -> None:
    for cut in (None, 0.0, 0.3, 0.7):
        params: dict[str, Any] = {"k": 60, "mode": mode}
        if cut is not None:
            params["min_relevance"] = cut
        body = env.api("red sunset", **params)
        rel = [h["relevance"] for h in body["results"]]
        assert all(r is not None for r in rel)
        assert rel == sorted(rel, reverse=True), rel  # rank n never shows less than rank n+1
        applied = DEFAULT_MIN_RELEVANCE if cut is None else cut
        assert body["min_relevance"] == applied
        assert all(r >= applied for r in rel)  # a keyword match is cut like any other hit


def test_a_keyword_match_shows_the_relevance_it_ranks_by(env: Env) -> None:
    body = env.api("sunset", k=5, mode="hybrid", min_relevance=0)
    for hit in body["results"]:
        assert "filename" in hit["match"] and hit["relevance"] >= 0.9 * 0.99
    text = env.api("sunset", k=5, mode="text", min_relevance=0)
    assert all(h["relevance"] == pytest.approx(0.9) for h in text["results"])


@pytest.mark.parametrize("mode", MODES)
def test_page_48_of_50_answers_in_every_mode(env: Env, mode: str) -> None:
    k = 40
    page47 = env.api("sunset", k=k, offset=46 * k, mode=mode, min_relevance=0)
    page48 = env.api("sunset", k=k, offset=47 * k, mode=mode, min_relevance=0)
    assert len(page48["results"]) == k and page48["has_more"] is True
    ids47 = [h["id"] for h in page47["results"]]
    ids48 = [h["id"] for h in page48["results"]]
    assert not set(ids47) & set(ids48)
    rel = [h["relevance"] for h in page47["results"] + page48["results"]]
    assert rel == sorted(rel, reverse=True)  # one ranking across pages
    # the cursor of page 47 leads to page 48
    by_cursor = env.api("sunset", k=k, mode=mode, min_relevance=0, cursor=page47["next_cursor"])
    assert [h["id"] for h in by_cursor["results"]] == ids48
    # the default cut at that depth answers too (empty, with what it hid counted)
    deep = env.api("sunset", k=k, offset=47 * k, mode=mode)
    assert deep["min_relevance"] == DEFAULT_MIN_RELEVANCE
    # the documented limit is the limit
    last = env.client.get(
        "/api/search", params={"q": "sunset", "k": k, "offset": 10_000, "mode": mode}
    )
    assert last.status_code == 200, last.text
    beyond = env.client.get("/api/search", params={"q": "sunset", "offset": 10_001, "mode": mode})
    assert beyond.status_code == 422 and "offset" in beyond.json()["detail"]


def test_health_names_the_default_cut_every_door_uses(env: Env) -> None:
    health = env.client.get("/api/health").json()
    assert health["gallery_min_relevance"] == DEFAULT_MIN_RELEVANCE
    assert Settings().gallery_min_relevance == DEFAULT_MIN_RELEVANCE


def test_the_cli_ingest_refuses_a_link_out_of_its_folder(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clipsearch.indexer import runs
    from clipsearch.indexer.worker import WorkerContext

    photos, outside = tmp_path / "photos", tmp_path / "private"
    write_images(photos, {"red": (220, 30, 30)})
    write_images(outside, {"secret": (10, 200, 10)})
    (photos / "escape.jpg").symlink_to(outside / "secret.jpg")
    (photos / "again.jpg").symlink_to(photos / "red.jpg")  # a link inside the folder: followed
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--model", str(tiny_model_dir)]
    assert main(["ingest", str(photos), *common]) == 0, capsys.readouterr().err
    settings = Settings(data_dir=data, model=str(tiny_model_dir))
    lib = build_library(settings, confine=False)  # the CLI's library: no allowed roots
    try:
        (job,) = lib.list_jobs()
        ctx = WorkerContext(lib.config.worker_config())
        try:
            for batch in runs.run_ingest(ctx, None, job.id):
                runs.run_embed_batch(ctx, job.id, batch)
        finally:
            ctx.dispose()
        job = lib.get_job(job.id)
        items, _ = lib.list_images(limit=100)
        names = sorted(os.path.basename(i.path) for i in items)
        assert names == ["again.jpg", "red.jpg"]
        assert [os.path.basename(e["path"]) for e in job.errors] == ["escape.jpg"]
        assert "outside" in job.errors[0]["reason"]
    finally:
        lib.close()


def test_the_calibration_is_kept_for_the_librarys_other_processes(env: Env) -> None:
    """What the server measured, a `clipsearch search` on its own reads instead of embedding the
    relevance background again (the same model and index version, not stale)."""
    from clipsearch.indexer.relevance import BackgroundCache

    cal = env.lib.calibration()
    path = Path(env.settings.data_dir) / "relevance.json"
    identity = json.loads(path.read_text())["identity"]

    def never(vectors: Any) -> list[float]:
        raise AssertionError("measured again")

    kept = BackgroundCache(store=path).get(1, object(), never, cal.library_size, identity)
    assert (kept.text, kept.image, kept.sigmoid) == (cal.text, cal.image, cal.sigmoid)
    assert BackgroundCache(store=path)._read("another model@1", cal.library_size) is None
    assert BackgroundCache(store=path)._read(identity, cal.library_size * 2) is None  # stale
