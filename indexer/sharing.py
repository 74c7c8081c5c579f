"""Folders shared with people (migration 0010): each library folder (a root or a watched folder)
is visible to everyone or to chosen accounts. Editors and admins see the whole library; a viewer
sees only the pictures under the folders shared with them or with everyone. With no accounts at
all (the single-token setup) nothing is restricted.

What a viewer may see is one thing, :class:`Visibility`; the catalog queries apply it as a
condition on ``images.folder`` (:func:`folder_condition`, the same ``under_folder`` reading as the
folder filter of indexer.filtering) and the vector store through its id selector
(:func:`visible_ids`), so pages stay full and counts stay true.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import catalog
from .accounts import Principal, role_at_least, users
from .catalog import Image, UTCDateTime, utcnow
from .errors import IndexerError, NotFound

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

meta = sa.MetaData()
folder_shares = sa.Table(  # as migration 0010 made it
    "folder_shares",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("folder", sa.Text, nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey(users.c.id, ondelete="CASCADE"), index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("folder", "user_id", name="uq_folder_shares_folder_user"),
    sqlite_autoincrement=True,
)
EVERYONE = "*"


@dataclass(frozen=True)
class ShareInfo:
    id: int
    folder: str
    user: str  # an account's name, or "*" for everyone
    created_at: dt.datetime


@dataclass(frozen=True)
class Visibility:
    """The folders a caller may see (catalog text form); ``everything`` for editors and admins."""

    everything: bool
    folders: tuple[str, ...] = ()

    def allows_folder(self, folder: str) -> bool:
        if self.everything:
            return True
        return any(folder == f or folder.startswith(f.rstrip("/") + "/") for f in self.folders)


EVERYTHING = Visibility(True)


def folder_text(folder: str) -> str:
    """A folder as the catalog writes it (absolute, no trailing slash)."""
    if "\x00" in folder or not folder.strip():
        raise IndexerError("give the folder's path (absolute, as it was added to the library)")
    return catalog.path_to_db(os.path.abspath(os.path.expanduser(folder)))


def share(engine: Engine, folder: str, user_name: str | None) -> ShareInfo:
    """Share ``folder`` with ``user_name`` (None: with everyone). Sharing twice is one share."""
    text = folder_text(folder)
    with engine.begin() as conn:
        user_id = None
        if user_name is not None:
            row = conn.execute(sa.select(users.c.id).where(users.c.name == user_name)).first()
            if row is None:
                raise NotFound(f"no account named {user_name[:64]!r}")
            user_id = int(row.id)
        cond = (
            folder_shares.c.user_id.is_(None)
            if user_id is None
            else folder_shares.c.user_id == user_id
        )
        found = conn.execute(
            sa.select(folder_shares.c.id).where(folder_shares.c.folder == text, cond)
        ).first()
        if found is None:
            conn.execute(
                folder_shares.insert().values(folder=text, user_id=user_id, created_at=utcnow())
            )
    return next(
        s for s in list_shares(engine) if s.folder == text and s.user == (user_name or EVERYONE)
    )


def unshare(engine: Engine, folder: str, user_name: str | None) -> None:
    text = folder_text(folder)
    with engine.begin() as conn:
        stmt = folder_shares.delete().where(folder_shares.c.folder == text)
        if user_name is None:
            stmt = stmt.where(folder_shares.c.user_id.is_(None))
        else:
            sub = sa.select(users.c.id).where(users.c.name == user_name).scalar_subquery()
            stmt = stmt.where(folder_shares.c.user_id == sub)
        if not conn.execute(stmt).rowcount:
            raise NotFound(f"{folder[:200]!r} is not shared with {user_name or 'everyone'}")


def list_shares(engine: Engine) -> list[ShareInfo]:
    stmt = (
        sa.select(folder_shares, users.c.name)
        .outerjoin(users, users.c.id == folder_shares.c.user_id)
        .order_by(folder_shares.c.folder, folder_shares.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        ShareInfo(r.id, catalog.path_from_db(r.folder), r.name or EVERYONE, r.created_at)
        for r in rows
    ]


def visibility(engine: Engine, principal: Principal) -> Visibility:
    """What ``principal`` may see: everything from an editor up (and for the server's token or
    an open server); a viewer the folders shared with them or with everyone."""
    if role_at_least(principal.role, "editor") or principal.user_id is None:
        return EVERYTHING
    stmt = sa.select(folder_shares.c.folder).where(
        sa.or_(folder_shares.c.user_id.is_(None), folder_shares.c.user_id == principal.user_id)
    )
    with engine.connect() as conn:
        folders = sorted({str(f).rstrip("/") or "/" for f in conn.scalars(stmt)})
    # a folder inside another shared one adds nothing (and would be counted twice)
    outer = [
        f
        for f in folders
        if not any(f != o and Visibility(False, (o,)).allows_folder(f) for o in folders)
    ]
    return Visibility(False, tuple(outer))


def folder_condition(
    seen: Visibility, column: sa.SQLColumnExpression[str] = Image.folder, *, ranged: bool = False
) -> sa.ColumnElement[bool] | None:
    """A SQL condition on a folder column that keeps what ``seen`` allows (None: everything).
    ``ranged``: with each folder's index range (``catalog.under_folder``; give
    ``catalog.bytewise_text(session)``), so that a count or list over the viewer's folders can
    read their rows through the folder index instead of reading the library."""
    if seen.everything:
        return None
    if not seen.folders:
        return sa.false()
    return sa.or_(*(catalog.under_folder(column, f, ranged=ranged) for f in seen.folders))


def visible_ids(session: Session, seen: Visibility) -> np.ndarray | None:
    """The ready image ids a viewer may see, sorted, for a FAISS id selector (None: all)."""
    cond = folder_condition(seen, ranged=catalog.bytewise_text(session))
    if cond is None:
        return None
    ids = session.scalars(sa.select(Image.id).where(Image.state == "ready", cond)).all()
    return np.sort(np.fromiter((int(i) for i in ids), np.int64, len(ids)))


def image_visible(engine: Engine, image_id: int, seen: Visibility) -> bool:
    """Whether the picture ``image_id`` (or a removed picture of that id) lies under a folder
    ``seen`` allows. Unknown ids are 'visible' (the route answers its own 404)."""
    if seen.everything:
        return True
    with engine.connect() as conn:
        folder = conn.execute(sa.select(Image.folder).where(Image.id == image_id)).scalar()
        if folder is None:
            folder = conn.execute(
                sa.select(catalog.RemovedImage.folder).where(
                    catalog.RemovedImage.image_id == image_id
                )
            ).scalar()
    return folder is None or seen.allows_folder(str(folder))


def removal_visible(engine: Engine, removed_id: int, seen: Visibility) -> bool:
    """Whether the removal ``removed_id`` was of a picture under a folder ``seen`` allows.
    Unknown ids are 'visible' (the route answers its own 404)."""
    if seen.everything:
        return True
    with engine.connect() as conn:
        folder = conn.execute(
            sa.select(catalog.RemovedImage.folder).where(catalog.RemovedImage.id == removed_id)
        ).scalar()
    return folder is None or seen.allows_folder(str(folder))
