"""Faults injected into a running clipsearch, and what a user sees through them.

Each test starts the real pieces (the API on a real socket, real worker processes, PostgreSQL,
a Redis of its own), breaks one of them the way production breaks it (SIGKILL, a restart, a cut
connection, a full disk, a double submission) and checks what a user would check: the job
finishes with the right counts, every image is searchable exactly once, nothing is lost, and the
API answers with a status and message a user understands while the fault lasts.

Figures (errors served, recovery times) are printed and, with $CLIPSEARCH_RELIABILITY_OUT set,
recorded for RELIABILITY.md (bench/reliability_report.py).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from faultlib import (
    SINGLE_THREAD_ENV,
    ApiProcess,
    ApiThread,
    FullDisk,
    Probe,
    RedisServer,
    TcpProxy,
    catalog_truth,
    ingest_in_process,
    make_images,
    record,
    search_ids,
    started_worker,
    via_proxy,
    wait_for,
    worker_log,
)

pytestmark = pytest.mark.slow


def _prefix() -> str:
    return f"rel{uuid.uuid4().hex[:8]}-"


def _assert_each_image_once(api: ApiThread, files: list[Path], truth: dict) -> dict:
    """Every file is one ready image, embedded once, and found exactly once by search."""
    n = len(files)
    page = api.get("/api/images", limit=500).json()
    paths = sorted(item["path"] for item in page["items"])
    assert page["total"] == n, page["total"]
    assert paths == sorted(str(f.resolve()) for f in files)
    assert {item["state"] for item in page["items"]} == {"ready"}
    assert truth["images"] == truth["distinct_paths"] == n, truth
    assert truth["embeddings"] == truth["distinct_embeddings"] == n, truth
    ids = wait_for(
        lambda: len(x := search_ids(api, n + 20)) >= n and x,
        60,
        "every image to be searchable",
        interval=0.2,
    )
    assert len(ids) == len(set(ids)) == n, (
        f"search returned {len(ids)} hits, {len(set(ids))} distinct"
    )
    assert set(ids) == {item["id"] for item in page["items"]}
    return {"searchable": len(set(ids)), "duplicates_in_search": len(ids) - len(set(ids))}


# --------------------------------------------------------------------------------------------
# 1. A worker SIGKILLed in the middle of a job


N_KILL = 80


def test_worker_sigkilled_mid_job(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The default single-machine setup (SQLite catalog, embedded broker): POST /api/ingest, the
    worker dies with SIGKILL mid-way, a new worker starts; the job completes, nothing lost."""
    photos = tmp_path / "photos"
    files = make_images(photos, N_KILL, seed=11, size=32)
    with ApiThread(
        data_dir=tmp_path / "data",
        model=str(tiny_model_dir),
        device="cpu",
        allowed_roots=[tmp_path],
        queue_prefix=_prefix(),
    ) as api:
        lib = api.app.state.service.library
        cfg = lib.config.worker_config(
            device="cpu", batch_size=5, decode_workers=1, embed_delay_s=0.05,
            extra_env=SINGLE_THREAD_ENV,
        )  # fmt: skip
        with started_worker(cfg, "doomed") as doomed:
            r = api.post("/api/ingest", json={"path": str(photos)})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            part = wait_for(
                lambda: (
                    (j := api.job(job_id))["total"]
                    and j["total"] // 4 <= j["done"] < j["total"]
                    and j
                ),
                120,
                "the job to be a quarter done",
                worker=doomed,
            )
            with Probe(f"{api.url}/api/search?q=a+photo&k=5") as probe:
                os.kill(doomed.pid, signal.SIGKILL)
                doomed.popen.wait(30)
                t_kill = time.monotonic()
                stalled = api.job(job_id)
                assert stalled["state"] == "running" and stalled["done"] < N_KILL, stalled
                with started_worker(cfg, "rescuer") as rescuer:
                    t_ready = time.monotonic()
                    final = api.finished_job(job_id, 240, rescuer)
                    t_done = time.monotonic()
        assert final["state"] == "done", final
        assert (final["total"], final["done"], final["failed"]) == (N_KILL, N_KILL, 0), final
        truth = catalog_truth(lib.database_url)
        seen = _assert_each_image_once(api, files, truth)
    assert probe.errors() == [], probe.errors()[:5]
    record(
        "worker SIGKILL mid-job",
        setup="SQLite catalog, embedded broker, API in process",
        images=N_KILL,
        done_at_kill=part["done"],
        lost=N_KILL - truth["states"].get("ready", 0),
        embeddings=truth["embeddings"],
        search_requests_during_fault=probe.counts(),
        new_worker_ready_s=round(t_ready - t_kill, 1),
        kill_to_job_done_s=round(t_done - t_kill, 1),
        resume_after_new_worker_s=round(t_done - t_ready, 1),
        **seen,
    )


# --------------------------------------------------------------------------------------------
# 6. The same folder ingested twice at once


N_TWICE = 80


@pytest.mark.postgres
@pytest.mark.redis
def test_same_folder_ingested_twice_at_once(
    tmp_path: Path, tiny_model_dir: Path, pg_url: str, redis_url: str
) -> None:
    """Two POST /api/ingest of one folder at the same moment (a double click, two tabs), with a
    worker running two tasks at once: no image twice, no vector twice, both jobs finish."""
    photos = tmp_path / "photos"
    files = make_images(photos, N_TWICE, seed=66, size=32)
    with ApiThread(
        data_dir=tmp_path / "data",
        model=str(tiny_model_dir),
        device="cpu",
        database_url=pg_url,
        broker_url=redis_url,
        allowed_roots=[tmp_path],
        queue_prefix=_prefix(),
    ) as api:
        lib = api.app.state.service.library
        cfg = lib.config.worker_config(
            device="cpu", batch_size=8, decode_workers=1, concurrency=2,
            # both jobs must finish on their own, not through the idle worker's stale-job takeover
            stale_after_s=3600.0,
            extra_env=SINGLE_THREAD_ENV,
        )  # fmt: skip
        with started_worker(cfg, "worker") as worker:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                posts = list(
                    pool.map(
                        lambda _: api.post("/api/ingest", json={"path": str(photos)}), range(2)
                    )
                )
            assert [p.status_code for p in posts] == [202, 202], [p.text for p in posts]
            job_ids = sorted({p.json()["id"] for p in posts})
            finals = [api.finished_job(j, 120, worker) for j in job_ids]
        truth = catalog_truth(pg_url)
        seen = _assert_each_image_once(api, files, truth)
    assert [f["state"] for f in finals] == ["done"] * len(finals), finals
    # each image counted by exactly one of the jobs
    assert sum(f["done"] for f in finals) == N_TWICE, finals
    assert all(f["failed"] == 0 and f["done"] == f["total"] for f in finals), finals
    record(
        "same folder ingested twice at once",
        setup="PostgreSQL, Redis, one worker with 2 threads, API in process",
        images=N_TWICE,
        jobs=[{k: f[k] for k in ("id", "state", "total", "done", "failed")} for f in finals],
        image_rows=truth["images"],
        lost=N_TWICE - seen["searchable"],
        embeddings=truth["embeddings"],
        **seen,
    )


# --------------------------------------------------------------------------------------------
# 2. Redis (the broker) restarted in the middle of a job


N_REDIS = 80
STALE_AFTER_S = 4.0  # the volatile case: how long a job may show no progress before takeover


@pytest.mark.postgres
@pytest.mark.parametrize("persistent", [True, False], ids=["redis-aof", "redis-volatile"])
def test_redis_restarted_mid_job(
    tmp_path: Path, tiny_model_dir: Path, pg_url: str, persistent: bool
) -> None:
    """Our own redis-server is the broker; it is SIGKILLed mid-job and started again on the same
    port while the worker stays up.

    - ``redis-aof``: as docker-compose.yml runs it (append-only file): the queue survives, the
      worker reconnects and carries on.
    - ``redis-volatile``: no persistence, the restart loses every queued message. The catalog
      still holds the job: once it shows no progress for ``stale_after_s`` the idle worker takes
      it over. An ingest submitted while Redis is down is recorded, answered 503 saying the queue did
      not take it, and runs the same way once the broker is back.
    """
    redis = RedisServer(tmp_path / "redis", persistent=persistent)
    redis.start()
    photos = tmp_path / "photos"
    files = make_images(photos, N_REDIS, seed=22, size=32)
    late_files = make_images(tmp_path / "late", 10, seed=23, size=32)
    try:
        with ApiThread(
            data_dir=tmp_path / "data",
            model=str(tiny_model_dir),
            device="cpu",
            database_url=pg_url,
            broker_url=redis.url,
            allowed_roots=[tmp_path],
            queue_prefix=_prefix(),
        ) as api:
            lib = api.app.state.service.library
            cfg = lib.config.worker_config(
                device="cpu", batch_size=5, decode_workers=1, embed_delay_s=0.1,
                # AOF: nothing may come from the stale-job takeover; the queue must carry on.
                stale_after_s=3600.0 if persistent else STALE_AFTER_S,
                extra_env=SINGLE_THREAD_ENV,
            )  # fmt: skip
            with started_worker(cfg, "worker") as worker:
                r = api.post("/api/ingest", json={"path": str(photos)})
                assert r.status_code == 202, r.text
                job_id = r.json()["id"]
                part = wait_for(
                    lambda: (
                        (j := api.job(job_id))["total"]
                        and j["total"] // 4 <= j["done"] < j["total"]
                        and j
                    ),
                    120,
                    "the job to be a quarter done",
                    worker=worker,
                )
                with Probe(f"{api.url}/api/search?q=a+photo&k=5") as probe:
                    redis.kill()
                    t_kill = time.monotonic()
                    late_id = None
                    if not persistent:
                        # A user submits another folder while the broker is down.
                        # It is recorded, and the answer says the queue did not take it (503
                        # naming the job) instead of a 202 that looks queued.
                        late = api.post("/api/ingest", json={"path": str(tmp_path / "late")})
                        assert late.status_code == 503, late.text
                        recorded = re.search(r"job (\d+) is recorded", late.json()["detail"])
                        assert recorded, late.text
                        late_id = int(recorded.group(1))
                    # The worker notices in its consumer loop ("Connection to broker lost") or,
                    # when the kill lands as it acknowledges a finished batch, there first
                    # ("Couldn't ack ... ConnectionError"); either way it must carry on below.
                    wait_for(
                        lambda: any(
                            sign in worker_log(worker)
                            for sign in ("Connection to broker lost", "Couldn't ack")
                        ),
                        60,
                        "the worker to notice the broker is gone",
                        worker=worker,
                    )
                    redis.start()
                    t_back = time.monotonic()
                    final = api.finished_job(job_id, 120, worker)
                    t_done = time.monotonic()
                    late_final = api.finished_job(late_id, 120, worker) if late_id else None
                assert worker.is_alive()
            all_files = files + (late_files if late_id else [])
            truth = catalog_truth(pg_url)
            seen = _assert_each_image_once(api, all_files, truth)
    finally:
        redis.close()
    assert final["state"] == "done", final
    assert (final["total"], final["done"], final["failed"]) == (N_REDIS, N_REDIS, 0), final
    if late_final is not None:
        assert (late_final["state"], late_final["done"]) == ("done", len(late_files)), late_final
    assert probe.errors() == [], probe.errors()[:5]
    record(
        "Redis restarted mid-job (" + ("AOF persistence" if persistent else "no persistence") + ")",
        setup="PostgreSQL, our own redis-server, one worker that stays up, API in process",
        images=len(all_files),
        done_at_kill=part["done"],
        redis_down_s=round(t_back - t_kill, 1),
        lost=len(all_files) - truth["states"].get("ready", 0),
        embeddings=truth["embeddings"],
        search_requests_during_fault=probe.counts(),
        restart_to_job_done_s=round(t_done - t_back, 1),
        stale_after_s=None if persistent else STALE_AFTER_S,
        ingest_submitted_while_down=None if late_final is None else late_final["state"],
        **seen,
    )


# --------------------------------------------------------------------------------------------
# 3. The database connection dropped, then the database unreachable


N_DB = 40


@pytest.mark.postgres
def test_database_outage_answers_503_then_recovers(
    tmp_path: Path, tiny_model_dir: Path, pg_url: str
) -> None:
    """The API reaches PostgreSQL through a TCP proxy we control. First every server connection
    of the API is terminated (a failover, an admin's pg_terminate_backend): the next requests must
    simply work. Then the proxy is cut (the database host is gone): search, health, image pages and
    ingest answer 503 with a message that names the catalog, quickly, never a 500 or a hang. When
    the proxy listens again the API recovers by itself, without a restart."""
    import sqlalchemy as sa

    photos = tmp_path / "photos"
    make_images(photos, N_DB, seed=33, size=32)
    target = sa.make_url(pg_url)
    proxy = TcpProxy(target.host or "127.0.0.1", int(target.port or 5432))
    proxy.start()
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with ApiThread(
            data_dir=tmp_path / "data",
            model=str(tiny_model_dir),
            device="cpu",
            database_url=via_proxy(pg_url, proxy),
            allowed_roots=[tmp_path],
            queue_prefix=_prefix(),
        ) as api:
            lib = api.app.state.service.library
            job_id = ingest_in_process(lib, photos, database_url=pg_url)
            assert api.job(job_id)["state"] == "done"
            wait_for(lambda: len(search_ids(api, 100)) == N_DB, 60, "the images to be searchable")
            image_id = search_ids(api, 1)[0]
            requests = {
                "search": lambda: api.get("/api/search", q="a photo", k=5),
                "health": lambda: api.get("/api/health"),
                "images": lambda: api.get("/api/images", limit=10),
                "image": lambda: api.get(f"/api/images/{image_id}"),
                "ingest": lambda: api.post("/api/ingest", json={"path": str(photos)}),
            }

            # (a) the server drops every connection the API holds
            with admin.connect() as conn:
                killed = conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": target.database},
                ).scalar()
            after_terminate = {
                name: call().status_code for name, call in requests.items() if name != "ingest"
            }

            # (b) the database host is unreachable
            with Probe(f"{api.url}/api/health", interval=0.05) as probe:
                proxy.cut()
                t_cut = time.monotonic()
                during: dict[str, tuple[int, str, float]] = {}
                for name, call in requests.items():
                    t0 = time.monotonic()
                    r = call()
                    during[name] = (
                        r.status_code,
                        r.json().get("detail", ""),
                        time.monotonic() - t0,
                    )
                # keep it down while the probe sees a few more answers
                wait_for(
                    lambda: sum(o[0] >= t_cut - probe.t0 for o in probe.outcomes) >= 20,
                    60,
                    "the health probe to see the outage",
                )
                proxy.restore()
                t_back = time.monotonic()
                wait_for(
                    lambda: api.get("/api/health").status_code == 200,
                    60,
                    "the API to answer again once the database is back",
                )
                t_ok = time.monotonic()
            after = {
                name: call().status_code for name, call in requests.items() if name != "ingest"
            }
            found_after = len(set(search_ids(api, 100)))
    finally:
        proxy.close()
        admin.dispose()

    assert killed and killed >= 1
    assert after_terminate == dict.fromkeys(after_terminate, 200), after_terminate
    for name, (status, detail, _) in during.items():
        assert status == 503, (name, status, detail)
        assert "catalog" in detail and "unavailable" in detail, (name, detail)
        # ... without telling clients where the database is or who connects to it.
        assert "127.0.0.1" not in detail and "postgres" not in detail.lower(), (name, detail)
    assert after == dict.fromkeys(after, 200), after
    assert found_after == N_DB
    outage = [o for o in probe.outcomes if t_cut - probe.t0 <= o[0] < t_back - probe.t0]
    statuses = {o[1] for o in outage}
    assert statuses <= {"503"}, statuses  # never a 500, never a timeout
    record(
        "database connections terminated, then database unreachable",
        setup="PostgreSQL behind a TCP proxy we cut, API in process",
        images=N_DB,
        backends_terminated=killed,
        after_terminate=after_terminate,
        during_outage={k: v[0] for k, v in during.items()},
        slowest_503_s=round(max(v[2] for v in during.values()), 2),
        health_probes_during_outage=dict(Counter(o[1] for o in outage)),
        outage_s=round(t_back - t_cut, 1),
        recovery_after_db_back_s=round(t_ok - t_back, 2),
        detail_example=" ".join(during["search"][1].split())
        .replace(str(proxy.port), "<port>")
        .replace(str(target.database), "<db>"),
        lost=N_DB - found_after,
    )


# --------------------------------------------------------------------------------------------
# 4. The API (clipsearch serve, with its embedded worker) killed during a re-index


N_REINDEX = 60


@pytest.fixture()
def tuned_dir(tmp_path: Path) -> Path:
    """A second tiny model, what `clipsearch finetune --out` would hand to a re-index (inside the
    allowed root: the API only takes model folders from there)."""
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model

    return save_pretrained(tiny_model(seed=1), tmp_path / "tuned-model")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def test_serve_killed_during_reindex(tmp_path: Path, tiny_model_dir: Path, tuned_dir: Path) -> None:
    """`clipsearch serve` (API + embedded worker, SQLite, embedded broker: the one-command setup)
    gets SIGKILL, with its worker, while a re-index to a new model runs, and is started again. Searches work before
    the kill and right after the restart; the re-index completes; the new model's index is the
    active one (an uploaded image finds itself first); no image is lost or doubled."""
    photos = tmp_path / "photos"
    files = make_images(photos, N_REINDEX, seed=44, size=32)
    data = tmp_path / "data"
    api = ApiProcess(
        {
            "CLIPSEARCH_DATA_DIR": str(data),
            "CLIPSEARCH_MODEL": str(tiny_model_dir),
            "CLIPSEARCH_DEVICE": "cpu",
            "CLIPSEARCH_ALLOWED_ROOTS": str(tmp_path),
            "CLIPSEARCH_EMBED_BATCH_SIZE": "5",
            "CLIPSEARCH_DECODE_WORKERS": "1",
            "CLIPSEARCH_TEST_EMBED_DELAY_S": "0.1",
        },
        tmp_path / "logs",
        worker=True,
    )
    try:
        first_start_s = api.start()
        r = api.post("/api/ingest", json={"path": str(photos)})
        assert r.status_code == 202, r.text
        ingest = api.finished_job(r.json()["id"], 180)
        assert (ingest["state"], ingest["done"]) == ("done", N_REINDEX), ingest
        wait_for(lambda: len(search_ids(api, 100)) == N_REINDEX, 60, "the library searchable")

        r = api.post("/api/reindex", json={"model": str(tuned_dir)})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        part = wait_for(
            lambda: (
                (j := api.job(job_id))["total"] and j["total"] // 4 <= j["done"] < j["total"] and j
            ),
            120,
            "the re-index to be a quarter done",
        )
        during = search_ids(api, 100)  # searches keep the old index meanwhile
        old_workers = [int(p.read_text()) for p in (data / "run").glob("worker-*.ready")]
        api.kill(group=True)  # the API and its embedded worker die at once
        assert old_workers and not any(_alive(pid) for pid in old_workers)
        t_kill = time.monotonic()
        restart_s = api.start()
        t_up = time.monotonic()
        right_after = search_ids(api, 100)
        final = api.finished_job(job_id, 240)
        t_done = time.monotonic()
        health = wait_for(
            lambda: (
                (h := api.get("/api/health").json())["index"]["version"]
                == final["params"].get("index_version")
                and h
            ),
            60,
            "the API to serve the new index version",
        )
        after = search_ids(api, 100)
        self_hits = []
        for f in files[:: N_REINDEX // 4]:
            with f.open("rb") as fh:
                res = api.post("/api/search/image", params={"k": 1}, files={"file": fh})
            assert res.status_code == 200, res.text
            self_hits.append(res.json()["results"][0]["path"] == str(f.resolve()))
        page = api.get("/api/images", limit=500).json()
        health_after_search = api.get("/api/health").json()
        orphans_left = [pid for pid in old_workers if _alive(pid)]
    finally:
        api.close()
    truth = catalog_truth(f"sqlite:///{data / 'catalog.db'}")
    assert final["state"] == "done", final
    assert len(during) == len(right_after) == len(after) == N_REINDEX
    assert len(set(after)) == N_REINDEX
    assert page["total"] == N_REINDEX and {i["state"] for i in page["items"]} == {"ready"}
    assert health["model"] == health_after_search["model"] == str(tuned_dir.resolve()), health
    assert health["index"]["size"] + health["index"]["delta"] == N_REINDEX, health
    assert all(self_hits), self_hits
    assert truth["images"] == N_REINDEX
    assert truth["embeddings"] == truth["distinct_embeddings"] == 2 * N_REINDEX, (
        truth
    )  # both models
    record(
        "clipsearch serve and its embedded worker SIGKILLed during a re-index",
        setup="SQLite catalog, embedded broker, `clipsearch serve` as a child process",
        images=N_REINDEX,
        reindex_done_at_kill=part["done"],
        searches_before_kill=len(during),
        searches_right_after_restart=len(right_after),
        api_start_s=round(first_start_s, 1),
        api_down_s=round(t_up - t_kill, 1),
        restart_s=round(restart_s, 1),
        kill_to_reindex_done_s=round(t_done - t_kill, 1),
        index_version=health["index"]["version"],
        old_workers_left=len(orphans_left),
        self_match_by_upload=f"{sum(self_hits)}/{len(self_hits)}",
        lost=N_REINDEX - len(set(after)),
        embeddings=truth["embeddings"],
    )


# --------------------------------------------------------------------------------------------
# 5. The disk fills up while thumbnails are written


N_DISK = 40
FULL_AT = {3, 11, 12, 30}  # the thumbnail writes (1st, 2nd, ...) that find the disk full


def test_disk_full_writing_thumbnails(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """write() of some thumbnails fails with ENOSPC (the data disk is full for a moment). Those
    images are failed with a reason that says so and what to do; the job goes on and every other
    image is ready, with its thumbnail, searchable. No half-written file is left behind. Doing
    what the reason says (free space, ingest the folder again) makes them ready too."""
    import clipsearch.indexer.decode as indexer_decode

    photos = tmp_path / "photos"
    files = make_images(photos, N_DISK, seed=55, size=32)
    data = tmp_path / "data"
    with ApiThread(
        data_dir=data, model=str(tiny_model_dir), device="cpu", allowed_roots=[tmp_path]
    ) as api:
        lib = api.app.state.service.library
        disk = FullDisk(FULL_AT)
        monkeypatch.setattr(indexer_decode, "os", disk)
        job_id = ingest_in_process(lib, photos)
        monkeypatch.undo()  # space freed
        job = api.job(job_id)
        failed = api.get("/api/images", state="failed", limit=100).json()["items"]
        ready = api.get("/api/images", state="ready", limit=100).json()["items"]
        thumbs = [api.get(f"/api/images/{i['id']}/thumbnail").status_code for i in ready]
        failed_thumbs = [api.get(f"/api/images/{i['id']}/thumbnail") for i in failed]
        hits = wait_for(
            lambda: len(x := search_ids(api, 100)) == N_DISK - len(FULL_AT) and x,
            60,
            "the ready images to be searchable",
        )
        leftovers = [p.name for p in (data / "thumbnails").rglob("*") if p.name.startswith(".tmp")]

        # what the reason says to do: free some space (done), then ingest the folder again
        retry_id = ingest_in_process(lib, photos)
        retry = api.job(retry_id)
        still_failed = api.get("/api/images", state="failed").json()["total"]
        all_hits = wait_for(
            lambda: len(x := search_ids(api, 100)) == N_DISK and x, 60, "all images searchable"
        )
        truth = catalog_truth(lib.database_url)

    assert disk.refused == len(FULL_AT)
    assert (job["state"], job["total"], job["done"], job["failed"]) == (
        "done", N_DISK, N_DISK - len(FULL_AT), len(FULL_AT),
    ), job  # fmt: skip
    assert len(failed) == len(FULL_AT) and len(ready) == N_DISK - len(FULL_AT)
    for item in failed:
        assert item["error"].startswith("disk full writing the thumbnail"), item
        assert "free some space" in item["error"] and "ingest the folder again" in item["error"]
    assert sorted(e["path"] for e in job["errors"]) == sorted(i["path"] for i in failed)
    assert {r.status_code for r in failed_thumbs} == {404}
    assert thumbs == [200] * len(ready)
    assert len(set(hits)) == len(hits) and set(hits) == {i["id"] for i in ready}
    assert leftovers == []
    assert (retry["state"], retry["done"], retry["failed"]) == ("done", len(FULL_AT), 0), retry
    assert still_failed == 0
    assert sorted(all_hits) == sorted({*hits, *(i["id"] for i in failed)})
    assert truth["embeddings"] == truth["distinct_embeddings"] == N_DISK
    record(
        "disk full writing thumbnails",
        setup="SQLite, task functions in process, write() of 4 thumbnails raises ENOSPC",
        images=N_DISK,
        job={k: job[k] for k in ("state", "total", "done", "failed")},
        reason=failed[0]["error"].replace(str(data.resolve()), "<data dir>"),
        partial_files_left=len(leftovers),
        searchable_after_fault=len(hits),
        reingest_after_space_freed={k: retry[k] for k in ("state", "total", "done", "failed")},
        searchable_after_reingest=len(all_hits),
        lost=N_DISK - len(all_hits),
        files=len(files),
    )
