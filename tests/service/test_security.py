"""Auth, limits and path checks, tried the way an attacker would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from svc_testlib import TOKEN, png_bytes


@pytest.fixture()
def roots(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "passwords.jpg").write_bytes(b"not for you")
    os.symlink(outside, root / "escape")  # a symlink inside the root pointing out of it
    os.symlink(root / "trip", tmp_path / "shortcut")  # outside path that leads into the root
    return {"root": root, "outside": outside, "tmp": tmp_path}


# --- bearer token -----------------------------------------------------------------------------

MUTATIONS = [
    ("delete", "/api/images/1", None),
    ("post", "/api/ingest", {"path": "/"}),
    ("post", "/api/reindex", {}),
]


@pytest.mark.parametrize(("method", "url", "body"), MUTATIONS)
@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong-token-wrong-token-00",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer ",
    ],
)
def test_mutations_need_the_right_token(
    make_client, fake_library, roots, method, url, body, header
):
    client = make_client(fake_library, api_token=TOKEN, allowed_roots=[roots["root"]])
    headers = {"Authorization": header} if header is not None else {}
    kwargs = {"json": body} if body is not None else {}
    r = client.request(method.upper(), url, headers=headers, **kwargs)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "CLIPSEARCH_API_TOKEN" in r.json()["detail"]
    assert fake_library.mutations() == []  # nothing reached the library


def test_right_token_is_accepted_and_reads_need_it_too(make_client, fake_library, roots):
    client = make_client(fake_library, api_token=TOKEN, allowed_roots=[roots["root"]])
    auth = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert client.delete("/api/images/7", headers=auth).status_code == 204
    r = client.post("/api/ingest", json={"path": str(roots["root"])}, headers=auth)
    assert r.status_code == 202, r.text
    assert client.post("/api/reindex", headers=auth).status_code == 202
    assert [c[0] for c in fake_library.mutations()] == [
        "delete_image",
        "submit_ingest",
        "submit_reindex",
    ]
    # with a token set, reads need it as well (CLIPSEARCH_PUBLIC_READ opens them)
    for url in ("/api/search?q=cat", "/api/jobs", "/api/images", "/api/images/1/file", "/metrics"):
        r = client.get(url)
        assert r.status_code == 401, url
        assert "CLIPSEARCH_API_TOKEN" in r.json()["detail"]
    assert client.get("/api/search", params={"q": "cat"}, headers=auth).status_code == 200
    assert client.get("/api/jobs", headers=auth).status_code == 200
    # health stays open (health checks carry no token)
    assert client.get("/api/health").status_code == 200


def test_public_read_opens_reads_but_not_jobs_or_writes(make_client, fake_library, roots):
    client = make_client(
        fake_library, api_token=TOKEN, public_read=True, allowed_roots=[roots["root"]]
    )
    assert client.get("/api/search", params={"q": "cat"}).status_code == 200
    assert client.get("/api/images").status_code == 200
    assert client.get("/api/jobs").status_code == 401  # job details show server paths
    assert client.delete("/api/images/3").status_code == 401
    assert fake_library.mutations() == []


def test_without_a_configured_token_mutations_are_open(make_client, fake_library):
    client = make_client(fake_library)
    assert client.delete("/api/images/3").status_code == 204
    assert fake_library.mutations() == [("delete_image", 3)]


# --- ingestion paths --------------------------------------------------------------------------


def _attacks(r: dict[str, Path]) -> list[tuple[str, int]]:
    root, outside = r["root"], r["outside"]
    return [
        (f"{root}/../secret", 403),
        (f"{root}/trip/../../secret", 403),
        (f"{root}/escape", 403),  # symlink inside the root pointing out
        (f"{root}/escape/", 403),
        (str(outside), 403),
        ("/etc", 403),
        ("/", 403),
        (f"{root}-evil", 403),  # a sibling whose name starts like the root
        ("/does/not/exist", 403),  # outside: refused before any existence check
        ("trip", 400),  # relative paths are ambiguous on a server
        ("../secret", 400),
        (f"{root}/trip\x00/../../secret", 400),
        (f"{root}/nope", 404),
    ]


def test_ingest_paths_outside_the_roots_are_refused(make_client, fake_library, roots):
    client = make_client(fake_library, allowed_roots=[roots["root"]])
    for path, status in _attacks(roots):
        r = client.post("/api/ingest", json={"path": path})
        assert r.status_code == status, (path, r.status_code, r.text)
        if status == 403:
            assert str(roots["root"]) in r.json()["detail"]  # names the allowed roots
    assert fake_library.mutations() == []


def test_ingest_inside_the_roots_submits_the_resolved_folder(make_client, fake_library, roots):
    client = make_client(fake_library, images=[roots["root"]])  # allowed roots default to --images
    for path in (str(roots["root"]), f"{roots['root']}/trip/", str(roots["tmp"] / "shortcut")):
        r = client.post("/api/ingest", json={"path": path, "recursive": False})
        assert r.status_code == 202, r.text
        assert r.json()["state"] == "queued"
    submitted = [c[1] for c in fake_library.mutations()]
    trip = str((roots["root"] / "trip").resolve())
    assert submitted == [(str(roots["root"].resolve()), False), (trip, False), (trip, False)]


def test_no_roots_means_no_api_ingestion(make_client, fake_library, roots):
    client = make_client(fake_library)
    r = client.post("/api/ingest", json={"path": str(roots["root"])})
    assert r.status_code == 403
    assert "--images" in r.json()["detail"]
    assert fake_library.mutations() == []


def test_reindex_model_paths_are_confined(make_client, fake_library, roots):
    client = make_client(fake_library, allowed_roots=[roots["root"]])
    for spec in (
        "/etc/passwd",
        f"{roots['root']}/../secret/passwords.jpg",
        "../../x",
        "~/.ssh/id_rsa",
    ):
        r = client.post("/api/reindex", json={"model": spec})
        assert r.status_code == 403, (spec, r.text)
    r = client.post("/api/reindex", json={"model": "bad\x00name"})
    assert r.status_code == 400
    assert fake_library.mutations() == []
    assert client.post("/api/reindex", json={"model": "RN50"}).status_code == 202
    assert fake_library.mutations() == [("submit_reindex", "RN50")]


# --- uploads and bodies -----------------------------------------------------------------------


def test_upload_limits(make_client, fake_library):
    client = make_client(fake_library, max_upload_bytes=20_000, max_upload_pixels=1_000_000)
    big = os.urandom(40_000)
    r = client.post("/api/search/image", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "20000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while streaming
        boundary = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        yield boundary
        for _ in range(200):
            yield b"\xff" * 1000

    r = client.post(
        "/api/search/image",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code == 413

    bomb = png_bytes(size=(2000, 1000))  # 2 M pixels, a few KB compressed
    assert len(bomb) < 20_000
    r = client.post("/api/search/image", files={"file": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 413 and "pixels" in r.json()["detail"]

    r = client.post(
        "/api/search/image", files={"file": ("x.jpg", b"#!/bin/sh\nrm -rf /\n", "image/jpeg")}
    )
    assert r.status_code == 415 and "not an image" in r.json()["detail"]

    truncated = png_bytes(size=(64, 64), colour=(1, 2, 3))[:-40]
    r = client.post("/api/search/image", files={"file": ("t.png", truncated, "image/png")})
    assert r.status_code == 400 and "decoded" in r.json()["detail"]

    r = client.post("/api/search/image", files={"file": ("e.png", b"", "image/png")})
    assert r.status_code == 400 and "empty" in r.json()["detail"]

    r = client.post("/api/search/image", data={"nofile": "1"})
    assert r.status_code == 422
    assert not [c for c in fake_library.calls if c[0] == "search"]  # none of these searched

    ok = client.post(
        "/api/search/image", files={"file": ("ok.png", png_bytes(), "image/png")}, params={"k": 3}
    )
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["results"]) == 3


def test_json_bodies_are_bounded(make_client, fake_library):
    client = make_client(fake_library, max_json_bytes=4096)
    r = client.post("/api/search", json={"text": "a" * 10_000})
    assert r.status_code == 413
    r = client.post("/api/search", json={"text": "a" * 2000})
    assert r.status_code == 422 and "1000 characters" in r.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/images/..%2F..%2Fetc%2Fpasswd/file",
        "/api/images/%2Fetc%2Fpasswd/file",
        "/api/images/-1/file",
        "/api/images/0/thumbnail",
        "/api/images/99999999999999999999999/file",
        "/api/images/1e3/file",
    ],
)
def test_files_only_by_catalog_id(make_client, fake_library, url):
    client = make_client(fake_library)
    r = client.get(url)
    assert r.status_code in (404, 422)
    assert r.headers["content-type"].startswith("application/json")
    assert "passwd" not in r.text or r.status_code == 422


def test_cors_is_off_by_default_and_on_when_configured(make_client, fake_library):
    pre = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    off = make_client(fake_library)
    r = off.options("/api/ingest", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    r = off.get("/api/jobs", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    on = make_client(fake_library, cors_origins=["http://good.example"])
    r = on.get("/api/jobs", headers={"Origin": "http://good.example"})
    assert r.headers["access-control-allow-origin"] == "http://good.example"
    r = on.get("/api/jobs", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_an_unreachable_brokers_password_is_not_logged(tmp_path: Path, caplog) -> None:
    """The job is recorded, the caller is told it is not queued, the failure is logged with the
    broker URL's password masked."""
    import logging

    from clipsearch.indexer.errors import QueueUnavailable
    from clipsearch.service.app import build_library
    from clipsearch.service.settings import Settings

    photos = tmp_path / "photos"
    photos.mkdir()
    secret = "hunter2-broker-password"
    settings = Settings(
        data_dir=tmp_path / "data",
        broker_url=f"redis://:{secret}@127.0.0.1:1/0",
        images=[photos],
    )
    lib = build_library(settings)
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(QueueUnavailable) as refused:
            lib.submit_ingest(str(photos))
        assert "is recorded, but the job queue did not take it" in str(refused.value)
        assert secret not in str(refused.value)
        assert [j.state for j in lib.list_jobs()] == ["queued"]  # a starting worker re-sends it
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "could not be sent to the broker" in logged
        assert "redis://:**@127.0.0.1:1/0" in logged
        assert secret not in logged
    finally:
        lib.close()
