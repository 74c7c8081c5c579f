"""The body deadline (service.middleware.BodyTimeoutMiddleware) drops a request whose body trickles,
never a bodiless request whose handler is merely slow (its response listens for the client
going away after the deadline), nor one whose handler reads a body that arrived while it worked."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import HTTPException

from clipsearch.service.app import BodyTimeoutMiddleware


def _run(headers: list[tuple[bytes, bytes]], messages: list[dict], work_s: float) -> list[Any]:
    """Run one request through the middleware; the app reads after ``work_s`` seconds, as a
    streaming response's disconnect listener does. Returns what the app read, or the error."""
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(work_s)
        try:
            got.append(await asyncio.wait_for(receive(), 0.5))
        except HTTPException as exc:
            got.append(exc.status_code)
        except TimeoutError:
            got.append("waiting")  # still waiting for a disconnect: what a live client gives

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "path": "/api/search", "headers": headers}
    asyncio.run(BodyTimeoutMiddleware(app, timeout_s=0.1)(scope, receive, send))
    return got


def test_a_slow_handler_of_a_bodiless_request_is_not_cut_off() -> None:
    empty = {"type": "http.request", "body": b"", "more_body": False}
    assert _run([(b"host", b"x")], [empty], work_s=0.3) == [empty]
    assert _run([(b"content-length", b"0")], [empty], work_s=0.3) == [empty]


def test_a_body_that_does_not_arrive_in_time_is_refused() -> None:
    # a declared body whose first part is not there by the deadline
    assert _run([(b"content-length", b"1000")], [], work_s=0.3) == [408]
    assert _run([(b"transfer-encoding", b"chunked")], [], work_s=0.3) == [408]
    # one that arrives in time passes
    part = {"type": "http.request", "body": b"{}", "more_body": False}
    assert _run([(b"content-length", b"2")], [part], work_s=0.0) == [part]


def test_a_handler_that_reads_the_body_late_is_not_the_clients_delay() -> None:
    """The body is there; the handler first waits longer than the deadline (a busy thread pool
    on a loaded server): the body is read, not refused. Only waiting for the client counts."""
    part = {"type": "http.request", "body": b"{}", "more_body": False}
    assert _run([(b"content-length", b"2")], [part], work_s=0.3) == [part]
    # and a body that then does not come is still refused after the deadline of waiting
    assert _run([(b"content-length", b"1000")], [], work_s=0.3) == [408]
