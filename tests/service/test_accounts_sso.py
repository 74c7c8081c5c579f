"""Single sign-on against a real OpenID Connect provider: `oidc-provider-mock` started as its own
process on 127.0.0.1, the library served by uvicorn on another port. The browser's part (the
redirects, the provider's sign-in form) is played with httpx, hop by hop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from accounts_testlib import Served, free_port, served_library

CLIENT_ID = "clipsearch-test"
CLIENT_SECRET = "client-secret-for-the-tests"
PEOPLE = [
    {"sub": "olga-1", "preferred_username": "olga", "clipsearch_role": "editor"},
    {"sub": "pete-2", "preferred_username": "pete"},  # no role claim: the default role
    {"sub": "mal-3", "preferred_username": "mal", "clipsearch_role": "overlord"},
]


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    port = free_port()
    exe = Path(sys.executable).with_name("oidc-provider-mock")
    args = [str(exe), "--port", str(port), "--require-nonce", "true"]
    for person in PEOPLE:
        args += ["--user-claims", json.dumps(person)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(url + "/.well-known/openid-configuration", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            assert time.monotonic() < deadline, "the OIDC provider did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, provider: str
) -> Iterator[Served]:
    with served_library(
        tmp_path_factory.mktemp("sso"),
        tiny_model_dir,
        oidc_issuer=provider,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
    ) as s:
        yield s


def _sign_in(served: Served, sub: str) -> tuple[httpx.Client, httpx.Response]:
    """Follow the sign-in as a browser would, choosing ``sub`` on the provider's form; the
    answer of the server's callback."""
    browser = served.client()
    start = browser.get("/api/session/oidc")
    assert start.status_code == 302, start.text
    authorize = start.headers["location"]
    asked = parse_qs(urlparse(authorize).query)
    assert asked["client_id"] == [CLIENT_ID] and asked["code_challenge_method"] == ["S256"]
    assert "nonce" in asked and "state" in asked
    # the redirect URI docs/security.md says to register
    assert asked["redirect_uri"] == [served.url + "/api/v1/session/oidc/callback"]
    with httpx.Client(timeout=30) as at_provider:
        chosen = at_provider.post(authorize, data={"sub": sub})
    assert chosen.status_code in (302, 303), chosen.text[:300]
    return browser, browser.get(chosen.headers["location"])


def test_a_person_signs_in_with_the_provider_and_gets_the_claimed_role(served: Served) -> None:
    browser, back = _sign_in(served, "olga-1")
    assert back.status_code == 200, back.text
    assert "httponly" in back.headers["set-cookie"].lower()
    me = browser.get("/api/session").json()
    assert me["signed_in"] and me["user"] == "olga" and me["role"] == "editor"
    assert browser.get("/api/jobs").status_code == 200  # an editor's route
    with served.admin() as admin:
        users = {u["name"]: u for u in admin.get("/api/users").json()}
        trail = admin.get("/api/audit", params={"actor": "olga"}).json()
    assert users["olga"]["sso"] and users["olga"]["role"] == "editor"
    assert trail[0]["action"] == "sign-in" and trail[0]["target"] == "single sign-on"
    # a second sign-in finds the same account (linked by the provider's subject)
    _, again = _sign_in(served, "olga-1")
    assert again.status_code == 200
    with served.admin() as admin:
        assert [u["name"] for u in admin.get("/api/users").json()].count("olga") == 1


def test_without_the_role_claim_the_default_role_applies(served: Served) -> None:
    browser, back = _sign_in(served, "pete-2")
    assert back.status_code == 200
    assert browser.get("/api/session").json()["role"] == "viewer"
    assert browser.get("/api/jobs").status_code == 403


def test_a_role_that_is_not_ours_is_refused(served: Served) -> None:
    browser, back = _sign_in(served, "mal-3")
    assert back.status_code == 403 and "no role here" in back.json()["detail"]
    assert browser.get("/api/images").status_code == 401


def test_a_callback_not_started_in_this_browser_is_refused(served: Served) -> None:
    victim = served.client()
    start = victim.get("/api/session/oidc")
    with httpx.Client(timeout=30) as at_provider:
        chosen = at_provider.post(start.headers["location"], data={"sub": "olga-1"})
    attacker: Any = served.client()  # another browser: no state cookie
    r = attacker.get(chosen.headers["location"])
    assert r.status_code == 400 and "not started in this browser" in r.json()["detail"]
    # and the code cannot be used twice
    assert victim.get(chosen.headers["location"]).status_code == 200
    assert victim.get(chosen.headers["location"]).status_code == 400
