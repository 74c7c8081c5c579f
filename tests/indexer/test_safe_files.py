"""Request-time and decode-time file checks (indexer.safe_files, decode_file's roots/expect):
a file swapped for a symbolic link, or changed, after it was scanned is never read."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from PIL import Image

from clipsearch.indexer import safe_files
from clipsearch.indexer.decode import decode_file
from clipsearch.indexer.decode_pool import decode_many


def _jpeg(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (40, 30), colour).save(path, "JPEG")
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "photos"
    (root / "album").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    return {
        "root": root,
        "photo": _jpeg(root / "album" / "a.jpg", (200, 10, 10)),
        "secret": _jpeg(outside / "private.jpg", (1, 2, 3)),
        "outside": outside,
        "thumbs": tmp_path / "thumbs",
    }


def test_open_confined_serves_links_inside_and_refuses_links_out(tree: dict[str, Path]) -> None:
    root = tree["root"]
    os.symlink("album/a.jpg", root / "alias.jpg")  # inside the root: fine
    with safe_files.open_confined(root / "alias.jpg", [root]) as opened:
        assert opened.real_path == str(tree["photo"])
        assert safe_files.media_type(opened, "JPEG") == "image/jpeg"
        assert safe_files.media_type(opened, "PNG") is None  # the catalog and the bytes disagree
    os.symlink(tree["secret"], root / "out.jpg")
    with pytest.raises(safe_files.UnsafeFile) as info:
        safe_files.open_confined(root / "out.jpg", [root])
    assert info.value.outside and info.value.rescan
    assert str(tree["outside"]) not in str(info.value)


def test_open_nofollow_refuses_a_component_swapped_for_a_link(tree: dict[str, Path]) -> None:
    album = tree["root"] / "album"
    real = os.path.realpath(tree["photo"])  # resolved before the swap, as open_confined does
    os.rename(album, tree["root"] / "album.old")
    os.symlink(tree["outside"], album)
    with pytest.raises(OSError) as info:
        safe_files.open_nofollow(real)
    assert info.value.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT)


def test_matches_catalog_by_size_and_mtime_else_sha256(tree: dict[str, Path]) -> None:
    import hashlib

    photo = tree["photo"]
    st = photo.stat()
    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    with safe_files.open_confined(photo, [tree["root"]]) as opened:
        assert safe_files.matches_catalog(opened, st.st_size, st.st_mtime_ns, None)
        assert safe_files.matches_catalog(opened, st.st_size, 1, sha)  # touched: same content
        assert not safe_files.matches_catalog(opened, st.st_size, 1, "0" * 64)
        assert not safe_files.matches_catalog(opened, st.st_size + 1, st.st_mtime_ns, sha)


def test_decoder_refuses_a_link_out_swapped_in_after_the_scan(tree: dict[str, Path]) -> None:
    photo = tree["photo"]
    st = photo.stat()
    scanned = (st.st_size, st.st_mtime_ns)
    # between the scan and the decode, the photo becomes a link to an image outside the roots,
    # even one forged to the scanned size and mtime
    os.unlink(photo)
    os.symlink(tree["secret"], photo)
    result = decode_file(photo, 32, tree["thumbs"], roots=[str(tree["root"])], expect=scanned)
    assert not result.ok and "outside the folders" in (result.reason or "")
    assert not tree["thumbs"].exists() or not any(tree["thumbs"].rglob("*.jpg"))


def test_decoder_refuses_a_file_changed_since_the_scan(tree: dict[str, Path]) -> None:
    photo = tree["photo"]
    st = photo.stat()
    _jpeg(photo, (10, 200, 10))  # rewritten after the scan
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    [result] = decode_many([photo], 32, tree["thumbs"], expect=[(st.st_size, st.st_mtime_ns)])
    assert not result.ok and result.problem == "changed"
    assert result.path == str(photo)
    assert "ingest the folder again" in (result.reason or "")
    # the same file with what it is now: decoded
    now = photo.stat()
    [ok] = decode_many([photo], 32, tree["thumbs"], expect=[(now.st_size, now.st_mtime_ns)])
    assert ok.ok, ok.reason
