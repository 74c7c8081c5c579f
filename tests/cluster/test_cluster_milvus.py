"""The deployment of deploy/SCALING.md's Milvus profile, on one machine: a Milvus server, two
workers, two API replicas, PostgreSQL and Redis, all real processes.

With ``CLIPSEARCH_MILVUS_URI`` set, the API replicas hold no index: no index files, no delta,
nothing per replica but the model. Workers write vectors to Milvus in the batch that commits them
to the catalog, so an image is searchable from every replica as soon as its batch commits and a
delete is immediate everywhere.

The story:

1. Workers, then two API replicas, on an empty catalog and an empty Milvus.
2. 600 images ingested through API A; worker 1 gets SIGKILL a fifth of the way through and a new
   worker takes its place. The job completes with every image in the catalog once and in Milvus
   once, and no index file on disk.
3. Both replicas report the same Milvus entity count as catalog vectors and reach every image.
4. Later images ingested through B are found by A at once (no re-index, no delta); a delete
   through A is gone from B's results at once.
5. An operator drops the collection: both replicas say so in /api/health (degraded, vectors
   missing) instead of serving partial results as if whole; a re-index through B rebuilds the
   collection from the catalog's vectors (nothing embedded again) and both replicas serve all.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from clusterlib import TOKEN, Cluster, Member, make_images, running, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.milvus, pytest.mark.slow]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
N_IMAGES = 600
N_LATER = 20
BATCH = 16
STALE_AFTER_S = 6


def _get(api: Member, path: str, **params: Any) -> Any:
    r = httpx.get(f"{api.url}{path}", params=params, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _job_finished(api: Member, job_id: int) -> dict[str, Any] | None:
    job = _get(api, f"/api/jobs/{job_id}")
    return job if job["state"] in ("done", "failed") else None


def _similar_ids(api: Member, image_id: int, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n - 1:
        got = [
            hit["id"]
            for hit in _get(
                api, f"/api/images/{image_id}/similar", k=500, offset=len(ids), min_relevance=0
            )["results"]
        ]
        if not got:
            break
        ids += got
    return ids


def _upload(api: Member, path: Path) -> list[dict[str, Any]]:
    r = httpx.post(
        f"{api.url}/api/search/image",
        params={"k": 3},
        files={"file": (path.name, io.BytesIO(path.read_bytes()), "image/png")},
        headers=AUTH,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _all_ids(api: Member) -> dict[str, int]:
    items: list[dict[str, Any]] = []
    while True:
        page = _get(api, "/api/images", offset=len(items), limit=500)
        items += page["items"]
        if len(items) >= page["total"] or not page["items"]:
            return {Path(i["path"]).name: i["id"] for i in items}


def _embeddings(pg_url: str) -> tuple[int, int]:
    """How many vectors the catalog holds, and the newest one's id."""
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            n, newest = conn.execute(sa.text("SELECT count(*), max(id) FROM embeddings")).one()
    finally:
        engine.dispose()
    return int(n), int(newest)


def _serving(api: Member, n: int) -> dict[str, Any] | None:
    h = _get(api, "/api/health")
    index = h["index"]
    whole = (
        h["images"]["ready"] == n
        and index["store"] == "milvus"
        and index["entities"] == n
        and index["missing"] == 0
    )
    return h if whole else None


def test_milvus_cluster_survives_kill9_serves_every_replica_and_repairs_a_dropped_collection(
    tmp_path: Path, pg_url: str, redis_url: str, tiny_model_dir: Path, milvus_server: str
) -> None:
    photos = tmp_path / "photos"
    first = photos / "first"
    paths = make_images(first, N_IMAGES, seed=11)
    alias = f"cl{uuid.uuid4().hex[:10]}"
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
            "CLIPSEARCH_MILVUS_URI": milvus_server,
            "CLIPSEARCH_MILVUS_COLLECTION": alias,
        },
    )
    with running(cluster):
        # 1. Workers first, then the two replicas.
        w1 = cluster.start_worker("worker-1")
        w2 = cluster.start_worker("worker-2")
        cluster.wait_worker_ready(w1)
        cluster.wait_worker_ready(w2)
        api_a = cluster.start_api("api-a")
        api_b = cluster.start_api("api-b")
        cluster.wait_api_ready(api_a)
        cluster.wait_api_ready(api_b)
        members = [w1, w2, api_a, api_b]

        # 2. Ingest through A, SIGKILL worker 1 mid-way, a new worker takes over.
        r = httpx.post(
            f"{api_a.url}/api/ingest", json={"path": str(first)}, headers=cluster.auth, timeout=30
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_for(
            lambda: (j := _get(api_b, f"/api/jobs/{job_id}"))["done"] >= N_IMAGES // 5 and j,
            timeout=180,
            what="the ingest job to be a fifth done",
            members=members,
        )
        assert w1.kill9() == -9
        members.remove(w1)
        w3 = cluster.start_worker("worker-3")
        members.append(w3)
        final = wait_for(
            lambda: _job_finished(api_b, job_id),
            timeout=300,
            what="the ingest job to complete after the SIGKILL",
            members=members,
        )
        assert (final["state"], final["done"], final["failed"]) == ("done", N_IMAGES, 0), final

        engine = sa.create_engine(pg_url)
        try:
            with engine.connect() as conn:
                images, paths_n = conn.execute(
                    sa.text("SELECT count(*), count(DISTINCT path) FROM images")
                ).one()
                embeddings = conn.execute(sa.text("SELECT count(*) FROM embeddings")).scalar_one()
        finally:
            engine.dispose()
        assert images == paths_n == embeddings == N_IMAGES
        # the replicas hold no index: nothing was written where FAISS keeps its files
        index_files = list((cluster.data_dir / "index").glob("*"))
        assert index_files == [], index_files

        # 3. Both replicas: Milvus holds each catalog vector once; every image is reachable.
        ha = wait_for(lambda: _serving(api_a, N_IMAGES), 30, "API A to serve all from Milvus")
        hb = wait_for(lambda: _serving(api_b, N_IMAGES), 30, "API B to serve all from Milvus")
        assert ha["index"]["delta"] == hb["index"]["delta"] == 0
        assert ha["status"] == hb["status"] == "ok"
        by_name = _all_ids(api_a)
        assert by_name == _all_ids(api_b) and len(by_name) == N_IMAGES
        seed = next(iter(by_name.values()))
        for api in (api_a, api_b):
            others = _similar_ids(api, seed, N_IMAGES)
            assert len(others) == len(set(others)) == N_IMAGES - 1, api.name
            assert set(others) | {seed} == set(by_name.values())
        for path in paths[:: N_IMAGES // 10]:
            for api in (api_a, api_b):
                assert _upload(api, path)[0]["id"] == by_name[path.name], (api.name, path.name)

        # 4. Written through the workers, searchable from A at once; a delete is immediate.
        later = photos / "later"
        later_paths = make_images(later, N_LATER, seed=12)
        r = httpx.post(
            f"{api_b.url}/api/ingest", json={"path": str(later)}, headers=cluster.auth, timeout=30
        )
        assert r.status_code == 202, r.text
        fin = wait_for(
            lambda: _job_finished(api_a, r.json()["id"]),
            timeout=120,
            what="the second ingest job",
            members=members,
        )
        assert (fin["state"], fin["done"]) == ("done", N_LATER), fin
        total = N_IMAGES + N_LATER
        # A job is marked done only after its last batch's vectors reached Milvus (strong
        # consistency): the moment it reads done, every replica finds every image, no waiting.
        assert _serving(api_a, total) is not None, _get(api_a, "/api/health")
        new_ids = _all_ids(api_b)
        probe = later_paths[5]
        assert _upload(api_a, probe)[0]["id"] == new_ids[probe.name]

        victim = new_ids[probe.name]
        r = httpx.delete(f"{api_a.url}/api/images/{victim}", headers=cluster.auth, timeout=30)
        assert r.status_code == 204, r.text
        assert victim not in [h["id"] for h in _upload(api_b, probe)]
        assert _get(api_b, "/api/health")["index"]["entities"] == total - 1

        # 5. An operator drops the collection behind the alias.
        embedded_before = _embeddings(pg_url)
        from pymilvus import MilvusClient

        client = MilvusClient(uri=milvus_server)
        try:
            behind = client.describe_alias(alias)["collection_name"]
            client.drop_alias(alias)
            client.drop_collection(behind)
        finally:
            client.close()
        for api in (api_a, api_b):
            h = _get(api, "/api/health")
            assert h["status"] == "degraded", (api.name, h)
            assert h["index"]["error"] or h["index"]["missing"] == total - 1, (api.name, h)
        r = httpx.post(f"{api_b.url}/api/reindex", json={}, headers=cluster.auth, timeout=30)
        assert r.status_code == 202, r.text
        done = wait_for(
            lambda: _job_finished(api_a, r.json()["id"]),
            timeout=180,
            what="the re-index job to rebuild the collection",
            members=members,
        )
        assert done["state"] == "done", done
        for api in (api_a, api_b):
            h = wait_for(
                lambda api=api: _serving(api, total - 1),
                60,
                f"{api.name} to serve the rebuilt collection",
            )
            assert h["status"] == "ok"
            assert _upload(api, paths[3])[0]["id"] == by_name[paths[3].name]
        # rebuilt from the catalog's vectors: nothing was embedded again
        assert _embeddings(pg_url) == embedded_before
        for m in members:
            assert m.alive(), f"{m.name} died:\n{m.log()}"
