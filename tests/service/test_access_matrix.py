"""Every route of the app × every kind of caller, on a real socket: no credentials, a viewer, an
editor, an admin (signed in with a name and password: cookie + CSRF), the server's API token (an
admin key, as before accounts), a revoked API key, an expired session. Each gets exactly what its
role allows: 401 without valid credentials, 403 below the route's role, anything else (the
route's own answer: 200, 404 for the made-up ids, 422 for the deliberately wrong bodies) when
allowed.

The routes are read from the app's route table and must all be in ROLE below, so a new route
cannot be added without saying who may call it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from accounts_testlib import Served, add_user, served_library, sign_in

from clipsearch.indexer.accounts import user_sessions

# who may call each route: "public", "viewer", "editor", "admin" (a viewer's answers on the views
# spanning the library, tags, albums, duplicates and removed, are narrowed to their folders:
# tests/service/test_accounts_sharing.py)
ROLE: dict[tuple[str, str], str] = {
    ("GET", "/api/search"): "viewer",
    ("POST", "/api/search"): "viewer",
    ("POST", "/api/search/image"): "viewer",
    ("GET", "/api/search/languages"): "viewer",
    ("GET", "/api/images/{id}/similar"): "viewer",
    ("GET", "/api/images"): "viewer",
    ("GET", "/api/images/timeline"): "viewer",
    ("GET", "/api/images/{id}"): "viewer",
    ("GET", "/api/images/{id}/thumbnail"): "viewer",
    ("GET", "/api/images/{id}/file"): "viewer",
    ("GET", "/api/images/{id}/preview"): "viewer",
    ("DELETE", "/api/images/{id}"): "editor",
    ("POST", "/api/images/{id}/restore"): "editor",
    ("GET", "/api/removed"): "viewer",
    ("GET", "/api/removed/{id}"): "viewer",
    ("GET", "/api/removed/{id}/thumbnail"): "viewer",
    ("POST", "/api/removed/{id}/restore"): "editor",
    ("GET", "/api/duplicates"): "viewer",
    ("POST", "/api/duplicates/scan"): "editor",
    ("GET", "/api/tags"): "viewer",
    ("POST", "/api/tags"): "editor",
    ("POST", "/api/tags/run"): "editor",
    ("GET", "/api/tags/{tag}"): "viewer",
    ("PATCH", "/api/tags/{tag}"): "editor",
    ("DELETE", "/api/tags/{tag}"): "editor",
    ("GET", "/api/tags/{tag}/images"): "viewer",
    ("PUT", "/api/tags/{tag}/images/{id}"): "editor",
    ("GET", "/api/images/{id}/tags"): "viewer",
    ("GET", "/api/albums"): "viewer",
    ("POST", "/api/albums"): "editor",
    ("POST", "/api/albums/refresh"): "editor",
    ("GET", "/api/albums/{album}"): "viewer",
    ("PATCH", "/api/albums/{album}"): "editor",
    ("DELETE", "/api/albums/{album}"): "editor",
    ("GET", "/api/albums/{album}/images"): "viewer",
    ("POST", "/api/albums/{album}/images"): "editor",
    ("GET", "/api/albums/{album}/export.zip"): "viewer",
    ("POST", "/api/albums/{album}/export"): "editor",
    ("GET", "/api/folders"): "editor",
    ("GET", "/api/folders/allowed"): "editor",
    ("GET", "/api/folders/browse"): "editor",
    ("POST", "/api/folders"): "editor",
    ("DELETE", "/api/folders/{id}"): "editor",
    ("POST", "/api/folders/{id}/scan"): "editor",
    ("GET", "/api/folders/{id}/problems"): "viewer",
    ("POST", "/api/ingest"): "editor",
    ("POST", "/api/reindex"): "admin",
    ("GET", "/api/jobs"): "editor",
    ("GET", "/api/jobs/{id}"): "editor",
    ("GET", "/api/images/{id}/text"): "viewer",
    ("POST", "/api/ocr"): "editor",
    ("GET", "/api/health"): "public",
    ("GET", "/metrics"): "admin",
    ("GET", "/api/health/live"): "public",
    ("GET", "/api/health/ready"): "public",
    ("GET", "/api/session"): "public",
    ("POST", "/api/session"): "public",
    ("DELETE", "/api/session"): "public",
    ("GET", "/api/session/oidc"): "public",  # 404 here: no single sign-on set up
    ("GET", "/api/session/oidc/callback"): "public",
    ("GET", "/api/users"): "admin",
    ("POST", "/api/users"): "admin",
    ("PATCH", "/api/users/{name}"): "admin",
    ("DELETE", "/api/users/{name}"): "admin",
    ("PUT", "/api/users/{name}/password"): "admin",
    ("PUT", "/api/me/password"): "viewer",
    ("GET", "/api/me/sessions"): "viewer",
    ("DELETE", "/api/me/sessions/{session_id}"): "viewer",
    ("GET", "/api/keys"): "viewer",
    ("POST", "/api/keys"): "viewer",
    ("DELETE", "/api/keys/{key_id}"): "viewer",
    ("GET", "/api/shares"): "admin",
    ("POST", "/api/shares"): "admin",
    ("DELETE", "/api/shares"): "admin",
    ("GET", "/api/audit"): "admin",
    ("GET", "/docs"): "public",
    ("GET", "/docs/oauth2-redirect"): "public",
    ("GET", "/openapi.json"): "public",
}
RANK = {"viewer": 0, "editor": 1, "admin": 2}
# made-up path values: the allowed callers get the route's own 404, never a change
PARAMS = {"id": "987654321", "tag": "no-such-tag", "album": "987654321", "name": "nobody"}
PARAMS |= {"key_id": "987654", "session_id": "0" * 64}


def app_routes(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app serves, from its route table (HEAD aside)."""
    for route in app.routes:
        found = (
            list(route.effective_route_contexts())
            if hasattr(route, "effective_route_contexts")
            else [route]
        )
        for r in found:
            for method in sorted(getattr(r, "methods", None) or ()):
                if method != "HEAD":
                    yield method, r.path


def _unversioned(path: str) -> str:
    """The route's entry in ROLE: ``/api/v1/x`` is the same route as ``/api/x``."""
    return "/api/" + path[len("/api/v1/") :] if path.startswith("/api/v1/") else path


def _url(path: str) -> str:
    for name, value in PARAMS.items():
        path = path.replace("{" + name + "}", value)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    with served_library(tmp_path_factory.mktemp("matrix"), tiny_model_dir) as s:
        yield s


def _callers(served: Served) -> dict[str, httpx.Client]:
    for name, role in (("vera", "viewer"), ("eddie", "editor"), ("ada", "admin")):
        add_user(served, name, role)
    with served.admin() as admin:  # the viewer sees every folder: roles alone are under test here
        assert admin.post("/api/shares", json={"folder": str(served.photos)}).status_code == 201
    callers = {
        "none": served.client(),
        "viewer": sign_in(served, "vera"),
        "editor": sign_in(served, "eddie"),
        "admin": sign_in(served, "ada"),
        "token": served.admin(),
    }
    # an admin's key, revoked
    made = callers["admin"].post("/api/keys", json={"name": "ci", "scopes": ["admin"]})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    revoked = callers["admin"].delete(f"/api/keys/{made.json()['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
    callers["revoked key"] = served.client(headers={"Authorization": f"Bearer {key}"})
    # an admin's session left idle past the idle expiry (its last use moved back in the catalog)
    expired = sign_in(served, "ada")
    me = expired.get("/api/me/sessions").json()
    assert len(me) == 2
    with served.lib.engine.begin() as conn:
        conn.execute(
            user_sessions.update()
            .where(user_sessions.c.id == next(s["id"] for s in me if s["current"]))
            .values(last_seen_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        )
    callers["expired session"] = expired
    return callers


def test_every_route_gives_each_caller_what_its_role_allows(served: Served) -> None:
    from clipsearch.service.app import create_app

    app = create_app(served.settings, library=served.lib)
    routes = set(app_routes(app))
    named = {(method, _unversioned(path)) for method, path in routes}
    assert not named - ROLE.keys(), f"routes nobody said who may call: {named - ROLE.keys()}"
    assert not ROLE.keys() - named, f"routes gone from the app: {ROLE.keys() - named}"
    callers = _callers(served)
    wrong: list[str] = []
    for method, path in sorted(routes):
        role = ROLE[method, _unversioned(path)]
        for who, client in callers.items():
            if role == "public" and who != "none":
                continue  # signing out with a caller's cookie would end the session under test
            # a JSON list where a route reads an object: an allowed call stops at validation
            body = {"json": []} if method in ("POST", "PUT", "PATCH", "DELETE") else {}
            r = client.request(method, _url(path), **body)
            if role == "public":
                ok = r.status_code not in (401, 403)
            elif who in ("none", "revoked key", "expired session"):
                ok = r.status_code == 401
            else:
                allowed = RANK["admin" if who == "token" else who] >= RANK[role]
                ok = r.status_code not in (401, 403) if allowed else r.status_code == 403
            if not ok:
                wrong.append(f"{method} {path} as {who}: {r.status_code} {r.text[:120]}")
    assert not wrong, "\n".join(wrong)
    # the refusals say what to do
    r = callers["viewer"].post("/api/ingest", json={"path": str(served.photos)})
    assert r.status_code == 403 and "editor" in r.json()["detail"]
    r = callers["revoked key"].get("/api/images")
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    r = callers["expired session"].get("/api/images")
    assert r.status_code == 401 and "sign in again" in r.json()["detail"]


def test_a_change_with_the_cookie_needs_its_csrf_header(served: Served) -> None:
    add_user(served, "cora", "editor")
    client = sign_in(served, "cora")
    del client.headers["X-CSRF-Token"]
    r = client.delete("/api/images/987654321")
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["detail"]
    r = client.get("/api/images")
    assert r.status_code == 200  # reads need no CSRF value
