"""HEAD on an API route answers like GET without the body (HTTP asks it of every GET
resource; link checkers and caches use it): it used to fall through to the gallery's static
files and read 404 for every API path."""

from __future__ import annotations

from typing import Any

from svc_testlib import FakeLibrary


def test_head_answers_like_get_without_a_body(make_client: Any) -> None:
    client = make_client(FakeLibrary())
    for path in ("/api/health", "/api/search?q=a+red+bicycle&k=3"):
        got = client.get(path)
        head = client.head(path)
        assert got.status_code == head.status_code == 200, (path, head.status_code)
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        # the length the GET body would have (not equal to this GET's: timings differ)
        assert int(head.headers["content-length"]) > 0


def test_head_keeps_the_same_checks_as_get(make_client: Any) -> None:
    client = make_client(FakeLibrary(), api_token="head-token-for-tests-123")
    assert client.head("/api/search?q=x").status_code == 401
    assert client.get("/api/search?q=x").status_code == 401
    auth = {"Authorization": "Bearer head-token-for-tests-123"}
    assert client.head("/api/search?q=x", headers=auth).status_code == 200
    assert client.head("/api/search", headers=auth).status_code == 422  # q missing, as GET
    assert client.head("/api/nothing-here", headers=auth).status_code == 404
