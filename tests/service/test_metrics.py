"""Every metric page follows Prometheus' naming rules (issue 23): the API's ``/metrics`` after
real searches, and a real worker process's page on its own port after it ingested real files
from a real Redis broker. Each page is parsed with prometheus_client's own parser, and every
family is checked by :func:`naming_problems`: the rules an operator's recording rules and
dashboards rely on.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from testkit import free_port

from clipsearch.indexer.worker import start_worker_process
from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
UNITS = ("seconds", "bytes", "ratio", "info")
#: words that name a measured quantity, which must then carry its unit as the suffix
QUANTITIES = ("duration", "latency", "time", "size", "memory", "age", "elapsed")
#: families the standard collectors export (prometheus_client's names, not ours)
STANDARD = ("process_", "python_")


def naming_problems(text: str) -> list[str]:
    """What is wrong with a metrics page, one line per family (empty: nothing)."""
    problems: list[str] = []
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        name, kind = family.name, family.type
        where = f"{name} ({kind})"
        if name in names:
            problems.append(f"{where}: the family appears twice")
        names.add(name)
        if not NAME_RE.match(name):
            problems.append(f"{where}: not lower snake case")
        if not name.startswith(("clipsearch_", *STANDARD)):
            problems.append(f"{where}: not under the clipsearch_ namespace")
        if not family.documentation.strip():
            problems.append(f"{where}: no help text")
        if "per_second" in name or "_rate" in name:
            problems.append(f"{where}: a rate is rate() over a counter, not a metric")
        words = name.split("_")
        if any(w in QUANTITIES for w in words) and words[-1] not in UNITS:
            problems.append(f"{where}: a quantity without its unit suffix ({', '.join(UNITS)})")
        samples = {s.name for s in family.samples}
        if kind == "counter":
            if not all(s.endswith(("_total", "_created")) for s in samples):
                problems.append(f"{where}: counter samples must end in _total: {sorted(samples)}")
        elif kind == "gauge":
            if name.endswith("_total") or any(s.endswith("_total") for s in samples):
                problems.append(f"{where}: a gauge named like a counter")
        elif kind == "histogram":
            if words[-1] not in UNITS:
                problems.append(f"{where}: a histogram without a unit suffix")
            if not {f"{name}_bucket", f"{name}_sum", f"{name}_count"} <= samples:
                problems.append(f"{where}: histogram without _bucket, _sum and _count")
        elif kind == "info":
            pass
        elif kind != "summary":
            problems.append(f"{where}: untyped")
        for sample in family.samples:
            if sample.value != sample.value:  # NaN
                problems.append(f"{where}: {sample.name} is NaN")
    return problems


def values(text: str) -> dict[str, float]:
    """``name{label="v",...}`` -> value, for each sample on the page."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_the_checker_refuses_what_the_old_page_had() -> None:
    old = (
        "# HELP clipsearch_ingest_images_per_second Images processed per second.\n"
        "# TYPE clipsearch_ingest_images_per_second gauge\n"
        "clipsearch_ingest_images_per_second 3.0\n"
        "# HELP clipsearch_index_size Vectors in the served index.\n"
        "# TYPE clipsearch_index_size gauge\n"
        "clipsearch_index_size 10.0\n"
        "# HELP clipsearch_query_latency Query latency.\n"
        "# TYPE clipsearch_query_latency histogram\n"
        'clipsearch_query_latency_bucket{le="+Inf"} 1.0\n'
        "clipsearch_query_latency_sum 0.1\n"
        "clipsearch_query_latency_count 1.0\n"
    )
    found = "\n".join(naming_problems(old))
    assert "clipsearch_ingest_images_per_second (gauge): a rate" in found
    assert "clipsearch_index_size (gauge): a quantity without its unit" in found
    assert "clipsearch_query_latency (histogram): a histogram without a unit" in found


def _write_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (40, 40), (30 * i % 256, 120, 250 - 20 * i)).save(folder / f"p{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


@pytest.fixture()
def library_with_worker(
    tmp_path: Path, tiny_model_dir: Path, redis_url: str
) -> Iterator[dict[str, Any]]:
    photos = tmp_path / "photos"
    _write_images(photos, 4)
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        model=str(tiny_model_dir),
        allowed_roots=[photos],
        broker_url=redis_url,
        queue_prefix=f"met{port}-",
        device="cpu",
        worker_metrics_port=port,
    )
    lib = build_library(settings)
    worker = start_worker_process(
        settings.worker_config(decode_workers=1, extra_env={"OMP_NUM_THREADS": "1"}),
        log_path=tmp_path / "worker.log",
        die_with_parent=True,
    )
    try:
        worker.wait_ready(120)
        yield {"settings": settings, "lib": lib, "photos": photos, "port": port, "worker": worker}
    finally:
        worker.stop(30)
        lib.close()


def test_api_and_worker_pages_parse_and_follow_the_naming_rules(
    library_with_worker: dict[str, Any],
) -> None:
    from fastapi.testclient import TestClient

    env = library_with_worker
    lib = env["lib"]
    job = lib.submit_ingest(str(env["photos"]))
    job = lib.wait_for_job(job.id, timeout=120)
    assert job.state == "done", job
    assert (job.done, job.failed) == (4, 1)

    worker_url = f"http://127.0.0.1:{env['port']}/metrics"
    deadline = time.monotonic() + 30
    while True:  # the task's postrun (which counts) follows the job's last commit closely
        page = httpx.get(worker_url, timeout=10).text
        seen = values(page)
        if seen.get("clipsearch_worker_images_embedded_total", 0) >= 4:
            break
        assert time.monotonic() < deadline, page
        time.sleep(0.2)
    assert naming_problems(page) == []
    assert seen["clipsearch_worker_images_embedded_total"] == 4
    assert seen["clipsearch_worker_decode_failures_total"] == 1
    assert seen["clipsearch_worker_batch_duration_seconds_count"] >= 1
    prefix = env["settings"].catalog.queue_prefix
    assert seen[f'clipsearch_worker_queue_messages{{queue="{prefix}clipsearch"}}'] == 0
    assert f'clipsearch_worker_queue_messages{{queue="{prefix}clipsearch.builds"}}' in seen
    assert any(k.startswith("clipsearch_build_info{") for k in seen)
    assert seen["process_resident_memory_bytes"] > 0
    assert (
        seen['clipsearch_worker_tasks_total{state="success",task="clipsearch.ingest_folder"}'] == 1
    )

    with TestClient(create_app(env["settings"], library=lib), base_url="http://127.0.0.1") as c:
        for q in ("red", "blue"):
            assert c.get("/api/search", params={"q": q}).status_code == 200
        api = c.get("/metrics").text
    assert naming_problems(api) == []
    got = values(api)
    assert got['clipsearch_images{state="ready"}'] == 4
    assert got['clipsearch_images{state="failed"}'] == 1
    assert got["clipsearch_index_vectors"] == 4
    assert got['clipsearch_search_stage_duration_seconds_count{stage="encode"}'] >= 2
    assert got['clipsearch_search_stage_duration_seconds_count{stage="vector_search"}'] >= 2
    assert got['clipsearch_searches_total{kind="text"}'] == 2
    assert got["process_resident_memory_bytes"] > 0
    assert any(k.startswith("clipsearch_build_info{") for k in got)
    # every series the Grafana dashboard queries is on one of the two pages
    dashboard = json.loads((REPO / "deploy" / "grafana" / "clipsearch.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\b((?:clipsearch|process)_[a-z_]+)", e)}
    served = {k.split("{")[0] for k in (*seen, *got)}
    assert len(queried) >= 10 and queried <= served, queried - served
    # what the old page had twice or as a lifetime average is gone
    assert not any(
        k.startswith(("clipsearch_images_pending", "clipsearch_ingest_images_per_second"))
        for k in got
    )


def test_a_taken_port_leaves_the_worker_working_without_metrics(
    tmp_path: Path, tiny_model_dir: Path, redis_url: str
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        settings = Settings(
            data_dir=tmp_path / "data",
            model=str(tiny_model_dir),
            broker_url=redis_url,
            queue_prefix=f"mtk{port}-",
            device="cpu",
            worker_metrics_port=port,
        )
        log = tmp_path / "worker.log"
        worker = start_worker_process(
            settings.worker_config(decode_workers=1), log_path=log, die_with_parent=True
        )
        try:
            worker.wait_ready(120)
            assert worker.is_alive()
        finally:
            worker.stop(30)
    text = log.read_text()
    assert f"worker metrics not served: port {port}" in text
    assert "CLIPSEARCH_WORKER_METRICS_PORT" in text


@pytest.mark.parametrize("broker", ["redis", "embedded"])
def test_queue_depth_counts_the_messages_waiting(
    broker: str, tmp_path: Path, redis_url: str
) -> None:
    """Messages sent while no worker consumes are counted per queue, on Redis under a key
    prefix and on the embedded SQL broker alike."""
    from prometheus_client import generate_latest

    from clipsearch.indexer.celery_app import TASK_EMBED, TASK_REINDEX, make_celery
    from clipsearch.indexer.worker_metrics import WorkerMetrics

    url = redis_url if broker == "redis" else f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    app = make_celery(url, queue_prefix="depth-")
    for _ in range(3):
        app.send_task(TASK_REINDEX, args=[1])
    app.send_task(TASK_EMBED, args=[1, [1]])
    page = generate_latest(WorkerMetrics(app).registry).decode()
    assert naming_problems(page) == []
    seen = values(page)
    assert seen['clipsearch_worker_queue_messages{queue="depth-clipsearch"}'] == 1
    assert seen['clipsearch_worker_queue_messages{queue="depth-clipsearch.builds"}'] == 3
    app.close()
