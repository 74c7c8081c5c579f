"""GET /api/folders/allowed tells a client (the gallery's Add images panel) where folders may be
added from before it tries; a refused folder's message names the same roots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from svc_testlib import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_no_roots_says_so_and_how_to_allow_one(make_client: Any, fake_library: Any) -> None:
    client = make_client(fake_library, api_token=TOKEN)
    assert client.get("/api/folders/allowed").status_code == 401  # server paths: not public
    allowed = client.get("/api/folders/allowed", headers=AUTH).json()
    assert allowed["roots"] == []
    assert "--images" in allowed["hint"] and "CLIPSEARCH_ALLOWED_ROOTS" in allowed["hint"]


def test_the_roots_listed_are_the_ones_a_refusal_names(
    make_client: Any, fake_library: Any, tmp_path: Path
) -> None:
    photos, team = tmp_path / "photos", tmp_path / "team"
    photos.mkdir()
    team.mkdir()
    client = make_client(fake_library, api_token=TOKEN, images=[photos], allowed_roots=[team])
    roots = client.get("/api/folders/allowed", headers=AUTH).json()["roots"]
    assert sorted(roots) == sorted([str(photos.resolve()), str(team.resolve())])
    refused = client.post("/api/folders", json={"path": str(tmp_path)}, headers=AUTH)
    assert refused.status_code == 403
    for root in roots:
        assert root in refused.json()["detail"]
