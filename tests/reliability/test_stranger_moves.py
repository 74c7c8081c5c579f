"""Issue 22, item 1: removing a file to the trash and restoring it cannot be redirected by a folder
swapped for a symbolic link, on real files with a real swapping process.

A child process swaps ``photos/album`` (a folder) with a link to ``outside/album`` (a folder of
files with the same names) as fast as it can, while the library removes images from disk and
restores them. Whatever the interleaving: no file outside the allowed roots is moved, replaced or
created, every photo ends up back in its folder with its content, and a refused move says why and
changes nothing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "indexer") not in sys.path:
    sys.path.append(str(REPO / "tests" / "indexer"))

from workerutil import Env, make_images  # noqa: E402

from clipsearch.indexer import file_moves  # noqa: E402
from clipsearch.indexer.errors import Conflict, IndexerError  # noqa: E402
from clipsearch.indexer.tasks import run_embed_batch, run_ingest  # noqa: E402

pytestmark = pytest.mark.slow

MIN_SWAPS = 2000


def _swapper(album: str, outside_album: str, stop: Any, swaps: Any, pace: float) -> None:
    """Swap ``album`` (a folder) with a link to ``outside_album`` until ``stop`` is set."""
    hidden = album + ".real"
    while not stop.is_set():
        try:
            os.rename(album, hidden)
            os.symlink(outside_album, album)
            time.sleep(pace * random.random())
            os.unlink(album)
            os.rename(hidden, album)
        except OSError:
            pass
        with swaps.get_lock():
            swaps.value += 1
        time.sleep(pace * random.random())
    with contextlib.suppress(OSError):  # leave the folder in place
        if os.path.islink(album):
            os.unlink(album)
        if os.path.isdir(hidden) and not os.path.lexists(album):
            os.rename(hidden, album)


@contextlib.contextmanager
def swapping(album: Path, outside_album: Path, pace: float = 0.0) -> Iterator[Any]:
    """A child process swapping ``album`` for a link; yields its swap counter once it swaps."""
    ctx = multiprocessing.get_context("spawn")
    stop, swaps = ctx.Event(), ctx.Value("q", 0)
    proc = ctx.Process(target=_swapper, args=(str(album), str(outside_album), stop, swaps, pace))
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while swaps.value < 10 and proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the child's counter, with a deadline
        assert swaps.value >= 10, "the swapping process did not start"
        yield swaps
    finally:
        stop.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert album.is_dir() and not album.is_symlink()


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int, bytes]]:
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            p.read_bytes() if p.is_file() else b"",
        )
    return out


def _outside(tmp_path: Path, names: list[str]) -> Path:
    outside = tmp_path / "outside" / "album"
    outside.mkdir(parents=True)
    for name in names:  # same names as the photos: a redirected move would take or clobber them
        (outside / name).write_bytes(b"not yours: " + name.encode())
    (outside / "keep-out.txt").write_bytes(b"secret")
    return outside


def test_move_primitive_races_thousands_of_folder_link_swaps(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    album = photos / "album"
    album.mkdir(parents=True)
    trash = tmp_path / "data" / "trash"
    names = [f"p{i:02d}.jpg" for i in range(8)]
    for name in names:
        (album / name).write_bytes(b"photo " + name.encode())
    outside = _outside(tmp_path, names)
    before = _snapshot(outside.parent)
    where = dict.fromkeys(names, "album")
    refused: dict[str, int] = {}
    moves = 0
    with swapping(album, outside) as count:
        i = 0
        while i < 4000 or count.value < MIN_SWAPS:
            i += 1
            name = names[i % len(names)]
            try:
                if where[name] == "album":
                    file_moves.move_confined(
                        album / name,
                        [photos],
                        trash / str(i % len(names)) / name,
                        [trash],
                        create_target_folder=trash,
                    )
                    where[name] = "trash"
                else:
                    file_moves.move_confined(
                        trash / str(i % len(names)) / name, [trash], album / name, [photos]
                    )
                    where[name] = "album"
                moves += 1
            except file_moves.MoveRefused as exc:
                assert "nothing was moved" in str(exc)
                refused[exc.reason] = refused.get(exc.reason, 0) + 1
    swaps = count.value
    assert _snapshot(outside.parent) == before, "a file outside the allowed roots was touched"
    for name in names:  # every photo is exactly where the last successful move put it
        here = album / name if where[name] == "album" else trash / str(names.index(name)) / name
        assert here.read_bytes() == b"photo " + name.encode()
    print(f"{swaps} swaps, {moves} moves, refused {refused}")
    assert swaps >= MIN_SWAPS and moves > 100 and refused


def test_move_refuses_links_existing_targets_and_other_files(tmp_path: Path) -> None:
    photos, trash = tmp_path / "photos", tmp_path / "trash"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"a")
    (tmp_path / "secret").write_bytes(b"s")
    (photos / "link.jpg").symlink_to(tmp_path / "secret")
    with pytest.raises(file_moves.MoveRefused) as info:
        file_moves.move_confined(
            photos / "link.jpg", [photos], trash / "x", [trash], create_target_folder=trash
        )
    assert info.value.reason == "changed" and isinstance(info.value, Conflict)
    st = (photos / "a.jpg").stat()
    with pytest.raises(file_moves.MoveRefused) as info:  # another file than the one checked
        file_moves.move_confined(
            photos / "a.jpg", [photos], trash / "a.jpg", [trash], expect=(st.st_dev, st.st_ino + 1)
        )
    assert info.value.reason == "changed"
    trash.mkdir(exist_ok=True)
    (trash / "a.jpg").write_bytes(b"taken")
    with pytest.raises(file_moves.MoveRefused) as info:  # never replaces
        file_moves.move_confined(photos / "a.jpg", [photos], trash / "a.jpg", [trash])
    assert info.value.reason == "exists" and (trash / "a.jpg").read_bytes() == b"taken"
    (photos / "sub").symlink_to(tmp_path)  # a folder that leads out of the roots
    with pytest.raises(file_moves.MoveRefused) as info:
        file_moves.move_confined(trash / "a.jpg", [trash], photos / "sub" / "b.jpg", [photos])
    assert info.value.reason == "outside" and not (tmp_path / "b.jpg").exists()
    moved = file_moves.move_confined(
        photos / "a.jpg",
        [photos],
        trash / "7" / "a.jpg",
        [trash],
        expect=(st.st_dev, st.st_ino),
        create_target_folder=trash,
    )
    assert (trash / "7" / "a.jpg").read_bytes() == b"a" and moved.ino == st.st_ino


def test_library_remove_and_restore_race_folder_link_swaps(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    photos = tmp_path / "photos"
    album = photos / "album"
    paths = make_images(album, 24, seed=7)
    content = {p.name: p.read_bytes() for p in paths}
    outside = _outside(tmp_path, list(content))
    before = _snapshot(outside.parent)
    env = Env(tmp_path / "data", tiny_model_dir, None)
    try:
        env.ingest(photos)
        ids = env.ids_by_name()
        removed: dict[str, int] = {}
        refusals: list[str] = []
        # each state held up to 2 ms: the library's check and its move land in different ones
        with swapping(album, outside, pace=0.002) as count:
            for name, image_id in ids.items():
                for _ in range(2000):
                    try:
                        removed[name] = env.lib.delete_image(image_id, from_disk=True).id
                        break
                    except IndexerError as exc:
                        refusals.append(str(exc))
            for removed_id in removed.values():
                for _ in range(2000):
                    try:
                        env.lib.restore(removed_id)
                        break
                    except IndexerError as exc:
                        refusals.append(str(exc))
        swaps = count.value
        assert _snapshot(outside.parent) == before, "a file outside the allowed roots was touched"
        reasons: dict[str, int] = {}
        for r in refusals:
            reasons[r.split(":")[-1][:90]] = reasons.get(r.split(":")[-1][:90], 0) + 1
        where = {
            "album": sorted(p.name for p in album.iterdir()),
            "trash": sorted(str(p) for p in env.lib.trash_dir.rglob("*.jpg")),
        }
        assert sorted(removed) == sorted(content), (reasons, where, sorted(removed))
        assert env.lib.list_removed() == [], reasons
        for name, data in content.items():
            assert (album / name).read_bytes() == data
        leftovers = [p for p in env.lib.trash_dir.rglob("*") if p.is_file()]
        assert leftovers == []
        print(f"{swaps} swaps, {len(refusals)} refusals")
        assert swaps >= 100
        # The restored folder ingests again (each restore queued its folder).
        job = env.lib.submit_ingest(str(photos))
        for batch in run_ingest(env.ctx, None, job.id):
            run_embed_batch(env.ctx, job.id, batch)
        assert sorted(env.ids_by_name()) == sorted(content)
    finally:
        env.close()


def test_a_move_across_file_systems_copies_by_descriptor_and_never_replaces(
    tmp_path: Path,
) -> None:
    """The trash on another file system than the photos (here /dev/shm, a tmpfs): the file is
    copied through descriptors with its times, then unlinked; moved back the same way."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to move across")
    import tempfile

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"photo" * 1000)
    os.utime(photos / "a.jpg", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    with tempfile.TemporaryDirectory(dir=shm) as other:
        trash = Path(other) / "trash"
        moved = file_moves.move_confined(
            photos / "a.jpg", [photos], trash / "1" / "a.jpg", [trash], create_target_folder=trash
        )
        assert moved.copied and not (photos / "a.jpg").exists()
        assert (trash / "1" / "a.jpg").read_bytes() == b"photo" * 1000
        assert (trash / "1" / "a.jpg").stat().st_mtime_ns == 1_600_000_000_000_000_000
        (photos / "a.jpg").write_bytes(b"someone else")
        with pytest.raises(file_moves.MoveRefused) as info:
            file_moves.move_confined(trash / "1" / "a.jpg", [trash], photos / "a.jpg", [photos])
        assert info.value.reason == "exists"
        assert (photos / "a.jpg").read_bytes() == b"someone else"
        (photos / "a.jpg").unlink()
        file_moves.move_confined(trash / "1" / "a.jpg", [trash], photos / "a.jpg", [photos])
        assert (photos / "a.jpg").read_bytes() == b"photo" * 1000
        assert not (trash / "1" / "a.jpg").exists()
