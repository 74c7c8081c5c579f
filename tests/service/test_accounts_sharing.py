"""Folders shared with people, on a real socket over SQLite + FAISS and over PostgreSQL + Milvus
(a real milvus-lite server process): two viewers with disjoint
folders cannot obtain each other's pictures, thumbnails, files, previews, words read, tags,
neighbours or counts, by guessed ids, search terms naming them, filters or cursors; their pages
stay full and their counts true; what spans the whole library is refused to them."""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from accounts_testlib import Served, add_user, served_library, sign_in

from clipsearch.indexer.duplicates import DuplicateGroup, DuplicateMember

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


def test_tags_count_and_list_only_the_viewers_pictures(world: dict[str, Any]) -> None:
    ids, eve = world["ids"], world["eve"]
    r = eve.post("/api/tags", json={"name": "mixed bag", "descriptions": ["a photo"]})
    assert r.status_code == 201, r.text
    for image_id in (ids["alpha"][0], *ids["beta"]):
        r = eve.put(f"/api/tags/mixed bag/images/{image_id}", json={"state": "confirmed"})
        assert r.status_code == 200, r.text
    for me, mine, count in (("ann", "alpha", 1), ("bob", "beta", 2), ("eve", None, 3)):
        client = world[me]
        listed = {t["name"]: t for t in client.get("/api/tags").json()}
        assert listed["mixed bag"]["assigned"] == count, me
        assert client.get("/api/tags/mixed bag").json()["assigned"] == count, me
        page = client.get("/api/tags/mixed bag/images", params={"limit": 1})
        assert page.status_code == 200, page.text
        shown = [i["image"]["id"] for i in page.json()["items"]]
        if mine is not None:  # a full page of their own, then the next: nothing of the other's
            assert shown == [min(set(ids[mine]) & {ids["alpha"][0], *ids["beta"]})]
            after = page.json()["next_after"]
            rest = client.get("/api/tags/mixed bag/images", params={"after": after or 0})
            everything = shown + [i["image"]["id"] for i in rest.json()["items"]]
            assert set(everything) <= set(ids[mine]) and len(set(everything)) == count
    assert world["nell"].get("/api/tags/mixed bag").json()["assigned"] == 0


def test_albums_show_a_viewer_only_their_pictures(world: dict[str, Any]) -> None:
    ids, eve = world["ids"], world["eve"]
    made = {}
    for name, members in (
        ("mixed", [ids["alpha"][0], *ids["beta"]]),
        ("beta only", [ids["beta"][0]]),
    ):
        r = eve.post("/api/albums", json={"name": name})
        assert r.status_code == 201, r.text
        made[name] = r.json()["id"]
        r = eve.post(f"/api/albums/{made[name]}/images", json={"action": "add", "ids": members})
        assert r.status_code == 200, r.text
    ann, bob = world["ann"], world["bob"]
    assert {a["name"]: a["size"] for a in ann.get("/api/albums").json()} == {"mixed": 1}
    assert {a["name"]: a["size"] for a in bob.get("/api/albums").json()} == {
        "beta only": 1,
        "mixed": 2,
    }
    assert world["nell"].get("/api/albums").json() == []
    # an album showing them nothing is not there, by id or name, nor its pictures or files
    for path in ("", "/images", "/export.zip"):
        r = ann.get(f"/api/albums/{made['beta only']}{path}")
        assert r.status_code == 404, (path, r.status_code)
    assert ann.get("/api/albums/beta only").status_code == 404
    page = ann.get(f"/api/albums/{made['mixed']}/images").json()
    assert page["album"]["size"] == 1
    assert [i["image"]["id"] for i in page["items"]] == [ids["alpha"][0]]
    first = bob.get(f"/api/albums/{made['mixed']}/images", params={"limit": 1}).json()
    assert [i["image"]["id"] for i in first["items"]] == [ids["beta"][0]]  # a full page
    zipped = ann.get(f"/api/albums/{made['mixed']}/export.zip")
    assert zipped.status_code == 200
    assert len(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()) == 1
    assert eve.get(f"/api/albums/{made['mixed']}").json()["size"] == 3


def test_duplicate_groups_show_only_the_viewers_members(world: dict[str, Any]) -> None:
    """Groups as the duplicates job leaves them in the catalog: one of two alpha pictures and a
    beta one, a similar-shots one of two beta pictures and an alpha one."""
    served: Served = world["served"]
    (a1, a2), (b1, b2) = world["ids"]["alpha"], world["ids"]["beta"]
    groups = {("dup", a1): ("exact", (a1, a2, b1)), ("similar", b1): ("similar", (b1, b2, a1))}
    with served.lib.Session() as session:
        for (family, anchor), (kind, members) in groups.items():
            session.add(
                DuplicateGroup(
                    family=family, anchor_id=anchor, kind=kind, size=3, min_similarity=0.99
                )
            )
            for m in members:
                session.add(
                    DuplicateMember(
                        family=family, image_id=m, anchor_id=anchor, reason="test", similarity=0.99
                    )
                )
        session.commit()

    def groups_of(me: str, kind: str) -> list[tuple[int, list[int]]]:
        r = world[me].get("/api/duplicates", params={"kind": kind})
        assert r.status_code == 200, r.text
        return [
            (g["size"], sorted(m["image"]["id"] for m in g["members"])) for g in r.json()["items"]
        ]

    assert groups_of("ann", "duplicates") == [
        (2, [a1, a2])
    ]  # beta's member: not shown, not counted
    assert groups_of("bob", "duplicates") == []  # one member of theirs: no group
    assert groups_of("bob", "similar") == [(2, [b1, b2])]
    assert groups_of("ann", "similar") == []
    assert groups_of("nell", "duplicates") == []
    assert groups_of("eve", "duplicates") == [(3, sorted([a1, a2, b1]))]


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


def test_removed_pictures_are_listed_to_the_viewer_of_their_folder_only(
    world: dict[str, Any],
) -> None:
    """(Last: it removes a picture of each folder.)"""
    ids, eve = world["ids"], world["eve"]
    removal = {}
    for name in ("alpha", "beta"):
        r = eve.delete(f"/api/images/{ids[name][1]}")
        assert r.status_code == 204, r.text
    listed = eve.get("/api/removed").json()["items"]
    for item in listed:
        removal["alpha" if "/alpha/" in item["path"] else "beta"] = item["id"]
    assert len(removal) == 2
    for me, mine, theirs in (("ann", "alpha", "beta"), ("bob", "beta", "alpha")):
        client = world[me]
        r = client.get("/api/removed")
        assert r.status_code == 200, r.text
        assert [i["id"] for i in r.json()["items"]] == [removal[mine]]
        assert client.get(f"/api/removed/{removal[mine]}").status_code == 200
        assert client.get(f"/api/removed/{removal[mine]}/thumbnail").status_code == 200
        for suffix in ("", "/thumbnail"):
            r = client.get(f"/api/removed/{removal[theirs]}{suffix}")
            assert r.status_code == 404, (suffix, r.text)
            unknown = client.get(f"/api/removed/987654{suffix}")
            assert r.json()["detail"] == unknown.json()["detail"].replace(
                "987654", str(removal[theirs])
            )
    assert world["nell"].get("/api/removed").json()["items"] == []
