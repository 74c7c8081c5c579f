"""Sign-in limits shared by every API process: with a Redis broker the failed tries are counted
in Redis (the real one at 127.0.0.1:6379, a key prefix of this test's own), so two API servers
of one library add them up; a Redis that does not answer pauses sign-in (503) rather than let
tries go uncounted; without a Redis broker each process counts in its memory."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import redis
from accounts_testlib import add_user, serve, served_library

from clipsearch.indexer.accounts import SignInGuard, SignInLimitsUnavailable, shared_limits_url


def test_two_api_servers_of_one_library_count_failed_sign_ins_together(
    tmp_path: Path, tiny_model_dir: Path, redis_url: str
) -> None:
    prefix = f"signin-{uuid.uuid4().hex[:12]}-"
    with served_library(
        tmp_path,
        tiny_model_dir,
        broker_url=redis_url,
        queue_prefix=prefix,
        signin_limit_account="4/minute",
    ) as served:
        add_user(served, "ann", "viewer")
        with serve(served.settings, served.lib) as other_url:
            first, second = served.client(), httpx.Client(base_url=other_url, timeout=60)
            wrong = {"name": "ann", "password": "not her password at all"}
            for client in (first, second, first, second):  # two tries on each server
                assert client.post("/api/session", json=wrong).status_code == 401
            for client in (first, second):  # the account's four tries are spent on both
                r = client.post("/api/session", json=wrong)
                assert r.status_code == 429, r.text
                assert "too many failed sign-ins" in r.json()["detail"]
                assert int(r.headers["Retry-After"]) >= 1
            # another account is not held back by ann's tries
            add_user(served, "bob", "viewer")
            r = second.post("/api/session", json={"name": "bob", "password": "nope nope nope"})
            assert r.status_code == 401


def test_the_counts_live_in_redis_under_the_prefix(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    assert shared_limits_url(redis_url) == redis_url
    assert shared_limits_url(None) is None
    assert shared_limits_url("sqla+sqlite:///broker.db") is None
    one = SignInGuard("3/minute", "100/minute", redis_url=redis_url, prefix=prefix)
    two = SignInGuard("3/minute", "100/minute", redis_url=redis_url, prefix=prefix)
    apart = SignInGuard("3/minute", "100/minute")  # memory: its own counts
    one.failed("Cy", "10.0.0.1")
    two.failed("cy", "10.0.0.2")
    assert one.retry_after("cy", "10.0.0.3") is None
    two.failed("CY", "10.0.0.3")
    assert one.retry_after("cy", "10.0.0.4") is not None  # a name is one account, any case
    assert apart.retry_after("cy", "10.0.0.4") is None
    other = SignInGuard("3/minute", "100/minute", redis_url=redis_url, prefix=prefix + "x")
    assert other.retry_after("cy", "10.0.0.4") is None  # another library's prefix
    keys = redis.Redis.from_url(redis_url).keys(f"{prefix}:signin*")
    assert keys, "nothing kept under the prefix"


def test_a_redis_that_does_not_answer_pauses_sign_in() -> None:
    guard = SignInGuard(redis_url="redis://127.0.0.1:1/0", prefix=f"t{uuid.uuid4().hex[:8]}")
    with pytest.raises(SignInLimitsUnavailable, match="sign-in is paused"):
        guard.retry_after("ann", "10.0.0.1")
    with pytest.raises(SignInLimitsUnavailable):
        guard.failed("ann", "10.0.0.1")
