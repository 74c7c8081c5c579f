"""/docs is served from the package: no file from another host, no inline script, and every
asset it names is served."""

from __future__ import annotations

import re
from typing import Any

from svc_testlib import FakeLibrary


def test_docs_page_and_its_assets_come_from_this_server(make_client: Any) -> None:
    client = make_client(FakeLibrary())
    r = client.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    html = r.text
    assert "cdn" not in html.lower() and "https://" not in html and "http://" not in html
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert not re.search(r"<script>(?!</script>)", html)  # no inline script
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"docs-assets/swagger-ui-bundle.js", "docs-assets/init.js"} <= set(assets)
    for asset in assets:
        got = client.get("/" + asset)
        assert got.status_code == 200 and len(got.content) > 100, asset
    assert "SwaggerUIBundle" in client.get("/docs-assets/swagger-ui-bundle.js").text
    assert client.get("/openapi.json").status_code == 200
