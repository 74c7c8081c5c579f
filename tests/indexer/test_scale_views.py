"""The per-page and per-poll queries of a watched folder's problems, of what a viewer sees (tag
counts and pages, albums and their pages, duplicate groups, the ids a search may return, the
health counts) and of the tag and album pages read through indexes at a library's size: the plan
check of test_scale (EXPLAIN on SQLite and PostgreSQL, never a scan of a table that grows with
the library) over 20,000 pictures in 50 folders, a viewer sharing one of them (2%).

Each folder condition is an index range where text sorts by code point (catalog.under_folder,
``ranged``); without it (as on a PostgreSQL database with a language collation) the same calls
must give the same answers, and the check must report their scans: so this size is one at which
both planners do scan without the indexes and ranges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from test_scale import BIG, captured, plan_problems

from clipsearch.indexer import (
    album_views,
    albums,
    catalog,
    duplicates,
    ingest_problems,
    sharing,
    vector_store,
)
from clipsearch.indexer import tags as tag_domain
from clipsearch.indexer.catalog import Image
from clipsearch.indexer.ingest_problems import FileProblem
from clipsearch.indexer.library import Library, LibraryConfig

N = 20_000
FOLDERS = 50  # /lib/a0 .. /lib/a49, each with 4 sub-folders
SHARED = "/lib/a7"  # the viewer's folder: 400 pictures
SIBLING = "/lib/a7-old"  # sorts inside the shared folder's range, but is not under it
# what grows with the library, besides test_scale's tables
TABLES = BIG | {"tag_assignments", "duplicate_members", "duplicate_groups", "file_problems"}
MAX_ROWS = 1500  # rows a call may read from one of them (the viewer's folder has 400 pictures)
# ... but the root's count of its problems reads them all (6,305 links and 2,865 failed
# pictures): PostgreSQL's bound for those calls (a scan of the 20,040 pictures is still caught;
# a scan of the links, by SQLite's check)
MAX_ROWS_ROOT = 9500


def _failed(i: int) -> bool:
    """One picture in 7 could not be read: 2,857, too many to read for a page of a folder's."""
    return i % 7 == 5


def _folder(i: int) -> str:
    return f"/lib/a{i % FOLDERS}/f{(i // FOLDERS) % 4}"


def _seed(lib: Library) -> dict[str, int]:
    now = catalog.utcnow()
    rows = [
        {"path": f"{_folder(i)}/p{i}.jpg", "folder": _folder(i), "size": 1000 + i,
         "mtime_ns": 1, "sha256": f"{i:064x}", "state": "failed" if _failed(i) else "ready",
         "error": "not a picture" if _failed(i) else None, "created_at": now, "updated_at": now}
        for i in range(N)
    ] + [
        {"path": f"{SIBLING}/q{j}.jpg", "folder": SIBLING, "size": 1, "mtime_ns": 1,
         "sha256": f"{N + j:064x}", "state": "failed" if j % 5 == 0 else "ready",
         "error": None, "created_at": now, "updated_at": now}
        for j in range(40)
    ]  # fmt: skip
    with lib.Session() as s:
        for start in range(0, len(rows), 2000):
            s.execute(sa.insert(Image), rows[start : start + 2000])
            # a commit per chunk: the triggers update one counts row per image, and PostgreSQL
            # walks that row's versions from the transaction's start on every update
            s.commit()
        ids = {p: i for p, i in s.execute(sa.select(Image.path, Image.id))}
        n_ids = [ids[r["path"]] for r in rows]
        tag_domain.ensure_vocabulary(s)
        tag_ids = list(s.scalars(sa.select(tag_domain.Tag.id).order_by(tag_domain.Tag.id)))
        s.execute(
            sa.insert(tag_domain.TagAssignment),
            [{"tag_id": tag_ids[k % len(tag_ids)], "image_id": i, "score": 0.3, "state": "auto",
              "updated_at": now} for k, i in enumerate(n_ids)],
        )  # fmt: skip
        big = albums.create_album(s, "big")
        s.execute(
            sa.insert(albums.AlbumMember),
            [{"album_id": big.id, "image_id": i,
              "state": "excluded" if k % 30 == 1 else "pinned", "score": None, "updated_at": now}
             for k, i in enumerate(n_ids) if k % 3 == 0],
        )  # fmt: skip
        for a in range(20):
            small = albums.create_album(s, f"small{a}")
            s.execute(
                sa.insert(albums.AlbumMember),
                [{"album_id": small.id, "image_id": i, "state": "pinned", "score": None,
                  "updated_at": now} for i in n_ids[a::97]],
            )  # fmt: skip
        # exact pairs inside each folder (i and i + FOLDERS share a folder)
        s.execute(
            sa.insert(duplicates.DuplicatePair),
            [{"a_id": n_ids[i], "b_id": n_ids[i + FOLDERS], "kind": "exact", "similarity": 1.0}
             for i in range(0, N - FOLDERS) if (i // FOLDERS) % 2 == 0],
        )  # fmt: skip
        duplicates._regroup(s)
        # entries scans could not take: 300 in the shared folder, 6,000 in the others
        others = [a for a in range(FOLDERS) if f"/lib/a{a}" != SHARED]
        problems = (
            [(f"{SHARED}/f{j % 4}", j) for j in range(300)]
            + [(f"/lib/a{others[j % len(others)]}/f{j % 4}", j) for j in range(300, 6300)]
            + [(SIBLING, j) for j in range(6300, 6305)]
        )
        s.execute(
            sa.insert(FileProblem),
            [{"path": f"{folder}/link{j}.jpg", "folder": folder, "reason": "a link out",
              "size": 1, "mtime_ns": 1, "job_id": None, "reported_at": now}
             for folder, j in problems],
        )  # fmt: skip
        root = catalog.WatchedFolder(path="/lib", recursive=True)
        shared = catalog.WatchedFolder(path=SHARED, recursive=True)
        s.add_all([root, shared])
        s.commit()
        folder_ids = {"root": int(root.id), "shared": int(shared.id)}
    with lib.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return folder_ids


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def library(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path
) -> Iterator[tuple[Library, dict[str, int]]]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    lib = Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            database_url=url,
            model_spec=str(tiny_model_dir),
            device="cpu",
            refresh_interval_s=3600,
        )
    )
    try:
        yield lib, _seed(lib)
    finally:
        lib.close()


def _calls(lib: Library, folders: dict[str, int]) -> dict[str, Callable[[Session], Any]]:
    """What a request runs, by name: each returns what the caller is shown."""
    seen = sharing.Visibility(False, (SHARED,))
    problems = lib.watched_folder_problems

    def second_page(folder: int) -> Any:
        return problems(folder, 50, problems(folder, 50).next_after)

    return {
        "problems of a folder": lambda s: problems(folders["shared"], 100),
        "problems of a folder, next page": lambda s: second_page(folders["shared"]),
        "problems of the library's root": lambda s: problems(folders["root"], 100),
        "problems of the library's root, next page": lambda s: second_page(folders["root"]),
        "tags (viewer)": lambda s: tag_domain.list_tags(s, seen),
        "a tag (viewer)": lambda s: tag_domain.get_tag(s, "food", seen),
        "a tag's page (viewer)": lambda s: tag_domain.images_page(s, "food", None, 50, seen),
        "a tag's deep page": lambda s: tag_domain.images_page(s, "food", 15_000, 50),
        "albums (viewer)": lambda s: album_views.list_albums(s, seen),
        "an album's page (viewer)": lambda s: album_views.members_page(
            s, "big", None, 50, False, seen
        ),
        "an album's excluded (viewer)": lambda s: album_views.members_page(
            s, "big", None, 50, True, seen
        ),
        "an album's deep page": lambda s: albums.members_page(s, "big", 15_000, 50),
        "duplicate groups (viewer)": lambda s: duplicates.list_groups(
            s, "duplicates", None, 20, seen
        ),
        "duplicate groups, deep page": lambda s: duplicates.list_groups(s, "duplicates", 15_000),
        "ids a search may return (viewer)": lambda s: sharing.visible_ids(s, seen).tolist(),
        "health counts (viewer)": lambda s: [
            vector_store.count_under(s, (SHARED,), st) for st in ("ready", "failed", None)
        ],
    }


def _run(lib: Library, folders: dict[str, int]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    shown: dict[str, Any] = {}
    scans: dict[str, list[str]] = {}
    for name, call in _calls(lib, folders).items():
        with lib.Session() as s, captured(lib.engine) as stmts:
            shown[name] = call(s)
        bound = MAX_ROWS_ROOT if "root" in name else MAX_ROWS
        scans[name] = plan_problems(lib.engine, stmts, bound, TABLES)
    return shown, scans


def test_folder_problems_and_a_viewers_pages_and_counts_read_indexes(
    library: tuple[Library, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both checks on one seeded library per backend (seeding is most of the test's time):
    the plans read indexes and show what was seeded; then, as on a catalog whose text does not
    sort by code point, the conditions without their index ranges: the answers do not change
    and the plan check reports the scans (the check has the power to fail here)."""
    lib, folders = library
    shown, scans = _run(lib, folders)
    assert {name: found for name, found in scans.items() if found} == {}
    _shown_is_what_was_seeded(shown)
    _without_ranges_same_answers_and_scans_caught(lib, folders, shown, monkeypatch)


def _shown_is_what_was_seeded(shown: dict[str, Any]) -> None:
    # what is shown is what was seeded: the shared folder's 300 links and 4 failed pictures,
    # none of its sibling's; the pages follow each other by path
    page = shown["problems of a folder"]
    failed_shared = sum(1 for i in range(N) if _failed(i) and f"/lib/a{i % FOLDERS}" == SHARED)
    assert page.total == 300 + failed_shared
    assert all(p.path.startswith(SHARED + "/") for p in page.items)
    paths = [p.path for p in page.items]
    assert paths == sorted(paths) and len(paths) == 100
    assert page.next_after == paths[-1][len(SHARED) + 1 :]
    assert [p.path for p in shown["problems of a folder, next page"].items] == paths[50:]
    root = shown["problems of the library's root"]
    assert root.total == 6305 + sum(1 for i in range(N) if _failed(i)) + 8
    counts = shown["health counts (viewer)"]
    assert counts == [N // FOLDERS - failed_shared, failed_shared, N // FOLDERS]
    visible = shown["ids a search may return (viewer)"]
    assert len(visible) == counts[0]
    food = shown["a tag (viewer)"]
    items, _ = shown["a tag's page (viewer)"]
    assert 0 < food.assigned < N // FOLDERS and len(items) == min(50, food.assigned)
    assert all(i.image.folder.startswith(SHARED + "/") for i in items)
    groups, _ = shown["duplicate groups (viewer)"]
    assert groups and all(
        m.image.folder.startswith(SHARED + "/") for g in groups for m in g.members
    )


def _without_ranges_same_answers_and_scans_caught(
    lib: Library,
    folders: dict[str, int],
    ranged: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(catalog, "bytewise_text", lambda _s: False)
    monkeypatch.setattr(ingest_problems, "bytewise_text", lambda _s: False)
    plain, scans = _run(lib, folders)
    assert _plain(plain) == _plain(ranged)
    caught = {name for name, found in scans.items() if found}
    assert caught >= {"problems of a folder", "health counts (viewer)"}
    if lib.engine.dialect.name == "postgresql":  # SQLite reads these through other indexes
        assert caught >= {
            "tags (viewer)",
            "a tag's page (viewer)",
            "albums (viewer)",
            "an album's page (viewer)",
            "duplicate groups (viewer)",
            "ids a search may return (viewer)",
        }


def _plain(value: Any) -> Any:
    """Results as comparable data (dataclasses as dicts, numbers as they are)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
