"""Fixtures shared by every test package: the reference data, and the real services.

PostgreSQL and Redis are the real servers on 127.0.0.1 (CI's .ci/run makes sure they answer).
Each test that claims one gets an isolated space of its own (a fresh database, a fresh Redis
database number and queue prefix), so tests and parallel sessions never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CLIPSEARCH_SHARED", REPO.parent / "shared"))
PG_ADMIN_URL = os.environ.get(
    "CLIPSEARCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST = os.environ.get("CLIPSEARCH_TEST_REDIS_HOST", "127.0.0.1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the BPE file and the CLIP parity fixtures."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.fail(
            f"reference data not found at {path}; set CLIPSEARCH_SHARED to the shared/ folder"
        )
    return path


@pytest.fixture(scope="session")
def bpe_path(shared_data: Path) -> Path:
    return shared_data / "clip" / "bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    import sqlalchemy as sa

    name = f"cs_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture()
def redis_url() -> Iterator[str]:
    """A Redis URL on a database number nobody else is using right now; flushed afterwards."""
    import redis

    base = redis.Redis(host=REDIS_HOST, port=6379)
    base.ping()
    # Claim a database number with SETNX on db 0 so concurrent test runs do not share one.
    for db in range(1, 16):
        if base.set(f"clipsearch-test-lock:{db}", uuid.uuid4().hex, nx=True, ex=3600):
            break
    else:
        pytest.fail("no free Redis database number (1-15) for this test")
    client = redis.Redis(host=REDIS_HOST, port=6379, db=db)
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:6379/{db}"
    finally:
        client.flushdb()
        base.delete(f"clipsearch-test-lock:{db}")
