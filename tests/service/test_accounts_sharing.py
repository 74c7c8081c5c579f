"""Folders shared with people, on a real socket over SQLite + FAISS and over PostgreSQL + Milvus
(a real milvus-lite server process): two viewers with disjoint
folders cannot obtain each other's pictures, thumbnails, files, previews, words read, tags,
neighbours or counts, by guessed ids, search terms naming them, filters or cursors; their pages
stay full and their counts true; what spans the whole library is refused to them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from accounts_testlib import Served, add_user, served_library, sign_in

MISSING = "image {} is not in the catalog (it may have been deleted)"  # as for any unknown id
WORDS = {"alpha": ("red", "green"), "beta": ("blue", "yellow")}  # accounts_testlib's names


PG_ADMIN_URL = os.environ.get(
    "CLIPSEARCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)  # as tests/conftest.py


@contextmanager
def _backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The settings of the backend under test: nothing for SQLite + FAISS; a fresh PostgreSQL
    database for the module and a collection on the session's Milvus server otherwise."""
    if request.param == "sqlite-faiss":
        yield {}
        return
    name = f"cs_share_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield {
            "database_url": PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name,
            "milvus_uri": str(request.getfixturevalue("milvus_server")),
            "milvus_collection": f"t{uuid.uuid4().hex[:12]}",
        }
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(
    scope="module",
    params=[
        "sqlite-faiss",
        pytest.param("postgres-milvus", marks=[pytest.mark.postgres, pytest.mark.milvus]),
    ],
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[dict[str, Any]]:
    with (
        _backend(request) as backend,
        served_library(tmp_path_factory.mktemp("sharing"), tiny_model_dir, **backend) as served,
    ):
        with served.admin() as admin:
            items = admin.get("/api/images", params={"limit": 100}).json()["items"]
            ids = {
                name: sorted(i["id"] for i in items if f"/{name}/" in i["path"])
                for name in ("alpha", "beta")
            }
            assert len(ids["alpha"]) == 2 and len(ids["beta"]) == 2
            add_user(served, "ann", "viewer")
            add_user(served, "bob", "viewer")
            add_user(served, "nell", "viewer")  # nothing shared with her
            add_user(served, "eve", "editor")
            for folder, user in (("alpha", "ann"), ("beta", "bob")):
                r = admin.post(
                    "/api/shares", json={"folder": str(served.photos / folder), "user": user}
                )
                assert r.status_code == 201, r.text
        yield {
            "served": served,
            "ids": ids,
            "ann": sign_in(served, "ann"),
            "bob": sign_in(served, "bob"),
            "nell": sign_in(served, "nell"),
            "eve": sign_in(served, "eve"),
        }


def _listed(client: httpx.Client, **params: Any) -> list[int]:
    r = client.get("/api/images", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    return sorted(i["id"] for i in r.json()["items"])


def _searched(client: httpx.Client, **params: Any) -> list[int]:
    r = client.get("/api/search", params={"q": "a photo", "min_relevance": 0} | params)
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["results"]]


@pytest.mark.parametrize(
    ("me", "mine", "theirs"), [("ann", "alpha", "beta"), ("bob", "beta", "alpha")]
)
def test_a_viewer_browses_and_searches_only_the_folders_shared_with_them(
    world: dict[str, Any], me: str, mine: str, theirs: str
) -> None:
    client, ids = world[me], world["ids"]
    assert _listed(client) == ids[mine]
    page = client.get("/api/images", params={"limit": 100}).json()
    assert page["total"] == 2  # the count is of what they may see
    # a filter naming the other's folder finds nothing, not the other's pictures
    other = str(world["served"].photos / theirs)
    assert _listed(client, folder=other) == []
    assert _searched(client, folder=other) == []
    # search, in every mode, and its pages: full pages of their pictures only
    for mode in ("semantic", "hybrid"):
        assert sorted(_searched(client, mode=mode, k=10)) == ids[mine]
    # the words in the pictures' names: their own are found, the other's are not
    for word in WORDS[mine]:
        assert len(_searched(client, q=word, mode="text")) == 1
    for word in WORDS[theirs]:
        assert _searched(client, q=word, mode="text") == []
        assert set(_searched(client, q=word, mode="hybrid")) <= set(ids[mine])
    first = client.get("/api/search", params={"q": "a photo", "min_relevance": 0, "k": 1})
    body = first.json()
    assert len(body["results"]) == 1 and body["next_cursor"]
    second = client.get(
        "/api/search",
        params={"q": "a photo", "min_relevance": 0, "k": 1, "cursor": body["next_cursor"]},
    ).json()
    seen = [body["results"][0]["id"], *(h["id"] for h in second["results"])]
    assert sorted(seen) == ids[mine]
    # neighbours of their own picture are their own pictures
    near = client.get(f"/api/images/{ids[mine][0]}/similar", params={"min_relevance": 0})
    assert near.status_code == 200
    assert {h["id"] for h in near.json()["results"]} <= set(ids[mine])


@pytest.mark.parametrize(("me", "theirs"), [("ann", "beta"), ("bob", "alpha")])
def test_a_viewer_cannot_reach_the_other_folders_pictures_by_id(
    world: dict[str, Any], me: str, theirs: str
) -> None:
    client = world[me]
    for image_id in world["ids"][theirs]:
        for suffix in ("", "/thumbnail", "/file", "/preview", "/text", "/tags", "/similar"):
            r = client.get(f"/api/images/{image_id}{suffix}")
            assert r.status_code == 404, (suffix, r.status_code, r.text)
            assert r.json()["detail"] == MISSING.format(image_id)
        # a search term naming their picture
        r = client.post("/api/search", json={"terms": [{"image_id": image_id}]})
        assert r.status_code == 404
    # an id that exists nowhere reads the same as theirs
    assert client.get("/api/images/987654").json()["detail"] == MISSING.format(987654)


def test_a_viewer_without_shares_sees_nothing_and_an_editor_sees_all(
    world: dict[str, Any],
) -> None:
    assert _listed(world["nell"]) == []
    assert _searched(world["nell"]) == []
    everything = sorted(world["ids"]["alpha"] + world["ids"]["beta"])
    assert _listed(world["eve"]) == everything
    assert sorted(_searched(world["eve"], k=10)) == everything


@pytest.mark.parametrize("path", ["/api/tags", "/api/albums", "/api/duplicates", "/api/removed"])
def test_views_of_the_whole_library_are_refused_to_a_viewer_of_some_folders(
    world: dict[str, Any], path: str
) -> None:
    r = world["ann"].get(path)
    assert r.status_code == 403 and "shared with you" in r.json()["detail"]
    assert world["eve"].get(path).status_code == 200


def test_a_folder_shared_with_everyone_is_seen_by_every_viewer(world: dict[str, Any]) -> None:
    served: Served = world["served"]
    beta = str(served.photos / "beta")
    with served.admin() as admin:
        assert admin.post("/api/shares", json={"folder": beta}).status_code == 201
        try:
            assert _listed(world["nell"]) == world["ids"]["beta"]
            assert _listed(world["ann"]) == sorted(world["ids"]["alpha"] + world["ids"]["beta"])
            shares = admin.get("/api/shares").json()
            assert {(s["folder"], s["user"]) for s in shares} >= {(beta, "*"), (beta, "bob")}
        finally:
            assert admin.request("DELETE", "/api/shares", json={"folder": beta}).status_code == 204
    assert _listed(world["nell"]) == []


def test_the_vector_stores_are_asked_for_the_shared_folders_only(world: dict[str, Any]) -> None:
    """The restriction reaches the stores themselves: Milvus gets it in its filter expression,
    FAISS an id selector of exactly the shared folders' pictures (not the whole library)."""
    from clipsearch.indexer.milvus_store import MilvusStore
    from clipsearch.indexer.vector_store import StoreFilters, selective_ids

    served: Served = world["served"]
    alpha = str(served.photos / "alpha")
    expr = MilvusStore.expression(StoreFilters(within=(alpha,)), None)
    assert f'folder == "{alpha}"' in expr and f'folder like "{alpha}/%"' in expr
    assert MilvusStore.expression(StoreFilters(within=()), None) == "id < 0"
    with served.lib.Session() as session:
        ids = selective_ids(session, StoreFilters(within=(alpha,)))
        none = selective_ids(session, StoreFilters(within=()))
    if ids is not None:  # None only where text does not sort byte-wise (then over-fetched)
        assert sorted(int(i) for i in ids) == world["ids"]["alpha"]
        assert none is not None and len(none) == 0
