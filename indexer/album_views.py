"""Albums as a viewer of some folders sees them (indexer.sharing): an album shows them only its
pictures under those folders, its counts are of those, and an album with none of them is not
there for them (as an unknown album). Its saved query is not shown to them (it may name
folders or pictures they cannot see). Those who see everything get indexer.albums' answers.

The restriction is a condition in the catalog queries (the same page statements as
indexer.albums), so pages stay full and counts true.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import albums, catalog
from .albums import Album, AlbumImage, AlbumInfo, AlbumMember
from .catalog import Image
from .errors import NotFound
from .sharing import Visibility, folder_condition
from .types import ImageInfo

__all__ = ["export_rows", "get_album", "list_albums", "members_page"]


def _seen_info(session: Session, row: Album, seen: Visibility) -> AlbumInfo | None:
    """The album's counts over the ready pictures ``seen`` allows; None when it shows none."""
    info = albums.get_album(session, int(row.id))
    cond = folder_condition(seen, ranged=catalog.bytewise_text(session))
    if cond is None:
        return info
    stmt = (
        sa.select(AlbumMember.state, sa.func.count())
        .join(Image, Image.id == AlbumMember.image_id)
        .where(AlbumMember.album_id == row.id, Image.state == "ready", cond)
        .group_by(AlbumMember.state)
    )
    n = {str(s): int(c) for s, c in session.execute(stmt)}
    shown = n.get("auto", 0) + n.get("pinned", 0)
    if not shown:
        return None
    return dataclasses.replace(
        info, query=None, size=shown, pinned=n.get("pinned", 0), excluded=n.get("excluded", 0)
    )


def list_albums(session: Session, seen: Visibility) -> list[AlbumInfo]:
    """The albums that show ``seen`` any picture, by name."""
    if seen.everything:
        return albums.list_albums(session)
    rows = session.scalars(sa.select(Album).order_by(Album.name))
    return [i for i in (_seen_info(session, r, seen) for r in rows) if i is not None]


def get_album(session: Session, album: int | str, seen: Visibility) -> AlbumInfo:
    """An album by id or name as ``seen`` sees it; NotFound (the same words as for an unknown
    album) when it shows them nothing."""
    row = albums.find_album(session, album)
    info = _seen_info(session, row, seen)
    if info is None:
        raise NotFound(f"no album {album!r}: `clipsearch albums list` shows the albums")
    return info


def members_page(
    session: Session,
    album: int | str,
    after: int | None,
    limit: int,
    excluded: bool,
    seen: Visibility,
) -> tuple[list[AlbumImage], int | None]:
    """indexer.albums.members_page, with only the pictures ``seen`` allows."""
    cond = folder_condition(seen, ranged=catalog.bytewise_text(session))
    if cond is None:
        return albums.members_page(session, album, after, limit, excluded)
    albums._check_page(after, limit)  # the same limits, in the same words
    info = get_album(session, album, seen)
    stmt = albums.page_statement(info.id, after, limit, excluded)
    rows = list(session.execute(stmt.where(cond)))
    items = [AlbumImage(catalog.image_info(img), state, score) for img, state, score in rows]
    return items, (int(rows[-1][0].id) if len(rows) == limit else None)


def export_rows(
    session: Session, album: int | str, seen: Visibility
) -> tuple[AlbumInfo, list[ImageInfo]]:
    """indexer.albums.export_rows, with only the pictures ``seen`` allows."""
    cond = folder_condition(seen)
    if cond is None:
        return albums.export_rows(session, album)
    info = get_album(session, album, seen)
    if info.size > albums.MAX_EXPORT:
        return albums.export_rows(session, album)  # its refusal, in its words
    stmt = albums.page_statement(info.id, None, albums.MAX_EXPORT).with_only_columns(Image)
    return info, [catalog.image_info(i) for i in session.scalars(stmt.where(cond))]
