"""A whole deployment on one machine: two workers, two API replicas, PostgreSQL, Redis.

What docker-compose.yml runs, as real processes started from the real command line and
configured only by ``CLIPSEARCH_*`` variables (tests/cluster/clusterlib.py): ``clipsearch worker``
twice, ``clipsearch serve --no-worker`` twice, one data folder, one catalog, one broker.

The story a team would live through:

1. The workers start first, on an empty database (compose does not order them after the API).
2. 2000 small images are ingested through API A. Mid-way, one worker gets SIGKILL; the batch it
   held stays unacknowledged in Redis (for the broker's one-hour visibility timeout). A new worker
   starts, as ``restart: unless-stopped`` would start one. The job still completes: exactly 2000
   images, each embedded once.
3. Both API replicas serve every image: the same counts in /api/health, every id reachable by
   search on each replica, each sampled image finding itself first by upload.
4. A re-index through API B builds index version 1; both replicas hot-swap to it without a
   restart. Images ingested afterwards reach both replicas through the exact delta; a deletion
   through one replica is honoured by the other.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from clusterlib import TOKEN, Cluster, Member, make_images, running, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

# the cluster runs with a token, so reads need it too
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N_IMAGES = 2000
N_LATER = 40
BATCH = 16
STALE_AFTER_S = 6  # how long a job may show no progress before an idle worker takes it over


def _job(api: Member, job_id: int) -> dict[str, Any]:
    r = httpx.get(f"{api.url}/api/jobs/{job_id}", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _health(api: Member) -> dict[str, Any]:
    r = httpx.get(f"{api.url}/api/health", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _all_images(api: Member) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        r = httpx.get(
            f"{api.url}/api/images",
            params={"offset": len(items), "limit": 500},
            headers=AUTH,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        if len(items) >= page["total"] or not page["items"]:
            return items


def _similar_ids(api: Member, image_id: int, n: int) -> list[int]:
    """Every other image, best first, paged through "more like this" (which excludes itself)."""
    ids: list[int] = []
    while len(ids) < n - 1:
        r = httpx.get(
            f"{api.url}/api/images/{image_id}/similar",
            params={"k": 500, "offset": len(ids), "min_relevance": 0},  # every other image
            headers=AUTH,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        got = [hit["id"] for hit in r.json()["results"]]
        if not got:
            break
        ids += got
    return ids


def _search_by_upload(api: Member, path: Path) -> list[dict[str, Any]]:
    mime = "image/png" if path.suffix == ".png" else "image/jpeg"
    r = httpx.post(
        f"{api.url}/api/search/image",
        params={"k": 3},
        files={"file": (path.name, io.BytesIO(path.read_bytes()), mime)},
        headers=AUTH,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _compose_healthcheck(api: Member) -> Any:
    """Run the api service's healthcheck command from docker-compose.yml against ``api``."""
    import subprocess
    import sys

    import yaml

    compose = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text()
    )
    test = compose["services"]["api"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3].replace("http://127.0.0.1:8000", api.url)
    assert code != test[3], "the healthcheck no longer targets 127.0.0.1:8000"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )


def _served_everything(api: Member, n: int) -> dict[str, Any] | None:
    h = _health(api)
    served = h["index"]["size"] + h["index"]["delta"]
    return h if h["images"]["ready"] == n and served == n else None


def test_two_workers_two_apis_survive_kill9_and_hot_swap(
    tmp_path: Path, pg_url: str, redis_url: str, tiny_model_dir: Path
) -> None:
    photos = tmp_path / "photos"
    first = photos / "first"
    paths = make_images(first, N_IMAGES, seed=1)
    cluster = Cluster(
        data_dir=tmp_path / "data",
        model_dir=tiny_model_dir,
        database_url=pg_url,
        broker_url=redis_url,
        allowed_root=photos,
        extra_env={
            "CLIPSEARCH_EMBED_BATCH_SIZE": str(BATCH),
            "CLIPSEARCH_DECODE_WORKERS": "1",
            "CLIPSEARCH_STALE_AFTER_S": str(STALE_AFTER_S),
        },
    )
    with running(cluster):
        # 1. Workers first, on an empty catalog database; then the two API replicas.
        w1 = cluster.start_worker("worker-1")
        w2 = cluster.start_worker("worker-2")
        cluster.wait_worker_ready(w1)
        cluster.wait_worker_ready(w2)
        api_a = cluster.start_api("api-a")
        api_b = cluster.start_api("api-b")
        cluster.wait_api_ready(api_a)
        cluster.wait_api_ready(api_b)
        # The health check docker-compose.yml runs in each api container passes on both.
        for api in (api_a, api_b):
            assert _compose_healthcheck(api).returncode == 0, _compose_healthcheck(api).stderr
        members = [w1, w2, api_a, api_b]

        # 2. Ingest through A; SIGKILL worker 1 once the job is part done.
        r = httpx.post(
            f"{api_a.url}/api/ingest", json={"path": str(first)}, headers=cluster.auth, timeout=30
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        part = wait_for(
            lambda: (j := _job(api_b, job_id))["total"] and j["done"] >= N_IMAGES // 5 and j,
            timeout=180,
            what="the ingest job to be a fifth done",
            members=members,
        )
        assert part["total"] == N_IMAGES and part["state"] == "running"
        assert w1.kill9() == -9
        members.remove(w1)
        after_kill = _job(api_a, job_id)
        assert after_kill["done"] < N_IMAGES
        # What `restart: unless-stopped` does: a new worker process takes the dead one's place.
        w3 = cluster.start_worker("worker-3")
        members.append(w3)
        final = wait_for(
            lambda: (j := _job(api_b, job_id))["state"] in ("done", "failed") and j,
            timeout=240,
            what="the ingest job to complete after the SIGKILL",
            members=members,
        )
        assert final["state"] == "done", final
        assert (final["total"], final["done"], final["failed"]) == (N_IMAGES, N_IMAGES, 0)

        # Exactly once, in the catalog itself.
        engine = sa.create_engine(pg_url)
        try:
            with engine.connect() as conn:
                images, paths_n, ready = conn.execute(
                    sa.text(
                        "SELECT count(*), count(DISTINCT path), "
                        "count(*) FILTER (WHERE state = 'ready') FROM images"
                    )
                ).one()
                embeddings, shas = conn.execute(
                    sa.text("SELECT count(*), count(DISTINCT sha256) FROM embeddings")
                ).one()
        finally:
            engine.dispose()
        assert images == paths_n == ready == N_IMAGES
        assert embeddings == shas == N_IMAGES

        # 3. Both replicas: the same counts, every image reachable, each sample finds itself.
        ha = wait_for(lambda: _served_everything(api_a, N_IMAGES), 30, "API A to serve all")
        hb = wait_for(lambda: _served_everything(api_b, N_IMAGES), 30, "API B to serve all")
        assert ha["images"] == hb["images"] == {
            "total": N_IMAGES, "ready": N_IMAGES, "failed": 0, "pending": 0
        }  # fmt: skip
        assert ha["index"] == hb["index"]
        listed = _all_images(api_a)
        assert listed == _all_images(api_b)
        by_path = {Path(item["path"]).name: item["id"] for item in listed}
        assert len(listed) == len(by_path) == N_IMAGES  # no image twice
        all_ids = set(by_path.values())
        seeds = [listed[0]["id"], listed[-1]["id"]]
        for api in (api_a, api_b):
            reached: set[int] = set()
            for seed in seeds:
                others = _similar_ids(api, seed, N_IMAGES)
                assert len(others) == len(set(others)) == N_IMAGES - 1, api.name
                assert seed not in others
                reached |= set(others)
            assert reached == all_ids, f"{api.name} cannot reach {sorted(all_ids - reached)[:10]}"
        for path in paths[:: N_IMAGES // 25]:
            for api in (api_a, api_b):
                top = _search_by_upload(api, path)[0]
                assert top["id"] == by_path[path.name], (api.name, path.name, top)
                assert top["score"] > 0.99

        # 4. Hot swap: a re-index through B; both replicas switch to version 1 without a restart.
        assert ha["index"]["version"] is None
        r = httpx.post(f"{api_b.url}/api/reindex", json={}, headers=cluster.auth, timeout=30)
        assert r.status_code == 202, r.text
        reindex_id = r.json()["id"]
        done = wait_for(
            lambda: (j := _job(api_a, reindex_id))["state"] in ("done", "failed") and j,
            timeout=120,
            what="the re-index job",
            members=members,
        )
        assert done["state"] == "done", done
        for api in (api_a, api_b):
            h = wait_for(
                lambda api=api: (h := _health(api))["index"]["version"] is not None and h,
                timeout=30,
                what=f"{api.name} to load the new index version",
            )
            assert h["index"]["size"] == N_IMAGES and h["index"]["delta"] == 0, h
        assert _health(api_a)["index"] == _health(api_b)["index"]
        sample = paths[7]
        assert _search_by_upload(api_a, sample)[0]["id"] == by_path[sample.name]

        # Later images reach both replicas through the delta of the version they serve.
        later = photos / "later"
        later_paths = make_images(later, N_LATER, seed=2)
        r = httpx.post(
            f"{api_b.url}/api/ingest", json={"path": str(later)}, headers=cluster.auth, timeout=30
        )
        assert r.status_code == 202, r.text
        later_job = r.json()["id"]
        fin = wait_for(
            lambda: (j := _job(api_a, later_job))["state"] in ("done", "failed") and j,
            timeout=120,
            what="the second ingest job",
            members=members,
        )
        assert (fin["state"], fin["done"]) == ("done", N_LATER), fin
        total = N_IMAGES + N_LATER
        for api in (api_a, api_b):
            h = wait_for(
                lambda api=api: _served_everything(api, total), 30, f"{api.name} to serve the delta"
            )
            assert (h["index"]["size"], h["index"]["delta"]) == (N_IMAGES, N_LATER)
        new_ids = {Path(i["path"]).name: i["id"] for i in _all_images(api_b)}
        probe = later_paths[3]
        for api in (api_a, api_b):
            assert _search_by_upload(api, probe)[0]["id"] == new_ids[probe.name]

        # A deletion through A: B no longer returns the image, and both count one less.
        victim = new_ids[probe.name]
        r = httpx.delete(f"{api_a.url}/api/images/{victim}", headers=cluster.auth, timeout=30)
        assert r.status_code == 204, r.text
        for api in (api_a, api_b):
            assert _health(api)["images"]["total"] == total - 1
            hits = _search_by_upload(api, probe)
            assert victim not in [h["id"] for h in hits], api.name
            assert (
                httpx.get(f"{api.url}/api/images/{victim}", headers=AUTH, timeout=10).status_code
                == 404
            )
        for m in members:
            assert m.alive(), f"{m.name} died:\n{m.log()}"
