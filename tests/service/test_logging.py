"""One logging setup (indexer.logs) and the request id (issue 23).

The main test runs the API on a real socket and a real worker process on Redis with
``CLIPSEARCH_LOG_FORMAT=json``: an ingest posted with ``X-Request-ID`` is answered with that id,
and the worker's own log file holds JSON lines of the tasks that request caused, carrying it.
The others: an unacceptable id is replaced, not echoed; JSON and text lines have the fields an
operator's log pipeline reads; the access log says what was asked and answered; the embedded
worker's log file is rotated.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from testkit import free_port

from clipsearch.indexer import logs
from clipsearch.indexer.worker import start_worker_process
from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings

TOKEN = "logging-test-token-3f9c2a71d0e4b8"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE_S = 120.0


def _write_images(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (40, 40), (20 * i % 256, 90, 200 - 10 * i)).save(folder / f"p{i}.png")


@pytest.fixture()
def served(tmp_path: Path, tiny_model_dir: Path, redis_url: str) -> Iterator[dict[str, Any]]:
    """The API on a socket and a real worker process (JSON logs), sharing one Redis broker."""
    import uvicorn

    photos = tmp_path / "photos"
    _write_images(photos, 3)
    settings = Settings(
        data_dir=tmp_path / "data",
        model=str(tiny_model_dir),
        allowed_roots=[photos],
        broker_url=redis_url,
        queue_prefix=f"log{free_port()}-",
        api_token=TOKEN,
        log_format="json",
        device="cpu",
    )
    lib = build_library(settings)
    worker_log = tmp_path / "worker.log"
    worker = start_worker_process(
        settings.worker_config(decode_workers=1, extra_env={"OMP_NUM_THREADS": "1"}),
        log_path=worker_log,
        die_with_parent=True,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, library=lib), host="127.0.0.1", port=port, log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        worker.wait_ready(DEADLINE_S)
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        yield {"url": f"http://127.0.0.1:{port}", "photos": photos, "worker_log": worker_log}
    finally:
        server.should_exit = True
        thread.join(10)
        worker.stop(30)
        lib.close()


def _json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_request_id_travels_from_the_api_call_into_the_workers_json_log(
    served: dict[str, Any],
) -> None:
    rid = "op-trace-4711.a:b"
    with httpx.Client(base_url=served["url"], headers=AUTH, timeout=30) as client:
        r = client.post(
            "/api/ingest", json={"path": str(served["photos"])}, headers={"X-Request-ID": rid}
        )
        assert r.status_code in (200, 202), r.text
        assert r.headers["x-request-id"] == rid
        job_id = r.json()["id"]
        deadline = time.monotonic() + DEADLINE_S
        while True:
            job = client.get(f"/api/jobs/{job_id}").json()
            if job["state"] in ("done", "failed"):
                break
            assert time.monotonic() < deadline, f"job not finished: {job}"
            time.sleep(0.2)
    assert job["state"] == "done", job

    lines = _json_lines(served["worker_log"])
    assert lines, served["worker_log"].read_text()[-3000:]
    mine = [line for line in lines if line.get("request_id") == rid]
    started = {line["message"] for line in mine if line["message"].startswith("task ")}
    # the ingest task the request sent, and the embedding batches that task sent in turn
    assert "task clipsearch.ingest_folder started" in started, mine
    assert "task clipsearch.embed_batch started" in started, mine
    for line in mine:
        assert {"timestamp", "level", "logger", "message"} <= line.keys()
        assert line["timestamp"].endswith("Z")
    # the worker's start-up lines belong to no request
    assert any("request_id" not in line for line in lines)


def test_an_unacceptable_request_id_is_replaced_not_echoed(served: dict[str, Any]) -> None:
    with httpx.Client(base_url=served["url"], headers=AUTH, timeout=30) as client:
        for bad in ("x" * 129, 'a"b', "a b", "ünïcode"):
            r = client.get("/api/health/live", headers={"X-Request-ID": bad.encode("utf-8")})
            assert r.status_code == 200
            echoed = r.headers["x-request-id"]
            assert echoed != bad and len(echoed) == 32 and int(echoed, 16) >= 0
        first = client.get("/api/health/live").headers["x-request-id"]
        second = client.get("/api/health/live").headers["x-request-id"]
        assert first != second  # each request its own id when none is given


@pytest.fixture()
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_and_text_lines(restored_logging: None) -> None:
    stream = io.StringIO()
    logs.configure_logging("INFO", "json", stream=stream, force=True)
    token = logs.request_id.set("abc123")
    try:
        logging.getLogger("clipsearch.test").info("hello %s", "world")
    finally:
        logs.request_id.reset(token)
    logging.getLogger("clipsearch.test").debug("below the level")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["message"] == "hello world"
    assert lines[0]["request_id"] == "abc123"
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "clipsearch.test"
    assert "request_id" not in lines[1] and "ValueError: boom" in lines[1]["exc_info"]

    stream = io.StringIO()
    logs.configure_logging("WARNING", "text", stream=stream, force=True)
    token = logs.request_id.set("r-1")
    try:
        logging.getLogger("clipsearch.test").warning("disk full")
    finally:
        logs.request_id.reset(token)
    line = stream.getvalue().strip()
    assert line.endswith("WARNING clipsearch.test [r-1]: disk full"), line
    assert line[:4].isdigit() and "T" in line.split()[0]


def test_the_access_log_names_request_and_answer(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_model_dir), log_format="json")
    lib = build_library(settings)
    try:
        with (
            caplog.at_level(logging.INFO, logger="clipsearch.access"),
            TestClient(create_app(settings, library=lib), base_url="http://127.0.0.1") as client,
        ):
            r = client.get("/api/health/live?secret=1", headers={"X-Request-ID": "acc-1"})
            assert r.status_code == 200
            client.get("/api/no-such-thing")
    finally:
        lib.close()
    records = [r for r in caplog.records if r.name == "clipsearch.access"]
    seen = [
        (getattr(r, "method", ""), getattr(r, "path", ""), getattr(r, "status", 0)) for r in records
    ]
    assert seen == [
        ("GET", "/api/health/live", 200),
        ("GET", "/api/no-such-thing", 404),
    ]
    # the query string (search words) stays out of the log
    assert all("secret" not in r.getMessage() for r in records)


def test_the_worker_log_file_is_rotated(restored_logging: None, tmp_path: Path) -> None:
    path = tmp_path / "logs" / "worker.log"
    handler = logs.configure_logging("INFO", "json", file=path, force=True)
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    line = "x" * 1000
    for _ in range(logs.ROTATE_BYTES // 1000 + 50):
        logging.getLogger("clipsearch.test").info(line)
    handler.flush()
    assert path.exists() and (tmp_path / "logs" / "worker.log.1").exists()
    assert path.stat().st_size <= logs.ROTATE_BYTES


def test_a_process_whose_logging_is_set_up_already_is_left_alone(
    restored_logging: None,
) -> None:
    """Like logging.basicConfig: a program embedding clipsearch (here pytest, whose capture
    handlers are on the root logger) keeps its own setup when a CLI entry point runs in it."""
    root = logging.getLogger()
    theirs = logging.StreamHandler(io.StringIO())
    root.addHandler(theirs)
    before = list(root.handlers)
    assert logs.configure_logging("DEBUG", "json") is None
    assert root.handlers == before
    # forced, it replaces them; called again, it replaces only its own handler
    mine = logs.configure_logging("INFO", "json", stream=io.StringIO(), force=True)
    assert root.handlers == [mine]
    again = logs.configure_logging("INFO", "text", stream=io.StringIO())
    assert again is not None and root.handlers == [again]
