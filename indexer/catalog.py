"""The catalog: the source of truth for images, embeddings, models, jobs and index versions.

SQLAlchemy 2 typed ORM over SQLite (the embedded default, in WAL mode) or PostgreSQL (deployed,
through psycopg 3). The schema is created and upgraded by Alembic (``init_db`` runs
``upgrade head`` programmatically from the migrations shipped inside the package).

Design choices worth knowing before you query these tables:

* **Embeddings belong to content, not to paths.** ``embeddings`` is keyed on
  ``(sha256, model_id)``: the same bytes found in two places (a copy, a file reachable through two
  folders) are decoded twice but embedded and stored once, and both ``images`` rows read the one
  vector through their ``sha256``. A moved or renamed file keeps its ``images`` row (and its id, so
  the vector index needs no change); a file whose content changed gets a new ``sha256`` and the old
  vector is garbage-collected once no image refers to it. Use :func:`load_vectors` to get
  ``(image ids, vectors)`` for a model; :func:`image_vector` for one image.
* **Paths are text, losslessly.** File names that are not valid UTF-8 cannot be stored as text by
  either database, so ``images.path`` holds :func:`path_to_db` of the filesystem path: backslashes
  are doubled and each undecodable byte is written ``\\xNN``. :func:`path_from_db` gives back the
  exact filesystem ``str`` (with surrogate escapes) to ``open()``. Valid UTF-8 names without a
  backslash are stored unchanged. ``images.folder`` is the parent folder in the same form.
* **mtime is stored in nanoseconds** (``mtime_ns``) so "unchanged" is an exact integer comparison.
* **Timestamps** are stored in UTC and read back as timezone-aware UTC datetimes on both databases.
  ``taken_at`` (EXIF DateTimeOriginal) is the camera's wall-clock time and stays naive.
* **Thumbnails** are content-addressed (``thumbnail`` holds a key such as ``ab/abcd...jpg``
  relative to the thumbnail folder), shared by images with equal content.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from clipsearch.indexer.errors import CatalogUnavailable, IndexerError, NotFound
from clipsearch.indexer.types import Hit, ImageInfo, JobInfo, RemovedInfo

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
JOB_ERROR_SAMPLE = 50  # at most this many {path, reason} pairs are kept per job
SQLITE_BUSY_TIMEOUT_MS = 30_000


# --------------------------------------------------------------------------------------------
# Column types


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Stores UTC, returns timezone-aware UTC on SQLite (which drops zones) and PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


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
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    path: Mapped[str] = mapped_column(sa.Text, unique=True)
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
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(sa.Text, unique=True)  # catalog text form (path_to_db)
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


# --------------------------------------------------------------------------------------------
# Paths as text


def path_to_db(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """The lossless text form of a filesystem path (see the module docstring)."""
    text = os.fsdecode(path)
    if "\\" not in text and not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    out: list[str] = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def path_from_db(text: str) -> str:
    """Inverse of :func:`path_to_db`: the filesystem ``str`` to open."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text.startswith("\\\\", i):
            out.append("\\")
            i += 2
        elif ch == "\\" and text.startswith("\\x", i) and i + 4 <= len(text):
            out.append(chr(0xDC00 + int(text[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def folder_of(db_path: str) -> str:
    """The parent folder of a catalog path, in catalog form."""
    head = db_path.rsplit("/", 1)[0]
    return head or "/"


def under_folder(column: Any, folder_db: str, recursive: bool = True) -> Any:
    """SQL condition: ``column`` (an Image.folder-like text column) is ``folder_db`` or, when
    ``recursive``, below it. Case-sensitive and free of LIKE wildcards on both databases."""
    folder_db = folder_db.rstrip("/") or "/"
    if not recursive:
        return column == folder_db
    prefix = folder_db if folder_db.endswith("/") else folder_db + "/"
    return sa.or_(column == folder_db, sa.func.substr(column, 1, len(prefix)) == prefix)


# --------------------------------------------------------------------------------------------
# Engine, sessions, migrations


def default_database_url(data_dir: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'catalog.db'}"


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    name = type(exc).__name__
    return name in {"OperationalError", "InterfaceError", "ConnectionTimeout"}


# libpq connection parameters (seconds; tcp_user_timeout in ms): give up connecting after 10 s,
# and notice a peer that vanished (no RST) within about a minute instead of the kernel's 15.
PG_CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}


SQLITE_POOL_SIZE = 48  # kept open per process (anyio's thread pool has 40 threads)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the catalog. SQLite: WAL, a busy timeout, foreign keys on, the parent folder
    created. PostgreSQL: ``postgresql://`` URLs use psycopg 3, pre-ping on checkout.
    Connection failures surface as :class:`CatalogUnavailable`."""
    u = sa.make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        connect_args.update(kwargs.pop("connect_args", {}))
        if u.database and u.database != ":memory:":
            # A file connection is cheap to keep: enough stay open for every thread of the API's
            # pool. With SQLAlchemy's default 5 (+10 overflow) each search beyond the fifth
            # opened, set up and closed its own connection (16 concurrent hybrid queries: 5 each).
            kwargs.setdefault("pool_size", SQLITE_POOL_SIZE)
            kwargs.setdefault("max_overflow", SQLITE_POOL_SIZE)
        engine = sa.create_engine(u, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    else:
        kwargs.setdefault("pool_pre_ping", True)
        if u.get_backend_name() == "postgresql":
            # Bound the wait for a database host that is gone or silent: without these a request
            # waits for the kernel's TCP timeouts (minutes). A value in the URL wins.
            connect_args = {k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in u.query}
            connect_args.update(kwargs.pop("connect_args", {}))
            kwargs["connect_args"] = connect_args
        engine = sa.create_engine(u, **kwargs)

    safe_url = u.render_as_string(hide_password=True)

    @event.listens_for(engine, "handle_error")
    def _unavailable(ctx: Any) -> None:
        if getattr(ctx, "is_pre_ping", False):
            # A pooled connection the server dropped (a restart, a failover, an idle timeout):
            # let the pool replace it. Raising here would fail a request the database can serve;
            # if reconnecting fails, that error comes through here again and is reported.
            return
        exc = ctx.original_exception
        if ctx.is_disconnect or (
            _is_unavailable(exc)
            and any(
                s in str(exc).lower()
                for s in (
                    "connection",
                    "could not connect",
                    "unable to open database",
                    "database is locked",
                    "server closed",
                    "timeout",
                    "disk i/o",
                )
            )
        ):
            raise CatalogUnavailable(
                f"the catalog database at {safe_url} is unavailable ({str(exc).strip()[:200]}); "
                "check that the database server is running and reachable, then retry"
            ) from exc

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (``expire_on_commit=False``)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    """An Alembic Config pointing at the migrations shipped in this package (no .ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[sa.Connection]:
    """Serialise concurrent ``init_db`` calls (API replicas and workers starting together)."""
    if engine.dialect.name == "sqlite":
        db = engine.url.database
        lock_file = None
        if db and db != ":memory:":
            lock_file = open(f"{db}.migrate.lock", "a+b")  # noqa: SIM115 - held for the block
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            if lock_file is not None:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
                lock_file.close()
    else:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7342190551)"))
            yield conn


def init_db(url: str, engine: Engine | None = None) -> Engine:
    """Create or upgrade the catalog schema to the newest migration; returns the engine."""
    from alembic import command

    engine = engine or make_engine(url)
    cfg = alembic_config(url)
    try:
        with _migration_lock(engine) as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except CatalogUnavailable:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise CatalogUnavailable(
            f"could not prepare the catalog database ({exc.__class__.__name__}: {str(exc)[:200]})"
        ) from exc
    log.info("catalog ready at %s", engine.url.render_as_string(hide_password=True))
    return engine


def schema_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# --------------------------------------------------------------------------------------------
# Models


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def bytes_to_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32, copy=True)


def model_fingerprint(model: Any) -> str:
    """sha256 over the model's parameter names, shapes and bytes (cached on the model object).
    Two models with the same weights share embeddings; a fine-tuned model gets its own."""
    cached = getattr(model, "_clipsearch_fingerprint", None)
    if isinstance(cached, str):
        return cached
    import torch

    h = hashlib.sha256()
    h.update(str(getattr(model, "embed_dim", "")).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        if t.dtype == torch.bfloat16:
            t = t.to(torch.float32)
        h.update(t.numpy().tobytes())
    digest = h.hexdigest()
    with contextlib.suppress(AttributeError, TypeError):
        object.__setattr__(model, "_clipsearch_fingerprint", digest)
    return digest


def get_or_create_model(session: Session, name: str, fingerprint: str, dim: int) -> ModelRecord:
    """The ModelRecord with this fingerprint, created (and committed) if new. Race-safe."""
    rec = session.scalar(sa.select(ModelRecord).where(ModelRecord.fingerprint == fingerprint))
    if rec is not None:
        return rec
    try:
        with session.begin_nested():
            rec = ModelRecord(name=name[:512], fingerprint=fingerprint, dim=int(dim))
            session.add(rec)
        session.commit()
        return rec
    except sa.exc.IntegrityError:
        session.rollback()
        rec = session.scalar(sa.select(ModelRecord).where(ModelRecord.fingerprint == fingerprint))
        if rec is None:  # pragma: no cover - only if the winner rolled back
            raise
        return rec


def ensure_model(sessions: sessionmaker[Session], model: Any) -> int:
    """The catalog id of ``model`` (a CLIP with ``.name``, ``.embed_dim``), recorded if new."""
    fp = model_fingerprint(model)
    with sessions() as s:
        rec = get_or_create_model(s, str(getattr(model, "name", "model")), fp, model.embed_dim)
        return rec.id


# --------------------------------------------------------------------------------------------
# Reading rows out as plain dataclasses


#: ``images.id IN :ids`` with the ids given at execution (``{"ids": [...]}``): the statement is
#: built and compiled once, not once per id list (a search asks several per query)
ID_IN = Image.id.in_(sa.bindparam("ids", expanding=True))

#: the columns of an image a search hit shows (:func:`hit_from_row` reads these)
HIT_COLUMNS = (Image.id, Image.path, Image.width, Image.height, Image.format, Image.taken_at)


def hit_from_row(row: Any, score: float) -> Hit:
    """A search result for an image row at ``score`` (an ``Image`` or a row of HIT_COLUMNS)."""
    return Hit(
        id=row.id,
        score=score,
        path=row.path,
        width=row.width,
        height=row.height,
        format=row.format,
        taken_at=row.taken_at,
    )


def image_info(row: Image) -> ImageInfo:
    return ImageInfo(
        id=row.id,
        path=row.path,
        folder=row.folder,
        size=row.size,
        mtime=row.mtime_ns / 1e9,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        format=row.format,
        taken_at=row.taken_at,
        state=row.state,
        error=row.error,
        thumbnail=row.thumbnail,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def job_info(row: Job) -> JobInfo:
    return JobInfo(
        id=row.id,
        kind=row.kind,
        state=row.state,
        params=dict(row.params or {}),
        total=row.total,
        done=row.done or 0,
        failed=row.failed or 0,
        errors=list(row.errors or []),
        message=row.message,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
    )


def get_image(session: Session, image_id: int) -> Image:
    row = session.get(Image, image_id)
    if row is None:
        raise NotFound(f"image {image_id} is not in the catalog (it may have been deleted)")
    return row


def get_job(session: Session, job_id: int) -> Job:
    row = session.get(Job, job_id)
    if row is None:
        raise NotFound(f"job {job_id} does not exist")
    return row


def create_job(session: Session, kind: str, params: dict[str, Any] | None = None) -> Job:
    """Record a queued job and commit it."""
    if kind not in ("ingest", "reindex", "ocr"):
        raise IndexerError(f"unknown job kind {kind!r}: use ingest, reindex or ocr")
    job = Job(kind=kind, state="queued", params=dict(params or {}), done=0, failed=0, errors=[])
    session.add(job)
    session.commit()
    return job


# --------------------------------------------------------------------------------------------
# Vectors


def image_vector(session: Session, image_id: int, model_id: int) -> np.ndarray:
    """The stored vector of one image for one model; NotFound if it has none."""
    row = session.execute(
        sa.select(Embedding.vector)
        .join(Image, Image.sha256 == Embedding.sha256)
        .where(Image.id == image_id, Embedding.model_id == model_id)
    ).first()
    if row is None:
        raise NotFound(f"image {image_id} has no embedding for model {model_id} yet")
    return bytes_to_vector(row[0])


def iter_vectors(
    session: Session, model_id: int, chunk: int = 20_000, image_ids: Sequence[int] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids int64[n], vectors float32[n, D])`` chunks for every *ready* image that has an
    embedding for ``model_id`` (images with equal content each get the shared vector)."""
    stmt = (
        sa.select(Image.id, Embedding.vector)
        .join(Embedding, Embedding.sha256 == Image.sha256)
        .where(Embedding.model_id == model_id, Image.state == "ready")
        .order_by(Image.id)
    )
    if image_ids is not None:
        stmt = stmt.where(Image.id.in_(list(image_ids)))
    ids: list[int] = []
    vecs: list[bytes] = []
    for image_id, blob in session.execute(stmt.execution_options(yield_per=chunk)):
        ids.append(image_id)
        vecs.append(blob)
        if len(ids) >= chunk:
            yield _pack(ids, vecs)
            ids, vecs = [], []
    if ids:
        yield _pack(ids, vecs)


def _pack(ids: list[int], vecs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    arr = np.frombuffer(b"".join(vecs), dtype="<f4").astype(np.float32)
    return np.asarray(ids, dtype=np.int64), arr.reshape(len(ids), -1)


def load_vectors(
    session: Session, model_id: int, image_ids: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All of :func:`iter_vectors` at once: ``(ids int64[N], vectors float32[N, D])``."""
    dim = session.scalar(sa.select(ModelRecord.dim).where(ModelRecord.id == model_id)) or 0
    parts = list(iter_vectors(session, model_id, image_ids=image_ids))
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --------------------------------------------------------------------------------------------
# Changes since a watermark (what an index refresh reads)

TOMBSTONE_KEEP_DAYS = 30  # a process that last refreshed longer ago than this reloads in full
# Vectors are fetched by key in chunks this small so that PostgreSQL's planner keeps to the index
# on any catalog size (with 200 keys of 11,000 rows it already prefers reading the whole table).
_KEY_CHUNK = 50


@dataclass
class Changes:
    """What changed after a watermark, for one model: apply ``removed`` then ``upsert``."""

    upsert_ids: np.ndarray  # int64[n]: ready images with a vector for the model
    upsert_vectors: np.ndarray  # float32[n, D]
    removed: np.ndarray  # int64[m]: deleted, no longer ready, or without a vector any more
    watermark: int  # the highest change seen; pass it back as ``after`` next time
    rows_read: int  # image and tombstone rows read (what the refresh cost)
    more: bool  # the limit was reached: call again with the new watermark
    reload: bool = False  # tombstones after ``after`` were pruned: reload from scratch


def change_watermark(session: Session) -> int:
    """The newest change the catalog has committed (two index look-ups)."""
    a = session.scalar(sa.select(sa.func.max(Image.change_seq))) or 0
    b = session.scalar(sa.select(sa.func.max(ImageTombstone.change_seq))) or 0
    return int(max(a, b))


def changes_since(session: Session, model_id: int, after: int, limit: int = 10_000) -> Changes:
    """Images and deletions with a change number above ``after``, at most ``limit`` of each.

    Both reads are range scans of an index on the change number, so the cost follows what
    changed, not the library's size. Changes are committed in sequence order, so nothing below
    the returned watermark can appear later."""
    after = int(after)
    pruned = session.scalar(
        sa.select(CatalogMark.value).where(CatalogMark.name == "tombstones_pruned")
    )
    if pruned is not None and after < int(pruned):
        return Changes(_no_ids(), np.zeros((0, 0), np.float32), _no_ids(), after, 0, False, True)
    # The bound of this round: at most `limit` changes, and never half of one change number.
    seqs = [
        int(x)
        for x in session.scalars(
            sa.select(Image.change_seq)
            .where(Image.change_seq > after)
            .order_by(Image.change_seq)
            .limit(limit)
        )
    ]
    tseqs = [
        int(x)
        for x in session.scalars(
            sa.select(ImageTombstone.change_seq)
            .where(ImageTombstone.change_seq > after)
            .order_by(ImageTombstone.change_seq)
            .limit(limit)
        )
    ]
    full = len(seqs) >= limit or len(tseqs) >= limit
    hi_candidates = []
    if len(seqs) >= limit:
        hi_candidates.append(seqs[-1])
    if len(tseqs) >= limit:
        hi_candidates.append(tseqs[-1])
    if not seqs and not tseqs:
        return Changes(_no_ids(), np.zeros((0, 0), np.float32), _no_ids(), after, 0, False)
    hi = min(hi_candidates) if hi_candidates else max(seqs[-1:] + tseqs[-1:])
    rows = session.execute(
        sa.select(Image.id, Image.state, Image.sha256).where(
            Image.change_seq > after, Image.change_seq <= hi
        )
    ).all()
    gone = session.scalars(
        sa.select(ImageTombstone.image_id).where(
            ImageTombstone.change_seq > after, ImageTombstone.change_seq <= hi
        )
    ).all()
    # The vectors by key (the (sha256, model) unique index), never by a join a planner may turn
    # into a scan of every embedding.
    wanted = sorted({sha for _, state, sha in rows if state == "ready" and sha})
    blobs: dict[str, bytes] = {}
    for start in range(0, len(wanted), _KEY_CHUNK):
        for key, vector in session.execute(
            sa.select(Embedding.sha256, Embedding.vector).where(
                Embedding.model_id == model_id,
                Embedding.sha256.in_(wanted[start : start + _KEY_CHUNK]),
            )
        ):
            blobs[key] = vector
    up_ids: list[int] = []
    up_vecs: list[bytes] = []
    removed = [int(i) for i in gone]
    for image_id, state, sha in rows:
        blob = blobs.get(sha) if state == "ready" and sha else None
        if blob is not None:
            up_ids.append(int(image_id))
            up_vecs.append(blob)
        else:
            removed.append(int(image_id))
    if up_ids:
        ids, vecs = _pack(up_ids, up_vecs)
    else:
        ids, vecs = _no_ids(), np.zeros((0, 0), np.float32)
    return Changes(
        ids, vecs, np.asarray(removed, np.int64), hi, len(rows) + len(gone), full and hi > after
    )


def get_mark(session: Session, name: str) -> int | None:
    """A named number of :class:`CatalogMark` (None when never set)."""
    value = session.scalar(sa.select(CatalogMark.value).where(CatalogMark.name == name))
    return None if value is None else int(value)


def advance_mark(session: Session, name: str, value: int) -> None:
    """Raise a named mark to ``value`` (never lower it; no commit). Safe against a concurrent
    writer: the row is created once, then only moved up by one conditional UPDATE."""
    if len(name) > 32:
        raise ValueError(f"catalog mark names are at most 32 characters: {name!r}")
    if get_mark(session, name) is None:
        try:
            with session.begin_nested():
                session.add(CatalogMark(name=name, value=int(value)))
            return
        except sa.exc.IntegrityError:
            pass
    session.execute(
        sa.update(CatalogMark)
        .where(CatalogMark.name == name, CatalogMark.value < int(value))
        .values(value=int(value))
    )


def set_mark(session: Session, name: str, value: int) -> None:
    """Set a named mark to ``value``, up or down (no commit)."""
    mark = session.get(CatalogMark, name)
    if mark is None:
        session.add(CatalogMark(name=name, value=int(value)))
    else:
        mark.value = int(value)


def prune_tombstones(session: Session, keep_days: float = TOMBSTONE_KEEP_DAYS) -> int:
    """Forget deletions older than ``keep_days`` (no commit). A process whose watermark is older
    than what was pruned is told to reload (:attr:`Changes.reload`)."""
    cutoff = utcnow() - dt.timedelta(days=keep_days)
    top = session.scalar(
        sa.select(sa.func.max(ImageTombstone.change_seq)).where(ImageTombstone.deleted_at < cutoff)
    )
    if top is None:
        return 0
    res = session.execute(sa.delete(ImageTombstone).where(ImageTombstone.change_seq <= top))
    mark = session.get(CatalogMark, "tombstones_pruned")
    if mark is None:
        session.add(CatalogMark(name="tombstones_pruned", value=int(top)))
    else:
        mark.value = max(int(mark.value), int(top))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def state_counts(session: Session) -> dict[str, int]:
    """Images per state, from the trigger-kept counts (one tiny table, not the library)."""
    return {str(s): int(n) for s, n in session.execute(sa.select(ImageCount.state, ImageCount.n))}


def _no_ids() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Deleting


def gc_embeddings(session: Session, sha256s: Sequence[str | None]) -> int:
    """Delete embeddings of content no image refers to any more (no commit). Returns the count."""
    shas = sorted({s for s in sha256s if s})
    if not shas:
        return 0
    still_used = set(
        session.scalars(sa.select(Image.sha256).where(Image.sha256.in_(shas)).distinct())
    )
    # removed content keeps its vector: a restore then needs no embedding
    still_used |= set(
        session.scalars(
            sa.select(RemovedImage.sha256).where(RemovedImage.sha256.in_(shas)).distinct()
        )
    )
    orphans = [s for s in shas if s not in still_used]
    if not orphans:
        return 0
    res = session.execute(sa.delete(Embedding).where(Embedding.sha256.in_(orphans)))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def orphan_thumbnails(session: Session, keys: Sequence[str | None]) -> list[str]:
    """Of these thumbnail keys, those no image refers to any more."""
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return []
    used = set(session.scalars(sa.select(Image.thumbnail).where(Image.thumbnail.in_(wanted))))
    used |= set(
        session.scalars(sa.select(RemovedImage.thumbnail).where(RemovedImage.thumbnail.in_(wanted)))
    )
    return [k for k in wanted if k not in used]


def delete_images(session: Session, image_ids: Sequence[int]) -> list[str]:
    """Remove images (no commit), their now-unreferenced embeddings, and return the thumbnail
    keys nobody refers to any more (delete those files after the commit, with
    :func:`remove_thumbnails`)."""
    ids = sorted({int(i) for i in image_ids})
    if not ids:
        return []
    rows = session.execute(sa.select(Image.sha256, Image.thumbnail).where(Image.id.in_(ids))).all()
    session.execute(sa.delete(Image).where(Image.id.in_(ids)))
    gc_embeddings(session, [r[0] for r in rows])
    return orphan_thumbnails(session, [r[1] for r in rows])


def remove_thumbnails(thumb_dir: str | os.PathLike[str], keys: Sequence[str]) -> int:
    """Delete thumbnail files by key; keys that do not look like ours are ignored."""
    base = Path(thumb_dir)
    n = 0
    for key in keys:
        parts = key.split("/")
        if len(parts) != 2 or not all(p and p not in (".", "..") for p in parts):
            continue
        with contextlib.suppress(FileNotFoundError):
            (base / parts[0] / parts[1]).unlink()
            n += 1
    return n


# --------------------------------------------------------------------------------------------
# Removals that stick (the user's "remove from library")


def removed_info(row: RemovedImage) -> RemovedInfo:
    return RemovedInfo(
        id=row.id,
        image_id=row.image_id,
        path=row.path,
        folder=row.folder,
        size=row.size,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        format=row.format,
        taken_at=row.taken_at,
        thumbnail=row.thumbnail,
        trash_path=row.trash_path,
        removed_at=row.removed_at,
    )


def record_removal(session: Session, row: Image) -> RemovedImage:
    """Remember that the user removed this image (no commit; delete the image row after, with
    :func:`delete_images`, in the same transaction)."""
    old = session.scalar(sa.select(RemovedImage).where(RemovedImage.path == row.path))
    if old is not None:  # the same path removed before, re-added by a restore: one record
        session.delete(old)
        session.flush()
    removed = RemovedImage(
        image_id=row.id,
        path=row.path,
        folder=row.folder,
        size=row.size,
        mtime_ns=row.mtime_ns,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        format=row.format,
        taken_at=row.taken_at,
        thumbnail=row.thumbnail,
        removed_at=utcnow(),
    )
    session.add(removed)
    session.flush()
    return removed


def get_removed(session: Session, removed_id: int) -> RemovedImage:
    row = session.get(RemovedImage, removed_id)
    if row is None:
        raise NotFound(f"removed image {removed_id} does not exist (it may have been restored)")
    return row


def removed_for_image(session: Session, image_id: int) -> RemovedImage:
    """The removal record of a former image id (the newest when there are several)."""
    row = session.scalar(
        sa.select(RemovedImage)
        .where(RemovedImage.image_id == image_id)
        .order_by(RemovedImage.id.desc())
        .limit(1)
    )
    if row is None:
        raise NotFound(f"image {image_id} is not among the removed images")
    return row


def removed_paths(session: Session, db_paths: Sequence[str]) -> set[str]:
    """Of these catalog paths, the ones the user removed (unique index look-ups)."""
    found: set[str] = set()
    paths = sorted(set(db_paths))
    for start in range(0, len(paths), 500):
        found |= set(
            session.scalars(
                sa.select(RemovedImage.path).where(
                    RemovedImage.path.in_(paths[start : start + 500])
                )
            )
        )
    return found


def removed_content_by_size(session: Session, sizes: Sequence[int]) -> dict[int, set[str]]:
    """size -> content hashes of removed files of that size (index look-ups), so a scan hashes
    only a new file whose size matches something removed."""
    out: dict[int, set[str]] = {}
    wanted = sorted({int(x) for x in sizes})
    for start in range(0, len(wanted), 500):
        for size, sha in session.execute(
            sa.select(RemovedImage.size, RemovedImage.sha256).where(
                RemovedImage.size.in_(wanted[start : start + 500]),
                RemovedImage.sha256.is_not(None),
            )
        ):
            out.setdefault(int(size), set()).add(str(sha))
    return out
