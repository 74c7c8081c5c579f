"""The API's versioned prefix: every route is served under ``/api/v1/...``, and under the
unversioned ``/api/...`` it had before, kept for one release and marked deprecated in the
OpenAPI schema (the gallery and existing scripts keep working meanwhile).

:func:`include_versioned` mounts one router twice: its routes copied with the path under
``/api/v1`` (same operation ids: what clients generate code from), then as they are, as aliases
with ``deprecated`` set and the operation id suffixed with ``_unversioned`` (operation ids are
unique in a schema). Both copies run the same endpoint with the same dependencies, responses
and errors. Routes outside ``/api`` (none today) are mounted once.
"""

from __future__ import annotations

import copy

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.utils import generate_unique_id
from starlette.routing import compile_path

__all__ = ["ALIAS_SUFFIX", "API_PREFIX", "V1_PREFIX", "include_versioned", "versioned_path"]

API_PREFIX = "/api"
V1_PREFIX = "/api/v1"
ALIAS_SUFFIX = "_unversioned"


def versioned_path(path: str) -> str:
    """``/api/search`` -> ``/api/v1/search``; other paths unchanged."""
    if path.startswith(API_PREFIX + "/") and not path.startswith(V1_PREFIX + "/"):
        return V1_PREFIX + path[len(API_PREFIX) :]
    return path


def _copies(router: APIRouter) -> list[APIRoute]:
    """Shallow copies of ``router``'s routes (each carries its full path, its router's
    dependencies and responses), so that changing a copy leaves the module's router as it is."""
    return [copy.copy(r) for r in router.routes if isinstance(r, APIRoute)]


def include_versioned(app: FastAPI, router: APIRouter) -> None:
    """Mount ``router`` under ``/api/v1`` and, deprecated, under ``/api`` (module docstring)."""
    v1 = APIRouter()
    alias = APIRouter()
    for route in _copies(router):
        path = versioned_path(route.path)
        if path == route.path:
            v1.routes.append(route)  # not under /api: served once
            continue
        route.path = path
        route.path_regex, route.path_format, route.param_convertors = compile_path(path)
        route.unique_id = route.operation_id or generate_unique_id(route)
        v1.routes.append(route)
    for route in _copies(router):
        if versioned_path(route.path) == route.path:
            continue
        route.deprecated = True
        base = route.operation_id or route.unique_id
        route.operation_id = route.unique_id = base + ALIAS_SUFFIX
        alias.routes.append(route)
    app.include_router(v1)
    app.include_router(alias)
