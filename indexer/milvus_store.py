"""Milvus as the vector store (``CLIPSEARCH_MILVUS_URI``; ``pip install clipsearch[milvus]``).

* One collection per index version and model, ``<prefix>_v<version>_m<model id>``: the primary
  key is the catalog's image id, beside the vector are the filterable fields (``folder``,
  ``taken_at`` in microseconds of camera wall-clock time, ``format``, ``state``), so a filtered
  search is filtered inside Milvus. The alias ``<prefix>`` names the active collection for
  operators and other tools; clipsearch itself reads the collection the catalog's active
  ``IndexVersion`` names, so the model and the vectors always agree.
* A re-index (:func:`build_version`) fills a new collection from the catalog's vectors (nothing
  is embedded again), builds its index (FLAT below the flat threshold, else IVF_FLAT or the
  configured type, nlist by N), tunes nprobe to the recall target on held-out image vectors and
  text prompts, catches up with what changed meanwhile, and only then becomes active (the catalog
  row first, then the alias). Searches use the old collection until then.
* Workers upsert a batch's vectors right after the batch commits to the catalog, and deletes are
  immediate. The catalog stays the source of truth: the collection's watermark on the catalog's
  change sequence is kept in ``catalog_marks`` (``milvus_v<version>``), and one process following
  the catalog (the API process holding the lease ``lease_milvus_v<version>``, see
  :func:`~indexer.vector_store.hold_lease`) applies what a crashed worker missed; the other API
  processes only read. Writers flush every ``FLUSH_ROWS`` rows so the index covers what they wrote.
* Milvus unreachable, or the collection gone: :class:`~indexer.errors.StoreUnavailable` (503 on
  search; jobs wait and retry; health says so and what repairs it).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from . import milvus_filters
from .errors import IndexerError, StoreUnavailable
from .milvus_filters import micros
from .vector_store import (
    StoreConfig,
    StoreFilters,
    StoreStats,
    VectorFields,
    VectorStore,
    active_index_row,
    follow_catalog,
    vector_fields,
)

if TYPE_CHECKING:
    from pymilvus import MilvusClient  # untyped: its calls go through _call

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

_WRITE_CHUNK = 2000  # rows per insert/upsert request (2000 x 512 floats: ~4 MB)
MAX_FETCH = 16384  # Milvus' largest topk
# Rows a process upserts into a collection before it flushes it. Unflushed rows sit in a growing
# segment that no index covers: Milvus searches it by brute force, and milvus-lite row by row in
# Python (bench/results/vector_store.md: on top of 100,000 indexed rows, 2,000 unflushed ones
# made a query's p50 0.6 s, 10,000 2.6 s, 30,000 7.2 s). A flush seals them so the collection's
# index covers them; a build flushes once after its bulk insert.
FLUSH_ROWS = 2_000
_unflushed: dict[str, int] = {}
_unflushed_lock = threading.Lock()
_clients: dict[tuple[str, str | None], MilvusClient] = {}
_clients_lock = threading.Lock()


def collection_name(config: StoreConfig, version: int, model_id: int) -> str:
    return f"{config.milvus_collection}_v{int(version)}_m{int(model_id)}"


def mark_name(version: int) -> str:
    """The catalog mark holding a collection's watermark on the change sequence."""
    return f"milvus_v{int(version)}"


def _unavailable(config: StoreConfig, exc: BaseException, collection: str | None) -> IndexerError:
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc)
    if collection and (code == 100 or "not exist" in message or "not found" in message):
        return StoreUnavailable(
            f"the Milvus collection {collection} is missing (dropped by hand?); searches cannot "
            "be answered from it: run `clipsearch reindex` to rebuild it from the catalog (no "
            "image is embedded again)"
        )
    return StoreUnavailable(
        f"Milvus at {config.milvus_uri} does not answer ({message}); check that it is running "
        "and reachable (CLIPSEARCH_MILVUS_URI). Searches resume by themselves once it is back"
    )


def client(config: StoreConfig) -> MilvusClient:
    """A MilvusClient for ``config`` (one per URI and process; thread-safe)."""
    key = (str(config.milvus_uri), config.milvus_token)
    with _clients_lock:
        found = _clients.get(key)
        if found is not None:
            return found
        # processes that hold a client still spawn workers (serve): keep gRPC's fork handlers,
        # which can abort a child between fork and exec, out of it
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise IndexerError(
                "CLIPSEARCH_MILVUS_URI is set but pymilvus is not installed: "
                "pip install 'clipsearch[milvus]'"
            ) from None
        try:
            made = MilvusClient(
                uri=str(config.milvus_uri),
                token=config.milvus_token or "",
                timeout=config.milvus_timeout_s,
            )
        except Exception as exc:
            raise _unavailable(config, exc, None) from None
        _clients[key] = made
        return made


def _call(
    config: StoreConfig, collection: str | None, fn: Callable[P, T], *a: P.args, **kw: P.kwargs
) -> T:
    try:
        return fn(*a, **kw)
    except IndexerError:
        raise
    except Exception as exc:
        if type(exc).__name__ not in ("MilvusException", "RpcError", "_InactiveRpcError") and not (
            type(exc).__module__ or ""
        ).startswith(("pymilvus", "grpc")):
            raise
        raise _unavailable(config, exc, collection) from None


class MilvusStore(VectorStore):
    """One Milvus collection: nothing but a client in this process."""

    kind = "milvus"
    filters_inside = True
    needs_fields = True
    max_fetch = MAX_FETCH

    def __init__(
        self,
        config: StoreConfig,
        collection: str,
        dim: int,
        *,
        index_type: str = "FLAT",
        nprobe: int | None = None,
        recall: dict[str, float] | None = None,
        nlist: int = 0,
    ) -> None:
        self.config = config
        self.collection = collection
        self._dim = int(dim)
        self.index_type = index_type
        self.nprobe = int(nprobe or 1)
        self.nlist = int(nlist)
        self.recall = recall or {}
        self.client = client(config)

    @property
    def dim(self) -> int:
        return self._dim

    def _call(self, fn: Callable[P, T], *a: P.args, **kw: P.kwargs) -> T:
        return _call(self.config, self.collection, fn, *a, **kw)

    def _search_params(
        self, k: int, nprobe: int | None = None, filtered: bool = False
    ) -> dict[str, object]:
        probe = int(nprobe or self.nprobe)
        if filtered and self.nlist:
            # A filter leaves few matches in the nprobe lists tuned for unfiltered queries (at 1%
            # of the library, recall@10 fell to 0.4): probe every list, which scores only the
            # matching rows, so the answer is exact over them (bench/results/vector_store.md).
            probe = max(probe, self.nlist)
        if self.index_type.startswith("IVF"):
            return {"metric_type": "IP", "params": {"nprobe": probe}}
        if self.index_type == "HNSW":
            return {"metric_type": "IP", "params": {"ef": max(probe, k)}}
        return {"metric_type": "IP", "params": {}}

    @staticmethod
    def expression(filters: StoreFilters | None, exclude: Sequence[int] | None) -> str:
        """The Milvus boolean expression for these filters (indexer.milvus_filters)."""
        return milvus_filters.expression(filters, exclude)

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        filters: StoreFilters | None = None,
        exclude: Sequence[int] | None = None,
        allow: np.ndarray | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Filters run inside Milvus (``allow`` is not needed and ignored)."""
        q = np.asarray(query, np.float32)
        single = q.ndim == 1
        q2 = q.reshape(1, -1) if single else q
        k = min(int(k), MAX_FETCH)
        res = self._call(
            self.client.search,
            self.collection,
            data=[row.tolist() for row in q2],
            limit=k,
            filter=self.expression(filters, exclude),
            search_params=self._search_params(k, nprobe, filters is not None and not filters.empty),
            output_fields=["id"],
        )
        scores = np.full((q2.shape[0], k), -np.inf, np.float32)
        ids = np.full((q2.shape[0], k), -1, np.int64)
        for r, hits in enumerate(res):
            for c, hit in enumerate(list(hits)[:k]):
                ids[r, c] = int(hit["id"])
                scores[r, c] = float(hit["distance"])
        return (scores[0], ids[0]) if single else (scores, ids)

    def _rows(
        self, ids: np.ndarray, vectors: np.ndarray, fields: VectorFields | None
    ) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for n, (image_id, vec) in enumerate(zip(ids.tolist(), vectors, strict=True)):
            rows.append(
                {
                    "id": int(image_id),
                    "vector": np.asarray(vec, np.float32).tolist(),
                    "folder": (fields.folder[n] if fields else "") or "",
                    "taken_at": micros(fields.taken_at[n] if fields else None),
                    "format": ((fields.format[n] if fields else None) or "")[:16],
                    "state": "ready",
                }
            )
        return rows

    def upsert(
        self, ids: np.ndarray, vectors: np.ndarray, fields: VectorFields | None = None
    ) -> None:
        ids = np.asarray(ids, np.int64).reshape(-1)
        for start in range(0, ids.size, _WRITE_CHUNK):
            end = start + _WRITE_CHUNK
            sub = None
            if fields is not None:
                sub = VectorFields(
                    fields.folder[start:end], fields.taken_at[start:end], fields.format[start:end]
                )
            self._call(
                self.client.upsert,
                self.collection,
                self._rows(ids[start:end], vectors[start:end], sub),
            )
        with _unflushed_lock:
            pending = _unflushed.get(self.collection, 0) + int(ids.size)
            due = pending >= FLUSH_ROWS
            _unflushed[self.collection] = 0 if due else pending
        if due:
            self.flush()

    def flush(self) -> None:
        """Seal what was written so the collection's index covers it (see FLUSH_ROWS)."""
        self._call(self.client.flush, self.collection)

    def insert(self, ids: np.ndarray, vectors: np.ndarray, fields: VectorFields | None) -> None:
        """Like upsert, for ids known to be new (a collection being built)."""
        self._call(self.client.insert, self.collection, self._rows(ids, vectors, fields))

    def delete(self, ids: Iterable[int]) -> None:
        wanted = [int(i) for i in ids]
        for start in range(0, len(wanted), _WRITE_CHUNK):
            self._call(
                self.client.delete, self.collection, ids=wanted[start : start + _WRITE_CHUNK]
            )

    def count(self) -> int:
        res = self._call(self.client.query, self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def stats(self) -> StoreStats:
        n = self.count()
        return {
            "store": "milvus",
            "kind": f"milvus-{self.index_type.lower()}",
            "size": n,
            "delta": 0,
            "entities": n,
            "nprobe": self.nprobe,
            "recall": self.recall or None,
            "collection": self.collection,
            "alias": self.config.milvus_collection,
        }


# --------------------------------------------------------------------------------------------
# Collections


def _create_collection(config: StoreConfig, name: str, dim: int) -> None:
    from pymilvus import DataType, MilvusClient

    c = client(config)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dim))
    schema.add_field("folder", DataType.VARCHAR, max_length=65535)
    schema.add_field("taken_at", DataType.INT64)
    schema.add_field("format", DataType.VARCHAR, max_length=16)
    schema.add_field("state", DataType.VARCHAR, max_length=16)
    # Strong: an image is searchable from every API replica as soon as its batch is written.
    _call(config, name, c.create_collection, name, schema=schema, consistency_level="Strong")


# Milvus builds one index per sealed segment (Milvus seals at 1 GiB: about 500,000 512-d float
# vectors), so the lists of an IVF index partition a segment, not the library.
SEGMENT_ROWS = 500_000


def default_nlist(n: int) -> int:
    """IVF lists for a Milvus collection of ``n`` vectors: 2 x sqrt(rows per segment).

    Chosen by bench/results/vector_store.md (100,000 CLIP-like vectors): nlist 632 (2 x sqrt N)
    reached recall@10 0.98 image / 0.97 text at nprobe 16 and built 5x faster than 2,530 (the
    FAISS store's 8 x sqrt N, which needed nprobe 32 for 0.99 / 0.96), with fewer vectors and
    centroids compared per query (632 + 2.5 % of the rows against 2,530 + 1.3 %)."""
    if n < 30:
        return 1
    return max(1, min(round(2.0 * math.sqrt(min(n, SEGMENT_ROWS))), n // 30))


def _index_choice(config: StoreConfig, n: int) -> tuple[str, dict[str, int]]:
    from .vector_index import DEFAULT_FLAT_THRESHOLD

    kind = (config.milvus_index or "AUTO").upper()
    if kind == "AUTO":
        kind = "FLAT" if n < DEFAULT_FLAT_THRESHOLD else "IVF_FLAT"
    if kind.startswith("IVF"):
        nlist = config.milvus_nlist or default_nlist(n)
        params: dict[str, int] = {"nlist": int(max(1, nlist))}
        if kind == "IVF_PQ":
            params.update(m=16, nbits=8)
        return kind, params
    if kind == "HNSW":
        return kind, {"M": 16, "efConstruction": 200}
    return kind, {}


#: How long one index build may take before the call gives up (a 1M-row IVF_FLAT build on
#: milvus-lite took over 5 minutes here; Milvus Standalone builds in the background).
INDEX_BUILD_TIMEOUT_S = 3600.0


def _create_index(config: StoreConfig, name: str, kind: str, params: dict[str, int]) -> None:
    c = client(config)
    index_params = c.prepare_index_params()
    # Each build parameter goes both flat (what Milvus 2.4+ reads) and inside a "params" JSON
    # object (what older servers and milvus-lite read: flat keys alone left milvus-lite at its
    # default nlist of 128 whatever was asked; Milvus merges the two).
    both: dict[str, object] = {**params, "params": dict(params)} if params else {}
    index_params.add_index(field_name="vector", index_type=kind, metric_type="IP", params=both)
    # Building an index over a million rows takes minutes: longer than a query's timeout.
    wait = max(float(config.milvus_timeout_s), INDEX_BUILD_TIMEOUT_S)
    try:
        _call(config, name, c.create_index, name, index_params, timeout=wait)
    except StoreUnavailable:
        # The request may have gone through and only its answer been lost (the connection
        # dropped during a long build, or a retry after that): Milvus then refuses the same
        # index again ("index already exists"). An index on the vector field is what was asked.
        if not _vector_indexes(config, name):
            raise
        log.warning("collection %s: the vector index exists already; using it", name)
    _call(config, name, c.load_collection, name, timeout=wait)


def _vector_indexes(config: StoreConfig, name: str) -> list[str]:
    """The indexes on collection ``name``'s vector field (empty if the server cannot say)."""
    c = client(config)
    try:
        return [str(f) for f in _call(config, name, c.list_indexes, name, field_name="vector")]
    except StoreUnavailable:
        return []


def ensure_first_version(
    config: StoreConfig, sessions: sessionmaker[Session], model_id: int, dim: int
) -> int:
    """The active Milvus version, created (an empty collection, catalog version 1 and up) for a
    library that has no index yet. Safe when several processes race: one row wins."""
    from .catalog import IndexVersion

    with sessions() as session:
        row = active_index_row(session)
        if row is not None:
            if (row.params or {}).get("store") == "milvus":
                return int(row.version)
            raise StoreUnavailable(
                "this library's vectors are not in Milvus yet: run `clipsearch reindex` with "
                "CLIPSEARCH_MILVUS_URI set (no image is embedded again)"
            )
        version = int(session.scalar(sa.select(sa.func.max(IndexVersion.version))) or 0) + 1
    name = collection_name(config, version, model_id)
    c = client(config)
    kind, params = _index_choice(config, 0)
    if not _call(config, name, c.has_collection, name):
        try:
            _create_collection(config, name, dim)
        except StoreUnavailable:
            if not _call(config, name, c.has_collection, name):
                raise
        _create_index(config, name, kind, params)
    with sessions() as session:
        try:
            session.add(
                IndexVersion(
                    version=version,
                    model_id=model_id,
                    kind=f"milvus-{kind.lower()}",
                    size=0,
                    path=name,
                    params={"store": "milvus", "collection": name, "index_type": kind, **params},
                    active=True,
                )
            )
            session.commit()
        except sa.exc.IntegrityError:
            session.rollback()
            row = active_index_row(session)
            if row is None:
                raise
            return int(row.version)
    _point_alias(config, name)
    log.info("created the Milvus collection %s for a new library", name)
    return version


def open_version(config: StoreConfig, params: dict[str, Any], dim: int) -> MilvusStore:
    """The store of a catalog index version made by this module."""
    return MilvusStore(
        config,
        str(params["collection"]),
        dim,
        index_type=str(params.get("index_type") or "FLAT"),
        nprobe=int(config.milvus_nprobe or params.get("nprobe") or 1),
        recall=params.get("recall") or None,
        nlist=int(params.get("nlist") or 0),
    )


def _point_alias(config: StoreConfig, name: str) -> None:
    c = client(config)
    alias = config.milvus_collection
    found = _call(config, None, c.list_aliases) or []
    if isinstance(found, dict):
        found = found.get("aliases", [])
    if alias in found:
        _call(config, name, c.alter_alias, name, alias)
    else:
        _call(config, name, c.create_alias, name, alias)


def activate(config: StoreConfig, name: str, keep: Sequence[str]) -> list[str]:
    """Point the alias at ``name`` and drop this library's other collections (but ``keep``).
    Returns the dropped names."""
    c = client(config)
    _point_alias(config, name)
    prefix = config.milvus_collection + "_v"
    dropped = []
    for other in _call(config, None, c.list_collections):
        if other.startswith(prefix) and other != name and other not in keep:
            try:
                c.drop_collection(other)
                dropped.append(other)
            except Exception as exc:  # an old collection left behind costs space, nothing else
                log.warning("could not drop the old Milvus collection %s: %s", other, exc)
    return dropped


# --------------------------------------------------------------------------------------------
# Building a version from the catalog


def _exact_topk(
    sessions: sessionmaker[Session], model_id: int, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k ids of each query over the catalog's vectors, streamed (one pass)."""
    from . import catalog

    best_s = np.full((queries.shape[0], 0), -np.inf, np.float32)
    best_i = np.zeros((queries.shape[0], 0), np.int64)
    with sessions() as session:
        for ids, vecs in catalog.iter_vectors(session, model_id):
            sims = queries @ vecs.T
            all_s = np.concatenate([best_s, sims], axis=1)
            all_i = np.concatenate([best_i, np.broadcast_to(ids, sims.shape)], axis=1)
            top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
            best_s = np.take_along_axis(all_s, top, axis=1)
            best_i = np.take_along_axis(all_i, top, axis=1)
    return best_s, best_i


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int, self_ids: np.ndarray | None) -> float:
    """Mean recall@k of ``approx`` against ``exact`` (a query's own id left out of both)."""
    total = 0.0
    for r in range(exact.shape[0]):
        own = None if self_ids is None else int(self_ids[r])
        truth = [int(i) for i in exact[r] if i >= 0 and int(i) != own][:k]
        got = [int(i) for i in approx[r] if i >= 0 and int(i) != own][:k]
        if truth:
            total += len(set(truth) & set(got)) / len(truth)
        else:
            total += 1.0
    return float(total / max(1, exact.shape[0]))


def tune_nprobe(
    store: MilvusStore,
    queries: dict[str, tuple[np.ndarray, np.ndarray | None]],
    exact: dict[str, np.ndarray],
    nlist: int,
    target: float,
    k: int = 10,
) -> tuple[int, dict[str, float]]:
    """The smallest nprobe (doubling up to nlist) whose recall@k reaches ``target`` for every
    kind of query; the recall measured at it."""
    probe = 1
    while True:
        recall = {}
        for kind, (q, self_ids) in queries.items():
            _, got = store.search(q, k + 1, nprobe=probe)
            recall[kind] = round(recall_at(got, exact[kind], k, self_ids), 4)
        if all(r >= target for r in recall.values()) or probe >= nlist:
            return probe, recall
        probe = min(probe * 2, nlist)


def build_version(
    config: StoreConfig,
    sessions: sessionmaker[Session],
    model_id: int,
    dim: int,
    version: int,
    change_seq: int,
    text_queries: np.ndarray | None = None,
    on_progress: Callable[[int], None] | None = None,
    n_tune: int = 200,
    k: int = 10,
) -> tuple[str, int, dict[str, Any]]:
    """Fill a new collection for ``version`` from the catalog's vectors of ``model_id``, index
    it, tune it, catch it up with changes after ``change_seq``. Returns (kind, size, params) for
    the catalog's IndexVersion row; the caller makes it active, then calls :func:`activate`."""
    from . import catalog

    t0 = time.perf_counter()
    name = collection_name(config, version, model_id)
    c = client(config)
    if _call(config, name, c.has_collection, name):  # a build that crashed half way
        _call(config, name, c.drop_collection, name)
    _create_collection(config, name, dim)
    store = MilvusStore(config, name, dim)
    rng = np.random.default_rng(0)
    sample_ids: list[np.ndarray] = []
    sample_vecs: list[np.ndarray] = []
    n = 0
    with sessions() as session, sessions() as fields_session:
        for ids, vecs in catalog.iter_vectors(session, model_id, chunk=_WRITE_CHUNK):
            store.insert(ids, vecs, vector_fields(fields_session, ids.tolist()))
            n += int(ids.size)
            take = rng.random(ids.size) < 0.02
            sample_ids.append(ids[take])
            sample_vecs.append(vecs[take])
            if on_progress is not None:
                on_progress(n)
    store.flush()  # seal every row first, so the index built next covers all of them
    load_s = time.perf_counter() - t0
    kind, params = _index_choice(config, n)
    t1 = time.perf_counter()
    _create_index(config, name, kind, params)
    index_s = time.perf_counter() - t1
    store.index_type = kind
    nprobe = 1
    recall: dict[str, float] = {}
    if kind.startswith("IVF") or kind == "HNSW":
        nlist = int(params.get("nlist") or 512)
        if config.milvus_nprobe:
            nprobe = config.milvus_nprobe
        elif n:
            s_ids = np.concatenate(sample_ids)
            s_vecs = np.concatenate(sample_vecs)
            pick = rng.permutation(s_ids.size)[:n_tune]
            queries: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
                "image": (s_vecs[pick], s_ids[pick])
            }
            if text_queries is not None and len(text_queries):
                queries["text"] = (np.asarray(text_queries, np.float32), None)
            exact = {
                kd: _exact_topk(sessions, model_id, q, k + 1)[1] for kd, (q, _) in queries.items()
            }
            nprobe, recall = tune_nprobe(store, queries, exact, nlist, config.recall_target, k)
    store.nprobe = nprobe
    # Catch up with what was ingested or deleted while this was built.
    mark = mark_name(version)
    with sessions() as session:
        catalog.set_mark(session, mark, change_seq)
        session.commit()
        result = follow_catalog(store, session, model_id, change_seq)
        catalog.advance_mark(session, mark, result.watermark)
        session.commit()
    out_params = {
        "store": "milvus",
        "collection": name,
        "index_type": kind,
        **params,
        "nprobe": nprobe,
        "recall": recall,
        "recall_target": config.recall_target,
        "change_seq": change_seq,
        "insert_seconds": round(load_s, 3),
        "index_seconds": round(index_s, 3),
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    log.info(
        "Milvus collection %s: %d vectors, %s %s, nprobe %d, recall %s",
        name, n, kind, params, nprobe, recall,
    )  # fmt: skip
    return f"milvus-{kind.lower()}", n, out_params


def write_through(
    config: StoreConfig,
    sessions: sessionmaker[Session],
    model_id: int,
    upsert_ids: Sequence[int] = (),
    delete_ids: Sequence[int] = (),
) -> None:
    """Right after a catalog commit: upsert these images' vectors (of ``model_id``) and delete
    these ids in the active collection. A failure is logged, not raised: the catalog has it, and
    the next process that follows the catalog applies it."""
    from . import catalog

    if not upsert_ids and not delete_ids:
        return
    try:
        with sessions() as session:
            row = active_index_row(session)
            if row is None:
                dim = session.scalar(
                    sa.select(catalog.ModelRecord.dim).where(catalog.ModelRecord.id == model_id)
                )
                session.close()
                ensure_first_version(config, sessions, model_id, int(dim or 0))
                row = active_index_row(session)
            if row is None or (row.params or {}).get("store") != "milvus":
                return  # FAISS is active: `clipsearch reindex` moves the library to Milvus
            params = dict(row.params or {})
            dim = int(
                session.scalar(
                    sa.select(catalog.ModelRecord.dim).where(catalog.ModelRecord.id == row.model_id)
                )
                or 0
            )
            store = open_version(config, params, dim)
            if delete_ids:
                store.delete(delete_ids)
            if upsert_ids and row.model_id == model_id:
                ids, vecs = catalog.load_vectors(session, model_id, list(upsert_ids))
                if ids.size:
                    store.upsert(ids, vecs, vector_fields(session, ids.tolist()))
    except StoreUnavailable as exc:
        log.warning(
            "could not write %d vectors / %d deletions to Milvus (%s); the catalog has them and "
            "the next catalog follow applies them",
            len(upsert_ids), len(delete_ids), exc,
        )  # fmt: skip
