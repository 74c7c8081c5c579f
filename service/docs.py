"""/docs without the network: Swagger UI's files come from the package (service/static/swagger,
Swagger UI 5, Apache 2.0), not from a CDN, and the page has no inline script, so it is served
under a Content-Security-Policy that allows only this origin."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route

ASSETS = Path(__file__).resolve().parent / "static" / "swagger"
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'"
)
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - API docs</title>
  <link rel="stylesheet" href="docs-assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs-assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs-assets/swagger-ui-bundle.js"></script>
  <script src="docs-assets/init.js"></script>
</body>
</html>
"""


def install_offline_docs(app: FastAPI) -> None:
    """Replace FastAPI's CDN-based /docs page with one served from the package."""
    if not (ASSETS / "swagger-ui-bundle.js").is_file():  # a broken install: keep FastAPI's page
        return
    app.router.routes[:] = [
        r for r in app.router.routes if not (isinstance(r, Route) and r.path == "/docs")
    ]
    html = PAGE.format(title=app.title)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(
            html,
            headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/docs-assets", StaticFiles(directory=ASSETS), name="docs-assets")
