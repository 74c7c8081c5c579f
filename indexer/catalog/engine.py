"""Engines, sessions and migrations: one engine per process and URL (SQLite in WAL mode, or
PostgreSQL through psycopg 3), catalog outages raised as CatalogUnavailable, and the schema
created and upgraded by Alembic from the migrations shipped in indexer/migrations.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from clipsearch.indexer.errors import CatalogUnavailable, IndexerError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import ExceptionContext
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


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

#: PostgreSQL connections a process keeps open (SQLAlchemy's ``pool_size``; SQLAlchemy's own
#: default is 5) and may open beyond them at a peak (``max_overflow``); past both, a thread waits
#: for a connection (``pool_timeout``, 30 s) instead of the server refusing one over its
#: ``max_connections`` (100 by default). ``serve`` sizes it from the threads of an API process
#: that read the catalog at once (:func:`set_pg_pool_size`, service.serve.catalog_connections),
#: so a serve holds at most ``CLIPSEARCH_API_WORKERS x (pool + overflow)`` connections, plus its
#: worker's (docs/operations.md, "Many users").
PG_POOL_SIZE = [5]  # per process; a list: set once at the process's start
PG_MAX_OVERFLOW = 4


def set_pg_pool_size(connections: int) -> None:
    """The PostgreSQL pool of engines made from now on in this process: ``connections`` kept."""
    PG_POOL_SIZE[0] = max(1, int(connections))


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
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    else:
        kwargs.setdefault("pool_pre_ping", True)
        if u.get_backend_name() == "postgresql":
            kwargs.setdefault("pool_size", PG_POOL_SIZE[0])
            kwargs.setdefault("max_overflow", PG_MAX_OVERFLOW)
            # Bound the wait for a database host that is gone or silent: without these a request
            # waits for the kernel's TCP timeouts (minutes). A value in the URL wins.
            connect_args = {k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in u.query}
            connect_args.update(kwargs.pop("connect_args", {}))
            kwargs["connect_args"] = connect_args
        engine = sa.create_engine(u, **kwargs)

    safe_url = u.render_as_string(hide_password=True)

    @event.listens_for(engine, "handle_error")
    def _unavailable(ctx: ExceptionContext) -> None:
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


def alembic_config(url: str) -> Config:
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


class SchemaNotCurrent(IndexerError):
    """The catalog's schema is not the one this release needs, and this process may not
    upgrade it (``CLIPSEARCH_AUTO_MIGRATE=false``): ``clipsearch migrate`` does."""


def head_revision() -> str:
    """The newest migration this release ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise IndexerError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def init_db(url: str, engine: Engine | None = None, migrate: bool = True) -> Engine:
    """Create or upgrade the catalog schema to the newest migration; returns the engine.
    With ``migrate`` False the schema is only checked: :class:`SchemaNotCurrent` when it is
    not the newest (``clipsearch migrate`` is then the one step that upgrades it)."""
    from alembic import command

    engine = engine or make_engine(url)
    if not migrate:
        try:
            current, head = schema_revision(engine), head_revision()
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogUnavailable(
                f"could not read the catalog's schema ({exc.__class__.__name__}: {str(exc)[:200]})"
            ) from exc
        if current != head:
            shown = engine.url.render_as_string(hide_password=True)
            raise SchemaNotCurrent(
                f"the catalog at {shown} is at schema {current or '(none)'}, this release needs "
                f"{head}: run `clipsearch migrate` (or set CLIPSEARCH_AUTO_MIGRATE=true)"
            )
        return engine
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


_BYTEWISE = {"c", "posix", "c.utf-8", "c.utf8", "ucs_basic"}
_bytewise_cache: dict[str, bool] = {}


def bytewise_text(session: Session | sa.Connection) -> bool:
    """Whether the catalog's text comparisons follow code points (SQLite; PostgreSQL with the C
    collation), so a folder's paths are one index range (``under_folder(ranged=True)``). Where
    they do not (a PostgreSQL database with a language collation) the range would not be the
    folder's, and the folder conditions are read without it (a scan). Asked once per database."""
    bind = session.get_bind() if isinstance(session, Session) else session
    if bind.dialect.name == "sqlite":
        return True
    key = str(bind.engine.url)
    found = _bytewise_cache.get(key)
    if found is None:
        collate = session.scalar(
            sa.text("SELECT datcollate FROM pg_database WHERE datname = current_database()")
        )
        found = _bytewise_cache[key] = str(collate or "").lower() in _BYTEWISE
    return found
