"""Fixtures of the service tests: apps over the real Library, a tiny model in a folder, images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from svc_testlib import FakeLibrary

from clipsearch.service.app import create_app
from clipsearch.service.settings import Settings


@pytest.fixture(scope="session", autouse=True)
def _test_client_host() -> Iterator[None]:
    """TestClient sends ``Host: testserver``: accept it (with the loopback names) in these tests
    (session-wide: module-scoped apps are built before function fixtures run). The Host check
    itself is tested on a real socket (test_attacks_socket.py), whose server does not inherit it."""
    import os

    old = os.environ.get("CLIPSEARCH_ALLOWED_HOSTS")
    os.environ["CLIPSEARCH_ALLOWED_HOSTS"] = "testserver,localhost,127.0.0.1"
    yield
    if old is None:
        os.environ.pop("CLIPSEARCH_ALLOWED_HOSTS", None)
    else:
        os.environ["CLIPSEARCH_ALLOWED_HOSTS"] = old


@pytest.fixture()
def fake_library() -> FakeLibrary:
    return FakeLibrary()


@pytest.fixture()
def make_client(tmp_path: Path) -> Iterator[Any]:
    """make_client(library, **settings) -> a started TestClient; all closed at teardown."""
    clients: list[TestClient] = []

    def make(library: Any, **overrides: Any) -> TestClient:
        overrides.setdefault("data_dir", tmp_path / "data")
        overrides.setdefault("batch_window_ms", 0.5)
        client = TestClient(create_app(Settings(**overrides), library=library))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)
