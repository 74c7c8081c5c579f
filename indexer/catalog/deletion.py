"""Deleting: images out of the catalog (their embeddings and thumbnails once nothing refers to
them), and the removals that stick (the user's "remove from library", by path and content).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clipsearch.indexer.errors import NotFound
from clipsearch.indexer.types import RemovedInfo

from .schema import Embedding, Image, RemovedImage, utcnow

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
