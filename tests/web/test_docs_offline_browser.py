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
    expect(page.locator("#swagger-ui .opblock").first).to_be_visible()
    assert page.locator("#swagger-ui .opblock").count() > 20
    expect(page.locator("#swagger-ui")).to_contain_text("/api/duplicates")
    assert outside == []
