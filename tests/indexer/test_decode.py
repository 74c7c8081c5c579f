"""Decoding: pixels, metadata, thumbnails, and a reason for every kind of bad file."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from indexer_testfiles import bad_corpus, make_exif, write_image  # type: ignore[import-not-found]
from PIL import Image

from clipsearch.indexer import decode
from clipsearch.indexer.decode import decode_file
from clipsearch.indexer.decode_pool import DecodePool, decode_many
from clipsearch.model.preprocess import Preprocess

R = 32


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_format_decodes_to_model_pixels_and_a_thumbnail(tmp_path: Path, fmt: str) -> None:
    src = write_image(tmp_path / f"img.{fmt.lower()}", seed=3, fmt=fmt, size=(300, 200))
    r = decode_file(src, R, tmp_path / "thumbs")
    assert r.ok, r.reason
    assert r.format == fmt
    assert (r.width, r.height) == (300, 200)
    assert r.sha256 == hashlib.sha256(Path(src).read_bytes()).hexdigest()
    assert r.pixels is not None and r.pixels.shape == (3, R, R) and r.pixels.dtype == np.float32
    expected = Preprocess(R)(Image.open(src).convert("RGB")).numpy()
    assert np.abs(r.pixels - expected).max() < 0.05  # same transform as the model's preprocess
    with Image.open(tmp_path / "thumbs" / r.thumbnail) as thumb:
        assert thumb.size == (256, 171)


def test_exif_orientation_is_honoured_and_capture_time_read(tmp_path: Path) -> None:
    # Stored landscape, left half dark; orientation 6 = rotate 90° clockwise to display.
    arr = np.full((200, 400, 3), 230, np.uint8)
    arr[:, :200] = 20
    src = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(src, exif=make_exif(orientation=6, taken="2019:07:14 18:30:05"))
    r = decode_file(src, R, tmp_path / "thumbs")
    assert r.ok, r.reason
    assert (r.width, r.height) == (200, 400)  # as displayed: portrait
    assert r.taken_at is not None and r.taken_at.isoformat() == "2019-07-14T18:30:05"
    with Image.open(tmp_path / "thumbs" / r.thumbnail) as thumb:
        assert thumb.size == (128, 256)
        g = np.asarray(thumb.convert("L"), dtype=np.float32)
    assert g[:100].mean() < 60 and g[-100:].mean() > 190  # the dark half is now on top


def test_no_exif_means_no_capture_time(tmp_path: Path) -> None:
    r = decode_file(write_image(tmp_path / "plain.png", fmt="PNG"), R, None)
    assert r.ok and r.taken_at is None and r.thumbnail is None


def test_transparency_is_flattened_onto_white(tmp_path: Path) -> None:
    src = tmp_path / "clear.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(src)
    r = decode_file(src, R, tmp_path / "t")
    with Image.open(tmp_path / "t" / r.thumbnail) as thumb:
        assert np.asarray(thumb).min() > 240


def test_bad_files_fail_with_reasons_a_user_understands(tmp_path: Path) -> None:
    expected = bad_corpus(tmp_path / "bad")
    words = {
        "empty": "empty file",
        "truncated": "truncated",
        "not_image": "not an image",
        "too_many_pixels": "too many pixels",
    }
    for name, problem in expected.items():
        r = decode_file(tmp_path / "bad" / name, R, tmp_path / "thumbs")
        assert not r.ok and r.pixels is None, name
        assert r.problem == problem, (name, r.reason)
        assert words[problem] in (r.reason or ""), (name, r.reason)
    dangling = decode_file(tmp_path / "bad" / "dangling.jpg", R, tmp_path / "thumbs")
    assert dangling.problem == "unreadable" and "broken symbolic link" in (dangling.reason or "")
    os.mkfifo(tmp_path / "pipe.jpg")
    fifo = decode_file(tmp_path / "pipe.jpg", R, None)  # must not block
    assert fifo.problem == "unreadable" and "not a regular file" in (fifo.reason or "")
    assert decode_file(str(tmp_path) + "/x\x00.jpg", R, None).problem == "unreadable"
    assert not (tmp_path / "thumbs").exists() or not any((tmp_path / "thumbs").rglob("*.jpg"))


def test_header_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    src = write_image(tmp_path / "big.png", fmt="PNG", size=(400, 300))
    r = decode_file(src, R, None, max_pixels=100_000)
    assert r.problem == "too_many_pixels" and "400x300" in (r.reason or "")


def test_thumbnails_are_written_once_per_content(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.jpg", seed=5)
    b = tmp_path / "copy.jpg"
    b.write_bytes(Path(a).read_bytes())
    ra = decode_file(a, R, tmp_path / "thumbs")
    target = tmp_path / "thumbs" / ra.thumbnail
    first = target.stat().st_mtime_ns
    os.utime(target, ns=(1, 1))
    rb = decode_file(b, R, tmp_path / "thumbs")
    assert rb.thumbnail == ra.thumbnail == f"{ra.sha256[:2]}/{ra.sha256}.jpg"
    assert target.stat().st_mtime_ns == 1 != first  # not rewritten
    assert [p.name for p in (tmp_path / "thumbs").rglob("*") if p.is_file()] == [target.name]
    target.write_bytes(b"")  # a crash left an empty file behind: it is written again
    decode_file(b, R, tmp_path / "thumbs")
    with Image.open(target) as thumb:
        assert thumb.size == (64, 48)


def test_disk_full_while_writing_a_thumbnail_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_image(tmp_path / "a.jpg")

    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd: int, mode: str) -> None:
            self.fh = real_fdopen(fd, mode)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(decode.os, "fdopen", FullDisk)
    r = decode_file(src, R, tmp_path / "thumbs")
    assert r.problem == "disk_full" and "disk full" in (r.reason or "")
    assert [p for p in (tmp_path / "thumbs").rglob("*") if p.is_file()] == []  # no partial file


def test_draft_decoding_stays_close_to_exact(tmp_path: Path) -> None:
    src = write_image(tmp_path / "big.jpg", seed=8, size=(1600, 1200), quality=92)
    fast = decode_file(src, R, None, draft=True)
    exact = decode_file(src, R, None, draft=False)
    assert (
        fast.ok
        and exact.ok
        and (fast.width, fast.height) == (exact.width, exact.height) == (1600, 1200)
    )
    assert np.abs(fast.pixels - exact.pixels).mean() < 0.05  # type: ignore[operator]


def test_process_pool_keeps_order_and_isolates_failures(tmp_path: Path) -> None:
    paths = []
    for i in range(6):
        paths.append(write_image(tmp_path / f"{i}.jpg", seed=i))
        if i == 2:
            bad = tmp_path / "bad.jpg"
            bad.write_text("nope")
            paths.append(bad)
    with DecodePool(2, kind="process") as pool:
        assert pool.kind == "process"
        results = decode_many(paths, R, tmp_path / "thumbs", pool=pool)
        again = decode_many(paths[:2], R, tmp_path / "thumbs", pool=pool)
    assert [Path(r.path).name for r in results] == [Path(p).name for p in paths]
    assert [r.ok for r in results] == [True, True, True, False, True, True, True]
    assert [r.sha256 for r in again] == [r.sha256 for r in results[:2]]
    inline = decode_many(paths, R, None, workers=1)
    for a, b in zip(results, inline, strict=True):
        assert a.ok == b.ok and a.sha256 == b.sha256
        if a.ok:
            np.testing.assert_allclose(a.pixels, b.pixels)


def test_avif_is_found_and_decoded_when_pillow_reads_it(tmp_path: Path) -> None:
    from PIL import features

    from clipsearch.indexer.scan import AVIF_SUPPORTED, scan_folder

    if not features.check("avif"):
        pytest.fail("this Pillow build lacks AVIF; the test environment should have it")
    write_image(tmp_path / "photo.avif", seed=4, fmt="AVIF", size=(80, 60))
    assert AVIF_SUPPORTED
    assert [f.kind for f in scan_folder(tmp_path)] == ["avif"]
    r = decode_file(tmp_path / "photo.avif", R, tmp_path / "thumbs")
    assert r.ok and (r.format, r.width, r.height) == ("AVIF", 80, 60)
