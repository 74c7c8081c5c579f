"""clipsearch: web layer. The gallery is static files (no build step) served by the service at ``/``.

``STATIC_DIR`` is the folder to mount; it holds ``index.html``, ``app.js`` (the entry module; the
others are in ``js/``), ``style.css`` and ``favicon.svg``. The page talks only to the REST API
documented in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR: Path = Path(__file__).resolve().parent / "static"
INDEX_HTML: Path = STATIC_DIR / "index.html"

__all__ = ["INDEX_HTML", "STATIC_DIR"]
