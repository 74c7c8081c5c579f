"""The catalog schema, its migrations, and the helpers other packages rely on."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from clipsearch.indexer.catalog import (
    Embedding,
    Image,
    IndexVersion,
    ModelRecord,
    create_job,
    delete_images,
    get_or_create_model,
    image_vector,
    init_db,
    load_vectors,
    make_engine,
    path_from_db,
    path_to_db,
    schema_revision,
    under_folder,
    vector_to_bytes,
)
from clipsearch.indexer.errors import CatalogUnavailable, NotFound

MIGRATIONS = Path(__file__).resolve().parents[2] / "indexer" / "migrations" / "versions"


def test_migrations_create_every_table_and_are_idempotent(db_url: str) -> None:
    engine = init_db(db_url)
    init_db(db_url, engine=engine)  # a second start changes nothing and does not fail
    tables = set(sa.inspect(engine).get_table_names())
    assert {
        "images",
        "embeddings",
        "models",
        "jobs",
        "index_versions",
        "image_tombstones",
        "image_counts",
        "catalog_marks",
        "removed_images",
        "watched_folders",
        "alembic_version",
    } <= tables
    # the newest migration script in the folder is the revision a new catalog is at
    newest = max(p.name[:4] for p in MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert newest >= "0006"
    assert schema_revision(engine) == newest
    cols = {c["name"] for c in sa.inspect(engine).get_columns("images")}
    assert {
        "path",
        "folder",
        "size",
        "mtime_ns",
        "sha256",
        "width",
        "height",
        "format",
        "taken_at",
        "state",
        "error",
        "thumbnail",
    } <= cols
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = init_db(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_unreachable_database_is_catalog_unavailable() -> None:
    engine = make_engine(
        "postgresql://postgres@127.0.0.1:1/nothing", connect_args={"connect_timeout": 2}
    )
    with pytest.raises(CatalogUnavailable, match="unavailable"), engine.connect():
        pass


def test_a_silent_database_host_fails_fast_instead_of_hanging() -> None:
    """A host that accepts TCP connections but never answers (a hung server, a stuck proxy):
    connecting gives up after connect_timeout with CatalogUnavailable; it does not hang."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # the kernel completes handshakes; nobody ever reads or answers
    port = listener.getsockname()[1]
    try:
        # A connect_timeout in the URL wins; without one the default (10 s) applies.
        for query in ("?connect_timeout=1", ""):
            engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x{query}")
            with pytest.raises(CatalogUnavailable, match="unavailable"), engine.connect():
                pass
            engine.dispose()
    finally:
        listener.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"/photos/plain.jpg",
        b"/photos/caf\xc3\xa9 \xe2\x98\x83.jpg",
        b"/photos/latin1-\xe9\xff.jpg",
        b"/p/back\\slash\\x41.jpg",
        b"/p/\\xff-literal.jpg",
    ],
)
def test_paths_round_trip_losslessly_through_text(raw: bytes) -> None:
    text = path_to_db(raw)
    text.encode("utf-8")  # storable by both databases
    assert os.fsencode(path_from_db(text)) == raw


def test_distinct_byte_names_never_collide_in_text_form() -> None:
    assert path_to_db(b"/p/\xff.jpg") != path_to_db(b"/p/\\xff.jpg")


def _image(s: Session, path: str, sha: str | None, state: str = "ready") -> Image:
    img = Image(
        path=path, folder=path.rsplit("/", 1)[0], size=1, mtime_ns=1, sha256=sha, state=state
    )
    s.add(img)
    s.flush()
    return img


def test_equal_content_shares_one_vector_and_deletion_collects_it(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as s:
        model = get_or_create_model(s, "m", "f" * 64, 4)
    with sessions.begin() as s:
        a = _image(s, "/p/a.jpg", "1" * 64)
        b = _image(s, "/q/copy-of-a.jpg", "1" * 64)
        c = _image(s, "/p/c.jpg", "2" * 64)
        for sha, v in (("1" * 64, [1, 0, 0, 0]), ("2" * 64, [0, 1, 0, 0])):
            s.add(
                Embedding(
                    sha256=sha, model_id=model.id, vector=vector_to_bytes(np.array(v, np.float32))
                )
            )
        ids = (a.id, b.id, c.id)
    with sessions() as s:
        got_ids, vecs = load_vectors(s, model.id)
        assert sorted(got_ids.tolist()) == sorted(ids)
        assert vecs.shape == (3, 4)
        np.testing.assert_array_equal(image_vector(s, ids[1], model.id), [1, 0, 0, 0])
        assert s.scalar(sa.select(sa.func.count()).select_from(Embedding)) == 2
    with sessions.begin() as s:
        delete_images(s, [ids[0]])  # the copy still needs the vector
    with sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Embedding)) == 2
    with sessions.begin() as s:
        delete_images(s, [ids[1]])
    with sessions() as s:
        assert s.scalars(sa.select(Embedding.sha256)).all() == ["2" * 64]
        with pytest.raises(NotFound):
            image_vector(s, ids[0], model.id)


def test_model_records_are_unique_by_fingerprint(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        a = get_or_create_model(s, "one", "a" * 64, 32)
        b = get_or_create_model(s, "one again", "a" * 64, 32)
        assert a.id == b.id
        assert s.scalar(sa.select(sa.func.count()).select_from(ModelRecord)) == 1


def test_folder_filter_is_case_sensitive_and_ignores_wildcards(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as s:
        for p in (
            "/Photos/a.jpg",
            "/photos/b.jpg",
            "/photos/sub/c.jpg",
            "/photosX/d.jpg",
            "/p_otos/e.jpg",
        ):
            _image(s, p, None, "pending")
    with sessions() as s:

        def names(folder: str, recursive: bool = True) -> list[str]:
            rows = s.scalars(
                sa.select(Image.path).where(under_folder(Image.folder, folder, recursive))
            )
            return sorted(r.rsplit("/", 1)[1] for r in rows)

        assert names("/photos") == ["b.jpg", "c.jpg"]
        assert names("/photos", recursive=False) == ["b.jpg"]
        assert names("/p_otos") == ["e.jpg"]
        assert names("/") == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]


def test_jobs_and_index_versions_keep_their_fields(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        job = create_job(s, "ingest", {"path": "/photos", "recursive": True})
        model = get_or_create_model(s, "m", "b" * 64, 8)
        s.add(
            IndexVersion(
                version=1,
                model_id=model.id,
                kind="flat",
                size=0,
                path="/x",
                params={"nprobe": 1},
                active=True,
            )
        )
        s.commit()
        job_id = job.id
    with sessions() as s:
        from clipsearch.indexer.catalog import get_job, job_info

        info = job_info(get_job(s, job_id))
        assert (info.kind, info.state, info.params, info.done, info.failed, info.errors) == (
            "ingest",
            "queued",
            {"path": "/photos", "recursive": True},
            0,
            0,
            [],
        )
        assert info.created_at is not None and info.created_at.tzinfo is not None
        assert s.scalar(sa.select(IndexVersion.params)) == {"nprobe": 1}
        with pytest.raises(NotFound, match="job 999"):
            get_job(s, 999)
