"""Fixtures for the indexer tests: a catalog on SQLite and on PostgreSQL. Image-file helpers are in
indexer_testfiles.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from indexer.catalog import init_db, session_factory


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
