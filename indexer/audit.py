"""The audit trail (migration 0010): who did what to which target, when, from where, and whether
it worked. Written by every door through :func:`record`; read by ``GET /api/audit`` and the
admin page. It never holds a secret: a target is a name, an id or a path, never a password, a key
or a session (callers pass those as what they are about, e.g. ``key 12``)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .catalog import UTCDateTime, utcnow

log = logging.getLogger(__name__)

MAX_PAGE = 500
ACTIONS = (
    "sign-in",
    "sign-in-failed",
    "sign-in-throttled",
    "sign-out",
    "user-added",
    "user-changed",
    "user-deleted",
    "password-changed",
    "key-created",
    "key-revoked",
    "folder-added",
    "folder-removed",
    "folder-shared",
    "folder-unshared",
    "ingest",
    "image-removed",
    "image-restored",
    "reindex",
)

meta = sa.MetaData()
audit = sa.Table(
    "audit",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("address", sa.String(64)),
    sa.Column("outcome", sa.String(16), nullable=False, server_default="ok"),
    sa.Index("ix_audit_actor_id", "actor", "id"),
    sqlite_autoincrement=True,
)  # as migration 0010 made it


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str | None
    address: str | None
    outcome: str


def _storable(text: str) -> str:
    """``text`` as a database can store it: what a caller sent may hold lone surrogates (a JSON
    ``\\ud800``) or NULs, kept visible as escapes rather than failing the write."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def record(
    engine: Engine,
    actor: str,
    action: str,
    target: str | None = None,
    address: str | None = None,
    outcome: str = "ok",
) -> None:
    """Add one entry. A failure to write it is logged, never raised (the action happened)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    try:
        with engine.begin() as conn:
            conn.execute(
                audit.insert().values(
                    at=utcnow(),
                    actor=_storable(actor)[:64],
                    action=action,
                    target=_storable(target or "")[:1000] or None,
                    address=_storable(address or "")[:64] or None,
                    outcome=_storable(outcome)[:16],
                )
            )
    except (sa.exc.SQLAlchemyError, UnicodeError) as exc:
        log.warning("audit entry %s by %s not written: %s", action, actor, exc)


def entries(
    engine: Engine,
    limit: int = 100,
    before: int | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> list[AuditEntry]:
    """The newest entries first (``before``: the cursor, an entry id), at most ``limit``."""
    limit = max(1, min(int(limit), MAX_PAGE))
    stmt = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(audit.c.id < before)
    if actor is not None:
        stmt = stmt.where(audit.c.actor == actor)
    if action is not None:
        stmt = stmt.where(audit.c.action == action)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [AuditEntry(r.id, r.at, r.actor, r.action, r.target, r.address, r.outcome) for r in rows]
