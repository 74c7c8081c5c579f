"""Liveness and readiness probes, for orchestrators and load balancers.

- ``GET /api/health/live``: the process answers. No I/O at all (no catalog, no disk, no thread
  pool), so a slow database never gets a live server restarted.
- ``GET /api/health/ready``: this process can serve: the model is loaded, and the catalog, the
  broker, the served index and a writable data folder answer (indexer.readiness). 200 when every
  part is ``ok``; 503 naming each failing part otherwise.

Both are open to all, like ``/api/health``, and show no path or URL. Each check runs in a thread
of its own and is waited for at most :data:`CHECK_TIMEOUT_S`; a check still running from an
earlier probe is waited for again rather than started twice, so a hung database cannot pile up
threads however often the probe is called. The detailed report stays at ``/api/health``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from clipsearch.indexer.readiness import PARTS, NotReady, readiness_checks

from ..deps import ServiceState, StateDep

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

#: How long the readiness probe waits for each part's check (they run concurrently).
CHECK_TIMEOUT_S = 2.0
POLL_S = 0.01


class LiveOut(BaseModel):
    status: Literal["alive"] = "alive"


class ReadyOut(BaseModel):
    status: Literal["ready", "not ready"]
    failing: list[str] = Field(description="The parts that are not ok, in the order of `parts`.")
    parts: dict[str, str] = Field(
        description="Each part checked (model, catalog, broker, index, data): `ok`, or what is "
        "wrong and what to do."
    )
    detail: str | None = Field(None, description="On 503: the failing parts in one sentence.")


class _Checks:
    """The checks of one app: at most one thread per part at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, concurrent.futures.Future[None]] = {}
        self._failing: set[str] = set()

    def submit(self, part: str, check: Callable[[], None]) -> concurrent.futures.Future[None]:
        with self._lock:
            future = self._running.get(part)
            if future is not None and not future.done():
                return future  # still waiting on the previous probe's check
            future = concurrent.futures.Future()
            future.set_running_or_notify_cancel()  # nobody can cancel it from here on

            def run(future: concurrent.futures.Future[None] = future) -> None:
                try:
                    check()
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(None)

            threading.Thread(target=run, name=f"clipsearch-ready-{part}", daemon=True).start()
            self._running[part] = future
            return future

    def record(self, part: str, problem: str | None) -> None:
        """Log a part's change of state once (not on every probe)."""
        with self._lock:
            if problem is not None and part not in self._failing:
                self._failing.add(part)
                log.warning("not ready: %s: %s", part, problem)
            elif problem is None and part in self._failing:
                self._failing.discard(part)
                log.info("ready again: %s", part)


def _checks_of(request: Request) -> _Checks:
    checks = getattr(request.app.state, "readiness_checks", None)
    if checks is None:
        checks = request.app.state.readiness_checks = _Checks()
    return checks


async def _outcome(future: concurrent.futures.Future[None]) -> str:
    """``ok``, or what is wrong, once ``future`` is done or :data:`CHECK_TIMEOUT_S` passed (the
    future is polled: no callback from its thread into this event loop, which may be gone when a
    hung check ends)."""
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    while not future.done():
        if time.monotonic() >= deadline:
            return f"did not answer within {CHECK_TIMEOUT_S:g} s"
        await asyncio.sleep(POLL_S)
    exc = future.exception()
    if exc is None:
        return "ok"
    if isinstance(exc, NotReady):
        return str(exc)
    # a check that broke: not ready, by its kind only (no paths)
    return f"could not be checked ({type(exc).__name__}); the server log has the cause"


def _model_problem(state: ServiceState) -> str | None:
    if state.model_error:
        return (
            "the model could not be loaded: /api/health (with the token) or the server log says why"
        )
    if state.settings.serve.preload_model and state.model_name is None:
        return "starting: the model is still loading"
    return None


@router.get(
    "/api/health/live",
    operation_id="health_live",
    response_model=LiveOut,
)
async def live() -> LiveOut:
    """The process answers (no I/O: the catalog, the broker and the disk are not touched).
    For liveness probes: restart the server when this fails."""
    return LiveOut()


@router.get(
    "/api/health/ready",
    operation_id="health_ready",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "A part is not ready (named in `failing`)"}},
)
async def ready(request: Request, state: StateDep) -> ReadyOut | JSONResponse:
    """Whether this server can serve now: the model loaded, the catalog, the job queue's broker,
    the served index and a writable data folder answer (each waited for at most 2 s). 503 names
    each failing part. For readiness probes: send no traffic while this fails."""
    checks = _checks_of(request)
    library: Any = state.library
    futures = {part: checks.submit(part, fn) for part, fn in readiness_checks(library).items()}
    outcomes = await asyncio.gather(*(_outcome(futures[part]) for part in PARTS))
    parts = {"model": _model_problem(state) or "ok", **dict(zip(PARTS, outcomes, strict=True))}
    for part, outcome in parts.items():
        checks.record(part, None if outcome == "ok" else outcome)
    failing = [part for part, outcome in parts.items() if outcome != "ok"]
    if not failing:
        return ReadyOut(status="ready", failing=[], parts=parts, detail=None)
    body = ReadyOut(
        status="not ready",
        failing=failing,
        parts=parts,
        detail="not ready: " + "; ".join(f"{part}: {parts[part]}" for part in failing),
    )
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
