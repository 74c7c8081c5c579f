"""Fixtures shared by every test package: the reference data, and the real services.

PostgreSQL and Redis are the real servers on 127.0.0.1 (CI's .ci/run makes sure they answer).
Each test that claims one gets an isolated space of its own (a fresh database, a fresh Redis
database number and queue prefix), so tests and parallel sessions never see each other's data.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# gRPC (pymilvus) loaded in this process must not hook fork(): the tests spawn worker and server
# processes, and gRPC's fork handlers have aborted such a child before its exec (SIGABRT after an
# "epoll_wait error: Bad file descriptor"). Set before anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

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
        # FORCE ends the sessions still connected (a worker process or a thread of the test's
        # server reconnecting as it stops) and drops in one statement; retried in case one more
        # arrives in between
        for attempt in range(5):
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                break
            except sa.exc.OperationalError:
                if attempt == 4:
                    raise
                time.sleep(0.5)
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


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus server process (``milvus-lite server``, Milvus' gRPC protocol) for the
    session; each test gets its own collection prefix (:func:`milvus_store`)."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    exe = shutil.which("milvus-lite", path=str(Path(sys.executable).parent)) or shutil.which(
        "milvus-lite"
    )
    if exe is None:
        pytest.fail("milvus-lite is not installed: pip install -e '.[dev]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("milvus")
    log = (folder / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
            "server",
            "--data-dir",
            str(folder / "data"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"milvus-lite did not start: {(folder / 'server.log').read_text()}")
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture()
def milvus_store(milvus_server: str) -> object:
    """A StoreConfig on the session's Milvus server with a collection prefix of this test's own."""
    from clipsearch.indexer.vector_store import StoreConfig

    return StoreConfig(milvus_uri=milvus_server, milvus_collection=f"t{uuid.uuid4().hex[:12]}")
