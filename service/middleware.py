"""The ASGI middlewares that stand in front of every route: body size and time limits, Host
and Origin checks, HEAD answered as GET, the concurrency limit and its share for callers without
the token, and the public-read paths. ``create_app`` (service.app) installs them."""

from __future__ import annotations

import json
import logging
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette._utils import parse_host_header
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipsearch.indexer.errors import CatalogUnavailable

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)


UPLOAD_PATHS = ("/api/v1/search/image", "/api/search/image")
MULTIPART_OVERHEAD = 64 * 1024


def json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


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
            await json_error(413, detail, {"Connection": "close"})(scope, receive, send)
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
        await json_error(
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
            await json_error(
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
    """A request's body must arrive in time: all of it within ``timeout_s`` of waiting for it,
    and once ``grace_s`` of waiting has passed, at ``min_rate`` bytes per second on average at
    least (the rate floor: a body sent a byte at a time, or one that never comes, is dropped after
    ``grace_s``, not ``timeout_s``). Too slow: 408 and the connection closed, instead of a slot
    held. Only the time spent waiting for the client counts: a handler that works (or waits for
    a thread) before it reads a body the server already holds is not the client's delay (on a
    loaded server, sign-ins were answered 408 so). (Slow headers are dropped by the server
    protocol: service.serve.)"""

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
        waited = 0.0  # seconds spent waiting for the client's body so far
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

        def allowed() -> float:
            """How long the client may still be waited for: the overall limit, or while what
            arrived so far keeps above the rate floor."""
            limit = self.timeout_s
            if self.min_rate > 0:
                limit = min(limit, self.grace_s + received / self.min_rate)
            return limit - waited

        async def timed() -> Message:
            nonlocal body_done, received, waited
            if body_done:
                return await receive()  # after the body: only the disconnect is left to wait for
            remaining = allowed()
            began = loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                log.info("request body too slow on %s: dropped", scope.get("path"))
                raise HTTPException(408, detail=detail, headers={"Connection": "close"}) from None
            finally:
                waited += loop.time() - began
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
            await json_error(
                503,
                f"the server is busy ({self.limit} requests in progress, "
                "CLIPSEARCH_MAX_CONNECTIONS): retry in a moment",
                {"Retry-After": "1", "Connection": "close"},
            )(scope, receive, send)
            return
        from .auth import resolve_principal

        client = scope.get("client")
        address = str(client[0]) if client else "?"
        try:  # who is calling: a catalog read, in the thread pool
            anonymous = await resolve_principal(Request(scope)) is None
        except CatalogUnavailable as exc:  # who is calling is kept in the catalog: it is down
            log.warning("%s %s -> 503: %s", scope.get("method"), scope.get("path"), exc)
            await json_error(
                503,
                "the catalog database is unavailable; check that the database server is running "
                "and reachable (the server log has the cause). The service reconnects by itself: "
                "retry in a moment",
                {"Retry-After": "1"},
            )(scope, receive, send)
            return
        if anonymous and self.anonymous.get(address, 0) >= self.per_client:
            await json_error(
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


def _public_read(settings: Settings) -> bool:
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

    def _rewrite(self, value: object, key: str | None = None) -> object:
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
        from .auth import resolve_principal

        request = Request(scope)
        settings = request.app.state.service.settings
        if (
            settings.token is None
            or not _public_read(settings)
            or await resolve_principal(request) is not None
        ):
            await self.app(scope, receive, send)
            return
        from .search_params import FOLDER_READER

        # a folder filter given by name, in the query or a body, is read back where every filter
        # is read (search_params.to_filters)
        reading = FOLDER_READER.set(self._server_folder)
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

        try:
            await self.app(scope, receive, rewriting)
        finally:
            FOLDER_READER.reset(reading)


class RequestIdMiddleware:
    """The request id (indexer.logs): an incoming ``X-Request-ID`` when it is acceptable (up to
    128 letters, digits and ``._:-``), else a new one; set for the request's log lines and the
    Celery tasks it sends, and returned in the response's ``X-Request-ID``. With ``access_log``
    one line per request goes to the ``clipsearch.access`` logger (method, path without the
    query, status, duration, client), carrying the id."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        self.log = logging.getLogger("clipsearch.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from time import perf_counter

        from clipsearch.indexer.logs import clean_request_id, new_request_id, request_id

        given = next((v for k, v in scope.get("headers", []) if k == b"x-request-id"), None)
        rid = clean_request_id(given) or new_request_id()
        token = request_id.set(rid)
        start = perf_counter()
        status = 500

        async def with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            if self.access_log:
                client = scope.get("client")
                self.log.info(
                    "%s %s %d",
                    scope.get("method", ""),
                    scope.get("path", ""),
                    status,
                    extra={
                        "method": scope.get("method", ""),
                        "path": scope.get("path", ""),
                        "status": status,
                        "duration_ms": round((perf_counter() - start) * 1000, 2),
                        "client": client[0] if client else None,
                    },
                )
            request_id.reset(token)
