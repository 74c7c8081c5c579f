"""A real library (SQLite + FAISS, a tiny CLIP) served by uvicorn on 127.0.0.1 with the API token
set, for the accounts tests: people sign in over the socket as a browser or a script would."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from svc_testlib import ingest_now, write_images

from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings

TOKEN = "accounts-test-token-0123456789abcdef"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    lib: Any
    app: Any
    photos: Path
    settings: Settings

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kw)

    def admin(self) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {TOKEN}"})


@contextmanager
def serve(settings: Settings, lib: Any) -> Iterator[str]:
    import uvicorn

    port = free_port()
    app = create_app(settings, library=lib)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@contextmanager
def served_library(base: Path, model_dir: Path, **overrides: Any) -> Iterator[Served]:
    """Two folders of pictures, ``photos/alpha`` and ``photos/beta``, ingested and served."""
    photos = base / "photos"
    write_images(photos / "alpha", {"red": (220, 30, 30), "green": (30, 200, 40)})
    write_images(photos / "beta", {"blue": (30, 40, 220), "yellow": (240, 220, 20)})
    overrides.setdefault("api_token", TOKEN)
    settings = Settings(
        data_dir=base / "data",
        model=str(model_dir),
        allowed_roots=[photos],
        batch_window_ms=0.5,
        preload_model=False,
        **overrides,
    )
    lib = build_library(settings)
    try:
        job = ingest_now(lib, photos)
        assert job.state == "done", job
        with serve(settings, lib) as url:
            yield Served(url, lib, None, photos, settings)
    finally:
        lib.close()


def add_user(served: Served, name: str, role: str, password: str = PASSWORD) -> None:
    with served.admin() as admin:
        r = admin.post("/api/users", json={"name": name, "role": role, "password": password})
        assert r.status_code == 201, r.text


def sign_in(served: Served, name: str, password: str = PASSWORD) -> httpx.Client:
    """A browser-like client signed in as ``name``: the session cookie, and the CSRF header."""
    client = served.client()
    r = client.post("/api/session", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    client.headers["X-CSRF-Token"] = r.json()["csrf"]
    return client
