"""Watched folders with real files on disk, a real worker process on the embedded broker, and
the library's own watcher thread: changes are picked up without anyone asking. Synchronisation
is by polling the catalog with deadlines."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from workerutil import make_images, running_worker, wait_for, worker_config

from clipsearch.indexer import catalog
from clipsearch.indexer.errors import NotFound
from clipsearch.indexer.library import Library, LibraryConfig
from clipsearch.indexer.watch import FolderWatcher

pytestmark = pytest.mark.slow


@pytest.fixture()
def lib(tmp_path: Path, tiny_model_dir: Path, db_url: str) -> Iterator[Library]:
    library = Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            database_url=db_url,
            queue_prefix=f"w{tmp_path.name[-8:]}-",
            model_spec=str(tiny_model_dir),
            device="cpu",
            refresh_interval_s=0.0,
        )
    )
    yield library
    library.close()


def _names(lib: Library) -> set[str]:
    items, _ = lib.list_images(limit=500, state="ready")
    return {Path(catalog.path_from_db(i.path)).name for i in items}


def test_new_moved_and_deleted_files_are_picked_up_without_an_ingest_call(
    lib: Library, tmp_path: Path, tiny_model_dir: Path
) -> None:
    photos = tmp_path / "photos"
    paths = make_images(photos, 3, seed=31)
    cfg = worker_config(
        lib.data_dir, str(tiny_model_dir), lib.database_url, queue_prefix=lib.config.queue_prefix
    )
    with running_worker(cfg) as worker:
        folder = lib.add_watched_folder(str(photos))
        assert folder.last_job is not None and folder.state == "scanning"
        wait_for(lambda: _names(lib) == {p.name for p in paths}, 120, "first ingest", worker=worker)
        lib.start_watcher(rescan_interval_s=0, debounce_s=0.3)
        wait_for(
            lambda: lib.list_watched_folders()[0].state == "watching", 30, "the folder watched"
        )

        # a new file in a new sub-folder, a file moved, a file deleted: no API call
        (photos / "2024").mkdir()
        extra = make_images(tmp_path / "incoming", 2, seed=32)
        shutil.copy(extra[0], photos / "2024" / "new.jpg")
        paths[1].rename(photos / "2024" / "moved.jpg")
        paths[2].unlink()
        wait_for(
            lambda: _names(lib) == {paths[0].name, "new.jpg", "moved.jpg"},
            120,
            "the changes picked up by the watcher",
            worker=worker,
        )
        listed = lib.list_watched_folders()
        assert [f.path for f in listed] == [str(photos.resolve())]

        # stop watching: the folder leaves the list, its images stay
        lib.remove_watched_folder(listed[0].id)
        assert lib.list_watched_folders() == []
        assert paths[0].name in _names(lib)
        with pytest.raises(NotFound):
            lib.get_watched_folder(listed[0].id)


def test_a_folder_added_while_serving_is_watched_before_its_first_ingest_scans_it(
    lib: Library, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A photo copied in just after the folder's first ingest has scanned it arrives by an
    event. (The watcher here reloads the catalog's list once an hour: only the folder added
    through this process's library can be watched in time.)"""
    photos = tmp_path / "photos"
    paths = make_images(photos, 2, seed=35)
    watcher = FolderWatcher(lib, rescan_interval_s=0, debounce_s=0.3, reload_s=3600.0)
    lib.watcher = watcher
    watcher.start()
    cfg = worker_config(
        lib.data_dir, str(tiny_model_dir), lib.database_url, queue_prefix=lib.config.queue_prefix
    )
    with running_worker(cfg) as worker:
        lib.add_watched_folder(str(photos))
        wait_for(lambda: _names(lib) == {p.name for p in paths}, 120, "first ingest", worker=worker)
        extra = make_images(tmp_path / "incoming", 1, seed=36)
        shutil.copy(extra[0], photos / "copied-after.jpg")
        wait_for(lambda: "copied-after.jpg" in _names(lib), 60, "the copied photo", worker=worker)


class _NoEvents(FolderWatcher):
    """A drive that delivers no change events (a network share): only the re-scan sees changes."""

    def _schedule(self, path: str, recursive: bool) -> None:
        return None


def test_the_periodic_rescan_picks_up_changes_where_no_event_arrives(
    lib: Library, tmp_path: Path, tiny_model_dir: Path
) -> None:
    share = tmp_path / "share"
    make_images(share, 2, seed=33)
    cfg = worker_config(
        lib.data_dir, str(tiny_model_dir), lib.database_url, queue_prefix=lib.config.queue_prefix
    )
    with running_worker(cfg) as worker:
        lib.add_watched_folder(str(share))
        wait_for(lambda: len(_names(lib)) == 2, 120, "first ingest", worker=worker)
        watcher = _NoEvents(lib, rescan_interval_s=1.0, debounce_s=0.3)
        lib.watcher = watcher
        watcher.start()
        assert lib.list_watched_folders()[0].state in ("idle", "scanning")  # no events here
        make_images(share / "later", 1, seed=34)
        wait_for(lambda: len(_names(lib)) == 3, 120, "the re-scan's ingest", worker=worker)


def test_folder_changes_sees_what_an_ingest_would_do_and_nothing_else(
    sessions: Any, tmp_path: Path
) -> None:
    """An unchanged folder is reported unchanged (so restarts and periodic re-scans queue no
    empty job); each kind of change is seen: new, changed, gone, a file to try again; a file the
    user removed from the library (or a copy of it) is no change."""
    import os

    import sqlalchemy as sa
    from indexer_testfiles import write_image  # type: ignore[import-not-found]

    from clipsearch.indexer.catalog import (
        Image,
        create_job,
        delete_images,
        ensure_model,
        record_removal,
    )
    from clipsearch.indexer.ingest import plan_ingest, process_batch
    from clipsearch.indexer.watch import folder_changes
    from clipsearch.model.testing import tiny_model

    model = tiny_model(seed=0, image_size=32)
    model_id = ensure_model(sessions, model)
    photos, thumbs = tmp_path / "photos", tmp_path / "thumbs"
    (photos / "sub").mkdir(parents=True)
    paths = [write_image(photos / f"p{i}.jpg", seed=i) for i in range(4)]

    def ingest() -> None:
        with sessions() as s:
            job_id = create_job(s, "ingest", {"path": str(photos), "recursive": True}).id
        plan = plan_ingest(sessions, job_id, model_id=model_id, thumb_dir=thumbs)
        for batch in plan.batches:
            process_batch(sessions, model, job_id, batch, thumbs, model_id=model_id)

    assert folder_changes(sessions, str(photos)) is not None  # nothing catalogued yet
    ingest()
    assert folder_changes(sessions, str(photos)) is None

    # the user removes p0 from the library: the file on disk, and a copy of it, are no change
    with sessions() as s:
        row = s.scalar(sa.select(Image).where(Image.path.endswith("/p0.jpg")))
        record_removal(s, row)
        delete_images(s, [row.id])
        s.commit()
    assert folder_changes(sessions, str(photos)) is None
    (photos / "copy-of-p0.jpg").write_bytes(paths[0].read_bytes())
    assert folder_changes(sessions, str(photos)) is None

    # a new file, a changed file, a file gone: each is a change
    write_image(photos / "sub" / "new.jpg", seed=9)
    assert "new.jpg" in (folder_changes(sessions, str(photos)) or "")
    ingest()
    assert folder_changes(sessions, str(photos)) is None
    st = paths[1].stat()
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert "p1.jpg" in (folder_changes(sessions, str(photos)) or "")
    ingest()
    assert folder_changes(sessions, str(photos)) is None
    paths[2].unlink()
    assert "p2.jpg" in (folder_changes(sessions, str(photos)) or "")
    ingest()
    assert folder_changes(sessions, str(photos)) is None
    # a folder that vanished: changed (the ingest reports why)
    shutil.rmtree(photos)
    assert folder_changes(sessions, str(photos)) is not None
