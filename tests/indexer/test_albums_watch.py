"""A smart album on a watched folder, with a real worker process and the library's own watcher:
it gains a matching picture copied into the folder without any call, loses a removed one, keeps
a pinned one and never shows an excluded one, and all of that across a restart of the library
and of the worker. Synchronisation is by polling the catalog with deadlines."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from workerutil import make_images, running_worker, wait_for, worker_config

from clipsearch.indexer import albums, catalog
from clipsearch.indexer.library import Library, LibraryConfig
from clipsearch.indexer.types import SearchFilters

pytestmark = pytest.mark.slow


def _open(tmp_path: Path, model: Path, db_url: str) -> Library:
    return Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            database_url=db_url,
            queue_prefix=f"a{tmp_path.name[-8:]}-",
            model_spec=str(model),
            device="cpu",
            refresh_interval_s=0.0,
        )
    )


@pytest.fixture()
def lib(tmp_path: Path, tiny_model_dir: Path, db_url: str) -> Iterator[Library]:
    library = _open(tmp_path, tiny_model_dir, db_url)
    yield library
    library.close()


def _ids(lib: Library) -> dict[str, int]:
    items, _ = lib.list_images(limit=500, state="ready")
    return {Path(catalog.path_from_db(i.path)).name: i.id for i in items}


def _shown(lib: Library, name: str) -> set[str]:
    with lib.Session() as s:
        items, _ = albums.members_page(s, name, None, 200)
    return {Path(catalog.path_from_db(i.image.path)).name for i in items}


def test_a_smart_album_follows_a_watched_folder_across_a_restart(
    lib: Library, tmp_path: Path, tiny_model_dir: Path, db_url: str
) -> None:
    photos = tmp_path / "photos"
    keep = make_images(photos / "keep", 3, seed=51)
    other = make_images(photos / "other", 2, seed=52)
    incoming = make_images(tmp_path / "incoming", 2, seed=53)
    cfg = worker_config(
        lib.data_dir, str(tiny_model_dir), lib.database_url, queue_prefix=lib.config.queue_prefix
    )
    with running_worker(cfg) as worker:
        lib.add_watched_folder(str(photos))
        wait_for(lambda: len(_ids(lib)) == 5, 120, "the first ingest", worker=worker)
        # every picture of photos/keep, whatever it shows (the cut at 0)
        query = albums.SavedQuery(
            text="a photo",
            filters=SearchFilters(folder=str((photos / "keep").resolve())),
            min_relevance=0.0,
        )
        info = albums.create(lib, "kept", query)
        assert info.kind == "smart" and info.computed_at is None
        wait_for(
            lambda: _shown(lib, "kept") == {p.name for p in keep},
            120,
            "the albums job to compute the album",
            worker=worker,
        )
        ids = _ids(lib)
        with lib.Session() as s:
            albums.change_members(s, "kept", [ids[other[0].name]], "pin")
            albums.change_members(s, "kept", [ids[keep[0].name]], "exclude")
        assert _shown(lib, "kept") == {keep[1].name, keep[2].name, other[0].name}

        lib.start_watcher(rescan_interval_s=0, debounce_s=0.3)
        wait_for(
            lambda: lib.list_watched_folders()[0].state == "watching", 30, "the folder watched"
        )
        shutil.copy(incoming[0], photos / "keep" / "new.jpg")  # no call: the watcher sees it
        keep[1].unlink()
        wait_for(
            lambda: _shown(lib, "kept") == {keep[2].name, other[0].name, "new.jpg"},
            120,
            "the new picture in the album and the removed one out",
            worker=worker,
        )
        assert "new.jpg" in _ids(lib) and keep[1].name not in _ids(lib)
    lib.close()

    # a restart of the library and the worker: the album is as people left it, and keeps filling
    again = _open(tmp_path, tiny_model_dir, db_url)
    try:
        assert _shown(again, "kept") == {keep[2].name, other[0].name, "new.jpg"}
        with again.Session() as s:
            excluded, _ = albums.members_page(s, "kept", None, 10, excluded=True)
        assert [Path(i.image.path).name for i in excluded] == [keep[0].name]
        with running_worker(cfg) as worker:
            again.start_watcher(rescan_interval_s=0, debounce_s=0.3)
            wait_for(
                lambda: again.list_watched_folders()[0].state == "watching",
                60,
                "the folder watched again",
                worker=worker,
            )
            shutil.copy(incoming[1], photos / "keep" / "later.jpg")
            shutil.copy(incoming[1], photos / "other" / "elsewhere.jpg")  # outside its folder
            wait_for(
                lambda: {"later.jpg", "elsewhere.jpg"} <= set(_ids(again)),
                120,
                "the pictures after the restart ingested",
                worker=worker,
            )
            wait_for(
                lambda: "later.jpg" in _shown(again, "kept"),
                30,
                "the picture after the restart in the album",
                worker=worker,
            )
            shown = _shown(again, "kept")
            assert shown == {keep[2].name, other[0].name, "new.jpg", "later.jpg"}
            assert keep[0].name not in shown  # excluded, though it still matches
    finally:
        again.close()
