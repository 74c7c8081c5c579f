"""The FastAPI app factory: ``create_app(settings, library=None)``.

Nothing is built at import time. The lifespan preloads the model (so the first query does not pay
for it), starts the batching text encoder and a thread that picks up new index versions; errors
of the lower layers are translated to HTTP statuses here, and only here.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .deps import ServiceState, limit_compute_threads
from .metrics import LatencyMiddleware, Metrics
from .query import EmbeddingCache, QueryError
from .routes import health_router, images_router, jobs_router, search_router
from .settings import Settings

log = logging.getLogger(__name__)

UPLOAD_PATHS = ("/api/search/image",)
MULTIPART_OVERHEAD = 64 * 1024
INDEX_REFRESH_S = 2.0


def build_library(settings: Settings, confine: bool = True) -> Any:
    """The indexer's Library for these settings (imported here: the service layer's only door).

    ``confine``: the library itself also refuses ingestion outside the allowed roots (the API's
    library); the CLI's ``ingest`` passes False (a local user may ingest any folder they can read).
    """
    from indexer.library import Library, LibraryConfig

    return Library(
        LibraryConfig(
            data_dir=settings.data_dir,
            database_url=settings.database_url,
            broker_url=settings.broker_url,
            model_spec=settings.model,
            device=settings.device,
            queue_prefix=settings.queue_prefix,
            allowed_roots=settings.effective_allowed_roots if confine else None,
        )
    )


def static_dir() -> Path | None:
    """The gallery's folder (web/static), if the web package is installed."""
    try:
        import web
    except ImportError:
        return None
    folder = getattr(web, "STATIC_DIR", None) or Path(web.__file__).parent / "static"
    folder = Path(folder)
    return folder if folder.is_dir() else None


# --- errors -----------------------------------------------------------------------------------


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _error_status(exc: BaseException) -> tuple[int, str] | None:
    """Map a lower layer's exception to (status, message); None when it is a bug (500)."""
    try:
        from indexer import errors as ie
    except ImportError:  # indexer not installed: only model and DB errors are known
        ie = None  # type: ignore[assignment]
    msg = str(exc) or exc.__class__.__name__
    if ie is not None:
        table: list[tuple[str, int]] = [
            ("NotFound", 404),
            ("Conflict", 409),
            ("CatalogUnavailable", 503),
            ("PathNotAllowed", 403),
            ("IngestError", 400),
        ]
        for name, status in table:
            cls = getattr(ie, name, None)
            if cls is not None and isinstance(exc, cls):
                if status == 503:
                    # The cause names the database's host, port and user: for the log only.
                    log.warning("catalog unavailable: %s", msg)
                    msg = (
                        "the catalog database is unavailable; check that the database server is "
                        "running and reachable (the server log has the cause). The service "
                        "reconnects by itself: retry in a moment"
                    )
                return status, msg
        base = getattr(ie, "IndexerError", None)
        if base is not None and isinstance(exc, base):
            return 400, msg
    try:
        from model.errors import ModelError
    except ImportError:
        ModelError = None  # type: ignore[assignment,misc]
    if ModelError is not None and isinstance(exc, ModelError):
        return 503, f"the model is unavailable: {msg}"
    if isinstance(exc, QueryError):
        return 400, msg
    try:
        from sqlalchemy.exc import DBAPIError, OperationalError
    except ImportError:
        return None
    if isinstance(exc, (OperationalError, DBAPIError)) and getattr(
        exc, "connection_invalidated", True
    ):
        return 503, (
            "the catalog database does not answer; check that it is running and that "
            "CLIPSEARCH_DATABASE_URL points at it, then retry"
        )
    return None


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return _json_error(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _json_error(422, _validation_message(exc))

    async def _mapped(request: Request, exc: Exception) -> JSONResponse:
        mapped = _error_status(exc)
        if mapped is None:
            log.error(
                "unhandled %s on %s %s",
                type(exc).__name__,
                request.method,
                request.url.path,
                exc_info=exc,
            )
            return _json_error(500, "internal error; the server log has the details")
        status, detail = mapped
        if status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, status, detail)
        return _json_error(status, detail)

    for cls in _mapped_exception_classes():
        app.add_exception_handler(cls, _mapped)


def _mapped_exception_classes() -> list[type[Exception]]:
    classes: list[type[Exception]] = [QueryError]
    try:
        from indexer.errors import IndexerError

        classes.append(IndexerError)
    except ImportError:
        pass
    try:
        from model.errors import ModelError

        classes.append(ModelError)
    except ImportError:
        pass
    try:
        from sqlalchemy.exc import DBAPIError

        classes.append(DBAPIError)
    except ImportError:
        pass
    return classes


# --- body limits ------------------------------------------------------------------------------


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413 JSON, before or while they are read.

    Uploads (``/api/search/image``) may be ``max_upload_bytes`` (+ multipart overhead); every
    other body ``max_json_bytes``. A body without Content-Length is counted as it streams.
    """

    def __init__(self, app: ASGIApp, upload_limit: int, json_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = scope.get("path", "") in UPLOAD_PATHS
        limit = self.upload_limit + MULTIPART_OVERHEAD if is_upload else self.json_limit
        shown = self.upload_limit if is_upload else self.json_limit
        detail = f"request body is larger than the limit of {shown} bytes"
        if is_upload:
            detail += ": send a smaller image"
        length = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
        if length is not None and length > limit:
            await _json_error(413, detail, {"Connection": "close"})(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, detail=detail)
            return message

        await self.app(scope, limited, send)


# --- factory ----------------------------------------------------------------------------------


def _refresh_loop(state: ServiceState, stop: threading.Event) -> None:
    refresh = getattr(state.library, "refresh_index", None)
    if not callable(refresh):
        return
    while not stop.wait(INDEX_REFRESH_S):
        try:
            refresh()
        except Exception as exc:  # keep serving the current index
            log.debug("index refresh failed: %s", exc)


def create_app(settings: Settings | None = None, library: Any = None) -> FastAPI:
    """Build the app. ``library`` defaults to the indexer's Library for ``settings``."""
    settings = settings if settings is not None else Settings()
    owns_library = library is None
    lib = library if library is not None else build_library(settings)
    holder: dict[str, ServiceState] = {}
    metrics = Metrics(
        get_library=lambda: holder["state"].library if "state" in holder else None,
        get_encoder=lambda: holder["state"].encoder if "state" in holder else None,
    )
    state = ServiceState(
        settings=settings,
        library=lib,
        metrics=metrics,
        cache=EmbeddingCache(settings.query_cache_size),
    )
    holder["state"] = state

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        limit_compute_threads(settings.compute_threads)
        if settings.preload_model:
            try:
                encoder = await run_in_threadpool(state.text_encoder)
                await encoder.aencode(["a photo"])  # warm the encoder's thread and kernels
            except Exception as exc:
                mapped = _error_status(exc)
                state.model_error = mapped[1] if mapped else str(exc)
                log.error("model not loaded: %s", state.model_error)
        refresher = threading.Thread(
            target=_refresh_loop, args=(state, stop), name="clipsearch-index-refresh", daemon=True
        )
        refresher.start()
        try:
            yield
        finally:
            stop.set()
            refresher.join(timeout=5)
            state.close()
            if owns_library:
                lib.close()

    app = FastAPI(
        title="clipsearch",
        summary="Semantic image search with CLIP: search your photos by text or by example.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.service = state
    install_error_handlers(app)
    for router in (search_router, images_router, jobs_router, health_router):
        app.include_router(router)

    folder = static_dir()
    if folder is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=folder, html=True), name="gallery")
    else:
        log.warning("web/static not found: the gallery is not served, the API is")

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        upload_limit=settings.max_upload_bytes,
        json_limit=settings.max_json_bytes,
    )
    return app
