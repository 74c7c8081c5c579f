"""The vector-store seam: every vector operation of indexer/ goes through :class:`VectorStore`.

Two implementations:

* :class:`FaissStore` (embedded, the default): one :class:`~indexer.vector_index.VectorIndex` in
  the process (exact flat or IVF with tuned nprobe, an exact delta for what changed since the
  build), saved as versioned atomic files by :class:`~indexer.vector_index.IndexStore`. Each API
  process holds one and follows the catalog's change sequence; a new version is hot-swapped by the
  Library.
* :class:`~indexer.milvus_store.MilvusStore` (``CLIPSEARCH_MILVUS_URI``): one Milvus collection per
  model and index version, with the filterable fields as scalar fields so filters run inside
  Milvus. Workers write to it as they commit; API processes hold nothing but a client.

The catalog is the source of truth for both: :func:`follow_catalog` applies what the catalog's
change sequence says changed after a watermark, whatever the store, so a store that missed writes
is repaired from the catalog, and ``clipsearch reindex`` rebuilds either store without
re-embedding.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from .configs import INDEX_TYPES, StoreConfig

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from sqlalchemy.orm import Session

    from .catalog import IndexVersion
    from .vector_index import VectorIndex

log = logging.getLogger(__name__)

__all__ = [
    "INDEX_TYPES",
    "FaissStore",
    "StoreConfig",
    "StoreFilters",
    "VectorFields",
    "VectorStore",
    "active_index_row",
    "follow_catalog",
    "hold_lease",
    "new_lease_owner",
    "release_lease",
    "selective_ids",
    "vector_fields",
]

_KEY_CHUNK = 50  # ids per IN (...) read by primary key

#: Milvus index types clipsearch configures (all of the FAISS/Knowhere family).


@dataclass(frozen=True)
class StoreFilters:
    """Search filters in the store's terms (catalog text paths, naive wall-clock times)."""

    folder: str | None = None  # catalog text form (catalog.path_to_db), no trailing slash
    date_from: dt.datetime | None = None
    date_to: dt.datetime | None = None
    formats: tuple[str, ...] = ()
    within: tuple[str, ...] | None = None  # a viewer's shared folders (indexer.sharing)

    @property
    def empty(self) -> bool:
        return (
            not (self.folder or self.date_from or self.date_to or self.formats)
            and self.within is None
        )


@dataclass
class VectorFields:
    """The filterable fields of each vector, in the order of its ids."""

    folder: list[str] = field(default_factory=list)
    taken_at: list[dt.datetime | None] = field(default_factory=list)
    format: list[str | None] = field(default_factory=list)


def vector_fields(session: Session, image_ids: Sequence[int]) -> VectorFields:
    """The filterable fields (folder, capture time, format) of these images from the catalog, in
    their order (read by primary key, in small chunks)."""
    import sqlalchemy as sa

    from .catalog import Image

    ids = [int(i) for i in image_ids]
    found: dict[int, tuple[str, dt.datetime | None, str | None]] = {}
    for start in range(0, len(ids), _KEY_CHUNK):
        for image_id, folder, taken_at, fmt in session.execute(
            sa.select(Image.id, Image.folder, Image.taken_at, Image.format).where(
                Image.id.in_(ids[start : start + _KEY_CHUNK])
            )
        ):
            found[int(image_id)] = (folder, taken_at, fmt)
    out = VectorFields()
    for image_id in ids:
        folder, taken_at, fmt = found.get(image_id, ("", None, None))
        out.folder.append(folder)
        out.taken_at.append(taken_at)
        out.format.append(fmt)
    return out


def active_index_row(session: Session) -> IndexVersion | None:
    """The catalog's active :class:`~indexer.catalog.IndexVersion` (the newest active one), or
    None: which store version, of which model, searches read."""
    import sqlalchemy as sa

    from .catalog import IndexVersion

    return session.scalar(
        sa.select(IndexVersion)
        .where(IndexVersion.active.is_(True))
        .order_by(IndexVersion.version.desc())
        .limit(1)
    )


class StoreStats(TypedDict, total=False):
    """What :meth:`VectorStore.stats` tells (the library's stats, the readiness check)."""

    store: str  # "faiss" or "milvus"
    kind: str  # the index kind (flat, ivf..., milvus-<index type>)
    size: int  # vectors in the main index
    delta: int  # vectors added since it was built (FAISS)
    entities: int  # vectors searched
    nprobe: int
    recall: object  # recall@k per query kind, as measured at build (None: not measured)
    collection: str  # Milvus: the collection, and the alias searches read
    alias: str | None


class VectorStore(ABC):
    """Vectors of one model by image id: what searches read and what the catalog is mirrored to.

    Scores are inner products of L2-normalised vectors (cosine). ``search`` returns
    ``(scores float32[k], ids int64[k])`` best first, padded with id -1 and score -inf.
    """

    #: "faiss" or "milvus"
    kind: str = ""
    #: True when ``search`` applies :class:`StoreFilters` itself (else the caller filters hits).
    filters_inside: bool = False
    #: True when ``upsert`` wants :class:`VectorFields` (the catalog reads them only then).
    needs_fields: bool = False
    #: the most results one search may ask for (offset included)
    max_fetch: int = 2**31 - 1

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        filters: StoreFilters | None = None,
        exclude: Sequence[int] | None = None,
        allow: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``allow``: only these ids are candidates (the catalog's matches of a selective filter,
        :func:`selective_ids`); a store that applies ``filters`` itself may ignore it."""

    @abstractmethod
    def upsert(
        self, ids: np.ndarray, vectors: np.ndarray, fields: VectorFields | None = None
    ) -> None:
        """Make these vectors searchable now; an id already present gets the new vector."""

    @abstractmethod
    def delete(self, ids: Iterable[int]) -> None:
        """Never return these ids again (immediately)."""

    @abstractmethod
    def count(self) -> int:
        """The number of live vectors (store entities)."""

    @abstractmethod
    def stats(self) -> StoreStats:
        """What health and metrics show: kind, size, delta, nprobe, recall, ..."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections (nothing to do for an in-process store)."""


# --------------------------------------------------------------------------------------------
# FAISS, embedded


class FaissStore(VectorStore):
    """The embedded store: one :class:`~indexer.vector_index.VectorIndex` in this process."""

    kind = "faiss"

    def __init__(self, index: VectorIndex) -> None:
        self.index = index  # VectorIndex

    @classmethod
    def empty(cls, dim: int) -> FaissStore:
        from .vector_index import build_index

        return cls(build_index(np.zeros(0, np.int64), np.zeros((0, dim), np.float32)))

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        text_queries: np.ndarray | None = None,
        compression: str | None = None,
        meta: dict[str, object] | None = None,
    ) -> FaissStore:
        """Exact flat below the threshold, IVF above with nprobe tuned on image and text queries."""
        from .vector_index import build_index

        tune = None if text_queries is None else {"text": text_queries}
        return cls(build_index(ids, vectors, tune_queries=tune, compression=compression, meta=meta))

    @classmethod
    def load(cls, folder: Path, store_version: int | None) -> FaissStore:
        """A saved version (None: the latest); IndexerError when its files are gone or damaged."""
        from .vector_index import IndexStore

        return cls(IndexStore(folder).load(store_version or None))

    def save(self, folder: Path) -> int:
        """Write this index as a new version (atomic files); returns the version."""
        from .vector_index import IndexStore

        return IndexStore(folder).save(self.index)

    @property
    def dim(self) -> int:
        return int(self.index.dim)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.index.metadata)

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        filters: StoreFilters | None = None,
        exclude: Sequence[int] | None = None,
        allow: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(query, k, exclude=exclude, allow=allow)
        return scores, ids

    def upsert(
        self, ids: np.ndarray, vectors: np.ndarray, fields: VectorFields | None = None
    ) -> None:
        self.index.add(ids, vectors)

    def delete(self, ids: Iterable[int]) -> None:
        self.index.remove(list(ids))

    def count(self) -> int:
        return len(self.index)

    def stats(self) -> StoreStats:
        meta = self.index.metadata
        return {
            "store": "faiss",
            "kind": self.index.kind,
            "size": len(self.index) - self.index.delta_size,
            "delta": self.index.delta_size,
            "entities": len(self.index),
            "nprobe": self.index.nprobe,
            "recall": meta.get("recall"),
        }


#: A filter matching at most this many images is searched through a FAISS id selector (exact
#: over the matches); a broader one by over-fetching (the matches are then common enough).
SELECTIVE_LIMIT = 20_000


def selective_ids(
    session: Session, filters: StoreFilters, limit: int = SELECTIVE_LIMIT
) -> NDArray[np.int64] | None:
    """The ready images under ``filters.folder`` and under any of ``filters.within`` (a viewer's
    shared folders; sorted ids) when there are at most ``limit`` of them, else None. One range
    read on the folder index per folder, stopped after ``limit + 1`` rows (never the library);
    the other filters are left to the catalog's check of each hit. None too where text does not
    sort byte-wise (a PostgreSQL database with a language collation: the range would not be the
    folder's), so the caller over-fetches instead."""
    if not (filters.folder or filters.within is not None) or not _bytewise_text(session):
        return None
    found: set[int] | None = None
    if filters.folder:
        rows = _folder_ids(session, filters.folder, limit)
        found = set(rows) if rows is not None else None
    if filters.within is not None:
        union: set[int] | None = set()
        for folder in filters.within:
            assert union is not None
            rows = _folder_ids(session, folder, limit - len(union))
            if rows is None:
                union = None
                break
            union |= set(rows)
        if union is not None:
            found = union if found is None else found & union
    if found is None:
        return None
    return np.sort(np.fromiter(found, np.int64, len(found)))


def count_under(session: Session, folders: tuple[str, ...], state: str | None = None) -> int:
    """The pictures under ``folders`` (none inside another: indexer.sharing keeps them so), in
    ``state`` or all: a range count on the folder index per folder where text sorts byte-wise,
    else the folder conditions (a scan, as the folder filter)."""
    import sqlalchemy as sa

    from . import catalog

    column = catalog.Image.folder
    total = 0
    for folder in folders:
        folder = folder.rstrip("/") or "/"
        stmt = sa.select(sa.func.count()).select_from(catalog.Image)
        stmt = stmt.where(catalog.under_folder(column, folder, ranged=_bytewise_text(session)))
        if state is not None:
            stmt = stmt.where(catalog.Image.state == state)
        total += int(session.scalar(stmt) or 0)
    return total


def _folder_ids(session: Session, folder: str, limit: int) -> list[int] | None:
    """The ready image ids under ``folder``, or None when there are more than ``limit``."""
    import sqlalchemy as sa

    from . import catalog

    if limit <= 0:
        return None
    rows = session.scalars(
        sa.select(catalog.Image.id)
        .where(catalog.under_folder(catalog.Image.folder, folder, ranged=True))  # a range read
        .where(catalog.Image.state == "ready")
        .limit(int(limit) + 1)
    ).all()
    if len(rows) > limit:
        return None
    return [int(r) for r in rows]


def _bytewise_text(session: Session) -> bool:
    from . import catalog

    return catalog.bytewise_text(session)


# --------------------------------------------------------------------------------------------
# One writer: a lease on a catalog mark

#: How long a lease holds without being renewed; a process that stops renewing (killed) is
#: replaced by another follower this long after its last renewal.
LEASE_TTL_S = 30.0
_OWNER_BITS = 31


def _clock() -> float:
    return time.time()


def new_lease_owner() -> int:
    """A process's lease owner id (random, never 0)."""
    import secrets

    return secrets.randbits(_OWNER_BITS) | 1


def hold_lease(
    session: Session, name: str, owner: int, ttl_s: float = LEASE_TTL_S, now: float | None = None
) -> bool:
    """Take or renew the lease ``name`` for ``owner``; False while another owner holds it.

    The lease is one catalog mark whose value packs (expiry second, owner): taken or renewed by a
    compare-and-set UPDATE on the value read, so of several processes racing exactly one wins,
    on SQLite and PostgreSQL alike. Commits."""
    import sqlalchemy as sa

    from . import catalog

    now_s = int(_clock() if now is None else now)
    value = ((now_s + max(1, int(ttl_s))) << _OWNER_BITS) | int(owner)
    current = catalog.get_mark(session, name)
    if current is None:
        try:
            with session.begin_nested():
                session.add(catalog.CatalogMark(name=name, value=value))
            session.commit()
            return True
        except sa.exc.IntegrityError:
            session.rollback()
            return False
    holder = current & ((1 << _OWNER_BITS) - 1)
    expires = current >> _OWNER_BITS
    if holder != int(owner) and expires > now_s:
        return False
    res = session.execute(
        sa.update(catalog.CatalogMark)
        .where(catalog.CatalogMark.name == name, catalog.CatalogMark.value == current)
        .values(value=value)
    )
    session.commit()
    assert isinstance(res, sa.CursorResult)  # an UPDATE's result (typed as a plain Result)
    return int(res.rowcount or 0) == 1


def release_lease(session: Session, name: str, owner: int) -> None:
    """Give the lease up now (if ``owner`` holds it), so another process takes it at once."""
    import sqlalchemy as sa

    from . import catalog

    current = catalog.get_mark(session, name)
    if current is None or current & ((1 << _OWNER_BITS) - 1) != int(owner):
        return
    session.execute(
        sa.update(catalog.CatalogMark)
        .where(catalog.CatalogMark.name == name, catalog.CatalogMark.value == current)
        .values(value=0)
    )
    session.commit()


# --------------------------------------------------------------------------------------------
# Following the catalog


@dataclass
class FollowResult:
    watermark: int
    rows_read: int
    reload: bool  # deletions after the watermark were pruned: the store must be rebuilt


def follow_catalog(store: VectorStore, session: Session, model_id: int, after: int) -> FollowResult:
    """Apply to ``store`` what the catalog changed for ``model_id`` after change ``after``:
    new and re-embedded images upserted, deleted or no longer ready ones deleted. Reads only the
    changed rows (range reads on the change sequence, keys for the vectors and fields)."""
    from . import catalog

    read = 0
    watermark = int(after)
    while True:
        changes = catalog.changes_since(session, model_id, watermark)
        if changes.reload:
            return FollowResult(watermark, read, True)
        read += changes.rows_read
        if changes.removed.size:
            store.delete(changes.removed.tolist())
        if changes.upsert_ids.size:
            fields = (
                vector_fields(session, changes.upsert_ids.tolist()) if store.needs_fields else None
            )
            store.upsert(changes.upsert_ids, changes.upsert_vectors, fields)
        watermark = changes.watermark
        if not changes.more:
            return FollowResult(watermark, read, False)
