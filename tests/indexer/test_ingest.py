"""Ingestion end to end on real files, on SQLite and PostgreSQL: the job's counts, duplicates,
incremental re-scans (add, change, move, delete), bad files, re-delivered batches."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from indexer_testfiles import bad_corpus, write_image  # type: ignore[import-not-found]
from sqlalchemy.orm import Session, sessionmaker

from clipsearch.indexer import jobs
from clipsearch.indexer.catalog import (
    Embedding,
    Image,
    create_job,
    ensure_model,
    get_job,
    load_vectors,
    path_from_db,
    path_to_db,
)
from clipsearch.indexer.errors import IngestError, PathNotAllowed
from clipsearch.indexer.ingest import (
    images_needing_embedding,
    job_progress,
    plan_ingest,
    process_batch,
)
from clipsearch.indexer.types import IngestPlan, JobInfo
from clipsearch.model.testing import tiny_model


def finish_job(sessions: sessionmaker[Session], job_id: int, state: str) -> JobInfo:
    """Close a job through the one job state machine (indexer.jobs)."""
    with sessions() as s:
        jobs.finish(s, get_job(s, job_id), state)
    return job_progress(sessions, job_id)


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_model(seed=0, image_size=32)


def run_job(
    sessions: sessionmaker[Session], model: Any, folder: Path, thumbs: Path, **kw: Any
) -> tuple[IngestPlan, JobInfo]:
    with sessions() as s:
        job_id = create_job(s, "ingest", {"path": str(folder), "recursive": True}).id
    model_id = ensure_model(sessions, model)
    plan = plan_ingest(sessions, job_id, model_id=model_id, batch_size=4, thumb_dir=thumbs, **kw)
    for batch in plan.batches:
        process_batch(sessions, model, job_id, batch, thumbs, model_id=model_id)
    return plan, job_progress(sessions, job_id)


def rows(sessions: sessionmaker[Session]) -> dict[str, Image]:
    with sessions() as s:
        return {os.path.basename(path_from_db(r.path)): r for r in s.scalars(sa.select(Image))}


def n_embeddings(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(Embedding)) or 0)


def test_ingest_job_embeds_good_files_fails_bad_ones_and_finishes(
    sessions: sessionmaker[Session], model: Any, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i, fmt in enumerate(["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]):
        write_image(photos / f"img{i}.{fmt.lower()}", seed=i, fmt=fmt)
    shutil.copy(photos / "img0.jpeg", photos / "sub" / "same-as-img0.jpg")  # duplicate content
    expected_bad = bad_corpus(photos / "bad")
    thumbs = tmp_path / "thumbs"

    _, job = run_job(sessions, model, photos, thumbs)

    assert job.state == "done" and job.finished_at is not None
    assert (job.total, job.done, job.failed) == (11, 7, 4)
    assert sorted(os.path.basename(e["path"]) for e in job.errors) == sorted(
        [*expected_bad, "dangling.jpg"]
    )
    assert all(e["reason"] for e in job.errors)
    catalog = rows(sessions)
    for name in expected_bad:
        assert catalog[name].state == "failed" and catalog[name].error
    assert "too many pixels" in (catalog["bomb.png"].error or "")
    assert "empty file" in (catalog["empty.jpg"].error or "")
    ready = {n for n, r in catalog.items() if r.state == "ready"}
    assert ready == {
        "img0.jpeg",
        "img1.png",
        "img2.webp",
        "img3.gif",
        "img4.bmp",
        "img5.tiff",
        "same-as-img0.jpg",
    }
    assert n_embeddings(sessions) == 6  # the copy shares img0's vector
    assert catalog["same-as-img0.jpg"].sha256 == catalog["img0.jpeg"].sha256
    assert {catalog[n].format for n in ready} == {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
    assert all((thumbs / (catalog[n].thumbnail or "-")).is_file() for n in ready)

    model_id = ensure_model(sessions, model)
    with sessions() as s:
        ids, vecs = load_vectors(s, model_id)
    assert len(ids) == 7 and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    direct = model.embed_images([photos / "img1.png"])[0]
    got = vecs[list(ids).index(catalog["img1.png"].id)]
    assert float(direct @ got) > 0.999  # the stored vector is the model's embedding of the file


def test_rescan_adds_changes_moves_and_deletes(
    sessions: sessionmaker[Session], model: Any, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        write_image(photos / f"p{i}.jpg", seed=i)
    thumbs = tmp_path / "thumbs"
    _, first = run_job(sessions, model, photos, thumbs)
    assert (first.done, first.failed) == (5, 0)
    before = rows(sessions)

    # Unchanged: a second scan embeds nothing.
    plan, job = run_job(sessions, model, photos, thumbs)
    assert plan.batches == [] and plan.unchanged == 5 and (job.state, job.total) == ("done", 0)

    write_image(photos / "new.jpg", seed=50)  # add
    write_image(photos / "p1.jpg", seed=51)  # change content (and size/mtime)
    (photos / "moved").mkdir()
    os.rename(photos / "p2.jpg", photos / "moved" / "renamed.jpg")  # move
    os.unlink(photos / "p3.jpg")  # delete
    old_p3_thumb = thumbs / (before["p3.jpg"].thumbnail or "-")
    assert old_p3_thumb.is_file()

    plan, job = run_job(sessions, model, photos, thumbs)
    after = rows(sessions)
    assert plan.new_ids == [after["new.jpg"].id]
    assert plan.changed_ids == [before["p1.jpg"].id]
    assert plan.moved_ids == [before["p2.jpg"].id] == [after["renamed.jpg"].id]  # id kept
    assert plan.removed_ids == [before["p3.jpg"].id]
    assert (job.total, job.done, job.failed, job.state) == (2, 2, 0, "done")  # only new + changed
    assert job.params["scan"] == {
        "found": 5,
        "new": 1,
        "changed": 1,
        "moved": 1,
        "removed": 1,
        "unchanged": 2,
        "unreadable": 0,
    }
    assert set(after) == {"p0.jpg", "p1.jpg", "renamed.jpg", "p4.jpg", "new.jpg"}
    assert (
        after["renamed.jpg"].sha256 == before["p2.jpg"].sha256
        and after["renamed.jpg"].state == "ready"
    )
    assert after["p1.jpg"].sha256 != before["p1.jpg"].sha256 and after["p1.jpg"].state == "ready"
    assert not old_p3_thumb.exists()
    with sessions() as s:
        shas = set(s.scalars(sa.select(Embedding.sha256)))
    assert shas == {r.sha256 for r in after.values()}  # old p1 and p3 vectors collected
    assert n_embeddings(sessions) == 5


def test_a_batch_delivered_twice_is_counted_once(
    sessions: sessionmaker[Session], model: Any, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", seed=i, fmt="PNG")
    with sessions() as s:
        job_id = create_job(s, "ingest", {"path": str(tmp_path / "in")}).id
    plan = plan_ingest(sessions, job_id, batch_size=10)
    again = plan_ingest(sessions, job_id, batch_size=10)  # planner re-run after a crash
    assert plan.batches == again.batches and len(plan.batches[0]) == 3
    first = process_batch(sessions, model, job_id, plan.batches[0], tmp_path / "t")
    second = process_batch(sessions, model, job_id, plan.batches[0], tmp_path / "t")
    assert (first.done, first.embedded, first.job_finished) == (3, 3, True)
    assert (second.done, second.embedded, second.skipped) == (0, 0, 3)
    job = job_progress(sessions, job_id)
    assert (job.total, job.done, job.failed, job.state) == (3, 3, 0, "done")
    assert n_embeddings(sessions) == 3


def test_a_new_model_reembeds_ready_images_without_touching_the_old_vectors(
    sessions: sessionmaker[Session], model: Any, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.jpg", seed=i)
    run_job(sessions, model, tmp_path / "in", tmp_path / "t")
    other = tiny_model(seed=1, image_size=32)
    other_id = ensure_model(sessions, other)
    with sessions() as s:
        todo = images_needing_embedding(s, other_id)
        assert len(todo) == 3
    res = process_batch(sessions, other, None, todo, tmp_path / "t")
    assert (res.done, res.embedded) == (3, 3)
    with sessions() as s:
        assert images_needing_embedding(s, other_id) == []
    assert n_embeddings(sessions) == 6


def test_odd_names_are_catalogued_and_reopened(
    sessions: sessionmaker[Session], model: Any, tmp_path: Path
) -> None:
    root = os.fsencode(tmp_path / "odd")
    os.mkdir(root)
    names = [
        b"latin1-\xe9\xff.jpg",
        "\u6771\u4eac \u2603.jpg".encode(),
        b"back\\slash.jpg",
        b"100%_like.jpg",
    ]
    for i, n in enumerate(names):
        write_image(root + b"/" + n, seed=i)
    _, job = run_job(sessions, model, tmp_path / "odd", tmp_path / "t")
    assert (job.done, job.failed) == (4, 0)
    with sessions() as s:
        stored = list(s.scalars(sa.select(Image.path)))
    assert sorted(os.fsencode(os.path.basename(path_from_db(p))) for p in stored) == sorted(names)
    assert path_to_db(root + b"/" + names[0]) in stored
    plan, _ = run_job(sessions, model, tmp_path / "odd", tmp_path / "t")
    assert plan.unchanged == 4 and plan.batches == []


def test_symlink_loops_do_not_hang_ingestion(
    sessions: sessionmaker[Session], model: Any, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    write_image(tmp_path / "a" / "x.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    _, job = run_job(sessions, model, tmp_path / "a", tmp_path / "t")
    assert (job.done, job.state) == (1, "done")


def test_missing_or_forbidden_folder_fails_the_job(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as s:
        missing = create_job(s, "ingest", {"path": str(tmp_path / "nope")}).id
        forbidden = create_job(s, "ingest", {"path": "/etc"}).id
    with pytest.raises(IngestError, match="folder not found"):
        plan_ingest(sessions, missing)
    job = job_progress(sessions, missing)
    assert job.state == "failed" and "folder not found" in job.errors[0]["reason"]
    with pytest.raises(PathNotAllowed):
        plan_ingest(sessions, forbidden, allowed_roots=[tmp_path])
    assert job_progress(sessions, forbidden).state == "failed"
    assert plan_ingest(sessions, missing).batches == []  # a finished job plans nothing
    assert finish_job(sessions, missing, "done").state == "failed"  # closed jobs stay closed


def test_an_unreadable_subfolder_keeps_its_catalog_rows(
    sessions: sessionmaker[Session], model: Any, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    (photos / "share").mkdir(parents=True)
    write_image(photos / "share" / "a.jpg")
    write_image(photos / "b.jpg", seed=1)
    run_job(sessions, model, photos, tmp_path / "t")
    # The share becomes unreachable: replace it by a dangling link (as an unmounted mount would).
    shutil.rmtree(photos / "share")
    os.symlink(tmp_path / "offline-nas", photos / "share")
    plan, job = run_job(sessions, model, photos, tmp_path / "t")
    assert plan.removed_ids == [] and "a.jpg" in rows(sessions)
    assert [os.path.basename(e["path"]) for e in job.errors] == ["share"]


def test_the_same_content_in_concurrent_batches_is_stored_once(
    sessions: sessionmaker[Session], model: Any, tmp_path: Path
) -> None:
    import threading

    for folder in ("left", "right"):
        (tmp_path / folder).mkdir()
        for i in range(4):
            write_image(tmp_path / folder / f"{i}.jpg", seed=i)  # same bytes in both folders
    model_id = ensure_model(sessions, model)
    jobs, plans = [], []
    for folder in ("left", "right"):
        with sessions() as s:
            jobs.append(create_job(s, "ingest", {"path": str(tmp_path / folder)}).id)
        plans.append(plan_ingest(sessions, jobs[-1], model_id=model_id, batch_size=10))
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def work(k: int) -> None:
        try:
            barrier.wait(timeout=30)
            process_batch(
                sessions, model, jobs[k], plans[k].batches[0], tmp_path / "t", model_id=model_id
            )
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    assert [job_progress(sessions, j).done for j in jobs] == [4, 4]
    assert n_embeddings(sessions) == 4
    with sessions() as s:
        ids, _ = load_vectors(s, model_id)
    assert len(ids) == 8


def test_a_cancelled_jobs_batches_are_skipped(
    sessions: sessionmaker[Session], model: Any, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a.jpg")
    with sessions() as s:
        job_id = create_job(s, "ingest", {"path": str(tmp_path / "in")}).id
    plan = plan_ingest(sessions, job_id)
    finish_job(sessions, job_id, "cancelled")
    res = process_batch(sessions, model, job_id, plan.batches[0], tmp_path / "t")
    assert (res.done, res.skipped) == (0, 1)
    assert rows(sessions)["a.jpg"].state == "pending"
    assert n_embeddings(sessions) == 0
