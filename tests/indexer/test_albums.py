"""Albums (indexer.albums, album_jobs): a smart album defined after ingestion holds the pictures
its query finds, a newly embedded matching picture joins it at once, a deleted one leaves it,
pinned and excluded pictures keep what a person chose through every computation, a page reads
keys only, and the exports hold the album's files.

The catalog's vectors are built by hand from known directions (test_tags' word model), so what
the right members are does not depend on the code under test.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from test_tags import DIM, WordModel, _add, _model_id, _pictures, _unit

from clipsearch.indexer import album_jobs, albums, catalog
from clipsearch.indexer.catalog import Image
from clipsearch.indexer.errors import Conflict, IndexerError, NotFound


class WordImageModel(WordModel):
    """The word model with an image tower for the relevance background: noise pictures point
    in directions no word names."""

    def embed_images(self, images: Any) -> np.ndarray:
        rng = np.random.default_rng(5)
        v = rng.normal(size=(len(images), DIM))
        v[:, :4] = 0
        return _unit(v)


Lib = tuple[sessionmaker[Session], list[int], list[str]]


@pytest.fixture()
def lib(sessions: sessionmaker[Session]) -> Lib:
    kinds, vecs = _pictures()
    return sessions, _add(sessions, vecs), kinds


def _members(Session_: sessionmaker[Session], name: str) -> set[int]:
    out: set[int] = set()
    after = None
    with Session_() as s:
        while True:
            items, after = albums.members_page(s, name, after, 37)
            out |= {i.image.id for i in items}
            if after is None:
                return out


def test_a_smart_album_holds_what_its_query_finds_and_keeps_people_s_choices(lib: Lib) -> None:
    Session_, ids, kinds = lib
    model, model_id = WordImageModel(), _model_id(Session_)
    dogs = {i for i, k in zip(ids, kinds, strict=True) if k == "dog"}
    query = albums.SavedQuery.from_json({"text": "dog", "min_relevance": 0.5})
    with Session_() as s:
        info = albums.create_album(s, "My dogs", query)
        assert info.kind == "smart" and info.size == 0 and info.computed_at is None
        with pytest.raises(Conflict):
            albums.create_album(s, "my  dogs".replace("my", "My"), None)
    run = album_jobs.refresh_albums(Session_, model, model_id)
    assert run.albums == 1 and run.images == len(ids)
    got = _members(Session_, "My dogs")
    assert len(got & dogs) >= 0.9 * len(dogs) and len(got - dogs) <= 0.05 * len(got), got

    cat = ids[kinds.index("cat")]
    dog = sorted(got & dogs)[0]
    with Session_() as s:
        albums.change_members(s, "My dogs", [cat], "pin")
        after = albums.change_members(s, "My dogs", [dog], "exclude")
        assert after.pinned == 1 and after.excluded == 1
    album_jobs.refresh_albums(Session_, model, model_id)  # a new computation keeps both
    got = _members(Session_, "My dogs")
    assert cat in got and dog not in got
    with Session_() as s:
        excluded, _ = albums.members_page(s, "My dogs", None, 10, excluded=True)
        assert [i.image.id for i in excluded] == [dog]
        albums.change_members(s, "My dogs", [dog], "auto")  # back to the query: it matches
    assert dog in _members(Session_, "My dogs")

    # new pictures join as they are embedded, judged with the stored vector and cut
    new_kinds, vecs = _pictures(seed=4)
    step = len(vecs) // 20
    new = _add(Session_, vecs[::step], start=10_000)
    with Session_() as s:
        assert album_jobs.add_images(s, model_id, new) > 0
        assert album_jobs.add_images(s, model_id, new) == 0  # twice is once
    got = _members(Session_, "My dogs")
    picked = list(zip(new, new_kinds[::step], strict=True))
    assert {i for i, k in picked if k == "dog"} <= got
    assert not {i for i, k in picked if k == "other"} & got

    # a picture that leaves the library leaves the album; the album never deletes pictures
    with Session_() as s:
        s.execute(sa.delete(Image).where(Image.id == dog))
        s.commit()
    assert dog not in _members(Session_, "My dogs")
    with Session_() as s:
        gone = albums.delete_album(s, "My dogs")
        assert gone.size > 0
        assert s.scalar(sa.select(sa.func.count()).select_from(Image)) == len(ids) + len(new) - 1
        with pytest.raises(NotFound):
            albums.get_album(s, "My dogs")


def test_a_hand_picked_album_and_the_filters_of_a_smart_one(lib: Lib) -> None:
    Session_, ids, kinds = lib
    with Session_() as s:
        albums.create_album(s, "picked")
        info = albums.change_members(s, "picked", ids[:3], "add")
        assert info.kind == "manual" and info.size == 3
        assert albums.change_members(s, "picked", [ids[0]], "remove").size == 2
        with pytest.raises(NotFound):
            albums.change_members(s, "picked", [10**9], "add")
        with pytest.raises(IndexerError):
            albums.update_album(s, "picked", query=albums.SavedQuery(text="dog"))
        # a folder filter keeps only what lies there
        s.execute(sa.update(Image).where(Image.id.in_(ids[:100])).values(folder="/lib/sub"))
        s.commit()
        albums.create_album(
            s,
            "sub dogs",
            albums.SavedQuery.from_json({"text": "dog", "filters": {"folder": "/lib/sub"}}),
        )
    album_jobs.refresh_albums(Session_, WordImageModel(), _model_id(Session_))
    got = _members(Session_, "sub dogs")
    assert got and got <= set(ids[:100])
    dogs = {i for i, k in zip(ids[:100], kinds[:100], strict=True) if k == "dog"}
    assert len(got & dogs) >= 0.9 * len(dogs) and len(got - dogs) <= 0.05 * len(got)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"text": "  "},
        {"text": "dog", "min_relevance": 2},
        {"terms": [{"text": "a", "image_id": 3}]},
        {"text": "dog", "filters": {"date_from": "yesterday"}},
        {"text": "dog", "sort": "date"},
    ],
)
def test_a_query_that_cannot_be_searched_is_refused_with_what_to_change(bad: Any) -> None:
    with pytest.raises(IndexerError) as err:
        albums.SavedQuery.from_json(bad)
    assert str(err.value)


@pytest.mark.slow
def test_a_page_of_an_album_reads_keys_only_at_100k(sessions: sessionmaker[Session]) -> None:
    """EXPLAIN of a page and of a picture's albums over 100k pictures, 33k of them in one album:
    index reads, never a scan of the library (SQLite and PostgreSQL)."""
    n = 100_000
    with sessions() as s:
        for start in range(0, n, 2_000):
            s.execute(
                sa.insert(Image),
                [{"path": f"/p/{i}.jpg", "folder": "/p", "size": 1, "mtime_ns": 0,
                  "sha256": f"{i:064x}", "state": "ready"} for i in range(start, start + 2_000)],
            )  # fmt: skip
            s.commit()  # per chunk: each image's trigger updates one counts row (see test_scale)
        album = albums.create_album(s, "big")
        s.execute(
            sa.insert(albums.AlbumMember),
            [{"album_id": album.id, "image_id": i, "state": "pinned", "score": None,
              "updated_at": catalog.utcnow()} for i in range(1, n + 1, 3)],
        )  # fmt: skip
        s.commit()
        engine = s.get_bind()
        postgres = engine.dialect.name == "postgresql"
        if postgres:
            s.execute(sa.text("ANALYZE images"))
            s.execute(sa.text("ANALYZE album_members"))
        items, after = albums.members_page(s, "big", None, 20)
        assert len(items) == 20 and after == items[-1].image.id
        assert albums.get_album(s, "big").size == len(range(1, n + 1, 3))
        for stmt in (
            albums.page_statement(album.id, after, 20),
            sa.select(albums.AlbumMember).where(albums.AlbumMember.image_id == 7),
        ):
            compiled = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
            explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
            plan = " ".join(str(r) for r in s.execute(sa.text(explain + compiled)))
            if postgres:
                assert "Seq Scan" not in plan, plan
            else:
                assert "SCAN" not in plan.replace("SCAN CONSTANT", ""), plan


class _Files:
    """The two things the exports ask of a library: its confined open and its roots."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def serving_roots(self, refresh: bool = False) -> list[str]:
        return [str(self.root)]

    def open_file(self, image_id: int) -> tuple[Any, str | None]:
        from clipsearch.indexer.safe_files import open_confined

        with catalog.session_factory(self.engine)() as s:
            row = s.get(Image, image_id)
            assert row is not None
            path = catalog.path_from_db(row.path)
        return open_confined(path, [str(self.root)]), None

    engine: Any = None


def test_exports_write_the_album_s_files_as_a_zip_and_as_links(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    engine = catalog.init_db(f"sqlite:///{tmp_path / 'c.db'}")
    Session_ = catalog.session_factory(engine)
    files = _Files(root)
    files.engine = engine
    try:
        with Session_() as s:
            for i in range(3):
                (root / f"p{i}.jpg").write_bytes(bytes([i]) * (1000 + i))
                s.add(Image(path=str(root / f"p{i}.jpg"), folder=str(root), size=1000 + i,
                            mtime_ns=0, sha256=f"{i:064x}", state="ready"))  # fmt: skip
            s.commit()
            albums.create_album(s, "trip")
            albums.change_members(s, "trip", [1, 2, 3], "add")
            (root / "p2.jpg").unlink()  # gone from disk since
            info, images = albums.export_rows(s, "trip")
            assert info.size == 3
        data = b"".join(albums.zip_chunks(files, images))
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = sorted(zf.namelist())
            assert names == ["1-p0.jpg", "2-p1.jpg", "MISSING.txt"]
            assert zf.read("2-p1.jpg") == bytes([1]) * 1001
            assert "p2.jpg" in zf.read("MISSING.txt").decode()
        folder, linked, missing = albums.link_folder(files, images, str(root / "export"))
        assert (linked, missing) == (2, 1)
        assert os.readlink(Path(folder) / "1-p0.jpg") == str(root / "p0.jpg")
        with pytest.raises(Conflict):  # never into a folder that holds something
            albums.link_folder(files, images, str(root / "export"))
        from clipsearch.indexer.scan import PathNotAllowed

        with pytest.raises(PathNotAllowed):
            albums.link_folder(files, images, str(tmp_path / "elsewhere"))
    finally:
        engine.dispose()
