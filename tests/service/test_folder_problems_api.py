"""A watched folder's current problems over the API (issue 24), on a real socket: a corrupt
picture and a link leading out of the folder are listed once each however many rescans met
them, go away once fixed, show paths as every route does (no server path to a public-read
caller), and stay hidden (404) from a viewer the folder is not shared with."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from accounts_testlib import Served, add_user, served_library, sign_in
from svc_testlib import ingest_now, write_images


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("problems")
    with served_library(base, tiny_model_dir, public_read=True) as s:
        add_user(s, "ann", "viewer")  # alpha is shared with her
        add_user(s, "nell", "viewer")  # nothing is
        with s.admin() as admin:
            r = admin.post("/api/shares", json={"folder": str(s.photos / "alpha"), "user": "ann"})
            assert r.status_code == 201, r.text
        yield s


def _problems(client: Any, folder_id: int, **params: Any) -> dict[str, Any]:
    r = client.get(f"/api/v1/folders/{folder_id}/problems", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_folders_problems_are_listed_once_until_fixed_and_only_to_who_may_see_it(
    served: Served,
) -> None:
    alpha = served.photos / "alpha"
    folder_id = served.lib.add_watched_folder(str(alpha)).id
    (alpha / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a picture")
    outside = served.photos.parent / "outside"
    write_images(outside, {"white": (250, 250, 250)})
    os.symlink(outside / "white.jpg", alpha / "link.jpg")

    for _ in range(2):  # two rescans: each problem still listed, once
        assert ingest_now(served.lib, alpha).state == "done"
        with served.admin() as admin:
            page = _problems(admin, folder_id)
        assert sorted((os.path.basename(i["path"]), i["kind"]) for i in page["items"]) == [
            ("corrupt.jpg", "decode"),
            ("link.jpg", "scan"),
        ]
        assert page["total"] == 2
        assert all(i["problem"] and i["since"] for i in page["items"])
        assert {i["path"] for i in page["items"]} == {
            str(alpha / "corrupt.jpg"),
            str(alpha / "link.jpg"),
        }

    with served.admin() as admin:
        # bounded: a page of one still says how many there are; a page too long is refused
        one = _problems(admin, folder_id, limit=1)
        assert (len(one["items"]), one["total"]) == (1, 2)
        # the next page starts after the first one's last file (its path within the folder)
        two = _problems(admin, folder_id, limit=1, after=one["next_after"])
        assert (len(two["items"]), two["total"]) == (1, 2)
        assert one["items"][0]["path"] < two["items"][0]["path"]
        assert _problems(admin, folder_id, limit=1, after=two["next_after"])["items"] == []
        assert _problems(admin, folder_id)["next_after"] is None  # all on one page
        too_long = admin.get(f"/api/v1/folders/{folder_id}/problems", params={"limit": 10**6})
        assert too_long.status_code == 422
        assert admin.get("/api/v1/folders/999999/problems").status_code == 404

    # a public-read caller (no credentials) is shown no server path: the folder's name and on
    with served.client() as anonymous:
        shown = sorted(i["path"] for i in _problems(anonymous, folder_id)["items"])
    assert shown == ["photos/alpha/corrupt.jpg", "photos/alpha/link.jpg"]

    # a viewer with the folder sees its problems; one without it is told there is no such folder
    ann, nell = sign_in(served, "ann"), sign_in(served, "nell")
    try:
        assert _problems(ann, folder_id)["total"] == 2
        hidden = nell.get(f"/api/v1/folders/{folder_id}/problems")
        assert hidden.status_code == 404
        assert "not watched" in hidden.json()["detail"]
    finally:
        ann.close()
        nell.close()

    # fixed: the link removed, the corrupt file replaced by a picture
    os.remove(alpha / "link.jpg")
    os.remove(alpha / "corrupt.jpg")
    write_images(alpha, {"corrupt": (10, 120, 90)})
    assert ingest_now(served.lib, alpha).state == "done"
    with served.admin() as admin:
        assert _problems(admin, folder_id) == {
            "folder_id": folder_id,
            "items": [],
            "total": 0,
            "next_after": None,
        }
