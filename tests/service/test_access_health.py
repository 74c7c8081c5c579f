"""The library's counts in health and metrics are the caller's, on a real socket: none without
credentials (the probes stay count-free), a viewer's folders' only, the whole library's for
editors, admins and the token; Prometheus metrics, which count the whole library, only for the
operators (the token, an admin, a key with the admin scope)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from accounts_testlib import Served, add_user, served_library, sign_in


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    with served_library(tmp_path_factory.mktemp("health"), tiny_model_dir) as s:
        for name, role in (("ann", "viewer"), ("nell", "viewer"), ("eve", "editor")):
            add_user(s, name, role)
        add_user(s, "ada", "admin")
        with s.admin() as admin:
            r = admin.post("/api/shares", json={"folder": str(s.photos / "alpha"), "user": "ann"})
            assert r.status_code == 201, r.text
        yield s


COUNTS = ("size", "delta", "entities", "catalog_vectors", "missing")


def _health(client: Any, path: str = "/api/health") -> dict[str, Any]:
    r = client.get(path)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_health_counts_are_the_callers(served: Served) -> None:
    with served.client() as nobody:
        for path in ("/api/health", "/api/v1/health"):
            body = _health(nobody, path)
            assert body["images"] is None, body
            assert all(body["index"][k] is None for k in COUNTS), body["index"]
            assert body["status"] in ("ok", "starting", "degraded")
        live = nobody.get("/api/health/live")
        assert live.status_code == 200 and live.json() == {"status": "alive"}
        ready = nobody.get("/api/health/ready").json()
        assert set(ready) <= {"status", "failing", "parts", "detail"}
        assert "images" not in str(ready) and "4" not in "".join(ready["parts"].values())
    ann = sign_in(served, "ann")
    for path in ("/api/health", "/api/v1/health"):
        body = _health(ann, path)  # the two pictures under alpha, not the library's four
        assert body["images"] == {"total": 2, "ready": 2, "failed": 0, "pending": 0}, body
        assert all(body["index"][k] is None for k in COUNTS), body["index"]
    assert _health(sign_in(served, "nell"))["images"]["total"] == 0  # nothing shared with her
    # a viewer of some folders learns no server path (the model is a folder of weights here)
    assert "/" not in _health(ann)["model"] and "/" in _health(served.admin())["model"]
    for client in (sign_in(served, "eve"), sign_in(served, "ada"), served.admin()):
        body = _health(client)
        assert body["images"] == {"total": 4, "ready": 4, "failed": 0, "pending": 0}
        assert body["index"]["catalog_vectors"] == 4


def test_metrics_are_for_the_operators(served: Served) -> None:
    with served.client() as nobody:
        assert nobody.get("/metrics").status_code == 401
    for name in ("ann", "eve"):
        r = sign_in(served, name).get("/metrics")
        assert r.status_code == 403 and "admin" in r.json()["detail"], (name, r.text)
    ada = sign_in(served, "ada")
    for scopes, status in ((["read"], 403), (["admin"], 200)):
        made = ada.post("/api/keys", json={"name": f"prom-{scopes[0]}", "scopes": scopes})
        assert made.status_code == 201, made.text
        with served.client(headers={"Authorization": f"Bearer {made.json()['key']}"}) as key:
            r = key.get("/metrics")
            assert r.status_code == status, (scopes, r.text)
            if status == 200:
                assert 'clipsearch_images{state="ready"} 4.0' in r.text
    r = served.admin().get("/metrics")
    assert r.status_code == 200 and 'clipsearch_images{state="ready"} 4.0' in r.text
