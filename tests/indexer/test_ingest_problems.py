"""A file an ingest cannot take in is reported once, not by every rescan (issue 24): a corrupt
picture and a link leading out of the folder, on SQLite and PostgreSQL. Two rescans of the same
folder list the problems once; a changed file is reported again; a fixed one is gone. The
folder's current problems stay listed whichever job reported them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from indexer_testfiles import write_image  # type: ignore[import-not-found]
from sqlalchemy.orm import Session, sessionmaker

from clipsearch.indexer.catalog import create_job, ensure_model
from clipsearch.indexer.ingest import job_progress, plan_ingest, process_batch
from clipsearch.indexer.ingest_problems import folder_problems
from clipsearch.indexer.types import JobInfo
from clipsearch.model.testing import tiny_model


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_model(seed=0, image_size=32)


def rescan(sessions: sessionmaker[Session], model: Any, folder: Path, thumbs: Path) -> JobInfo:
    with sessions() as s:
        job_id = create_job(s, "ingest", {"path": str(folder), "recursive": True}).id
    model_id = ensure_model(sessions, model)
    plan = plan_ingest(sessions, job_id, model_id=model_id, batch_size=4, thumb_dir=thumbs)
    for batch in plan.batches:
        process_batch(sessions, model, job_id, batch, thumbs, model_id=model_id)
    return job_progress(sessions, job_id)


def reported(job: JobInfo) -> list[str]:
    return sorted(os.path.basename(e["path"]) for e in job.errors)


def current(sessions: sessionmaker[Session], folder: Path) -> list[tuple[str, str]]:
    with sessions() as s:
        return [(os.path.basename(p.path), p.kind) for p in folder_problems(s, str(folder))]


def test_a_problem_is_reported_once_again_when_the_file_changes_and_gone_when_fixed(
    sessions: sessionmaker[Session], model: Any, tmp_path: Path
) -> None:
    photos, thumbs = tmp_path / "photos", tmp_path / "thumbs"
    photos.mkdir()
    write_image(photos / "good.jpg", seed=1)
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a picture")
    write_image(tmp_path / "elsewhere.jpg", seed=2)
    os.symlink(tmp_path / "elsewhere.jpg", photos / "link.jpg")  # leads out of the folder

    first = rescan(sessions, model, photos, thumbs)
    assert reported(first) == ["corrupt.jpg", "link.jpg"]
    assert all(e["reason"] for e in first.errors)
    both = [("corrupt.jpg", "decode"), ("link.jpg", "scan")]
    assert current(sessions, photos) == both

    for _ in range(2):  # rescans of the unchanged folder: nothing new to report
        again = rescan(sessions, model, photos, thumbs)
        assert (again.state, reported(again), again.failed) == ("done", [], 0)
        assert again.params["scan"]["new_problems"] == 0
        assert current(sessions, photos) == both  # still listed for the folder

    # both files change: each is reported again, once
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 still not a picture, but longer")
    os.remove(photos / "link.jpg")
    write_image(tmp_path / "other.jpg", seed=3)
    os.symlink(tmp_path / "other.jpg", photos / "link.jpg")
    os.utime(photos / "link.jpg", ns=(1, 1), follow_symlinks=False)  # a new link, surely
    changed = rescan(sessions, model, photos, thumbs)
    assert reported(changed) == ["corrupt.jpg", "link.jpg"]
    assert reported(rescan(sessions, model, photos, thumbs)) == []

    # fixed: a real picture in place of each, and no problem left
    os.remove(photos / "link.jpg")
    write_image(photos / "link.jpg", seed=4)
    write_image(photos / "corrupt.jpg", seed=5)
    fixed = rescan(sessions, model, photos, thumbs)
    assert (fixed.state, reported(fixed), fixed.failed, fixed.done) == ("done", [], 0, 2)
    assert current(sessions, photos) == []
