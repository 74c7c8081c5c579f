"""Library-wide jobs (re-index, duplicate scans, tagging, album refreshes) go to the builds
queue, so a worker consuming only the embedding queue keeps ingesting while they run (issue 23;
the albums job went to the embedding queue before). Real Redis broker, no worker: the messages
are counted where kombu keeps them (one Redis list per queue)."""

from __future__ import annotations

from pathlib import Path

import redis

from clipsearch.indexer import albums, duplicate_jobs
from clipsearch.indexer.celery_app import build_queue_name, queue_name
from clipsearch.indexer.library import Library, LibraryConfig


def test_album_refreshes_and_duplicate_scans_wait_on_the_builds_queue(
    tmp_path: Path, redis_url: str
) -> None:
    prefix = "route-"
    lib = Library(
        LibraryConfig(data_dir=tmp_path / "data", broker_url=redis_url, queue_prefix=prefix)
    )
    try:
        albums.submit(lib)
        duplicate_jobs.submit(lib)
        r = redis.Redis.from_url(redis_url)
        # kombu's keys carry the library's prefix too (global_keyprefix: libraries share Redis)
        assert r.llen(prefix + build_queue_name(prefix)) == 2
        assert r.llen(prefix + queue_name(prefix)) == 0
    finally:
        lib.close()
