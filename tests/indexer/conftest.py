"""Fixtures for the indexer tests: a catalog on SQLite and on PostgreSQL. Image-file helpers are in
indexer_testfiles.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from workerutil import Env

from clipsearch.indexer.catalog import init_db, session_factory


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The catalog URL: SQLite in the test's folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture()
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = init_db(db_url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("sqlite+milvus", marks=pytest.mark.milvus),
        pytest.param("postgres+milvus", marks=[pytest.mark.postgres, pytest.mark.milvus]),
    ]
)
def env(request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path) -> Env:
    """A library on each catalog backend, with the embedded FAISS store and with Milvus."""
    db, _, store_kind = request.param.partition("+")
    url = None if db == "sqlite" else request.getfixturevalue("pg_url")
    store = request.getfixturevalue("milvus_store") if store_kind == "milvus" else None
    e = Env(tmp_path / "data", tiny_model_dir, url, store)
    yield e
    e.close()
