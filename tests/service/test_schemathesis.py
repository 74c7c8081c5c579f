"""Property-based tests from the OpenAPI spec (schemathesis): no input may cause a 5xx, and
every response must match the documented schema, status codes and content types."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from svc_testlib import ingest_now, write_images

from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings
from clipsearch.service.versioning import versioned_path

MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("fuzz")
    root = base / "photos"
    write_images(root)
    s = Settings(
        data_dir=base / "data",
        model=str(tiny_model_dir),
        allowed_roots=[root],
        batch_window_ms=0.5,
        max_upload_bytes=200_000,
    )
    lib = build_library(s)
    ingest_now(lib, root)
    app = create_app(s, library=lib)
    with TestClient(app):  # runs the lifespan (model preload, encoder thread)
        yield app
    lib.close()


@pytest.fixture(scope="module")
def api_schema(api_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", api_app)


# Every operation of docs/ARCHITECTURE.md; schemathesis' pytest plugin (from_fixture) does not
# work with this pytest, so each operation's strategy is driven by hypothesis directly.
OPERATIONS = [
    ("GET", "/api/search"),
    ("POST", "/api/search"),
    ("POST", "/api/search/image"),
    ("GET", "/api/search/languages"),
    ("GET", "/api/images/{id}/similar"),
    ("GET", "/api/images"),
    ("GET", "/api/images/{id}"),
    ("GET", "/api/images/{id}/thumbnail"),
    ("GET", "/api/images/{id}/file"),
    ("GET", "/api/images/{id}/preview"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/{id}"),
    ("POST", "/api/ingest"),
    ("POST", "/api/reindex"),
    ("GET", "/api/health"),
    ("GET", "/api/health/live"),
    ("GET", "/api/health/ready"),
    ("GET", "/api/session"),
    ("POST", "/api/session"),
    ("DELETE", "/api/session"),
    ("GET", "/api/folders"),
    ("GET", "/api/folders/allowed"),
    ("POST", "/api/folders"),
    ("POST", "/api/folders/{id}/scan"),
    ("GET", "/api/folders/{id}/problems"),
    ("DELETE", "/api/folders/{id}"),
    ("GET", "/api/duplicates"),
    ("POST", "/api/duplicates/scan"),
    ("GET", "/api/removed"),
    ("GET", "/api/removed/{id}"),
    ("GET", "/api/removed/{id}/thumbnail"),
    ("GET", "/api/images/{id}/text"),
    ("POST", "/api/ocr"),
    ("GET", "/api/tags"),
    ("POST", "/api/tags"),
    ("POST", "/api/tags/run"),
    ("GET", "/api/tags/{tag}"),
    ("PATCH", "/api/tags/{tag}"),
    ("GET", "/api/tags/{tag}/images"),
    ("PUT", "/api/tags/{tag}/images/{id}"),
    ("GET", "/api/images/{id}/tags"),
    ("DELETE", "/api/tags/{tag}"),
    ("GET", "/api/albums"),
    ("POST", "/api/albums"),
    ("POST", "/api/albums/refresh"),
    ("GET", "/api/albums/{album}"),
    ("PATCH", "/api/albums/{album}"),
    ("GET", "/api/albums/{album}/images"),
    ("POST", "/api/albums/{album}/images"),
    ("GET", "/api/albums/{album}/export.zip"),
    ("POST", "/api/albums/{album}/export"),
    ("DELETE", "/api/albums/{album}"),
    ("DELETE", "/api/images/{id}"),  # late: it removes images the others read
    ("POST", "/api/images/{id}/restore"),
    ("POST", "/api/removed/{id}/restore"),
    ("GET", "/api/images/timeline"),
    ("GET", "/api/folders/browse"),
    # accounts (issue 26): without credentials each answers what its role table says
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("PATCH", "/api/users/{name}"),
    ("PUT", "/api/users/{name}/password"),
    ("DELETE", "/api/users/{name}"),
    ("PUT", "/api/me/password"),
    ("GET", "/api/me/sessions"),
    ("DELETE", "/api/me/sessions/{session_id}"),
    ("GET", "/api/keys"),
    ("POST", "/api/keys"),
    ("DELETE", "/api/keys/{key_id}"),
    ("GET", "/api/shares"),
    ("POST", "/api/shares"),
    ("DELETE", "/api/shares"),
    ("GET", "/api/audit"),
    ("GET", "/api/session/oidc"),
    ("GET", "/api/session/oidc/callback"),
]


def test_spec_lists_exactly_these_operations(api_schema: Any) -> None:
    raw = api_schema.raw_schema["paths"]
    found = {(m.upper(), p) for p, ops in raw.items() for m in ops}
    # each under /api/v1 too (service.versioning: the same endpoint; /api is its deprecated alias)
    assert found == set(OPERATIONS) | {(m, versioned_path(p)) for m, p in OPERATIONS}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors(api_schema: Any, method: str, path: str) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ]
        )

    check()
