"""Stats: what a library holds and serves, as typed values (``clipsearch status``,
``/api/health``, ``/metrics``). Cheap: a few index reads, no model loaded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import catalog
from .catalog import Job
from .context import CatalogContext, library_model_spec
from .errors import StoreUnavailable
from .serving import IndexService
from .vector_store import active_index_row

__all__ = ["ImageCounts", "IndexStats", "JobCounts", "LibraryStats", "StatsService"]


@dataclass(frozen=True)
class ImageCounts:
    """Catalogued images by state (the trigger-kept counts)."""

    pending: int = 0
    ready: int = 0
    failed: int = 0
    total: int = 0


@dataclass(frozen=True)
class IndexStats:
    """The index searches read: the one served by this process if it loaded one, else the
    catalog's active version as recorded."""

    version: int | None = None  # the catalog's IndexVersion (None: none built yet)
    kind: str | None = None  # flat, ivf, ivf-fastscan, milvus-...
    size: int = 0  # vectors in the built index
    delta: int = 0  # vectors added since (searched exactly)
    model: str | None = None
    store: str | None = None  # faiss or milvus (only when served)
    entities: int | None = None  # vectors the store holds
    nprobe: int | None = None
    recall: float | None = None  # measured at build time
    collection: str | None = None  # Milvus: the collection served, and its alias
    alias: str | None = None
    catalog_vectors: int | None = None  # ready images (what the store should hold)
    missing: int | None = None  # catalog vectors the store lacks; `clipsearch reindex` repairs
    error: str | None = None  # why the store cannot answer, if so
    damaged: str | None = None  # why the index files are not served; `clipsearch reindex` repairs


@dataclass(frozen=True)
class JobCounts:
    """Jobs not finished yet (exact, not limited to a page of recent jobs)."""

    queued: int = 0
    running: int = 0


@dataclass(frozen=True)
class LibraryStats:
    """Counts by state, the served index, the library's model and its unfinished jobs."""

    images: ImageCounts = field(default_factory=ImageCounts)
    index: IndexStats = field(default_factory=IndexStats)
    model: str | None = None
    jobs: JobCounts = field(default_factory=JobCounts)

    def as_dict(self) -> dict[str, object]:
        """Plain values (JSON output); index fields that do not apply are left out."""
        out = asdict(self)
        out["index"] = {
            k: v for k, v in out["index"].items() if v is not None or k in _ALWAYS_SHOWN
        }
        return out


_ALWAYS_SHOWN = ("version", "kind", "size", "delta", "model")
_INDEX_FIELDS = frozenset(IndexStats.__dataclass_fields__)


class StatsService:
    """The stats of one library (thread-safe; loads no model)."""

    def __init__(self, ctx: CatalogContext, index: IndexService) -> None:
        self.ctx = ctx
        self.index = index

    def stats(self) -> LibraryStats:
        """Counts by state, the served index, unfinished jobs. Cheap: loads no model."""
        with self.ctx.session() as session:
            counts = catalog.state_counts(session)
            jobs = dict(
                session.execute(
                    sa.select(Job.state, sa.func.count())
                    .where(Job.state.in_(("queued", "running")))
                    .group_by(Job.state)
                ).all()
            )
            row = active_index_row(session)
            model_name = library_model_spec(session)
            row_info = None if row is None else (row.version, row.kind, row.size)
        images = ImageCounts(
            pending=int(counts.get("pending", 0)),
            ready=int(counts.get("ready", 0)),
            failed=int(counts.get("failed", 0)),
            total=sum(int(counts.get(s, 0)) for s in ("pending", "ready", "failed")),
        )
        served = self.index.served
        if served is not None:
            values: dict[str, Any] = {"version": served.catalog_version, "model": served.spec}
            try:
                values.update(served.store.stats())
            except StoreUnavailable as exc:
                values.update(store=served.store.kind, error=str(exc))
            if values.get("entities") is not None:
                # catalog vectors vs store entities: a store that lost vectors (a Milvus
                # collection emptied by hand) shows here; `clipsearch reindex` repairs it
                values["catalog_vectors"] = images.ready
                values["missing"] = max(0, images.ready - int(values["entities"]))
            if self.index.index_damage is not None:  # served exactly from the catalog meanwhile
                values["damaged"] = self.index.index_damage
            index = IndexStats(**{k: v for k, v in values.items() if k in _INDEX_FIELDS})
        elif row_info is not None:
            index = IndexStats(
                version=row_info[0], kind=row_info[1], size=row_info[2], model=model_name
            )
        else:
            index = IndexStats()
        model = served.spec if served is not None else (model_name or self.index.default_spec)
        return LibraryStats(
            images=images,
            index=index,
            model=model,
            jobs=JobCounts(queued=int(jobs.get("queued", 0)), running=int(jobs.get("running", 0))),
        )


if TYPE_CHECKING:  # the service's view of it (indexer.facade) is this class's
    from .facade import StatsApi

    _stats_is_a_stats_api: type[StatsApi] = StatsService
