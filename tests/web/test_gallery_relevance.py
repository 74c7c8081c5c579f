"""The gallery's relevance cut ("N weaker results hidden · Show"), its sort menu and the filters
on browsing, and "more like this … but with text", in Debian's Chromium against a live server
(tests/web/conftest.py). What the page shows is compared with what the API answers."""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import expect
from test_gallery import tile_name, tile_names, tiles, wait_for_grid

pytestmark = pytest.mark.browser

QUERY = "a bright picture"


def _post(server: Any, path: str, body: dict[str, Any]) -> Any:
    r = httpx.post(
        server.url + path,
        json=body,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _two_decimal_cut(rel: list[float]) -> float:
    """A cut the gallery's URL can carry (two decimals, min=0.42) that keeps the first three
    or more results and hides the rest: the largest two-decimal value at or below a result's
    relevance that is above the next one's."""
    for i in range(2, len(rel) - 1):
        cut = math.floor(rel[i] * 100) / 100
        if rel[i + 1] < cut <= rel[i]:
            return cut
    pytest.fail(f"no two-decimal cut separates these relevances: {rel}")


def test_a_relevance_cut_hides_weaker_results_and_says_how_many(
    page: Any, live_server: Any
) -> None:
    everything = live_server.api("/api/search", q=QUERY, k=40).json()["results"]
    rel = [x["relevance"] for x in everything]
    assert all(isinstance(v, float) for v in rel)
    cut = _two_decimal_cut(rel)
    cut_page = live_server.api("/api/search", q=QUERY, k=40, min_relevance=cut).json()
    shown = [x["id"] for x in cut_page["results"]]
    hidden = cut_page["hidden"]
    assert 0 < len(shown) < 40 and hidden > 0

    page.goto(f"/?q={quote(QUERY)}&min={cut:.2f}")
    wait_for_grid(page)
    expect(tiles(page)).to_have_count(len(shown))
    assert [int(t.get_attribute("data-id") or 0) for t in tiles(page).all()] == shown
    note = page.locator("#hidden-note")
    expect(note).to_be_visible()
    more = "+" if cut_page["hidden_more"] else ""
    expect(page.locator("#hidden-text")).to_have_text(
        f"{hidden}{more} weaker results hidden (relevance below {cut:.2f})"
    )
    # its relevance, as the API gives it, is one click away: the detail view's numbers
    tiles(page).first.click()
    page.locator("#detail-why summary").click()
    expect(page.locator("#detail-why .why-numbers dd").first).to_have_text(
        f"{cut_page['results'][0]['relevance']:.2f}"
    )
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()

    page.locator("#hidden-show").click()
    expect(note).to_be_hidden()
    expect(page.locator("#min-score-value")).to_have_text("any")
    expect(tiles(page).nth(39)).to_be_attached()  # a full page, and more as it scrolls
    assert "min=" not in page.url  # 0 is this server's default (CLIPSEARCH_GALLERY_MIN_RELEVANCE)


def test_the_default_cut_comes_from_the_server(page: Any, live_server: Any) -> None:
    health = live_server.api("/api/health").json()
    assert health["gallery_min_relevance"] == 0.0  # what the test server is started with
    page.goto(f"/?q={quote(QUERY)}")
    wait_for_grid(page)
    expect(page.locator("#min-score-value")).to_have_text("any")
    expect(page.locator("#hidden-note")).to_be_hidden()


def test_more_like_this_but_with_text(page: Any, live_server: Any) -> None:
    page.goto("/")
    wait_for_grid(page)
    example = tiles(page).first
    name = tile_name(example.get_attribute("aria-label") or "")
    example_id = int(example.get_attribute("data-id") or 0)
    example.click()
    expect(page.locator("#detail")).to_be_visible()
    page.locator("#similar-text").fill("blue")
    page.locator("#similar-refine button").click()
    expect(page.locator("#detail")).to_be_hidden()
    expect(page.locator("#query-chip-label")).to_have_text(f"Like {name}, with “blue”")
    expect(page).to_have_url(re.compile(rf"like={example_id}&with=blue"))
    wait_for_grid(page)
    want = _post(
        live_server,
        "/api/search",
        {"terms": [{"image_id": example_id}, {"text": "blue"}], "k": 40},
    )["results"]
    expect(tiles(page).nth(len(want) - 1)).to_be_attached()
    assert [int(t.get_attribute("data-id") or 0) for t in tiles(page).all()[:10]] == [
        x["id"] for x in want[:10]
    ]
    assert example_id not in [int(t.get_attribute("data-id") or 0) for t in tiles(page).all()]
    # and it is not the plain "more like this"
    plain = live_server.api(f"/api/images/{example_id}/similar", k=40).json()["results"]
    assert [x["id"] for x in plain] != [x["id"] for x in want]
    # a reload keeps it (the words are in the URL)
    page.reload()
    expect(page.locator("#query-chip-label")).to_have_text(f"Like {name}, with “blue”")


def test_browsing_takes_the_filters_and_the_sort(page: Any, live_server: Any) -> None:
    lib = live_server.library
    webp = sorted(n for n in lib.trip_names if n.endswith(".webp"))
    page.goto("/?fmt=WEBP&sort=date_desc")
    wait_for_grid(page)
    expect(page.locator("#sort")).to_have_value("date_desc")
    expect(tiles(page)).to_have_count(len(webp))
    assert sorted(tile_names(page)) == webp
    expect(page.locator("#status")).to_contain_text("newest first")
    # the API pages the same way, with a date cursor
    api = live_server.api("/api/images", format="WEBP", sort="date_desc", limit=1).json()
    assert len(api["items"]) == 1 and api["next_after_key"]
    # the timeline has no "best match": its Sort menu offers the date orders only; oldest first
    # keeps the format filter on
    expect(page.locator('#sort option[value="relevance"]')).to_be_disabled()
    page.locator("#sort").select_option("date_asc")
    expect(page).to_have_url(re.compile("sort=date_asc"))
    expect(tiles(page)).to_have_count(len(webp))
    # a search offers the best match again
    page.locator("#q").fill("a harbour")
    expect(page.locator('#sort option[value="relevance"]')).to_be_enabled()
