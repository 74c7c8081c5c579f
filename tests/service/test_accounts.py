"""Accounts on a real socket: signing in and out, brute force slowed and recorded, passwords never
shown, sessions that end, API keys that are shown once, scoped and revoked alone, the audit
trail, and an upgrade from the single-token setup that needs nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from accounts_testlib import PASSWORD, TOKEN, Served, add_user, serve, served_library, sign_in
from svc_testlib import ingest_now, write_images

from clipsearch.service.app import build_library
from clipsearch.service.settings import Settings


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    with served_library(
        tmp_path_factory.mktemp("accounts"),
        tiny_model_dir,
        signin_limit_account="3/minute",
        signin_limit_address="12/minute",
    ) as s:
        yield s


def test_a_wrong_password_and_an_unknown_name_read_the_same(served: Served) -> None:
    add_user(served, "walt", "viewer")
    with served.client() as c:
        wrong = c.post("/api/session", json={"name": "walt", "password": "not the password!"})
        unknown = c.post("/api/session", json={"name": "nobody-here", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "set-cookie" not in wrong.headers


def test_brute_force_is_slowed_per_account_and_recorded(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    add_user(served, "bruno", "editor")
    caplog.set_level(logging.DEBUG)
    tries = [f"guess number {i:04d}" for i in range(4)]
    with served.client() as c:
        answers = [c.post("/api/session", json={"name": "bruno", "password": p}) for p in tries]
        # the right password is refused too while the account's limit is spent
        right = c.post("/api/session", json={"name": "bruno", "password": PASSWORD})
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert right.status_code == 429
    assert int(right.headers["retry-after"]) >= 1
    assert "wait" in right.json()["detail"]
    with served.admin() as admin:
        trail = admin.get("/api/audit", params={"actor": "bruno"}).json()
    actions = [e["action"] for e in trail]
    assert actions.count("sign-in-failed") == 3 and "sign-in-throttled" in actions
    # no password tried is in the audit trail, the answers or the log
    seen = str(trail) + caplog.text + "".join(a.text for a in answers)
    assert not any(p in seen for p in [*tries, PASSWORD])


def test_failures_from_one_address_are_limited_across_names() -> None:
    from clipsearch.indexer.accounts import SignInGuard

    guard = SignInGuard(per_account="5/minute", per_address="4/minute")
    for i in range(4):
        assert guard.retry_after(f"name{i}", "10.0.0.1") is None
        guard.failed(f"name{i}", "10.0.0.1")
    wait = guard.retry_after("someone-else", "10.0.0.1")
    assert wait is not None and 1 <= wait <= 61
    assert guard.retry_after("someone-else", "10.0.0.2") is None  # another address may try


def test_sign_in_sets_a_strict_http_only_cookie_and_never_returns_the_password(
    served: Served,
) -> None:
    add_user(served, "sally", "viewer")
    with served.client() as c:
        r = c.post("/api/session", json={"name": "sally", "password": PASSWORD})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert "secure" not in cookie  # plain http on loopback; Secure behind HTTPS
        assert PASSWORD not in r.text
        me = c.get("/api/session").json()
        assert me["signed_in"] and me["user"] == "sally" and me["role"] == "viewer"
    with served.admin() as admin:
        users = admin.get("/api/users").text
    assert "sally" in users and "argon2" not in users and PASSWORD not in users


def test_sign_out_ends_the_session_on_the_server(served: Served) -> None:
    add_user(served, "otto", "viewer")
    c = sign_in(served, "otto")
    cookie = c.cookies.get("clipsearch_session")
    assert c.get("/api/images").status_code == 200
    assert c.delete("/api/session").status_code == 204
    with served.client(cookies={"clipsearch_session": cookie}) as copy:
        r = copy.get("/api/images")
    assert r.status_code == 401 and "sign in again" in r.json()["detail"]


def test_a_password_change_ends_every_session(served: Served) -> None:
    add_user(served, "pam", "editor")
    first, second = sign_in(served, "pam"), sign_in(served, "pam")
    r = first.put("/api/me/password", json={"password": "a brand new passphrase", "current": "no"})
    assert r.status_code == 403  # the current password is asked
    r = first.put(
        "/api/me/password", json={"password": "a brand new passphrase", "current": PASSWORD}
    )
    assert r.status_code == 204
    assert first.get("/api/images").status_code == 401
    assert second.get("/api/images").status_code == 401
    assert sign_in(served, "pam", "a brand new passphrase").get("/api/images").status_code == 200
    with served.client() as c:
        old = c.post("/api/session", json={"name": "pam", "password": PASSWORD})
    assert old.status_code == 401


def test_a_short_password_is_refused_with_the_rule(served: Served) -> None:
    with served.admin() as admin:
        r = admin.post("/api/users", json={"name": "shorty", "role": "viewer", "password": "abc"})
    assert r.status_code == 400 and "12" in r.json()["detail"]


def test_keys_are_shown_once_scoped_by_role_and_revoked_alone(served: Served) -> None:
    add_user(served, "kim", "editor")
    kim = sign_in(served, "kim")
    too_wide = kim.post("/api/keys", json={"name": "x", "scopes": ["admin"]})
    assert too_wide.status_code == 400 and "wider" in too_wide.json()["detail"]
    made = [kim.post("/api/keys", json={"name": n, "scopes": ["read"]}) for n in ("a", "b")]
    assert all(m.status_code == 201 for m in made)
    key_a, key_b = (m.json()["key"] for m in made)
    listed = kim.get("/api/keys").json()
    assert {k["name"] for k in listed} == {"a", "b"}
    assert key_a not in str(listed) and key_b not in str(listed)  # shown once
    with served.client(headers={"Authorization": f"Bearer {key_a}"}) as a:
        assert a.get("/api/images").status_code == 200
        # a read key of an editor cannot change anything
        assert a.delete("/api/images/987654321").status_code == 403
    assert kim.delete(f"/api/keys/{made[0].json()['id']}").status_code == 200
    with served.client(headers={"Authorization": f"Bearer {key_a}"}) as a:
        assert a.get("/api/images").status_code == 401
    with served.client(headers={"Authorization": f"Bearer {key_b}"}) as b:
        assert b.get("/api/images").status_code == 200
    used = {k["name"]: k["last_used_at"] for k in kim.get("/api/keys").json()}
    assert used["b"] is not None
    # another editor cannot revoke kim's key
    add_user(served, "ed", "editor")
    assert sign_in(served, "ed").delete(f"/api/keys/{made[1].json()['id']}").status_code == 404


def test_a_disabled_account_cannot_sign_in_and_its_keys_stop(served: Served) -> None:
    add_user(served, "dora", "viewer")
    dora = sign_in(served, "dora")
    key = dora.post("/api/keys", json={"name": "script", "scopes": ["read"]}).json()["key"]
    with served.admin() as admin:
        assert admin.patch("/api/users/dora", json={"disabled": True}).status_code == 200
    assert dora.get("/api/images").status_code == 401
    with served.client(headers={"Authorization": f"Bearer {key}"}) as k:
        assert k.get("/api/images").status_code == 401
    with served.client() as c:
        assert (
            c.post("/api/session", json={"name": "dora", "password": PASSWORD}).status_code == 401
        )


def test_the_audit_trail_names_who_did_what(served: Served) -> None:
    add_user(served, "adam", "admin")
    adam = sign_in(served, "adam")
    made = adam.post("/api/keys", json={"name": "backup", "scopes": ["read", "write"]}).json()
    adam.delete(f"/api/keys/{made['id']}")
    trail = adam.get("/api/audit", params={"actor": "adam"}).json()
    actions = [e["action"] for e in trail]
    assert actions[:3] == ["key-revoked", "key-created", "sign-in"]
    assert made["key"] not in str(adam.get("/api/audit").json())
    with served.admin() as admin:
        users = [e for e in admin.get("/api/audit", params={"action": "user-added"}).json()]
    assert any(e["target"].startswith("adam") and e["actor"] == "token" for e in users)


def test_a_single_token_library_opens_with_the_same_token_after_the_upgrade(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A library made before accounts (catalog at revision 0009), served with its token: the
    upgrade to 0010 happens on open and the token works as before, no step needed."""
    from alembic import command

    from clipsearch.indexer import catalog

    photos = tmp_path / "photos"
    write_images(photos)
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'catalog.db'}"
    command.upgrade(catalog.alembic_config(url), "0009")
    settings = Settings(
        data_dir=data,
        database_url=url,
        model=str(tiny_model_dir),
        allowed_roots=[photos],
        api_token=TOKEN,
        preload_model=False,
    )
    lib = build_library(settings)
    try:
        assert ingest_now(lib, photos).state == "done"
        with serve(settings, lib) as base:
            import httpx

            with httpx.Client(base_url=base, timeout=60) as c:
                assert c.get("/api/images").status_code == 401
                c.headers["Authorization"] = f"Bearer {TOKEN}"
                page = c.get("/api/images")
                assert page.status_code == 200 and len(page.json()["items"]) == 6
            with httpx.Client(base_url=base, timeout=60) as browser:
                r = browser.post("/api/session", json={"token": TOKEN})
                assert r.status_code == 200 and r.json()["role"] == "admin"
                assert browser.get("/api/images").status_code == 200
    finally:
        lib.close()


def test_changes_to_the_library_are_audited_with_who_and_what(served: Served) -> None:
    add_user(served, "edna", "editor")
    edna = sign_in(served, "edna")
    with served.admin() as admin:
        victim = admin.get("/api/images", params={"limit": 1}).json()["items"][0]["id"]
        assert edna.delete(f"/api/images/{victim}").status_code == 204
        assert edna.delete("/api/images/987654321").status_code == 404
        assert edna.post("/api/reindex", json={}).status_code == 403  # not hers to do
        trail = admin.get("/api/audit", params={"actor": "edna"}).json()
    done = [(e["action"], e["target"], e["outcome"]) for e in trail]
    assert ("image-removed", f"id {victim}", "ok") in done
    assert ("image-removed", "id 987654321", "failed") in done
    assert not any(a == "reindex" for a, _, _ in done)
    assert all(e["address"] == "127.0.0.1" for e in trail)


def test_a_server_with_accounts_and_no_token_asks_who_is_calling(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Accounts alone close the server: the gallery sends the browser to the sign-in page, the
    API answers 401 until an account signs in (no token was ever set)."""
    from clipsearch.indexer.accounts import Accounts

    with served_library(tmp_path, tiny_model_dir, api_token=None) as served:
        with served.client() as c:
            assert c.get("/api/images").status_code == 200  # open: no token, no account yet
        Accounts(served.lib.engine).add_user("root", "admin", PASSWORD)
        with served.client() as c:
            # an account added by another process (the CLI) is seen within seconds
            deadline = time.monotonic() + 10
            while c.get("/api/images").status_code != 401:
                assert time.monotonic() < deadline, "the server still answers without a sign-in"
                time.sleep(0.5)
            page = c.get("/", follow_redirects=False)
            assert page.status_code == 303 and page.headers["location"] == "/signin.html"
            assert c.get("/api/session").json()["accounts"] is True
        assert sign_in(served, "root").get("/api/images").status_code == 200
