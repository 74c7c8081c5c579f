"""Near-duplicate thresholds measured on the library's own pictures (indexer.duplicate_thresholds):
an embedding that tells copies apart gets thresholds that hold on pictures it never saw, and a
model that cannot (an untrained one, flat pictures) groups exact copies only and says why."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from workerutil import Env

from clipsearch.indexer import catalog, duplicate_jobs, duplicates
from clipsearch.indexer.catalog import Job
from clipsearch.indexer.duplicate_thresholds import (
    MEASURE_VERSION,
    MIN_SAMPLE,
    TARGET_PRECISION,
    as_thumbnail,
    copies_of,
    is_near,
    measure,
    next_shot,
)
from clipsearch.indexer.duplicates_pixels import GreyCache, grey_of, open_grey, pixel_match
from clipsearch.indexer.picture_hash import dhash, hash_distance


def _scene(seed: int, w: int = 320, h: int = 240) -> Image.Image:
    """A photo-like picture: smooth colour fields, a few discs, grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / w
    arr = np.zeros((h, w, 3))
    for c in range(3):
        a, b, p = rng.uniform(-3, 3, 3)
        arr[..., c] = 0.5 + 0.35 * np.sin(a * x + b * y + p)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 0.75), rng.uniform(0.03, 0.15)
        arr[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    arr += rng.normal(0, 0.02, arr.shape)
    return Image.fromarray((arr.clip(0, 1) * 255).astype(np.uint8), "RGB")


def _pixels(images: Sequence[Image.Image]) -> np.ndarray:
    """An embedding that sees layout and colour (12x9 pixels, centred, unit length): a stand-in
    for a model that tells copies from other pictures."""
    rows = []
    for im in images:
        v = np.asarray(im.convert("RGB").resize((12, 9), Image.Resampling.BILINEAR), np.float32)
        v = v.flatten() - v.mean()
        rows.append(v / (np.linalg.norm(v) + 1e-9))
    return np.stack(rows)


def test_thresholds_measured_on_a_sample_hold_on_other_pictures() -> None:
    sample = [_scene(seed) for seed in range(40)]
    limits = measure(sample, _pixels, dhash, model_id=1, library_size=400)
    assert limits.mode == "measured", limits.reason
    assert limits.precision is not None and limits.precision >= TARGET_PRECISION
    assert limits.recall is not None and limits.recall >= 0.9
    assert "find" in limits.reason and "precision" in limits.reason

    # Pictures the measurement never saw: their copies are found, other pictures and the next
    # shot of a burst are not called the same picture.
    fresh = [as_thumbnail(_scene(seed)) for seed in range(1000, 1030)]

    def same(a: Image.Image, b: Image.Image) -> bool:  # the job's decision
        sim = float(_pixels([a])[0] @ _pixels([b])[0])
        bits = hash_distance(dhash(a), dhash(b))
        return is_near(limits, sim, bits, pixel_match(grey_of(a), grey_of(b)))

    found = total = 0
    for im in fresh:
        for copy in copies_of(im).values():
            total += 1
            found += same(im, as_thumbnail(copy))
    assert found / total >= 0.85, (found, total, limits)
    wrong = sum(same(a, b) for i, a in enumerate(fresh) for b in fresh[i + 1 :])
    assert wrong == 0, limits
    import random

    rng = random.Random(5)
    burst_dups = sum(same(im, as_thumbnail(next_shot(im, rng))) for im in fresh)
    assert burst_dups <= 3, (burst_dups, limits)  # bursts are listed as similar shots instead


def _flat(i: int) -> Image.Image:
    """A flat picture (one colour and a small square): nothing for a picture hash to read."""
    rng = np.random.default_rng(i)
    arr = np.empty((96, 96, 3), np.uint8)
    arr[:] = rng.integers(0, 255, 3)
    arr[40:56, 40:56] = rng.integers(0, 255, 3)
    return Image.fromarray(arr, "RGB")


def test_a_model_that_cannot_tell_copies_apart_groups_exact_copies_only() -> None:
    """A weak model puts every picture at 0.96 from every other and flat pictures hash alike:
    no thresholds reach the precision, so only exact copies are grouped, and the reason says so."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=64)

    def weak(images: Sequence[Image.Image]) -> np.ndarray:
        v = base + 0.2 * rng.normal(size=(len(images), 64))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    limits = measure([_flat(i) for i in range(30)], weak, dhash)
    assert limits.mode == "exact-only" and not limits.near_allowed
    assert "cannot tell copies from different pictures" in limits.reason
    assert "only exact copies" in limits.reason


def test_the_job_measures_on_the_library_and_groups_no_different_pictures(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The demo's complaint: fifteen different flat pictures grouped as "the same picture" under
    the fixed thresholds. The job measures this library with its model first: the different
    pictures stay apart, the exact copy is grouped, and the page says how the line was drawn."""
    photos = tmp_path / "flat"
    photos.mkdir()
    for i in range(MIN_SAMPLE + 6):
        _flat(i).save(photos / f"flat{i:02d}.png")
    (photos / "flat00-copy.png").write_bytes((photos / "flat00.png").read_bytes())
    env = Env(tmp_path / "data", tiny_model_dir, None)
    try:
        env.ingest(photos)
        job = duplicate_jobs.submit(env.lib)
        duplicate_jobs.run_duplicates(env.ctx, job.id)
        assert env.lib.get_job(job.id).state == "done"
        page = duplicates.page(env.lib, "duplicates", limit=50)
        groups = [(g.kind, sorted(Path(m.image.path).name for m in g.members)) for g in page.items]
        assert groups == [("exact", ["flat00-copy.png", "flat00.png"])]
        assert page.thresholds["mode"] in ("measured", "exact-only")
        assert page.thresholds["sample"] >= MIN_SAMPLE and page.thresholds["reason"]
        assert page.thresholds["model_id"] is not None

        # The next scan keeps the measurement (same model, same size): nothing is re-measured.
        again = duplicate_jobs.submit(env.lib)
        result = duplicate_jobs.run_duplicates(env.ctx, again.id)
        assert result is not None and not result.full
        assert "limits" not in (env.lib.get_job(again.id).params or {})
    finally:
        env.close()


@pytest.mark.parametrize("kind", ["re-encoded q60", "resized 50 %", "5 % crop", "+10 % brightness"])
def test_each_copy_kind_is_a_copy_of_the_picture(kind: str) -> None:
    """What the measurement calls a copy is the picture (same hash within a few bits)."""
    im = as_thumbnail(_scene(7))
    copy = as_thumbnail(copies_of(im)[kind])
    assert hash_distance(dhash(im), dhash(copy)) <= 12
    assert float(_pixels([im])[0] @ _pixels([copy])[0]) > 0.9


def test_the_job_groups_a_cropped_copy_and_not_a_burst_frame(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """On a library of photo-like scenes, a copy cropped by 5 % on each side is listed as the same
    picture as its original, and the next frame of a burst (the scene moved by 6 %) is not: the
    job's measured pixel match of the two thumbnails tells them apart."""
    import random

    photos = tmp_path / "scenes"
    photos.mkdir()
    for seed in range(MIN_SAMPLE + 8):
        _scene(seed).save(photos / f"s{seed:02d}.jpg", quality=92)
    original = _scene(0)
    copies_of(original)["5 % crop"].save(photos / "s00-crop.jpg", quality=92)
    next_shot(_scene(1), random.Random(0)).save(photos / "s01-next.jpg", quality=92)
    env = Env(tmp_path / "data", tiny_model_dir, None)
    try:
        env.ingest(photos)
        job = duplicate_jobs.submit(env.lib)
        duplicate_jobs.run_duplicates(env.ctx, job.id)
        page = duplicates.page(env.lib, "duplicates", limit=50)
        groups = [(g.kind, sorted(Path(m.image.path).name for m in g.members)) for g in page.items]
        assert ("near", ["s00-crop.jpg", "s00.jpg"]) in groups, (groups, page.thresholds)
        assert all("s01-next.jpg" not in names for _, names in groups), groups
        assert len(groups) == 1, groups
        assert page.thresholds["mode"] == "measured" and page.thresholds["pixel_match"]
        assert "pixels" in str(page.thresholds["reason"])

        # A library measured before the pixel match was (an older measurement's version) is
        # measured again at the next scan, though its model and size are the same.
        with env.lib.Session() as session:
            row = session.get(Job, catalog.get_mark(session, "dups_limits_job"))
            assert row is not None
            row.params = {**row.params, "limits": {**row.params["limits"], "version": 1}}
            session.commit()
        again = duplicate_jobs.submit(env.lib)
        duplicate_jobs.run_duplicates(env.ctx, again.id)
        assert "limits" in (env.lib.get_job(again.id).params or {})
        assert duplicates.page(env.lib, "duplicates").thresholds["version"] == MEASURE_VERSION
    finally:
        env.close()


def test_only_our_own_thumbnails_are_read_for_the_pixel_match(tmp_path: Path) -> None:
    """The job reads thumbnails by their catalog key: a key that leaves the folder, a missing file
    and a picture far larger than a thumbnail give no pixel match (never decoded); a thumbnail
    matches its own 5 % crop."""
    (tmp_path / "ab").mkdir()
    thumb = as_thumbnail(_scene(3))
    thumb.save(tmp_path / "ab" / "own.jpg", quality=85)
    as_thumbnail(copies_of(thumb)["5 % crop"]).save(tmp_path / "ab" / "crop.jpg", quality=85)
    Image.new("RGB", (2000, 2000)).save(tmp_path / "ab" / "huge.png")
    (tmp_path / "outside.jpg").write_bytes((tmp_path / "ab" / "own.jpg").read_bytes())
    for key in ("../outside.jpg", "ab/../outside.jpg", "ab/missing.jpg", "ab/huge.png", None):
        assert open_grey(tmp_path, key) is None, key
    cache = GreyCache(tmp_path, size=1)
    [match] = cache.matches([("ab/own.jpg", "ab/crop.jpg")])
    assert match is not None and match > 0.98
    assert cache.matches([("ab/own.jpg", "ab/huge.png")]) == [None]
