"""/docs renders in Chromium with every request to another host refused (offline)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_api_docs_render_without_the_network(page: Any, live_server: Any) -> None:
    ours = urlparse(live_server.url).netloc
    outside: list[str] = []

    def guard(route: Any) -> None:
        if urlparse(route.request.url).netloc != ours:
            outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", guard)
    page.goto("/docs")
    # every tag is listed (closed: 270-odd operations would take long to draw), and a tag opens
    # on its operations
    tags = page.locator("#swagger-ui .opblock-tag")
    expect(tags.nth(9)).to_be_visible()
    page.locator("#swagger-ui .opblock-tag", has_text="duplicates").first.click()
    expect(page.locator("#swagger-ui .opblock").first).to_be_visible()
    expect(page.locator("#swagger-ui")).to_contain_text("/api/v1/duplicates")
    expect(page.locator("#swagger-ui .opblock-deprecated").first).to_be_visible()
    assert outside == []
