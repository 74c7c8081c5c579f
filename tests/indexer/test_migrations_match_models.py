"""The catalog's migrations and its models agree (issue 23): a database migrated to head, on
SQLite and on PostgreSQL, is what the models declare, as Alembic's autogenerate compares them
(tables, columns and their types, nullability, indexes, unique constraints, foreign keys).

The models are found, not listed: every module of the indexer package is imported and every
table it declares (the ORM's ``Base`` and any module's own ``MetaData``) is compared. So a
migration added without its model (or a model without its migration), such as the albums' 0009
and the accounts' 0010, is reported here as soon as it lands. What the compare cannot see is
named in :data:`NOT_MODELLED`, each with the reason.
"""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import clipsearch.indexer as indexer_pkg
from clipsearch.indexer import catalog

#: Objects the migrations create with SQL that SQLAlchemy's models cannot declare.
NOT_MODELLED = {
    # SQLite: the FTS5 virtual table of the keyword index and the shadow tables FTS5 keeps for
    # it (migration 0006)
    ("sqlite", "table", "image_keywords_fts"),
    ("sqlite", "table", "image_keywords_fts_data"),
    ("sqlite", "table", "image_keywords_fts_idx"),
    ("sqlite", "table", "image_keywords_fts_content"),
    ("sqlite", "table", "image_keywords_fts_docsize"),
    ("sqlite", "table", "image_keywords_fts_config"),
    # PostgreSQL: the keyword index's generated columns (a weighted tsvector, lower-case words)
    # and their GIN indexes (migration 0006); the one table declaration serves both databases,
    # and SQLite has FTS5 instead
    ("postgresql", "column", "doc"),
    ("postgresql", "column", "words"),
    ("postgresql", "index", "ix_image_keywords_doc"),
    ("postgresql", "index", "ix_image_keywords_words"),
}


def all_metadata() -> list[sa.MetaData]:
    """Every MetaData the indexer's modules declare tables on."""
    found: dict[int, sa.MetaData] = {id(catalog.Base.metadata): catalog.Base.metadata}
    for info in pkgutil.walk_packages(indexer_pkg.__path__, indexer_pkg.__name__ + "."):
        if ".migrations" in info.name:
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, sa.MetaData) and value.tables:
                found.setdefault(id(value), value)
    return list(found.values())


def differences(url: str) -> list[Any]:
    engine = catalog.init_db(url)
    dialect = engine.dialect.name

    def include(obj: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
        if kind == "column" and obj.table.name != "image_keywords":
            return True
        if kind == "foreign_key_constraint" and obj.parent.name == "image_keywords":
            # image_keywords.image_id -> images.id ON DELETE CASCADE (migration 0006): the
            # keyword module's table handle lives on its own MetaData and leaves it out
            # (declared there, it changes how the shared-folder filters join)
            return False
        return (dialect, kind, name) not in NOT_MODELLED

    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include}
            )
            # Alembic compares a list of MetaData as one (its target_metadata may be a list)
            return list(compare_metadata(context, cast(Any, all_metadata())))
    finally:
        engine.dispose()


def test_every_migration_is_found_and_head_is_the_newest() -> None:
    """Guards the compare: the database it migrates is at the newest revision there is."""
    script = ScriptDirectory.from_config(catalog.alembic_config("sqlite://"))
    heads = script.get_heads()
    assert len(heads) == 1, f"the migrations have several heads: {heads}"
    files = sorted(p.name for p in Path(catalog.MIGRATIONS_DIR, "versions").glob("0*.py"))
    newest = files[-1].split("_", 1)[0]
    assert heads[0].startswith(newest), (heads, files[-1])


def test_models_cover_many_tables() -> None:
    names = {t for md in all_metadata() for t in md.tables}
    assert {"images", "embeddings", "jobs", "image_keywords", "tags", "duplicate_pairs"} <= names


def test_sqlite_migrated_to_head_matches_the_models(tmp_path: Path) -> None:
    diff = differences(f"sqlite:///{tmp_path / 'catalog.db'}")
    assert diff == [], "\n".join(repr(d)[:300] for d in diff)


def test_postgresql_migrated_to_head_matches_the_models(pg_url: str) -> None:
    diff = differences(pg_url)
    assert diff == [], "\n".join(repr(d)[:300] for d in diff)


def test_a_migration_without_its_model_is_reported(tmp_path: Path) -> None:
    """The compare is not blind: a table the database has and no model declares shows."""
    url = f"sqlite:///{tmp_path / 'extra.db'}"
    engine = catalog.init_db(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE stray_{uuid.uuid4().hex[:6]} (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    diff = differences(url)
    assert [d[0] for d in diff] == ["remove_table"], diff
