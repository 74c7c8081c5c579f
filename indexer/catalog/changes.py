"""The change feed: what changed since a watermark (what an index refresh reads, index ranges
only, whatever the library's size), the catalog's named marks and the tombstones' pruning.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .codecs import pack_vectors
from .schema import CatalogMark, Embedding, Image, ImageTombstone, utcnow

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
        ids, vecs = pack_vectors(up_ids, up_vecs)
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


def _no_ids() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)
