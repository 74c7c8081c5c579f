"""The gallery with accounts, in a real browser (Chromium through Playwright) on a real socket:
the sign-in page asks for a name and a password, the grid shows the viewer's shared folder only,
the top bar names the account and hides what its role may not do, and signing out ends the
session (its cookie stops working)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from accounts_testlib import PASSWORD, Served, add_user, served_library

CHROMIUM = os.environ.get("CLIPSEARCH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    with served_library(tmp_path_factory.mktemp("gallery"), tiny_model_dir) as s:
        add_user(s, "gina", "viewer")
        with s.admin() as admin:
            folder = str(s.photos / "alpha")
            assert (
                admin.post("/api/shares", json={"folder": folder, "user": "gina"}).status_code
                == 201
            )
        yield s


@pytest.fixture()
def page(served: Served) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(base_url=served.url, viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        pg = context.new_page()
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        yield pg
        browser.close()
    assert not errors, errors


def test_a_viewer_signs_in_sees_their_folder_and_signs_out(served: Served, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    expect(page).to_have_url(served.url + "/signin.html")
    expect(page.locator("#signin-name")).to_be_visible()
    expect(page.locator("#signin-token")).to_be_hidden()
    page.locator("#signin-name").fill("gina")
    page.locator("#signin-password").fill("not her password at all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("wrong name or password")
    page.locator("#signin-password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(served.url + "/")
    tiles = page.locator("#results .tile-btn")
    expect(tiles).to_have_count(2)  # the two pictures of her folder, not the other two
    # the top bar names her; what a viewer may not do is not offered
    expect(page.locator("#account-toggle")).to_have_text("gina")
    expect(page.locator("#ingest-toggle")).to_be_hidden()
    cookie = next(c for c in page.context.cookies() if c["name"] == "clipsearch_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.locator("#account-toggle").click()
    expect(page.locator("#account-panel")).to_contain_text("Role: viewer")
    page.locator("#sign-out").click()
    expect(page).to_have_url(served.url + "/signin.html")
    # the cookie she had no longer opens anything
    stale = httpx.get(
        served.url + "/api/images", cookies={"clipsearch_session": cookie["value"]}, timeout=30
    )
    assert stale.status_code == 401


def test_the_token_form_is_one_click_away(served: Served, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/signin.html")
    expect(page.locator("#signin-name")).to_be_visible()
    page.get_by_role("button", name="Use the API token").click()
    page.locator("#signin-token").fill(served.settings.token or "")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(served.url + "/")
    expect(page.locator("#results .tile-btn")).to_have_count(4)  # the token sees every folder
    expect(page.locator("#account-toggle")).to_have_text("Token")


def test_an_admin_adds_a_person_and_shares_a_folder_from_the_gallery(
    served: Served, page: Any
) -> None:
    from playwright.sync_api import expect

    add_user(served, "ada", "admin")
    page.goto("/signin.html")
    page.locator("#signin-name").fill("ada")
    page.locator("#signin-password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(served.url + "/")
    page.locator("#account-toggle").click()
    page.locator("#admin-open").click()
    dialog = page.locator("#admin-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#admin-users")).to_contain_text("gina · viewer")
    page.locator("#admin-user-name").fill("vic")
    page.locator("#admin-user-role").select_option("viewer")
    page.locator("#admin-user-password").fill(PASSWORD)
    page.locator("#admin-add-user").get_by_role("button", name="Add").click()
    expect(page.locator("#admin-users")).to_contain_text("vic · viewer")
    beta = str(served.photos / "beta")
    page.locator("#admin-share-folder").fill(beta)
    page.locator("#admin-share-user").select_option("vic")
    page.locator("#admin-share").get_by_role("button", name="Share").click()
    expect(page.locator("#admin-shares")).to_contain_text(f"{beta} → vic")
    expect(page.locator("#admin-audit")).to_contain_text("ada · folder-shared")
    expect(page.locator("#admin-audit")).to_contain_text("ada · user-added")
    # what the admin did is what the server now does for vic
    with served.client() as vic:
        r = vic.post("/api/session", json={"name": "vic", "password": PASSWORD})
        assert r.status_code == 200
        items = vic.get("/api/images").json()["items"]
    assert len(items) == 2 and all("/beta/" in i["path"] for i in items)
