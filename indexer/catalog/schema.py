"""The catalog's tables: SQLAlchemy 2 typed ORM classes and the column types they use
(see the package docstring for the design choices).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# --------------------------------------------------------------------------------------------
# Column types


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Stores UTC, returns timezone-aware UTC on SQLite (which drops zones) and PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: dt.datetime | None, dialect: sa.Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: sa.Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# --------------------------------------------------------------------------------------------
# ORM


class Base(DeclarativeBase):
    pass


class ModelRecord(Base):
    """A model that produced embeddings, identified by the fingerprint of its weights."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(512))
    fingerprint: Mapped[str] = mapped_column(sa.String(64), unique=True)
    dim: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        sa.CheckConstraint("state IN ('pending', 'ready', 'failed')", name="ck_images_state"),
        sa.Index("ix_images_state_id", "state", "id"),
        sa.Index("ix_images_taken_at_id", "taken_at", "id"),  # browse by date (migration 0007)
        sa.Index("ix_images_state_taken_at_id", "state", "taken_at", "id"),
        {"sqlite_autoincrement": True},  # ids are never reused (PostgreSQL sequences never are)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(sa.Text, unique=True)
    folder: Mapped[str] = mapped_column(sa.Text, index=True)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    mtime_ns: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    width: Mapped[int | None] = mapped_column(sa.Integer)
    height: Mapped[int | None] = mapped_column(sa.Integer)
    format: Mapped[str | None] = mapped_column(sa.String(16))
    taken_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=False))
    state: Mapped[str] = mapped_column(sa.String(16), default="pending")
    error: Mapped[str | None] = mapped_column(sa.Text)
    thumbnail: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Set by the database (triggers of migration 0002) from one catalog-wide sequence whenever the
    # row is inserted, changes state, content or folder, or its content gains a vector: never
    # written by this code. See changes_since().
    change_seq: Mapped[int] = mapped_column(sa.BigInteger, index=True, server_default="0")


class ImageTombstone(Base):
    """A deleted image id, numbered from the change sequence (written by a trigger)."""

    __tablename__ = "image_tombstones"

    change_seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    image_id: Mapped[int] = mapped_column(sa.BigInteger)
    deleted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CatalogMark(Base):
    """Named numbers the catalog keeps (``tombstones_pruned``: the newest pruned tombstone)."""

    __tablename__ = "catalog_marks"

    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger)


class ImageCount(Base):
    """Images per state, kept by triggers so totals never count the library."""

    __tablename__ = "image_counts"

    state: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    n: Mapped[int] = mapped_column(sa.BigInteger)


class RemovedImage(Base):
    """A file the user removed (migration 0003): scans skip its path, and any file with its
    content, until it is restored. Keeps its embedding and thumbnail for the Removed view."""

    __tablename__ = "removed_images"
    # one row per path: a unique index, as migration 0003 made it
    __table_args__ = (
        sa.Index("ux_removed_images_path", "path", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    path: Mapped[str] = mapped_column(sa.Text)
    folder: Mapped[str] = mapped_column(sa.Text)
    size: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    mtime_ns: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    width: Mapped[int | None] = mapped_column(sa.Integer)
    height: Mapped[int | None] = mapped_column(sa.Integer)
    format: Mapped[str | None] = mapped_column(sa.String(16))
    taken_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=False))
    thumbnail: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    trash_path: Mapped[str | None] = mapped_column(sa.Text)
    removed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WatchedFolder(Base):
    """A folder the library keeps up to date (migration 0004): watched for changes and
    re-scanned periodically by :mod:`indexer.watch`."""

    __tablename__ = "watched_folders"
    # one row per folder: a unique index, as migration 0004 made it
    __table_args__ = (
        sa.Index("ux_watched_folders_path", "path", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(sa.Text)  # catalog text form (path_to_db)
    recursive: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_scan_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_job_id: Mapped[int | None] = mapped_column(sa.Integer)
    # a running watcher's heartbeat: it is watched while this is recent (WATCH_HEARTBEAT_S)
    watched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Embedding(Base):
    """One vector per (content, model). Images reach it through ``Image.sha256``."""

    __tablename__ = "embeddings"
    __table_args__ = (sa.UniqueConstraint("sha256", "model_id", name="uq_embeddings_sha256_model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    model_id: Mapped[int] = mapped_column(
        sa.ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    vector: Mapped[bytes] = mapped_column(sa.LargeBinary)  # float32, little-endian, L2-normalised
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="ck_jobs_state"
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    state: Mapped[str] = mapped_column(sa.String(16), default="queued", index=True)
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    total: Mapped[int | None] = mapped_column(sa.Integer)  # None until planned
    done: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    errors: Mapped[list[dict[str, str]]] = mapped_column(sa.JSON, default=list)
    message: Mapped[str | None] = mapped_column(sa.Text)  # why a job failed as a whole
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class IndexVersion(Base):
    __tablename__ = "index_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, unique=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(32))  # "flat", "ivf", "ivf-sq8", ...
    size: Mapped[int] = mapped_column(sa.Integer)
    path: Mapped[str] = mapped_column(sa.Text)
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)  # nlist, nprobe, recall
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=False)
