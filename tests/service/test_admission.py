"""The one admission rule behind the search gate and the upload-decode gate: a crowd arriving in
one moment is cut at exactly slots + queue, the rest answered 503 with Retry-After at once, and
a holder that never finishes makes the waiters give up after the wait, not hang."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from fastapi import HTTPException

from clipsearch.service.admission import AdmissionGate, make_search_gate, make_upload_gate


@pytest.mark.parametrize("make", [make_search_gate, make_upload_gate])
def test_a_crowd_arriving_at_once_is_cut_at_slots_plus_queue(
    make: Callable[..., AdmissionGate],
) -> None:
    gate = make(2, 3, wait_s=5.0)
    release = asyncio.Event()
    outcomes: list[str] = []

    async def one() -> None:
        try:
            async with gate.slot():
                await release.wait()
            outcomes.append("served")
        except HTTPException as exc:
            assert exc.status_code == 503
            assert exc.headers and int(exc.headers["Retry-After"]) >= 1
            assert "retry" in exc.detail
            outcomes.append("refused")

    async def crowd() -> None:
        tasks = [asyncio.create_task(one()) for _ in range(20)]
        await asyncio.sleep(0.05)
        assert outcomes.count("refused") == 15  # refused at once, before anyone finished
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(crowd())
    assert outcomes.count("served") == 5
    assert gate.admitted == 0 and gate.waiting == 0


def test_waiters_give_up_after_the_wait_with_a_503() -> None:
    gate = make_upload_gate(1, 4, wait_s=0.2)

    async def scenario() -> HTTPException:
        hold = asyncio.Event()

        async def holder() -> None:
            async with gate.slot():
                await hold.wait()

        task = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        try:
            async with gate.slot():
                raise AssertionError("admitted while the only slot was held")
        except HTTPException as exc:
            refused = exc
        hold.set()
        await task
        return refused

    refused = asyncio.run(scenario())
    assert refused.status_code == 503
    assert "decoding other images" in refused.detail
