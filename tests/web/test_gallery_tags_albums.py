"""The gallery's Tags and Albums views in Chromium against a real `clipsearch serve`: a tag lists
with its count and opens on its pictures, the detail view shows a picture's tags and a Reject
there is what the API then says; an album made in the view fills from its search once the
server's albums job ran, and Pin / Exclude in it are what the API then pages. The library is put
back as it was at the end (the tag and the albums deleted)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def _call(server: Any, method: str, path: str, json: Any = None) -> Any:
    r = httpx.request(
        method,
        server.url + path,
        json=json,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert r.status_code < 300, r.text
    return r.json()


def _wait(what: str, check: Any, server: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{server.log_tail()}")
        time.sleep(0.25)


def test_tags_view_and_a_rejection_in_the_detail_view(page: Any, live_server: Any) -> None:
    tag = _call(
        live_server, "POST", "/api/tags", {"name": "test marks", "descriptions": ["a mark"]}
    )
    try:
        page.goto("/")
        first = page.locator(".tile-btn").first
        expect(first).to_be_visible()
        image_id = int(first.get_attribute("data-id"))
        _call(
            live_server, "PUT", f"/api/tags/{tag['id']}/images/{image_id}", {"state": "confirmed"}
        )

        page.get_by_role("button", name="Tags", exact=True).click()
        dialog = page.locator("#tags-view")
        expect(dialog).to_be_visible()
        entry = dialog.locator('button[data-tag="test marks"]')
        expect(entry).to_have_text("test marks (1)")
        entry.click()
        expect(dialog.locator("#tags-pictures-title")).to_have_text("test marks: 1 picture")
        expect(dialog.locator(f'#tags-strip li[data-image-id="{image_id}"]')).to_have_count(1)
        page.locator("#tags-close").click()

        first.click()
        box = page.locator("#detail-tags")
        chip = box.locator('li[data-tag="test marks"]')
        expect(chip).to_have_attribute("data-state", "confirmed")
        chip.get_by_role("button", name="Reject the tag test marks").click()
        expect(chip).to_have_attribute("data-state", "rejected")
        mine = live_server.api(f"/api/images/{image_id}/tags").json()
        assert [t["state"] for t in mine if t["name"] == "test marks"] == ["rejected"]
        assert live_server.api("/api/tags/test marks").json()["assigned"] == 0
    finally:
        _call(live_server, "DELETE", f"/api/tags/{tag['id']}")


def test_albums_view_creates_a_smart_album_and_pins_and_excludes(
    page: Any, live_server: Any
) -> None:
    page.goto("/")
    page.get_by_role("button", name="Albums", exact=True).click()
    dialog = page.locator("#albums-view")
    expect(dialog).to_be_visible()
    try:
        # a smart album: every picture (the tiny model finds nothing relevant at the default cut,
        # so the cut goes to 0 through the API; the view made it from its words)
        dialog.locator("#album-name").fill("Everything test")
        dialog.locator("#album-query").fill("a photo")
        dialog.get_by_role("button", name="Create").click()
        expect(dialog.locator("#album-open-title")).to_contain_text("Everything test: smart")
        _call(live_server, "PATCH", "/api/albums/Everything test",
              {"query": {"text": "a photo", "min_relevance": 0}})  # fmt: skip
        total = len(live_server.library.names)
        _wait(
            "the albums job to compute the album",
            lambda: live_server.api("/api/albums/Everything test").json()["size"] >= total,
            live_server,
        )
        dialog.locator("#albums-close").click()
        page.get_by_role("button", name="Albums", exact=True).click()
        entry = dialog.locator('button[data-album="Everything test"]')
        expect(entry).to_contain_text("smart,")
        entry.click()
        rows = dialog.locator("#album-pictures li")
        expect(rows.first).to_be_visible()
        first, second = rows.nth(0), rows.nth(1)
        excluded_id = int(first.get_attribute("data-image-id"))
        pinned_id = int(second.get_attribute("data-image-id"))
        second.locator('button[data-album-action="pin"]').click()
        expect(
            dialog.locator(f'#album-pictures li[data-image-id="{pinned_id}"]')
        ).to_have_attribute("data-state", "pinned")
        dialog.locator(
            f'#album-pictures li[data-image-id="{excluded_id}"] button[data-album-action="exclude"]'
        ).click()
        expect(dialog.locator(f'#album-pictures li[data-image-id="{excluded_id}"]')).to_have_count(
            0
        )
        expect(dialog.locator("#album-open-title")).to_contain_text("1 pinned, 1 excluded")

        shown = live_server.api("/api/albums/Everything test/images", limit=200).json()["items"]
        ids = {i["image"]["id"]: i["state"] for i in shown}
        assert excluded_id not in ids and ids[pinned_id] == "pinned"
        zip_href = dialog.locator("#album-zip").get_attribute("href")
        assert zip_href.endswith("/export.zip")
    finally:
        for album in live_server.api("/api/albums").json():
            if album["name"] == "Everything test":
                _call(live_server, "DELETE", f"/api/albums/{album['id']}")
