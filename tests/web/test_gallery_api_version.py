"""The gallery speaks the versioned API only (issue 23): through a typical session (the home
timeline, a search, the detail view with its neighbours, the Duplicates and Removed views, the
ingest panel with its folder browser) every request the page makes to the API goes to
``/api/v1/...``, none to the deprecated ``/api/...`` aliases, and no answer it gets carries the
``Deprecation`` header the aliases send. The URLs the API hands out (thumbnails, files) are under
``/api/v1`` too, whichever prefix was asked."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect
from test_gallery import find_tile, tiles, wait_for_grid

pytestmark = pytest.mark.browser


def test_a_gallery_session_asks_only_the_versioned_api(page: Any, live_server: Any) -> None:
    page.goto("about:blank")  # nothing of a previous test's page is recorded
    asked: list[str] = []
    deprecated: list[str] = []
    page.on("request", lambda r: asked.append(urlparse(r.url).path))
    page.on(
        "response",
        lambda r: deprecated.append(urlparse(r.url).path) if r.headers.get("deprecation") else None,
    )

    # home: the timeline, the footer's health, the jobs poll
    page.goto("/")
    wait_for_grid(page)
    # a search
    page.locator("#q").fill("a red circle")
    expect(page).to_have_url(re.compile(r"q=a(\+|%20)red(\+|%20)circle"))
    wait_for_grid(page)
    # the detail view: metadata, the full file, more like this
    target = find_tile(page, "red-circle.png")
    image_id = target.get_attribute("data-id")
    target.click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#similar .strip-btn").first).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    # the Duplicates view, then Removed
    page.get_by_role("button", name="Duplicates", exact=True).click()
    dialog = page.locator("#duplicates-view")
    expect(dialog).to_be_visible()
    expect(page.locator("#duplicates-status")).not_to_be_empty()
    page.locator("#duplicates-close").click()
    expect(dialog).to_be_hidden()
    page.locator("#removed-toggle").click()
    expect(page.locator("#removed-view")).to_be_visible()
    page.locator("#removed-close").click()
    expect(page.locator("#removed-view")).to_be_hidden()
    # the ingest panel: its jobs, watched folders and the server's folder browser
    page.locator("#ingest-toggle").click()
    page.locator("#folder-browse").click()
    root = page.locator(f'#folder-browser .folder-entry[data-path="{live_server.library.root}"]')
    root.click()
    expect(page.locator("#folder-browser-path")).to_contain_text(str(live_server.library.root))
    page.keyboard.press("Escape")
    expect(tiles(page).first).to_be_visible()

    api_calls = [p for p in asked if p == "/api" or p.startswith("/api/")]
    old = [p for p in api_calls if not p.startswith("/api/v1/")]
    assert not old, f"the gallery asked deprecated /api paths: {sorted(set(old))}"
    assert not deprecated, f"answers marked deprecated: {sorted(set(deprecated))}"
    # the session did reach each part of the API it was meant to
    seen = set(api_calls)
    for wanted in (
        "/api/v1/health",
        "/api/v1/jobs",
        "/api/v1/images",
        "/api/v1/search",
        f"/api/v1/images/{image_id}",
        f"/api/v1/images/{image_id}/file",
        f"/api/v1/images/{image_id}/similar",
        f"/api/v1/images/{image_id}/thumbnail",
        "/api/v1/duplicates",
        "/api/v1/folders/browse",
        "/api/v1/removed",
    ):
        assert wanted in seen, f"{wanted} was never asked (asked: {sorted(seen)})"


def test_urls_the_api_hands_out_are_versioned_whichever_prefix_was_asked(
    live_server: Any,
) -> None:
    for prefix in ("/api", "/api/v1"):
        hit = live_server.api(f"{prefix}/search", q="a photo", k=1).json()["results"][0]
        for field, what in (("thumbnail_url", "thumbnail"), ("file_url", "file")):
            assert hit[field] == f"/api/v1/images/{hit['id']}/{what}", (prefix, hit)
        listed = live_server.api(f"{prefix}/images", limit=1).json()["items"][0]
        assert listed["preview_url"] == f"/api/v1/images/{listed['id']}/preview", listed
