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
from typing import TYPE_CHECKING

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipsearch.indexer.facade import LibraryFacade

from .deps import ServiceState, limit_compute_threads
from .metrics import LatencyMiddleware, Metrics
from .middleware import (
    BodyLimitMiddleware,
    BodyTimeoutMiddleware,
    ConcurrencyMiddleware,
    HeadAsGetMiddleware,
    HostCheckMiddleware,
    OriginCheckMiddleware,
    PublicPathsMiddleware,
    RequestIdMiddleware,
    json_error,
)
from .query import EmbeddingCache, QueryError
from .routes import (
    duplicates_router,
    folders_router,
    health_router,
    images_router,
    jobs_router,
    ocr_router,
    removed_router,
    search_router,
    session_router,
)
from .routes.accounts import router as accounts_router
from .routes.albums import router as albums_router
from .routes.oidc import router as oidc_router
from .routes.probes import router as probes_router
from .routes.tags import router as tags_router
from .settings import Settings, load_settings
from .versioning import include_versioned

if TYPE_CHECKING:
    from clipsearch.indexer.accounts import Accounts, SignInGuard
    from clipsearch.indexer.library import Library

log = logging.getLogger(__name__)


def build_library(settings: Settings, confine: bool = True, image_tower: str = "now") -> Library:
    """The indexer's Library for these settings (imported here: the service layer's only door).

    ``confine``: the library itself also refuses ingestion outside the allowed roots (the API's
    library); the CLI's ``ingest`` passes False (a local user may ingest any folder they can read).
    ``image_tower="on_demand"``: the served model reads its image tower on first use only (the
    CLI's search embeds query texts; model.lazy_tower).
    """
    import dataclasses

    from clipsearch.indexer.library import Library

    roots = settings.folders.effective_allowed_roots if confine else None
    config = settings.library_config(allowed_roots=roots)
    return Library(dataclasses.replace(config, image_tower=image_tower))


def static_dir() -> Path | None:
    """The gallery's folder (web/static), if the web package is installed."""
    try:
        from clipsearch import web
    except ImportError:
        return None
    folder = getattr(web, "STATIC_DIR", None) or Path(web.__file__).parent / "static"
    folder = Path(folder)
    return folder if folder.is_dir() else None


# --- errors -----------------------------------------------------------------------------------


DISK_FULL = (
    "the disk holding the data folder (CLIPSEARCH_DATA_DIR) is full: nothing can be written there "
    "(catalog, thumbnails, index); free space on it, then retry (/api/health says how much is free)"
)


def _disk_full(exc: BaseException) -> bool:
    """A write failed for want of space (ENOSPC, SQLite's 'database or disk is full'), here or
    in the cause of the error."""
    import errno

    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen)
        if "database or disk is full" in text or "No space left on device" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _error_status(exc: BaseException) -> tuple[int, str] | None:
    """Map a lower layer's exception to (status, message); None when it is a bug (500)."""
    try:
        from clipsearch.indexer import errors as ie
    except ImportError:  # indexer not installed: only model and DB errors are known
        ie = None  # type: ignore[assignment]
    msg = str(exc) or exc.__class__.__name__
    if _disk_full(exc):
        log.error("disk full: %s", msg)
        return 507, DISK_FULL
    if ie is not None:
        table: list[tuple[str, int]] = [
            ("NotFound", 404),
            ("Conflict", 409),
            ("CatalogUnavailable", 503),
            ("StoreUnavailable", 503),
            ("QueueUnavailable", 503),
            ("PathNotAllowed", 403),
            ("IngestError", 400),
        ]
        for name, status in table:
            cls = getattr(ie, name, None)
            if cls is not None and isinstance(exc, cls):
                if name == "StoreUnavailable":
                    # The cause names the store's URI, a collection or a filter expression:
                    # for the log only (it may hold server paths and addresses).
                    log.warning("vector store unavailable: %s", msg)
                    # which kind of store (not where it is) helps the reader find it
                    store = (
                        "the vector store (Milvus)"
                        if "milvus" in msg.lower()
                        else "the vector store"
                    )
                    return status, (
                        f"{store} is unavailable; check that it is running and reachable "
                        "(the server log has the cause), or run `clipsearch reindex` if its "
                        "collection is gone. Searches resume by themselves once it answers"
                    )
                if name == "CatalogUnavailable":
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
        from clipsearch.model.errors import ModelError
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
        return json_error(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # each field with its location (query, path, body...), never the value sent
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()[:20]
        ]
        return JSONResponse({"detail": _validation_message(exc), "errors": errors}, 422)

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
            return json_error(500, "internal error; the server log has the details")
        status, detail = mapped
        if status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, status, detail)
        return json_error(status, detail)

    for cls in _mapped_exception_classes():
        app.add_exception_handler(cls, _mapped)

    async def _too_deep(request: Request, exc: Exception) -> JSONResponse:
        # a JSON or form value nested thousands deep: the client's input, not a server fault
        log.info("%s %s: input nested too deeply", request.method, request.url.path)
        return json_error(400, "a value in the request is nested too deeply: send it flat")

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # a bug: JSON that says where to look, never a plain-text page (the error is logged);
        # a full disk says so
        if _disk_full(exc):
            return json_error(507, DISK_FULL)
        return json_error(500, "internal error; the server log has the details")

    app.add_exception_handler(RecursionError, _too_deep)
    app.add_exception_handler(Exception, _unexpected)


def _mapped_exception_classes() -> list[type[Exception]]:
    classes: list[type[Exception]] = [QueryError]
    try:
        from clipsearch.indexer.errors import IndexerError

        classes.append(IndexerError)
    except ImportError:
        pass
    try:
        from clipsearch.model.errors import ModelError

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


GALLERY_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
GALLERY_HEADERS = [
    (b"content-security-policy", GALLERY_CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
PUBLIC_ASSETS = frozenset({"/signin.html", "/signin.js", "/style.css", "/favicon.svg"})


class Gallery:
    """The static gallery, with a CSP that forbids inline script, behind the read check: without
    a session the page redirects to the sign-in page and the other files answer 401."""

    def __init__(self, static: ASGIApp) -> None:
        self.static = static

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.static(scope, receive, send)
            return
        from .auth import resolve_principal

        request = Request(scope)
        settings = request.app.state.service.settings
        path = scope.get("path", "/")
        if (  # an open server (no token, no account) authorises everyone
            not settings.server.public_read
            and path not in PUBLIC_ASSETS
            and await resolve_principal(request) is None
        ):
            if path in ("/", "/index.html"):
                response: Response = RedirectResponse("/signin.html", status_code=303)
            else:
                response = json_error(
                    401, "sign in first: open /signin.html (an account, or the server's API token)"
                )
            await response(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *GALLERY_HEADERS]
            await send(message)

        await self.static(scope, receive, with_headers)


def _calibrate_quietly(library: LibraryFacade) -> None:
    """Measure the served index's relevance calibration; a failure (no index yet, the store
    unreachable) is left for the first search to report."""
    try:
        library.calibration()
    except Exception as exc:
        log.info("relevance calibration at start-up skipped: %s", exc)


def _accounts(settings: Settings, library: LibraryFacade) -> tuple[Accounts | None, SignInGuard]:
    """The accounts of the library's catalog and the sign-in rate limits (service.auth); no
    accounts for a library without a catalog engine (a stand-in in tests)."""
    from sqlalchemy.engine import Engine

    from clipsearch.indexer.accounts import Accounts, SignInGuard, shared_limits_url

    server = settings.server
    guard = SignInGuard(
        server.signin_limit_account,
        server.signin_limit_address,
        redis_url=shared_limits_url(settings.catalog.broker_url),
        prefix=settings.catalog.queue_prefix,
    )
    engine = getattr(library, "engine", None)
    if not isinstance(engine, Engine):
        return None, guard
    accounts = Accounts(
        engine, idle_s=server.session_idle_minutes * 60, max_s=server.session_hours * 3600
    )
    return accounts, guard


# --- factory ----------------------------------------------------------------------------------


def create_app(settings: Settings | None = None, library: LibraryFacade | None = None) -> FastAPI:
    """Build the app. ``settings`` default to this process's (read here: an edge, as under
    ``uvicorn --factory``); ``library`` to the indexer's Library for them."""
    settings = settings if settings is not None else load_settings()
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
        cache=EmbeddingCache(settings.search.query_cache_size),
    )
    holder["state"] = state

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_compute_threads(settings.search.compute_threads)
        calibrating: threading.Thread | None = None
        if settings.serve.preload_model:
            try:
                encoder = await run_in_threadpool(state.text_encoder)
                await encoder.aencode(["a photo"])  # warm the encoder's thread and kernels
            except Exception as exc:
                mapped = _error_status(exc)
                state.model_error = mapped[1] if mapped else str(exc)
                log.error("model not loaded: %s", state.model_error)
            else:
                # the served index's relevance calibration (indexer.relevance), measured now in
                # the background instead of by the first search (seconds on a CPU)
                calibrating = threading.Thread(
                    target=_calibrate_quietly, args=(lib,), name="clipsearch-calibrate", daemon=True
                )
                calibrating.start()
        # The library keeps its index fresh itself (indexer.freshness: one follower thread).
        try:
            yield
        finally:
            if calibrating is not None:  # it reads the library: let it end before the close
                await run_in_threadpool(calibrating.join, 30.0)
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
    from .auth import Revocations

    # signed-out sessions stay signed out, across restarts (service.auth)
    app.state.revoked_sessions = Revocations(
        Path(settings.catalog.data_dir).expanduser() / "revoked-sessions.json"
    )
    # accounts, their sessions and keys, kept in the library's catalog (indexer.accounts)
    app.state.accounts, app.state.signin_guard = _accounts(settings, lib)
    install_error_handlers(app)
    for router in (
        search_router,
        images_router,
        removed_router,
        duplicates_router,
        tags_router,
        albums_router,
        folders_router,
        jobs_router,
        ocr_router,
        health_router,
        probes_router,
        session_router,
        accounts_router,
        oidc_router,
    ):
        include_versioned(app, router)  # /api/v1/..., and /api/... deprecated (service.versioning)

    from .docs import install_offline_docs

    install_offline_docs(app)  # /docs from the package's Swagger UI files, not a CDN
    folder = static_dir()
    if folder is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount("/", Gallery(StaticFiles(directory=folder, html=True)), name="gallery")
    else:
        log.warning("web/static not found: the gallery is not served, the API is")

    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-CSRF-Token"],
        )
    app.add_middleware(
        PublicPathsMiddleware,
        roots=[*settings.effective_allowed_roots, Path(settings.catalog.data_dir).expanduser()],
    )
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(OriginCheckMiddleware, cors_origins=settings.server.cors_origins)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        upload_limit=settings.limits.max_upload_bytes,
        json_limit=settings.limits.max_json_bytes,
    )
    app.add_middleware(
        BodyTimeoutMiddleware,
        timeout_s=settings.server.body_timeout_s,
        min_rate=settings.server.body_min_rate,
        grace_s=settings.server.header_timeout_s,
    )
    app.add_middleware(
        ConcurrencyMiddleware,
        limit=settings.server.max_connections,
        share=settings.server.unauthenticated_share,
    )
    app.add_middleware(HostCheckMiddleware, allowed_hosts=settings.server.effective_allowed_hosts)
    # outermost: every answer, refusals included, carries its request id (indexer.logs)
    app.add_middleware(RequestIdMiddleware, access_log=settings.logs.format == "json")
    return app
