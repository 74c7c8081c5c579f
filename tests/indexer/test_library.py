"""The Library facade over a real catalog (SQLite and PostgreSQL), real files, a real tiny CLIP.

The job logic runs in-process here (the plain functions the Celery tasks call); the tests with a
real worker process and a real broker are in test_tasks_worker.py and test_kill9.py.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from testkit import save_tiny_model
from workerutil import Env, make_images

from clipsearch.indexer import catalog
from clipsearch.indexer.catalog import Embedding, Image
from clipsearch.indexer.errors import (
    Conflict,
    IndexerError,
    IngestError,
    NotFound,
    PathNotAllowed,
    StoreUnavailable,
)
from clipsearch.indexer.library import Library, LibraryConfig
from clipsearch.indexer.reindex import run_reindex
from clipsearch.indexer.runs import run_embed_batch, run_ingest
from clipsearch.indexer.types import SearchFilters


@pytest.fixture(scope="module")
def tiny_dir_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model-b"), seed=1)


def _image_vectors(lib: Library, model_dir: Path, paths: list[Path]) -> np.ndarray:
    """Embed files independently of the library (the model straight from its folder)."""
    from clipsearch import model as clip_model

    m = clip_model.load(str(model_dir), device="cpu")
    return m.embed_images([str(p) for p in paths])


def test_search_finds_each_image_by_its_own_vector(
    env: Env, tmp_path: Path, tiny_model_dir: Path
) -> None:
    paths = make_images(tmp_path / "photos", 12, seed=1)
    env.ingest(tmp_path / "photos")
    ids = env.ids_by_name()
    assert len(ids) == 12
    vectors = _image_vectors(env.lib, tiny_model_dir, paths)
    for path, vec in zip(paths, vectors, strict=True):
        hits = env.lib.search(vec, k=3)
        assert hits[0].id == ids[path.name]
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert hits[0].path.endswith(path.name)
        assert hits[0].width == 40 and hits[0].format == "JPEG"
    # image_vector gives the stored vector: "more like this" finds the image itself first.
    some = ids[paths[3].name]
    assert env.lib.search(env.lib.image_vector(some), k=1)[0].id == some


def test_pagination_min_score_and_filters(env: Env, tmp_path: Path, tiny_model_dir: Path) -> None:
    make_images(tmp_path / "photos" / "a", 6, seed=2)
    make_images(tmp_path / "photos" / "b", 6, seed=3, fmt="PNG")
    env.ingest(tmp_path / "photos")
    query = env.lib.image_vector(env.ids_by_name()["img_2_0000.jpg"])
    everything = env.lib.search(query, k=12)
    assert len(everything) == 12
    assert [h.score for h in everything] == sorted((h.score for h in everything), reverse=True)
    page2 = env.lib.search(query, k=5, offset=5)
    assert [h.id for h in page2] == [h.id for h in everything[5:10]]
    cut = everything[3].score
    assert [h.id for h in env.lib.search(query, k=12, min_score=cut)] == [
        h.id for h in everything if h.score >= cut
    ]
    only_b = env.lib.search(
        query, k=12, filters=SearchFilters(folder=str(tmp_path / "photos" / "b"))
    )
    assert len(only_b) == 6 and all("/b/" in h.path for h in only_b)
    only_png = env.lib.search(query, k=12, filters=SearchFilters(formats=("png",)))
    assert len(only_png) == 6 and all(h.format == "PNG" and "/b/" in h.path for h in only_png)
    only_jpeg = env.lib.search(query, k=12, filters=SearchFilters(formats=("jpg", "gif")))
    assert len(only_jpeg) == 6 and all(h.format == "JPEG" for h in only_jpeg)


def test_delete_removes_from_results_catalog_and_thumbnail(env: Env, tmp_path: Path) -> None:
    make_images(tmp_path / "photos", 8, seed=4)
    env.ingest(tmp_path / "photos")
    target = env.ids_by_name()["img_4_0002.jpg"]
    thumb = env.lib.thumbnail_path(target)
    assert thumb.is_file()
    vec = env.lib.image_vector(target)
    assert env.lib.search(vec, k=1)[0].id == target
    env.lib.delete_image(target)
    assert target not in [h.id for h in env.lib.search(vec, k=8)]
    assert len(env.lib.search(vec, k=8)) == 7
    with pytest.raises(NotFound):
        env.lib.get_image(target)
    with pytest.raises(NotFound):
        env.lib.thumbnail_path(target)
    assert thumb.exists()  # kept for the Removed view while the removal is remembered
    # Another process deleting (a second Library on the same catalog) is honoured too.
    other = env.ids_by_name()["img_4_0005.jpg"]
    second = Library(env.lib.config)
    try:
        second.delete_image(other)
    finally:
        second.close()
    assert other not in [h.id for h in env.lib.search(vec, k=8)]


def test_new_images_are_searchable_before_any_rebuild(
    env: Env, tmp_path: Path, tiny_model_dir: Path
) -> None:
    make_images(tmp_path / "photos", 6, seed=5)
    env.ingest(tmp_path / "photos")
    env.reindex()
    version = env.lib.stats().index.version
    assert version is not None
    env.lib.refresh_index()
    new_paths = make_images(tmp_path / "more", 4, seed=6)
    env.ingest(tmp_path / "more")
    env.lib.refresh_index()
    stats = env.lib.stats()
    assert stats.index.version == version  # no rebuild happened
    if env.store.kind == "faiss":
        assert stats.index.delta == 4  # the exact delta beside the built index
    else:
        assert stats.index.entities == 10  # written to the collection as batches commit
    ids = env.ids_by_name()
    for path, vec in zip(
        new_paths, _image_vectors(env.lib, tiny_model_dir, new_paths), strict=True
    ):
        assert env.lib.search(vec, k=1)[0].id == ids[path.name]


def test_a_library_follows_the_catalog_on_its_own_and_stops_when_closed(
    env: Env, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Images another process ingests become searchable without anyone calling refresh_index,
    through one follower thread per library, which close() stops."""
    import dataclasses
    import threading

    make_images(tmp_path / "photos", 3, seed=15)
    env.ingest(tmp_path / "photos")
    before = set(threading.enumerate())
    follower = Library(dataclasses.replace(env.lib.config, refresh_interval_s=0.0))
    try:
        first = follower.image_vector(env.ids_by_name()["img_15_0000.jpg"])
        assert len(follower.search(first)) == 3
        new_paths = make_images(tmp_path / "more", 2, seed=16)
        env.ingest(tmp_path / "more")  # the in-process worker commits; nobody refreshes
        target = env.ids_by_name()[new_paths[0].name]
        (vec,) = _image_vectors(follower, tiny_model_dir, new_paths[:1])
        deadline = time.monotonic() + 60
        found: list[int] = []
        while target not in found and time.monotonic() < deadline:
            found = [h.id for h in follower.search(vec, k=5)]
            threading.Event().wait(0.05)
        assert found[0] == target
        threads = [
            t
            for t in threading.enumerate()
            if t.name == "clipsearch-index-refresh" and t not in before
        ]
        assert threads, "the library refreshes from a thread of its own"
    finally:
        follower.close()
    assert not any(t.is_alive() for t in threads)


def test_rebuild_after_deleting_index_files_gives_identical_results(
    env: Env, tmp_path: Path
) -> None:
    make_images(tmp_path / "photos", 30, seed=7)
    env.ingest(tmp_path / "photos")
    env.reindex()
    env.lib.refresh_index()
    queries = [env.lib.image_vector(i) for i in list(env.ids_by_name().values())[:5]]
    before = [[(h.id, round(h.score, 5)) for h in env.lib.search(q, k=10)] for q in queries]
    embeddings = env.count_embeddings()
    with env.lib.Session() as s:
        max_embedding = s.scalar(sa.select(sa.func.max(Embedding.id)))

    if env.store.kind == "faiss":
        shutil.rmtree(env.lib.data_dir / "index")
        # A fresh process (API restart) without the files still answers, from the catalog's
        # vectors.
        restarted = Library(env.lib.config)
        try:
            assert [
                [(h.id, round(h.score, 5)) for h in restarted.search(q, k=10)] for q in queries
            ] == before
        finally:
            restarted.close()
    else:
        # An operator drops the collection: searches say so (503 at the API) instead of
        # serving partial results, and health names the repair.
        from clipsearch.indexer import milvus_store

        collection = env.lib.stats().index.collection
        milvus_store.client(env.store).drop_collection(collection)
        with pytest.raises(StoreUnavailable, match="reindex"):
            env.lib.search(queries[0], k=10)
        assert "reindex" in env.lib.stats().index.error

    env.reindex()
    env.lib.refresh_index()
    after = [[(h.id, round(h.score, 5)) for h in env.lib.search(q, k=10)] for q in queries]
    assert after == before
    if env.store.kind == "faiss":
        assert (env.lib.data_dir / "index" / "manifest.json").is_file()
    else:
        assert env.lib.stats().index.entities == 30
    # Nothing was embedded again.
    assert env.count_embeddings() == embeddings
    with env.lib.Session() as s:
        assert s.scalar(sa.select(sa.func.max(Embedding.id))) == max_embedding


def test_reindex_with_a_new_model_switches_only_when_complete(
    env: Env, tmp_path: Path, tiny_model_dir: Path, tiny_dir_b: Path
) -> None:
    paths = make_images(tmp_path / "photos", 10, seed=8)
    env.ingest(tmp_path / "photos")
    env.reindex()
    env.lib.refresh_index()
    assert env.lib.model_spec == str(tiny_model_dir.resolve())
    old_version = env.lib.stats().index.version

    job = env.lib.submit_reindex(str(tiny_dir_b))
    # Recorded but not run yet: searches keep the old model and index.
    env.lib.refresh_index()
    assert env.lib.model_spec == str(tiny_model_dir.resolve())
    assert env.lib.stats().index.version == old_version
    run_reindex(env.ctx, job.id)
    assert env.lib.get_job(job.id).state == "done"
    env.lib.refresh_index()
    assert env.lib.model_spec == str(tiny_dir_b.resolve())
    assert env.lib.stats().index.version > old_version
    # Both models' vectors are in the catalog (the old ones allow switching back without re-embedding).
    assert env.count_embeddings() == 20
    ids = env.ids_by_name()
    vectors_b = _image_vectors(env.lib, tiny_dir_b, paths)
    for path, vec in zip(paths, vectors_b, strict=True):
        assert env.lib.search(vec, k=1)[0].id == ids[path.name]
    text = env.lib.model.embed_texts(["a photo of a dog"])[0]
    assert len(env.lib.search(text, k=5)) == 5


def test_hostile_inputs_are_refused_with_clear_errors(env: Env, tmp_path: Path) -> None:
    lib = env.lib
    with pytest.raises(IngestError, match="no such folder"):
        lib.submit_ingest(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(IngestError, match="not a folder"):
        lib.submit_ingest(str(tmp_path / "file.txt"))
    with pytest.raises(IngestError):
        lib.submit_ingest("bad\x00path")
    for bad in (0, -1, 2**70, "1", True):
        with pytest.raises(NotFound):
            lib.get_image(bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        lib.thumbnail_path(12345)
    with pytest.raises(NotFound):
        lib.get_job(999)
    with pytest.raises(IndexerError, match="neither a model folder nor a known model name"):
        lib.submit_reindex(str(tmp_path / "no-such-model"))
    assert lib.list_jobs() == []  # nothing was recorded for the refused requests
    restricted = Library(
        LibraryConfig(
            data_dir=lib.data_dir,
            database_url=lib.database_url,
            model_spec=lib.config.model_spec,
            allowed_roots=[tmp_path / "allowed"],
        )
    )
    (tmp_path / "allowed").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "allowed" / "escape").symlink_to(tmp_path / "outside")
    try:
        with pytest.raises(PathNotAllowed):
            restricted.submit_ingest(str(tmp_path / "outside"))
        with pytest.raises(PathNotAllowed):
            restricted.submit_ingest(str(tmp_path / "allowed" / "escape"))
        with pytest.raises(PathNotAllowed):
            restricted.submit_ingest(str(tmp_path / "allowed" / ".." / "outside"))
        assert restricted.submit_ingest(str(tmp_path / "allowed")).state == "queued"
    finally:
        restricted.close()


def test_stats_count_images_by_state(env: Env, tmp_path: Path) -> None:
    make_images(tmp_path / "photos", 5, seed=9)
    # A JPEG by its signature, cut off right after it: catalogued, then failed with a reason.
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    env.ingest(tmp_path / "photos")
    stats = env.lib.stats()
    assert vars(stats.images) == {"pending": 0, "ready": 5, "failed": 1, "total": 6}
    with env.lib.Session() as s:
        states = dict(
            s.execute(sa.select(Image.state, sa.func.count()).group_by(Image.state)).all()
        )
    assert states == {"ready": 5, "failed": 1}


def test_searches_never_fail_while_versions_swap(env: Env, tmp_path: Path) -> None:
    """Concurrent searches across re-indexes and hot swaps: no error, never an empty answer."""
    import threading

    make_images(tmp_path / "photos", 12, seed=10)
    env.ingest(tmp_path / "photos")
    env.reindex()
    env.lib.refresh_index()
    first = env.lib.stats().index.version
    query = env.lib.image_vector(env.ids_by_name()["img_10_0001.jpg"])
    errors: list[BaseException] = []
    answers: list[int] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            try:
                answers.append(len(env.lib.search(query, k=5)))
            except BaseException as exc:  # the assertion below reports it
                errors.append(exc)
                return

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            before = len(answers)
            env.reindex()
            env.lib.refresh_index()
            # Wait (bounded) until searches ran against the new version too.
            deadline = time.monotonic() + 30
            while len(answers) < before + 5 and time.monotonic() < deadline and not errors:
                time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert answers and set(answers) == {5}
    assert env.lib.stats().index.version == first + 3


def test_a_finished_ingest_queues_a_rebuild_when_the_delta_grows_large(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsearch.indexer import runs

    monkeypatch.setattr(runs, "AUTO_REINDEX_MIN", 6)

    def ingest_with_app(folder: Path) -> None:
        job = env.lib.submit_ingest(str(folder))
        for batch in run_ingest(env.ctx, None, job.id):
            run_embed_batch(env.ctx, job.id, batch, env.lib.celery)  # the embedded broker

    make_images(tmp_path / "a", 8, seed=13)
    ingest_with_app(tmp_path / "a")
    auto = [j for j in env.lib.list_jobs() if j.kind == "reindex"]
    assert len(auto) == 1 and auto[0].state == "queued" and auto[0].params == {"auto": True}
    run_reindex(env.ctx, auto[0].id)
    assert env.lib.stats().index.size == 8
    make_images(tmp_path / "b", 3, seed=14)
    ingest_with_app(tmp_path / "b")  # 3 unindexed: below the threshold, no rebuild
    assert len([j for j in env.lib.list_jobs() if j.kind == "reindex"]) == 1


def test_recovery_picks_unfinished_jobs_and_with_live_workers_only_stale_ones(env: Env) -> None:
    import datetime as dt

    from clipsearch.indexer.catalog import Job
    from clipsearch.indexer.jobs import unfinished_job_ids

    now = dt.datetime.now(dt.UTC)
    with env.lib.Session() as s:
        made = {}
        for name, state, age in [
            ("fresh-running", "running", 5),
            ("stale-running", "running", 600),
            ("stale-queued", "queued", 600),
            ("done", "done", 600),
            ("failed", "failed", 600),
        ]:
            job = catalog.create_job(s, "ingest", {"path": "/x"})
            job.state = state
            job.heartbeat_at = now - dt.timedelta(seconds=age)
            made[name] = job.id
        s.commit()
        # No live worker: every queued or running job is orphaned.
        assert unfinished_job_ids(s) == sorted(
            [made["fresh-running"], made["stale-running"], made["stale-queued"]]
        )
        # Other workers alive: only jobs without progress for the stale period.
        older_than = now - dt.timedelta(seconds=120)
        assert unfinished_job_ids(s, older_than=older_than) == sorted(
            [made["stale-running"], made["stale-queued"]]
        )
        assert s.get(Job, made["done"]).state == "done"


def test_a_removed_image_stays_out_of_rescans_moves_copies_and_restarts_until_restored(
    env: Env, tmp_path: Path, tiny_model_dir: Path
) -> None:
    photos = tmp_path / "photos"
    paths = make_images(photos, 6, seed=21)
    env.ingest(photos)
    ids = env.ids_by_name()
    victim = ids[paths[2].name]
    vec = env.lib.image_vector(victim)
    thumb = env.lib.thumbnail_path(victim)
    embeddings = env.count_embeddings()

    removed = env.lib.delete_image(victim)
    assert removed.image_id == victim and removed.path.endswith(paths[2].name)
    assert [r.id for r in env.lib.list_removed()] == [removed.id]
    assert env.lib.stats().images.total == 5
    assert thumb.exists()  # kept for the Removed view; the vector too (a restore re-embeds nothing)
    assert env.count_embeddings() == embeddings
    # The file is still on disk; it was copied to another folder and a second copy moved away.
    assert paths[2].exists()
    (photos / "sub").mkdir()
    shutil.copy(paths[2], photos / "sub" / "copy.jpg")
    env.ingest(photos)
    # A new Library on the same catalog (a restart) re-ingesting: the image stays gone.
    restarted = Library(env.lib.config)
    try:
        job = restarted.submit_ingest(str(photos))
        for batch in run_ingest(env.ctx, None, job.id):
            run_embed_batch(env.ctx, job.id, batch)
        info = restarted.get_job(job.id)
        assert info.state == "done" and info.params["scan"]["removed_by_user"] == 2
        names = {Path(i.path).name for i in restarted.list_images(limit=100)[0]}
        assert names == {p.name for p in paths} - {paths[2].name}
        env.lib.refresh_index()
        assert all(h.id != victim for h in env.lib.search(vec, k=10))
        assert env.lib.search(vec, k=10)[0].score < 0.999  # no copy of it is searchable either
        with pytest.raises(NotFound):
            env.lib.get_image(victim)

        # Restore (by the image id it had): it comes back under a new id and is searchable.
        result = restarted.restore_image(victim)
        assert [r.id for r in result.restored] == [removed.id]
        assert len(result.jobs) == 1 and result.jobs[0].params["recursive"] is False
        for batch in run_ingest(env.ctx, None, result.jobs[0].id):
            run_embed_batch(env.ctx, result.jobs[0].id, batch)
        assert restarted.list_removed() == []
        back = env.ids_by_name()[paths[2].name]
        assert back != victim and back > max(ids.values())
        assert env.count_embeddings() == embeddings  # the kept vector served the restore
        env.lib.refresh_index()
        assert env.lib.search(vec, k=1)[0].id == back
        with pytest.raises(NotFound):
            restarted.restore(removed.id)  # already restored
    finally:
        restarted.close()


def test_remove_from_disk_moves_the_file_to_the_trash_and_restore_puts_it_back(
    env: Env, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    paths = make_images(photos, 3, seed=22)
    env.ingest(photos)
    victim = env.ids_by_name()[paths[0].name]
    content = paths[0].read_bytes()
    removed = env.lib.delete_image(victim, from_disk=True)
    assert not paths[0].exists()
    assert removed.trash_path is not None
    trashed = Path(catalog.path_from_db(removed.trash_path))
    assert trashed.read_bytes() == content
    assert env.lib.trash_dir in trashed.parents
    # A file that changed on disk since it was scanned is not moved.
    other = env.ids_by_name()[paths[1].name]
    paths[1].write_bytes(paths[1].read_bytes() + b"changed")
    with pytest.raises(Conflict):
        env.lib.delete_image(other, from_disk=True)
    assert paths[1].exists() and env.lib.get_image(other).id == other
    # Restoring refuses to overwrite a file that took the place, then puts the file back.
    paths[0].write_bytes(b"someone else")
    with pytest.raises(Conflict):
        env.lib.restore(removed.id)
    assert trashed.exists() and env.lib.list_removed()[0].id == removed.id
    paths[0].unlink()
    result = env.lib.restore(removed.id)
    assert paths[0].read_bytes() == content and not trashed.exists()
    for batch in run_ingest(env.ctx, None, result.jobs[0].id):
        run_embed_batch(env.ctx, result.jobs[0].id, batch)
    assert paths[0].name in env.ids_by_name()
