"""Folder scanning: content sniffing, hidden/system folders, symlink loops, odd names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from indexer_testfiles import write_image  # type: ignore[import-not-found]

from clipsearch.indexer.errors import IngestError, PathNotAllowed
from clipsearch.indexer.scan import check_path_allowed, scan_folder
from clipsearch.indexer.types import ScanProblem


def test_images_are_recognised_by_content_not_name(tmp_path: Path) -> None:
    for i, fmt in enumerate(["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]):
        write_image(tmp_path / f"picture{i}.data", seed=i, fmt=fmt)  # misleading extension
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "archive.bin").write_bytes(os.urandom(100))
    found = {Path(f.path).name: f.kind for f in scan_folder(tmp_path)}
    assert found == {
        "picture0.data": "jpeg",
        "picture1.data": "png",
        "picture2.data": "webp",
        "picture3.data": "gif",
        "picture4.data": "bmp",
        "picture5.data": "tiff",
    }


def test_files_named_like_images_are_listed_even_when_broken(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("text")
    found = {Path(f.path).name: f.kind for f in scan_folder(tmp_path)}
    assert found == {"empty.jpg": "empty", "notes.png": "unknown"}


def test_hidden_and_system_folders_are_skipped(tmp_path: Path) -> None:
    for folder in [
        ".hidden",
        "@eaDir",
        "$RECYCLE.BIN",
        "System Volume Information",
        ".Trash-1000",
        "lost+found",
        "keep/deeper",
    ]:
        (tmp_path / folder).mkdir(parents=True)
        write_image(tmp_path / folder / "x.jpg")
    write_image(tmp_path / ".dotfile.jpg")
    found = sorted(os.path.relpath(f.path, tmp_path) for f in scan_folder(tmp_path))
    assert found == ["keep/deeper/x.jpg"]


def test_symlink_loops_end_and_each_folder_is_visited_once(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    write_image(tmp_path / "a" / "b" / "x.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a/b/loop -> a
    os.symlink(tmp_path, tmp_path / "a" / "up")  # a/up -> root
    found = [os.path.relpath(f.path, tmp_path) for f in scan_folder(tmp_path)]
    assert found == ["a/b/x.jpg"]


def test_non_recursive_scan_stays_in_the_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "top.jpg")
    (tmp_path / "sub").mkdir()
    write_image(tmp_path / "sub" / "below.jpg")
    assert [Path(f.path).name for f in scan_folder(tmp_path, recursive=False)] == ["top.jpg"]


def test_odd_and_non_utf8_names_are_found_and_openable(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    names = [
        b"latin1-\xe9t\xe9.jpg",
        "caf\u00e9 \u2603 \U0001f4f7.jpg".encode(),
        b"new\nline.jpg",
        b"back\\slash.jpg",
    ]
    for i, name in enumerate(names):
        write_image(root + b"/" + name, seed=i)
    found = list(scan_folder(tmp_path))
    assert sorted(os.fsencode(Path(f.path).name) for f in found) == sorted(names)
    for f in found:
        with open(f.path, "rb") as fh:
            assert fh.read(3) == b"\xff\xd8\xff"


def test_unreadable_entries_are_reported_and_the_walk_goes_on(tmp_path: Path) -> None:
    write_image(tmp_path / "good.jpg")
    os.symlink(tmp_path / "missing.jpg", tmp_path / "dangling.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it for reading would block a naive scanner
    problems: list[ScanProblem] = []
    found = [Path(f.path).name for f in scan_folder(tmp_path, on_problem=problems)]
    assert found == ["good.jpg"]
    assert [Path(p.path).name for p in problems] == ["dangling.jpg"]
    assert "broken symbolic link" in problems[0].reason


def test_missing_root_or_a_file_as_root_is_an_ingest_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="folder not found"):
        list(scan_folder(tmp_path / "nope"))
    write_image(tmp_path / "f.jpg")
    with pytest.raises(IngestError, match="not a folder"):
        list(scan_folder(tmp_path / "f.jpg"))
    with pytest.raises(IngestError, match="NUL"):
        list(scan_folder(str(tmp_path) + "\x00"))


def test_paths_outside_the_allowed_folders_are_refused(tmp_path: Path) -> None:
    allowed = tmp_path / "photos"
    (allowed / "2024").mkdir(parents=True)
    os.symlink("/etc", allowed / "escape")
    assert check_path_allowed(allowed / "2024", [allowed]) == str(allowed / "2024")
    assert check_path_allowed("/etc", None) == "/etc"
    for hostile in [
        "/etc",
        str(allowed / ".." / "other"),
        str(allowed / "escape"),
        str(tmp_path / "photos-evil"),
    ]:
        with pytest.raises(PathNotAllowed, match="outside the folders"):
            check_path_allowed(hostile, [allowed])
    with pytest.raises(PathNotAllowed, match="NUL"):
        check_path_allowed(str(allowed) + "\x00/x", [allowed])
