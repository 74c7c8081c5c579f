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
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse
from starlette._utils import parse_host_header
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipsearch.indexer.facade import LibraryFacade

from .deps import ServiceState, limit_compute_threads
from .metrics import LatencyMiddleware, Metrics
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
from .routes.probes import router as probes_router
from .routes.tags import router as tags_router
from .settings import Settings, load_settings

log = logging.getLogger(__name__)

UPLOAD_PATHS = ("/api/search/image",)
MULTIPART_OVERHEAD = 64 * 1024


def build_library(settings: Settings, confine: bool = True) -> Any:
    """The indexer's Library for these settings (imported here: the service layer's only door).

    ``confine``: the library itself also refuses ingestion outside the allowed roots (the API's
    library); the CLI's ``ingest`` passes False (a local user may ingest any folder they can read).
    """
    from clipsearch.indexer.library import Library

    roots = settings.folders.effective_allowed_roots if confine else None
    return Library(settings.library_config(allowed_roots=roots))


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


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


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
                    return status, (
                        "the vector store is unavailable; check that it is running and reachable "
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

    async def _too_deep(request: Request, exc: Exception) -> JSONResponse:
        # a JSON or form value nested thousands deep: the client's input, not a server fault
        log.info("%s %s: input nested too deeply", request.method, request.url.path)
        return _json_error(400, "a value in the request is nested too deeply: send it flat")

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # a bug: JSON that says where to look, never a plain-text page (the error is logged);
        # a full disk says so
        if _disk_full(exc):
            return _json_error(507, DISK_FULL)
        return _json_error(500, "internal error; the server log has the details")

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


# --- hosts, origins, slow bodies, the gallery's headers ------------------------------------------


class HostCheckMiddleware(TrustedHostMiddleware):
    """Starlette's TrustedHostMiddleware, answering a wrong Host with JSON that says what to do.

    Stops DNS rebinding: a web page whose name was re-pointed at this machine sends its own name
    in Host, which is not one of ours."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = None
        for name, value in scope.get("headers", []):
            if name == b"host":
                raw = value.decode("latin-1")
                break
        parsed = parse_host_header(raw)
        host = parsed.host.lower() if parsed is not None else None
        if host is not None and any(
            host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in self.allowed_hosts
        ):
            await self.app(scope, receive, send)
            return
        shown = (raw or "")[:100]
        await _json_error(
            400,
            f"this server does not answer to the host name {shown!r}: use one of "
            f"{', '.join(self.allowed_hosts)}, or add it to CLIPSEARCH_ALLOWED_HOSTS",
            {"Connection": "close"},
        )(scope, receive, send)


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class OriginCheckMiddleware:
    """Refuse changes (POST/PUT/PATCH/DELETE) that a browser sends from another site.

    Browsers send ``Origin`` (and ``Sec-Fetch-Site``) on such requests; an origin that is not
    this server's own nor a configured CORS origin is a cross-site request forgery: 403. Clients
    that are not browsers (curl, the CLI) send neither and are unaffected."""

    def __init__(self, app: ASGIApp, cors_origins: list[str]) -> None:
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = (headers.get("origin") or "").rstrip("/").lower()
        site = (headers.get("sec-fetch-site") or "").lower()
        host = headers.get("host", "").lower()
        own = {f"http://{host}", f"https://{host}"}
        bad = (
            origin and origin not in own and origin not in self.allowed and "*" not in self.allowed
        ) or (site == "cross-site" and not origin)
        if bad:
            await _json_error(
                403,
                "cross-site request refused: changes are only accepted from this server's own "
                "pages (or an origin listed in CLIPSEARCH_CORS_ORIGINS)",
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)


class HeadAsGetMiddleware:
    """Answer HEAD on the API as GET without the body (same status and headers, ETag and
    Content-Length included), as HTTP asks of every GET resource. Without it a HEAD of an API
    route fell through to the gallery's static files and read 404."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "HEAD"
            or not str(scope.get("path", "")).startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        finished = False

        async def without_body(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.body":
                if finished or message.get("more_body", False):
                    return  # the body's chunks are not sent
                finished = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


class BodyTimeoutMiddleware:
    """A request's body must arrive in time: all of it within ``timeout_s`` of its headers, and
    once ``grace_s`` has passed, at ``min_rate`` bytes per second on average at least (the rate
    floor: a body sent a byte at a time, or one that never comes, is dropped after ``grace_s``,
    not ``timeout_s``). Too slow: 408 and the connection closed, instead of a slot held. (Slow
    headers are dropped by the server protocol: service.serve.)"""

    def __init__(
        self, app: ASGIApp, timeout_s: float, min_rate: float = 0.0, grace_s: float = 5.0
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.min_rate = min_rate
        self.grace_s = grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        import asyncio

        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.timeout_s
        received = 0
        # A request that declares no body (no Content-Length or 0, not chunked) has it all: the
        # next read is a response waiting for a disconnect, maybe long after the deadline (a
        # slow handler), and must not turn into a 408 in the middle of the response.
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length", b"0").strip()
        body_done = b"transfer-encoding" not in headers and length in (b"", b"0")
        detail = (
            f"the request body did not arrive in time (all of it within {self.timeout_s:g} s, at "
            f"{self.min_rate:g} bytes/s at least after the first {self.grace_s:g} s); send it at "
            "once (or raise CLIPSEARCH_BODY_TIMEOUT_S or lower CLIPSEARCH_BODY_MIN_RATE for slow "
            "links)"
        )

        def due() -> float:
            """When the body is too late: the overall deadline, or when what arrived so far
            falls under the rate floor."""
            if self.min_rate <= 0:
                return deadline
            return min(deadline, start + self.grace_s + received / self.min_rate)

        async def timed() -> Message:
            nonlocal body_done, received
            if body_done:
                return await receive()  # after the body: only the disconnect is left to wait for
            remaining = due() - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                log.info("request body too slow on %s: dropped", scope.get("path"))
                raise HTTPException(408, detail=detail, headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed, send)


class ConcurrencyMiddleware:
    """Requests in progress: at most ``limit`` in all (503 beyond), and with an API token set,
    at most ``share`` of them from one client address without the token or a session, so that
    an unauthenticated client (slow bodies, slow searches) cannot take every slot. Behind a
    reverse proxy every client has the proxy's address: the share is then theirs together."""

    def __init__(self, app: ASGIApp, limit: int, share: float) -> None:
        self.app = app
        self.limit = limit
        self.per_client = max(1, int(limit * share))
        self.in_flight = 0
        self.anonymous: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await _json_error(
                503,
                f"the server is busy ({self.limit} requests in progress, "
                "CLIPSEARCH_MAX_CONNECTIONS): retry in a moment",
                {"Retry-After": "1", "Connection": "close"},
            )(scope, receive, send)
            return
        from .auth import is_authorised

        client = scope.get("client")
        address = str(client[0]) if client else "?"
        anonymous = not is_authorised(Request(scope))
        if anonymous and self.anonymous.get(address, 0) >= self.per_client:
            await _json_error(
                503,
                f"too many requests in progress from {address} without the API token (at most "
                f"{self.per_client}); wait for them, or send the token",
                {"Retry-After": "1", "Connection": "close"},
            )(scope, receive, send)
            return
        self.in_flight += 1
        if anonymous:
            self.anonymous[address] = self.anonymous.get(address, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if anonymous:
                left = self.anonymous.get(address, 1) - 1
                if left > 0:
                    self.anonymous[address] = left
                else:
                    self.anonymous.pop(address, None)


def _public_read(settings: Any) -> bool:
    return bool(settings.server.public_read)


class PublicPathsMiddleware:
    """Public reads (CLIPSEARCH_PUBLIC_READ) show no absolute server path: for a caller without
    the token, every JSON answer under /api has the paths under the served folders (and the data
    folder) rewritten to the folder's name and what follows (``/srv/photos/2024/a.jpg`` becomes
    ``photos/2024/a.jpg``), and a ``path``, ``folder`` or ``root`` value under none of them to its
    last component. A ``folder`` filter given that way is read back to the server's path."""

    KEYS = frozenset({"path", "folder", "root", "roots", "paths", "data_dir", "file"})

    def __init__(self, app: ASGIApp, roots: list[Path]) -> None:
        self.app = app
        # the longest first: a folder inside another is shown by its own name
        self.roots = sorted({str(r).rstrip("/") or "/" for r in roots}, key=len, reverse=True)

    def shown(self, text: str) -> str:
        for r in self.roots:
            if text == r or text.startswith(r + "/"):
                return (Path(r).name or "root") + text[len(r) :]
        return text

    def _rewrite(self, value: Any, key: str | None = None) -> Any:
        if isinstance(value, str):
            out = self.shown(value)
            if out == value and key in self.KEYS and value.startswith("/"):
                out = value.rstrip("/").rsplit("/", 1)[-1]
            return out
        if isinstance(value, list):
            return [self._rewrite(v, key) for v in value]
        if isinstance(value, dict):
            return {k: self._rewrite(v, k) for k, v in value.items()}
        return value

    def _server_folder(self, shown: str) -> str:
        head, _, rest = shown.partition("/")
        for r in self.roots:
            if head == (Path(r).name or "root"):
                return r + ("/" + rest if rest else "")
        return shown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/api/"):
            await self.app(scope, receive, send)
            return
        from .auth import is_authorised

        request = Request(scope)
        settings = request.app.state.service.settings
        if settings.token is None or not _public_read(settings) or is_authorised(request):
            await self.app(scope, receive, send)
            return
        from urllib.parse import parse_qsl, urlencode

        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if any(k == "folder" for k, _ in query):
            fixed = [(k, self._server_folder(v) if k == "folder" else v) for k, v in query]
            scope = {**scope, "query_string": urlencode(fixed).encode("latin-1")}
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewriting(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                kind = dict(message.get("headers") or []).get(b"content-type", b"")
                if kind.startswith(b"application/json"):
                    start = message
                    return
                await send(message)
                return
            if message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                with suppress(ValueError):  # not JSON after all: as it is
                    body = json.dumps(
                        self._rewrite(json.loads(body)), ensure_ascii=False, separators=(",", ":")
                    ).encode()
                headers = [
                    (k, v)
                    for k, v in start.get("headers") or []
                    if k not in (b"content-length", b"etag")
                ]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send(message)

        await self.app(scope, receive, rewriting)


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
        from .auth import is_authorised

        request = Request(scope)
        settings = request.app.state.service.settings
        path = scope.get("path", "/")
        if (
            settings.token is not None
            and not settings.server.public_read
            and path not in PUBLIC_ASSETS
            and not is_authorised(request)
        ):
            if path in ("/", "/index.html"):
                response: Any = RedirectResponse("/signin.html", status_code=303)
            else:
                response = _json_error(
                    401, "sign in first: open /signin.html and paste the server's API token"
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


# --- factory ----------------------------------------------------------------------------------


def create_app(settings: Settings | None = None, library: Any = None) -> FastAPI:
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
    install_error_handlers(app)
    for router in (
        search_router,
        images_router,
        removed_router,
        duplicates_router,
        tags_router,
        folders_router,
        jobs_router,
        ocr_router,
        health_router,
        probes_router,
        session_router,
    ):
        app.include_router(router)

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
    return app
