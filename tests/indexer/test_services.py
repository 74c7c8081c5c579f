"""The library's services work alone over one catalog context (no Library, no model, no worker):
what a tool or a test that needs one idea builds, and the proof that each service depends only
on what its constructor names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipsearch.indexer import catalog
from clipsearch.indexer.configs import default_broker_url
from clipsearch.indexer.context import CatalogContext
from clipsearch.indexer.errors import Conflict, NotFound, PathNotAllowed
from clipsearch.indexer.folders import FolderService
from clipsearch.indexer.images import ImageService
from clipsearch.indexer.job_queue import JobService
from clipsearch.indexer.removals import RemovalService
from clipsearch.indexer.serving import IndexService
from clipsearch.indexer.stats import LibraryStats, StatsService


class Services:
    def __init__(self, data: Path, roots: list[Path]) -> None:
        self.ctx = CatalogContext.open(data, roots=roots)
        # a model spec nobody loads: none of these calls serves an index
        self.index = IndexService(self.ctx, "never-loaded")
        self.jobs = JobService(self.ctx, default_broker_url(self.ctx.data_dir))
        self.images = ImageService(self.ctx, self.index)
        self.removals = RemovalService(self.ctx, self.images, self.index, self.jobs)
        self.folders = FolderService(self.ctx, self.jobs)
        self.stats = StatsService(self.ctx, self.index)

    def add_image(self, path: Path, sha: str) -> int:
        st = path.stat()
        with self.ctx.session() as session:
            row = catalog.Image(
                path=catalog.path_to_db(path),
                folder=catalog.path_to_db(path.parent),
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                sha256=sha,
                state="ready",
                format="JPEG",
            )
            session.add(row)
            session.commit()
            return int(row.id)

    def close(self) -> None:
        self.jobs.close()
        self.ctx.dispose()


@pytest.fixture
def svc(tmp_path: Path):
    photos = tmp_path / "photos"
    photos.mkdir()
    services = Services(tmp_path / "data", [photos])
    yield services, photos
    services.close()


def test_the_removals_service_moves_a_file_to_the_trash_and_back_on_its_own(svc) -> None:
    s, photos = svc
    photo = photos / "beach.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    image_id = s.add_image(photo, "a" * 64)
    assert s.stats.stats().images.ready == 1

    removed = s.removals.delete_image(image_id, from_disk=True)

    assert not photo.exists()
    assert removed.trash_path is not None
    assert Path(catalog.path_from_db(removed.trash_path)).read_bytes().startswith(b"\xff\xd8")
    assert Path(catalog.path_from_db(removed.trash_path)).is_relative_to(s.ctx.trash_dir)
    with pytest.raises(NotFound):
        s.images.get_image(image_id)
    assert [r.id for r in s.removals.list_removed()] == [removed.id]
    assert s.stats.stats().images.total == 0

    result = s.removals.restore(removed.id)

    assert photo.read_bytes().startswith(b"\xff\xd8")  # back where it was
    assert s.removals.list_removed() == []
    assert [j.kind for j in result.jobs] == ["ingest"]  # its folder is scanned again
    assert s.jobs.get_job(result.jobs[0].id).state == "queued"


def test_a_file_changed_on_disk_is_not_moved_to_the_trash(svc) -> None:
    s, photos = svc
    photo = photos / "changed.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 one")
    image_id = s.add_image(photo, "b" * 64)
    photo.write_bytes(b"\xff\xd8\xff\xe0 another content, another size")

    with pytest.raises(Conflict):
        s.removals.delete_image(image_id, from_disk=True)

    assert photo.exists()
    assert s.images.get_image(image_id).id == image_id  # still in the library


def test_jobs_and_folders_keep_to_the_context_roots(svc, tmp_path: Path) -> None:
    s, photos = svc
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(PathNotAllowed):
        s.jobs.submit_ingest(str(outside))
    with pytest.raises(PathNotAllowed):
        s.folders.add_watched_folder(str(outside))

    folder = s.folders.add_watched_folder(str(photos))

    assert [f.id for f in s.folders.list_watched_folders()] == [folder.id]
    assert folder.last_job is not None and folder.last_job.kind == "ingest"
    assert s.stats.stats().jobs.queued == 1


def test_stats_of_a_new_library_are_typed_and_empty(svc) -> None:
    s, _ = svc
    stats = s.stats.stats()
    assert isinstance(stats, LibraryStats)
    assert stats.index.version is None and stats.index.size == 0
    assert stats.model == "never-loaded"  # the configured model of a library with no vectors
    assert stats.as_dict()["images"] == {"pending": 0, "ready": 0, "failed": 0, "total": 0}
    assert os.fspath(s.ctx.thumbnails_dir).startswith(os.fspath(s.ctx.data_dir))
