"""Who is calling is looked up in the catalog (a session's row, a key's row): on a real socket,
those reads run in the thread pool, never on the event loop, where a slow database would stall
every other request; the answers stay what they were."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from accounts_testlib import add_user, served_library, sign_in

from clipsearch.indexer.accounts import Accounts


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_the_caller_lookup_runs_off_the_event_loop(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, bool]] = []

    def spying(name: str) -> Any:
        real = getattr(Accounts, name)

        def spy(self: Accounts, *args: Any, **kw: Any) -> Any:
            calls.append((name, _on_event_loop()))
            return real(self, *args, **kw)

        return spy

    for name in ("session_principal", "key_principal", "has_users"):
        monkeypatch.setattr(Accounts, name, spying(name))
    with served_library(tmp_path, tiny_model_dir) as served:
        add_user(served, "vic", "viewer")
        vic = sign_in(served, "vic")
        made = vic.post("/api/keys", json={"name": "script", "scopes": ["read"]})
        assert made.status_code == 201, made.text
        calls.clear()
        # a session cookie, an API key, no credentials: API routes, the gallery, health
        assert vic.get("/api/images").status_code == 200
        assert vic.get("/").status_code == 200
        with served.client(headers={"Authorization": f"Bearer {made.json()['key']}"}) as key:
            assert key.get("/api/images").status_code == 200
            assert key.get("/api/health").status_code == 200
        with served.client() as nobody:
            assert nobody.get("/api/images").status_code == 401
            assert nobody.get("/api/health").status_code == 200
        looked_up = {name for name, _ in calls}
        assert {"session_principal", "key_principal"} <= looked_up, calls
        assert not [c for c in calls if c[1]], f"catalog reads on the event loop: {calls}"
