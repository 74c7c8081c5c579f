"""Duplicates: exact copies, near duplicates (re-encoded, resized, re-coloured) and similar shots
found by the duplicates job, grouped with reasons, kept up to date incrementally, on SQLite and
PostgreSQL; pages read by key (plan check at 10,000 images)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image, ImageEnhance
from workerutil import Env

from clipsearch.indexer import catalog, duplicate_jobs, duplicates
from clipsearch.indexer.errors import IndexerError


def _photo(seed: int, size: int = 96) -> Image.Image:
    """A smooth picture (gradients and a few discs), like a photo rather than noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    arr = np.zeros((size, size, 3))
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        arr[..., c] = 0.5 + 0.4 * np.sin(3 * (a * x + b * y) + 6 * p)
    for _ in range(3):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.2)
        arr[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return Image.fromarray((arr * 255).clip(0, 255).astype(np.uint8), "RGB")


def _library(folder: Path) -> dict[str, Image.Image]:
    folder.mkdir(parents=True)
    photos = {f"p{i}.jpg": _photo(100 + i) for i in range(6)}
    for name, im in photos.items():
        im.save(folder / name, "JPEG", quality=92)
    # an exact copy elsewhere, a re-encoded + brightened copy, a half-size copy
    (folder / "copies").mkdir()
    shutil.copy(folder / "p0.jpg", folder / "copies" / "p0-copy.jpg")
    ImageEnhance.Brightness(photos["p1.jpg"]).enhance(1.1).save(
        folder / "copies" / "p1-edit.jpg", "JPEG", quality=70
    )
    photos["p2.jpg"].resize((48, 48)).save(folder / "copies" / "p2-small.png")
    return photos


def _run(env: Env) -> duplicates.FindResult:
    job = duplicate_jobs.submit(env.lib)
    result = duplicate_jobs.run_duplicates(env.ctx, job.id)
    assert env.lib.get_job(job.id).state == "done"
    assert result is not None
    return result


def _groups(env: Env, kind: str = "duplicates") -> list[tuple[str, set[str]]]:
    page = duplicates.page(env.lib, kind, limit=50)
    return [(g.kind, {Path(m.image.path).name for m in g.members}) for g in page.items]


def test_exact_and_near_duplicates_are_grouped_with_reasons_and_kept_up_to_date(
    env: Env, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    _library(photos)
    env.ingest(photos)
    page = duplicates.page(env.lib)
    assert page.items == [] and page.stale and page.job is None  # never computed yet

    first = _run(env)
    assert first.full
    groups = _groups(env)
    assert ("exact", {"p0.jpg", "p0-copy.jpg"}) in groups
    assert ("near", {"p1.jpg", "p1-edit.jpg"}) in groups
    assert ("near", {"p2.jpg", "p2-small.png"}) in groups
    # distinct pictures are never listed as duplicates (the tiny model's vectors of different
    # pictures can be close; the picture hash keeps them apart)
    assert len(groups) == 3, groups
    page = duplicates.page(env.lib)
    assert not page.stale and page.job is not None and page.job.state == "done"
    reasons = {Path(m.image.path).name: m.reason for g in page.items for m in g.members}
    assert "the same file content as image" in reasons["p0-copy.jpg"]
    assert "the same picture as image" in reasons["p1-edit.jpg"]
    assert "picture hash" in reasons["p1-edit.jpg"]

    # Keyset pages: one group per page, in key order, nothing repeated.
    seen, after = [], None
    while True:
        items, after = duplicates.list_groups(env.lib.Session(), "duplicates", after, 1)
        seen += [g.id for g in items]
        if after is None:
            break
    assert seen == sorted(g.id for g in page.items)
    assert [g.kind for g in duplicates.page(env.lib, "exact").items] == ["exact"]

    # Remove the copy through the remove API: the group is gone at once, and the next run
    # (incremental) agrees.
    ids = env.ids_by_name()
    env.lib.delete_image(ids["p0-copy.jpg"])
    assert ("exact", {"p0.jpg", "p0-copy.jpg"}) not in _groups(env)
    assert duplicates.page(env.lib).stale
    second = _run(env)
    assert not second.full and second.changed == 0
    assert len(_groups(env)) == 2

    # A new copy arrives: only it is compared (incremental), and it joins the p1 group.
    shutil.copy(photos / "copies" / "p1-edit.jpg", photos / "p1-edit-again.jpg")
    env.ingest(photos)
    third = _run(env)
    assert not third.full and third.changed == 1
    groups = _groups(env)
    assert ("near", {"p1.jpg", "p1-edit.jpg", "p1-edit-again.jpg"}) in groups
    # nothing changed: nothing is read again
    assert _run(env).changed == 0


def test_similar_shots_are_listed_apart_from_duplicates(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "burst"
    photos.mkdir()
    base = _photo(7, size=128)
    base.save(photos / "frame1.jpg", quality=92)
    # the next frame of a burst: the scene moved (a different crop), not the same picture
    base.transform((128, 128), Image.Transform.AFFINE, (1, 0, 22, 0, 1, 9)).save(
        photos / "frame2.jpg", quality=92
    )
    _photo(8).save(photos / "other.jpg", quality=92)
    env.ingest(photos)
    ids = env.ids_by_name()
    with env.lib.Session() as s:
        v = catalog.load_vectors(s, duplicates.library_model_id(s))
    sims = dict(zip(v[0].tolist(), v[1] @ v[1][list(v[0]).index(ids["frame1.jpg"])], strict=True))
    # what "similar" means depends on the model: put the line between the frames and the rest
    line = (sims[ids["frame2.jpg"]] + sims[ids["other.jpg"]]) / 2
    if not sims[ids["frame2.jpg"]] > sims[ids["other.jpg"]]:
        pytest.fail(f"the tiny model does not rank the burst frame closer: {sims}")
    monkeypatch.setattr(duplicates, "SIMILAR_SIMILARITY", float(line))
    monkeypatch.setattr(duplicates, "NEAR_SIMILARITY", max(float(line), 0.95))
    _run(env)
    assert _groups(env) == []  # the frames are not the same picture
    similar = _groups(env, "similar")
    assert similar == [("similar", {"frame1.jpg", "frame2.jpg"})]
    assert (
        "a similar shot to image" in duplicates.page(env.lib, "similar").items[0].members[0].reason
    )


def test_bad_page_parameters_are_refused(env: Env) -> None:
    for kwargs in ({"kind": "bursts"}, {"limit": 0}, {"limit": 10_000}, {"after": -1}):
        with pytest.raises(IndexerError):
            duplicates.page(env.lib, **kwargs)


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_page_reads_groups_by_key_at_10000_images(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}" if db == "sqlite" else request.getfixturevalue("pg_url")
    engine = catalog.init_db(url)
    Session = catalog.session_factory(engine)
    try:
        with Session() as s:
            s.execute(
                sa.insert(catalog.Image),
                [
                    {"path": f"/p/{i}.jpg", "folder": "/p", "size": 1, "mtime_ns": 0,
                     "sha256": f"{i // 2:064x}", "state": "ready"}
                    for i in range(10_000)
                ],
            )  # fmt: skip
            ids = list(s.scalars(sa.select(catalog.Image.id).order_by(catalog.Image.id)))
            s.execute(
                sa.insert(duplicates.DuplicatePair),
                [{"a_id": ids[i], "b_id": ids[i + 1], "kind": "exact", "similarity": 1.0}
                 for i in range(0, 10_000, 2)],
            )  # fmt: skip
            duplicates._regroup(s)
            s.commit()
            if db == "postgresql":
                s.execute(sa.text("ANALYZE"))
            items, after = duplicates.list_groups(s, "duplicates", None, 20)
            assert len(items) == 20 and after == items[-1].id
            # the statements a page runs, explained: range reads on keys, never a scan
            stmts = [
                sa.select(duplicates.DuplicateGroup)
                .where(duplicates.DuplicateGroup.family == "dup",
                       duplicates.DuplicateGroup.anchor_id > after)
                .order_by(duplicates.DuplicateGroup.anchor_id).limit(20),
                sa.select(duplicates.DuplicateMember).where(
                    duplicates.DuplicateMember.family == "dup",
                    duplicates.DuplicateMember.anchor_id.in_([after, after + 2])),
            ]  # fmt: skip
            for stmt in stmts:
                compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
                prefix = "EXPLAIN QUERY PLAN " if db == "sqlite" else "EXPLAIN "
                plan = " ".join(str(r) for r in s.execute(sa.text(prefix + str(compiled))))
                assert "SCAN duplicate" not in plan and "Seq Scan" not in plan, plan
            assert duplicates.is_stale(s) is True
    finally:
        engine.dispose()
