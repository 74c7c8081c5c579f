"""Fixtures shared by every test package: the reference data, and the real services.

The reference data lives in the repository (tests/fixtures/, made by
tests/fixtures/make_parity_fixtures.py); nothing is read from outside the repository.

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
from testkit import free_port

# gRPC (pymilvus) loaded in this process must not hook fork(): the tests spawn worker and server
# processes, and gRPC's fork handlers have aborted such a child before its exec (SIGABRT after an
# "epoll_wait error: Bad file descriptor"). Set before anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
MAKE_FIXTURES = "tests/fixtures/make_parity_fixtures.py"
# What the parity tests read; each is committed, and the script above regenerates it.
_FIXTURE_FILES = [
    "parity/texts.json",
    "parity/tokens.safetensors",
    *(f"parity/images/img{i}.{'jpg' if i in (1, 5) else 'png'}" for i in range(6)),
    *(
        f"parity/{case}/{file}"
        for case in ("openai_vit_jit", "openai_rn_state_dict", "open_clip_vit_gelu")
        for file in ("case.json", "expected.safetensors")
    ),
    *(
        f"parity-zoo/{case}/{file}"
        for case in ("siglip", "siglip2", "mobileclip", "multilingual")
        for file in ("case.json", "expected.safetensors", "open_clip_model.safetensors")
    ),
]
PG_ADMIN_URL = os.environ.get(
    "CLIPSEARCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST = os.environ.get("CLIPSEARCH_TEST_REDIS_HOST", "127.0.0.1")


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    """tests/fixtures: the CLIP parity references (parity/: texts, images, three checkpoint
    formats) and the CLIP-family ones (parity-zoo/), all in the repository."""
    missing = [name for name in _FIXTURE_FILES if not (FIXTURES / name).is_file()]
    if missing:
        pytest.fail(
            f"test fixtures missing under {FIXTURES}: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}. They are committed with the repository; "
            f"regenerate them with {MAKE_FIXTURES} (its docstring says how: it runs in a "
            "separate venv with open_clip)"
        )
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP (seed 0) saved once per test session in our folder format: what
    `--model PATH` takes. Read-only: a test that changes a model saves its own."""
    from testkit import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def bpe_path() -> Path:
    """CLIP's BPE merges as the package ships them (model/assets)."""
    path = REPO / "model" / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        pytest.fail(f"{path} is missing: it is part of the package (model/assets)")
    return path


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
    port = free_port()
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
