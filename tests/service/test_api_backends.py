"""The main API flows on each catalog backend: SQLite (embedded) and PostgreSQL (deployed)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from svc_testlib import TOKEN, ingest_now, write_images

from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'catalog.sqlite'}"


@pytest.fixture(params=["faiss", pytest.param("milvus", marks=pytest.mark.milvus)])
def milvus_uri(request: pytest.FixtureRequest) -> str | None:
    """None: the embedded FAISS store; else the URI of a real Milvus server process."""
    if request.param == "milvus":
        return str(request.getfixturevalue("milvus_server"))
    return None


def test_ingest_search_browse_delete(
    database_url: str, milvus_uri: str | None, tmp_path: Path, tiny_model_dir: Path
) -> None:
    root = tmp_path / "photos"
    files = {p.stem: p for p in write_images(root)}
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        model=str(tiny_model_dir),
        images=[root],
        api_token=TOKEN,
        public_read=True,
        batch_window_ms=0.5,
        milvus_uri=milvus_uri,
        milvus_collection=f"t{uuid.uuid4().hex[:12]}",
    )
    lib = build_library(settings)
    try:
        job = ingest_now(lib, root)
        assert (job.state, job.done, job.failed) == ("done", len(files), 0)
        with TestClient(create_app(settings, library=lib)) as client:
            _flows(client, files)
    finally:
        lib.close()


def _flows(client: TestClient, files: dict[str, Path]) -> None:
    health = client.get("/api/health").json()
    assert health["images"]["ready"] == len(files)
    assert health["index"]["entities"] == health["index"]["catalog_vectors"] == len(files)
    assert health["status"] == "ok"

    page = client.get("/api/images", params={"limit": 100}).json()
    by_name = {Path(i["path"]).stem: i["id"] for i in page["items"]}
    assert set(by_name) == set(files)

    r = client.get("/api/search", params={"q": "a dark photo -bright", "k": 4, "min_relevance": 0})
    assert r.status_code == 200 and len(r.json()["results"]) == 4

    data = files["black"].read_bytes()
    top = client.post("/api/search/image", files={"file": ("b.jpg", data)}, params={"k": 1}).json()
    assert top["results"][0]["id"] == by_name["black"]

    similar = client.get(f"/api/images/{by_name['black']}/similar", params={"k": 10}).json()
    assert by_name["black"] not in [h["id"] for h in similar["results"]]

    f = client.get(f"/api/images/{by_name['white']}/file")
    assert f.content == files["white"].read_bytes()
    assert (
        client.get(
            f"/api/images/{by_name['white']}/file", headers={"If-None-Match": f.headers["etag"]}
        ).status_code
        == 304
    )

    assert client.delete(f"/api/images/{by_name['white']}").status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.delete(f"/api/images/{by_name['white']}", headers=auth).status_code == 204
    every = {"q": "white", "k": 50, "min_relevance": 0}
    after = client.get("/api/search", params=every).json()["results"]
    assert by_name["white"] not in {h["id"] for h in after}
    assert len(after) == len(files) - 1

    r = client.post("/api/reindex", headers=auth)
    assert r.status_code == 202 and r.json()["kind"] == "reindex"
    jobs = client.get("/api/jobs", headers=auth).json()
    assert [j["kind"] for j in jobs[:2]] == ["reindex", "ingest"]


@pytest.mark.postgres
def test_postgres_going_away_is_a_503(pg_url: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, model=str(tiny_model_dir))
    lib = build_library(settings)
    admin: Any = sa.create_engine(
        pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
    )
    name = pg_url.rsplit("/", 1)[1]
    try:
        with TestClient(create_app(settings, library=lib)) as client:
            assert client.get("/api/images").status_code == 200
            with admin.connect() as conn:  # the database disappears under the running service
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": name},
                )
                conn.execute(sa.text(f'DROP DATABASE "{name}"'))
            for url in ("/api/images", "/api/health", "/api/jobs"):
                r = client.get(url)
                assert r.status_code == 503, (url, r.status_code, r.text)
                assert "catalog" in r.json()["detail"]
    finally:
        lib.close()
        admin.dispose()


@pytest.mark.milvus
def test_milvus_going_away_is_a_503_and_health_says_so(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A Milvus URI nothing answers on: searches get a 503 naming Milvus, browsing still works
    (the catalog answers), health is degraded with the reason."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    settings = Settings(
        data_dir=tmp_path / "data",
        model=str(tiny_model_dir),
        milvus_uri=f"http://127.0.0.1:{port}",
    )
    lib = build_library(settings)
    try:
        with TestClient(create_app(settings, library=lib)) as client:
            r = client.get("/api/search", params={"q": "a photo"})
            assert r.status_code == 503, r.text
            assert "Milvus" in r.json()["detail"]
            assert client.get("/api/images").status_code == 200
    finally:
        lib.close()
