"""Index and freshness: the index a library's searches read, and keeping it current.

The catalog's active ``IndexVersion`` names the model searches use and the saved index
(``<data_dir>/index``, :class:`~indexer.vector_index.IndexStore`). :class:`IndexService` loads
it, then keeps it fresh: images embedded since that build are added to the index's exact delta
(by one follower thread, indexer.freshness: every ``refresh_interval_s`` and soon after a search
finds it due; or at once with :meth:`IndexService.refresh_index`), so newly ingested images are
searchable before any rebuild. A newer active version (a re-index finished, possibly with a new
model) is loaded beside the old one and swapped in by one reference assignment: a query in flight
finishes on what it started with. Without any index yet, or when its files were deleted, it
serves an exact index made from the catalog's vectors: the catalog is the source of truth, the
FAISS files are a derived cache.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import catalog
from .catalog import IndexVersion, ModelRecord
from .context import CatalogContext, index_dir, library_model_spec, normalise_spec
from .errors import IndexerError, StoreUnavailable
from .freshness import IndexFollower
from .vector_store import (
    LEASE_TTL_S,
    FaissStore,
    StoreConfig,
    VectorStore,
    active_index_row,
    follow_catalog,
    hold_lease,
    new_lease_owner,
    release_lease,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from clipsearch.model.base import EmbeddingModel

    from .vector_index import VectorIndex

log = logging.getLogger(__name__)

__all__ = ["IndexService", "Served"]


@dataclass
class Served:
    """What searches read: one model with one vector store. Replaced whole on a version change."""

    model: EmbeddingModel
    model_id: int
    spec: str
    store: VectorStore
    catalog_version: int | None  # the active IndexVersion it came from (None: built in memory)
    watermark: int  # the catalog's change sequence this store reflects (catalog.changes_since)
    lock: threading.Lock = field(default_factory=threading.Lock)
    mark: str | None = None  # Milvus: the catalog mark that keeps the collection's watermark

    @property
    def index(self) -> VectorIndex | None:
        """The in-process VectorIndex (FAISS store only; None with Milvus)."""
        return self.store.index if isinstance(self.store, FaissStore) else None


class IndexService:
    """The served index of one library: loaded on first use, followed, hot-swapped (thread-safe)."""

    def __init__(
        self,
        ctx: CatalogContext,
        model_spec: str,
        device: str | None = None,
        store: StoreConfig | None = None,
        refresh_interval_s: float = 2.0,
        image_tower: str = "now",
    ) -> None:
        self.ctx = ctx
        self.image_tower = image_tower  # model.load's choice: "now" or "on_demand"
        self.default_spec = model_spec  # the model of a new library (the catalog's model wins)
        self.device = device
        self.store_config = store if store is not None else StoreConfig()
        self.served: Served | None = None
        # why the index files are not served (exact search from the catalog meanwhile)
        self.index_damage: str | None = None
        self._load_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        # freshness: one thread (started with the first index served) follows the catalog
        self.follower = IndexFollower(self.refresh_index, refresh_interval_s)
        # Milvus: of the processes following the catalog, only the lease holder writes the
        # repairs (vector_store.hold_lease); workers write their own batches.
        self._lease_owner = new_lease_owner()
        self._lease_ttl_s = max(LEASE_TTL_S, 5 * refresh_interval_s)

    # ---- what is served

    @property
    def model(self) -> EmbeddingModel:
        """The CLIP model searches use (the active index's model), loaded on first use."""
        return self.ensure_served().model

    @property
    def model_spec(self) -> str:
        served = self.served
        if served is not None:
            return served.spec
        with self.ctx.session() as session:
            return library_model_spec(session) or normalise_spec(self.default_spec)

    def ensure_served(self) -> Served:
        served = self.served
        if served is not None:
            return served
        with self._load_lock:
            if self.served is None:
                self.served = self._load_served(reuse=None)
                self.follower.start()
            return self.served

    def forget(self, image_ids: Sequence[int]) -> None:
        """Take deleted images out of the served store at once (the follower would, later)."""
        served = self.served
        if served is not None:
            with served.lock:
                served.store.delete(list(image_ids))

    def close(self) -> None:
        """Stop following the catalog and give up a Milvus repair lease held."""
        self.follower.stop()
        served = self.served
        if served is not None and served.mark is not None:
            with contextlib.suppress(Exception), self.ctx.session() as session:
                release_lease(session, _lease_name(served.mark), self._lease_owner)

    # ---- loading

    def _load_model(self, spec: str) -> EmbeddingModel:
        from clipsearch import model as clip_model

        return clip_model.load(spec, device=self.device, image_tower=self.image_tower)

    @property
    def _milvus(self) -> bool:
        return self.store_config.kind == "milvus"

    def _load_served(self, reuse: Served | None) -> Served:
        """Build what searches read from the catalog's active version (outside any lock)."""
        with self.ctx.session() as session:
            row = active_index_row(session)
            if self._milvus and (row is None or not _is_milvus(row.params)):
                row = None  # Milvus serves only Milvus versions (created below when none yet)
            elif not self._milvus and row is not None and _is_milvus(row.params):
                row = _newest_faiss_row(session)
            spec = _spec_of_row(session, row) if row is not None else None
            if spec is None:  # no index yet: the model that embedded the library, if any
                spec = library_model_spec(session)
            row_info = (
                None
                if row is None
                else (row.version, row.model_id, dict(row.params or {}), row.path)
            )
        if spec is None:
            spec = normalise_spec(self.default_spec)
        model = reuse.model if reuse is not None and reuse.spec == spec else self._load_model(spec)
        if self._milvus:
            served = self._load_milvus(model, spec, row_info)
        elif row_info is None:
            model_id = catalog.ensure_model(self.ctx.Session, model)
            store = FaissStore.empty(int(model.embed_dim))
            served = Served(model, model_id, spec, store, None, 0)
        else:
            version, model_id, params, _path = row_info
            loaded = self._load_index_files(version, params)
            if loaded is None:
                store = FaissStore.empty(int(model.embed_dim))
                served = Served(model, model_id, spec, store, version, 0)
            else:
                if "change_seq" not in params:
                    log.warning(
                        "index version %s predates the catalog's change sequence: every vector is "
                        "re-read into its delta; run `clipsearch reindex` to rebuild it",
                        version,
                    )
                watermark = int(params.get("change_seq") or 0)
                served = Served(model, model_id, spec, loaded, version, watermark)
        self._sync_delta(served)
        return served

    def _load_milvus(
        self,
        model: EmbeddingModel,
        spec: str,
        row_info: tuple[int, int, dict[str, Any], str] | None,
    ) -> Served:
        """The Milvus collection of the active version (a client, no vectors in this process);
        a new library's first collection is created empty."""
        from . import milvus_store

        if row_info is None:
            with self.ctx.session() as session:
                other = active_index_row(session)
                if other is not None:
                    raise StoreUnavailable(
                        "this library's vectors are not in Milvus yet (its active index is "
                        f"version {other.version}, FAISS files): run `clipsearch reindex` with "
                        "CLIPSEARCH_MILVUS_URI set to build the Milvus collection from the catalog "
                        "(no image is embedded again)"
                    )
            model_id = catalog.ensure_model(self.ctx.Session, model)
            version = milvus_store.ensure_first_version(
                self.store_config, self.ctx.Session, model_id, int(model.embed_dim)
            )
            with self.ctx.session() as session:
                row = session.scalar(sa.select(IndexVersion).where(IndexVersion.version == version))
                assert row is not None
                row_info = (row.version, row.model_id, dict(row.params or {}), row.path)
        version, model_id, params, _path = row_info
        store = milvus_store.open_version(self.store_config, params, int(model.embed_dim))
        return Served(
            model, model_id, spec, store, version, 0, mark=milvus_store.mark_name(version)
        )

    def _load_index_files(self, version: int, params: dict[str, Any]) -> FaissStore | None:
        """The saved index of catalog version ``version``, or None (logged) if its files are gone."""
        folder = index_dir(self.ctx.data_dir)
        try:
            store = FaissStore.load(folder, int(params.get("store_version") or 0) or None)
        except IndexerError as exc:
            log.warning(
                "index version %s cannot be loaded (%s); serving exact search from the catalog's "
                "vectors until `clipsearch reindex` rebuilds it",
                version,
                exc,
            )
            self.index_damage = f"the files of index version {version} cannot be loaded"
            return None
        extra = store.metadata.get("extra") or {}
        if extra.get("catalog_version") != version:
            log.warning(
                "the index files in %s belong to another version (%s, not %s); serving exact "
                "search from the catalog's vectors until `clipsearch reindex` rebuilds it",
                folder,
                extra.get("catalog_version"),
                version,
            )
            self.index_damage = (
                f"the index files belong to another version ({extra.get('catalog_version')}, "
                f"not {version})"
            )
            return None
        self.index_damage = None
        return store

    # ---- freshness

    def _sync_delta(self, served: Served) -> int:
        """Apply what the catalog changed since the store's watermark to the store: new and
        re-embedded images upserted (FAISS: into the exact delta), deleted or no longer ready ones
        out. Reads only the changed rows (an index range on the change sequence). With Milvus the
        watermark is kept in the catalog per collection, so whichever process follows the catalog
        repairs writes a crashed worker missed. Returns the rows read."""
        with served.lock, self.ctx.session() as session:
            if served.mark is not None:
                lease = _lease_name(served.mark)
                if not hold_lease(session, lease, self._lease_owner, self._lease_ttl_s):
                    # another process follows the catalog into this collection: one writer
                    served.watermark = catalog.get_mark(session, served.mark) or 0
                    return 0
                served.watermark = catalog.get_mark(session, served.mark) or 0
            result = follow_catalog(served.store, session, served.model_id, served.watermark)
            read = result.rows_read
            if result.reload:
                # deletions newer than our watermark were forgotten
                if served.mark is None:
                    log.warning("index refresh fell too far behind the catalog; reloading it")
                    served.store = FaissStore.empty(served.store.dim)
                else:
                    log.warning(
                        "the Milvus collection fell too far behind the catalog to learn every "
                        "deletion; upserting every vector again (deleted images are never shown, "
                        "and `clipsearch reindex` rebuilds the collection exactly)"
                    )
                result = follow_catalog(served.store, session, served.model_id, 0)
                read += result.rows_read
            served.watermark = result.watermark
            if served.mark is not None:
                catalog.advance_mark(session, served.mark, result.watermark)
                session.commit()
            return read

    def refresh_index(self) -> int:
        """Pick up a newer active index version (hot swap) and what the catalog changed since the
        build (new vectors, deletions). Returns the catalog rows the refresh read."""
        served = self.served
        if served is None:
            self.ensure_served()
            return 0
        with self._refresh_lock:
            self.follower.refreshed()
            with self.ctx.session() as session:
                row = active_index_row(session)
                version = None if row is None else row.version
                if row is not None and _is_milvus(row.params) != self._milvus:
                    version = served.catalog_version  # another store's version: not ours to load
            if version != served.catalog_version:
                new = self._load_served(reuse=served)
                self.served = new  # the swap: one reference assignment
                log.info(
                    "now serving index version %s (model %s, %s store)",
                    new.catalog_version,
                    new.spec,
                    new.store.kind,
                )
                return 0
            return self._sync_delta(served)


def _lease_name(mark: str) -> str:
    """The catalog mark of the lease on writing repairs into the collection of ``mark``."""
    return f"lease_{mark}"


def _is_milvus(params: object) -> bool:
    return isinstance(params, dict) and params.get("store") == "milvus"


def _newest_faiss_row(session: Session) -> IndexVersion | None:
    """The newest FAISS version (what an embedded library serves while Milvus is active)."""
    for row in session.scalars(
        sa.select(IndexVersion).order_by(IndexVersion.version.desc()).limit(20)
    ):
        if not _is_milvus(row.params):
            return row
    return None


def _spec_of_row(session: Session, row: IndexVersion) -> str | None:
    name = session.scalar(sa.select(ModelRecord.name).where(ModelRecord.id == row.model_id))
    return None if name is None else str(name)


if TYPE_CHECKING:  # the service's view of it (indexer.facade) is this class's
    from .facade import IndexApi

    _index_is_an_index_api: type[IndexApi] = IndexService
