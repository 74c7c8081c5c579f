"""The gallery does not decide its own relevance cut: it shows the cut the server says it applied
(a search answer's `min_relevance`), sends `min_relevance` only when the user moved the slider
(or a link says `min`), and "Reset threshold" returns to the server's default, not to 0.

The test server's default cut is 0; here the page sees a server whose default is 0.30: GET
/api/health says so and each search answer that was not given a cut says it applied 0.30 (the
answers are the live server's, with that one field set, as the server now writes it)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import pytest
from playwright.sync_api import expect
from test_gallery import tiles, wait_for_grid

pytestmark = pytest.mark.browser

QUERY = "a bright picture"
SEARCH = re.compile(r".*/api/v1/search(\?.*)?$")
DEFAULT = 0.3


def _a_server_with_a_default_cut(page: Any) -> list[dict[str, Any]]:
    """Route the page's health and search answers through a server whose default cut is 0.30;
    returns what each search asked for (its query parameters, or its JSON body)."""
    asked: list[dict[str, Any]] = []

    def health(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["gallery_min_relevance"] = DEFAULT
        route.fulfill(response=response, json=body)

    def search(route: Any) -> None:
        request = route.request
        if request.method == "POST":
            wanted = json.loads(request.post_data or "{}")
        else:
            wanted = {k: v[0] for k, v in parse_qs(urlparse(request.url).query).items()}
        asked.append(wanted)
        response = route.fetch()
        body = response.json()
        given = wanted.get("min_relevance")
        body["min_relevance"] = float(given) if given is not None else DEFAULT
        route.fulfill(response=response, json=body)

    page.route("**/api/v1/health", health)
    page.route(re.compile(r".*/api/v1/search(\?.*)?$"), search)
    return asked


def test_the_cut_shown_is_the_servers_and_is_sent_only_when_chosen(
    page: Any, live_server: Any
) -> None:
    asked = _a_server_with_a_default_cut(page)
    with page.expect_response(SEARCH):  # the search has been asked and answered
        page.goto(f"/?q={quote(QUERY)}")
    wait_for_grid(page)
    # the server's cut, in the slider and the header; the gallery asked for none
    expect(page.locator("#min-score-value")).to_have_text("0.30")
    expect(page.locator("#min-score")).to_have_value("0.3")
    expect(page.locator("#status")).to_contain_text("relevance ≥ 0.30")
    assert asked and all("min_relevance" not in a for a in asked)
    assert "min=" not in page.url

    # the user moves the slider: now the gallery sends its cut, and the link keeps it
    slider = page.locator("#min-score")
    slider.focus()
    page.keyboard.press("End")
    expect(page.locator("#min-score-value")).to_have_text("1.00")
    expect(page).to_have_url(re.compile(r"[?&]min=1\.00"))
    expect(page.locator("#empty-title")).to_have_text("Nothing above relevance 1.00")
    assert float(asked[-1]["min_relevance"]) == 1.0

    # Reset returns to the server's default (not to 0), and asks for no cut again
    sent = len(asked)
    page.get_by_role("button", name="Reset threshold").click()
    wait_for_grid(page)
    expect(page.locator("#min-score-value")).to_have_text("0.30")
    expect(page.locator("#status")).to_contain_text("relevance ≥ 0.30")
    expect(page).not_to_have_url(re.compile("min="))
    assert len(asked) > sent and "min_relevance" not in asked[-1]
    expect(tiles(page).first).to_be_visible()


def test_a_link_with_the_default_cut_sends_none(page: Any, live_server: Any) -> None:
    asked = _a_server_with_a_default_cut(page)
    with page.expect_response(SEARCH):  # the search has been asked and answered
        page.goto(f"/?q={quote(QUERY)}&min=0.30")
    wait_for_grid(page)
    expect(page.locator("#min-score-value")).to_have_text("0.30")
    # the search has answered (the header shows the cut it echoed) before its request is read
    expect(page.locator("#status")).to_contain_text("relevance ≥ 0.30")
    assert asked and all("min_relevance" not in a for a in asked)
    expect(page).not_to_have_url(re.compile("min="))  # the default is no choice

    # a link's own cut is the user's: sent, and shown as the server echoes it
    with page.expect_response(SEARCH):  # the search has been asked and answered
        page.goto(f"/?q={quote(QUERY)}&min=0.05")
    wait_for_grid(page)
    expect(page.locator("#min-score-value")).to_have_text("0.05")
    expect(page.locator("#status")).to_contain_text("relevance ≥ 0.05")
    assert float(asked[-1]["min_relevance"]) == 0.05
