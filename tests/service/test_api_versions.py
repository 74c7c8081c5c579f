"""The versioned API (issue 23): every route under ``/api/v1``, today's ``/api`` paths kept as
aliases marked deprecated in OpenAPI, both answering alike through the same checks; validation
errors keep each field's location (query, path, body) without echoing the value sent."""

from __future__ import annotations

from typing import Any

from svc_testlib import FakeLibrary

from clipsearch.service.versioning import ALIAS_SUFFIX, versioned_path

TOKEN = "versions-token-for-tests-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
METHODS = {"get", "post", "put", "patch", "delete"}


def test_every_api_path_has_a_v1_twin_and_the_old_one_is_deprecated(make_client: Any) -> None:
    spec = make_client(FakeLibrary()).get("/openapi.json").json()
    paths: dict[str, dict[str, Any]] = spec["paths"]
    old = {p for p in paths if p.startswith("/api/") and not p.startswith("/api/v1/")}
    new = {p for p in paths if p.startswith("/api/v1/")}
    assert len(old) > 20
    assert {versioned_path(p) for p in old} == new
    ids = [op["operationId"] for ops in paths.values() for m, op in ops.items() if m in METHODS]
    assert len(ids) == len(set(ids)), "operation ids are unique"
    for path in old:
        for method, op in paths[path].items():
            if method not in METHODS:
                continue
            twin = paths[versioned_path(path)][method]
            assert op.get("deprecated") is True, (method, path)
            assert not twin.get("deprecated"), (method, versioned_path(path))
            assert op["operationId"] == twin["operationId"] + ALIAS_SUFFIX
            assert op.get("parameters") == twin.get("parameters")
            assert op["responses"].keys() == twin["responses"].keys()
    assert paths["/api/v1/search"]["get"]["operationId"] == "search_get"


def test_both_prefixes_answer_alike_with_the_same_checks(make_client: Any) -> None:
    client = make_client(FakeLibrary(), api_token=TOKEN, max_upload_bytes=1000)
    for prefix in ("/api/v1", "/api"):
        assert client.get(f"{prefix}/search?q=x").status_code == 401  # the token, on both
        got = client.get(f"{prefix}/search", params={"q": "a red bicycle", "k": 3}, headers=AUTH)
        assert got.status_code == 200, got.text
        assert len(got.json()["results"]) == 3
        assert (
            client.get(f"{prefix}/jobs", headers=AUTH).json()
            == client.get("/api/v1/jobs", headers=AUTH).json()
        )
        # the upload limit is the upload route's on both paths, before the body is read
        big = client.post(
            f"{prefix}/search/image",
            files={"file": ("a.jpg", b"\xff" * 5000, "image/jpeg")},
            headers=AUTH,
        )
        assert big.status_code == 413 and "smaller image" in big.json()["detail"]
    assert client.get("/api/v1/no-such-route", headers=AUTH).status_code == 404


def test_validation_errors_keep_the_field_location(make_client: Any) -> None:
    client = make_client(FakeLibrary())
    r = client.get("/api/v1/search", params={"q": "x", "k": "many<script>"})
    assert r.status_code == 422
    body = r.json()
    assert body["detail"].startswith("k: ")
    assert body["errors"] == [
        {"loc": ["query", "k"], "msg": body["errors"][0]["msg"], "type": "int_parsing"}
    ]
    assert "<script>" not in r.text  # the value sent is not echoed back

    r = client.post("/api/v1/search", json={"q": "x", "k": 0, "filters": {"folder": 5}})
    assert r.status_code == 422
    locs = {tuple(e["loc"]) for e in r.json()["errors"]}
    assert ("body", "k") in locs
    schema = client.get("/openapi.json").json()
    ref = schema["paths"]["/api/v1/search"]["get"]["responses"]["422"]["content"][
        "application/json"
    ]["schema"]["$ref"]
    assert ref.endswith("/ValidationErrorOut")
