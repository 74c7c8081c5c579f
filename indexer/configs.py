"""The typed configuration groups the indexer's pieces take: plain frozen dataclasses built from
the settings tree in one place (indexer.settings: ``LibrarySettings.library_config()``,
``worker_config()``, the ``store`` and ``ocr`` groups' ``config()``) and passed down.

They sit in a module of their own, below both the settings and the modules that use them, so the
settings can build them without importing the library, the worker or the OCR module (and none of
those imports the settings back)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypedDict, Unpack

from .errors import IndexerError

__all__ = [
    "DEFAULT_MODEL",
    "INDEX_TYPES",
    "LibraryConfig",
    "OcrConfig",
    "StoreConfig",
    "WorkerConfig",
    "WorkerOverrides",
    "default_broker_url",
    "default_database_url",
]

DEFAULT_MODEL = "ViT-B-32"  # the model of a new library (a library's catalog names its own)


def default_database_url(data_dir: str | os.PathLike[str]) -> str:
    """The embedded catalog: a SQLite file in the data folder."""
    return f"sqlite:///{Path(data_dir).resolve() / 'catalog.db'}"


def default_broker_url(data_dir: str | os.PathLike[str]) -> str:
    """The embedded broker: a SQLite file in the data folder (created on first use)."""
    path = Path(data_dir).expanduser().resolve() / "broker.sqlite"
    return f"sqla+sqlite:///{path}"


#: Milvus index types CLIPSEARCH_MILVUS_INDEX accepts (AUTO: FLAT when small, else IVF_FLAT).
INDEX_TYPES = ("AUTO", "FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW")


@dataclass(frozen=True)
class StoreConfig:
    """Which vector store a library uses, and how. Without ``milvus_uri``: embedded FAISS."""

    milvus_uri: str | None = None  # http://host:19530; None: the embedded FAISS index
    milvus_token: str | None = None  # "user:password" or an API key, when Milvus asks for one
    milvus_collection: str = "clipsearch"  # the alias; collections are <this>_v<version>_m<model>
    milvus_index: str = "AUTO"  # AUTO: FLAT below flat_threshold vectors, else IVF_FLAT
    milvus_nlist: int = 0  # 0: by the number of vectors (as for FAISS)
    milvus_nprobe: int = 0  # 0: tuned at build time to recall_target
    milvus_timeout_s: float = 10.0
    recall_target: float = 0.95

    @property
    def kind(self) -> str:
        return "milvus" if self.milvus_uri else "faiss"

    def checked(self) -> StoreConfig:
        """This config, or IndexerError naming the setting that is wrong."""
        index = (self.milvus_index or "AUTO").upper()
        if index not in INDEX_TYPES:
            raise IndexerError(
                f"CLIPSEARCH_MILVUS_INDEX={self.milvus_index!r}: use one of {', '.join(INDEX_TYPES)}"
            )
        name = self.milvus_collection
        if not name or len(name) > 24 or not name.replace("_", "").isalnum() or name[0].isdigit():
            raise IndexerError(
                f"CLIPSEARCH_MILVUS_COLLECTION={name!r}: use 1-24 letters, digits or _, not "
                "starting with a digit"
            )
        if self.milvus_nlist < 0 or self.milvus_nprobe < 0:
            raise IndexerError("CLIPSEARCH_MILVUS_NLIST and CLIPSEARCH_MILVUS_NPROBE must be >= 0")
        if self.milvus_uri and not self.milvus_uri.startswith(("http://", "https://", "tcp://")):
            raise IndexerError(
                f"CLIPSEARCH_MILVUS_URI={self.milvus_uri!r}: give http://host:19530 (Milvus "
                "Standalone or Distributed)"
            )
        return self


@dataclass(frozen=True)
class OcrConfig:
    """How ingestion recognises text: the ``ocr`` group of the settings tree
    (indexer.settings.OcrSettings: CLIPSEARCH_OCR, _TESSERACT, _OCR_LANG, _OCR_TIMEOUT_S)."""

    mode: str = "auto"  # auto: when tesseract is found; on: the same, missing is a problem; off
    tesseract: str = "tesseract"  # the program: a name looked up on PATH, or a path
    lang: str = "eng"  # Tesseract language codes joined by '+', e.g. "eng+deu"
    timeout_s: float = 20.0  # per image; a slower image is recorded as failed, ingestion goes on

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


#: An embedding batch's soft time limit by default (CLIPSEARCH_BATCH_TIME_LIMIT_S;
#: indexer.celery_app.TIME_LIMITS, indexer.time_limits)
BATCH_TIME_LIMIT_S = 600.0


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, built from the settings tree in one place
    (:meth:`indexer.settings.LibrarySettings.worker_config`); a worker child process reads the
    same tree from its environment (:func:`worker_environment` adds what differs)."""

    data_dir: Path  # thumbnails, index files, the embedded catalog and broker live here
    model_spec: str  # what model.load() accepts: a registry name or a model folder
    database_url: str | None = None  # None: SQLite in data_dir
    broker_url: str | None = None  # None: the embedded SQLite broker in data_dir
    queue_prefix: str = ""  # namespaces the queue (and Redis keys) on a shared broker
    device: str | None = None  # None: CUDA when available, else CPU
    concurrency: int = (
        1  # tasks at once (threads sharing one model); 1 runs them in the main thread
    )
    batch_size: int = 32  # images per embed_batch task
    decode_workers: int | None = None  # decoder processes; None: one per core, 1: in-process
    stale_after_s: float = 120.0  # a job this long without progress is taken over on start
    embed_delay_s: float = (
        0.0  # test-only: sleep before each batch (makes kill -9 tests deterministic)
    )
    ready_file: Path | None = None  # touched once the worker consumes (used by tests and serve)
    index_compression: str | None = None  # IVF codes: None (float32), "sq8", "fp16" or "pq"
    device_decode: str = "auto"  # JPEGs decoded on the model's GPU: auto, on, off (device_embed)
    # model.load's cache_dir, offline and allow_jit; None: the model layer's own default
    cache_dir: Path | None = None
    offline: bool | None = None
    allow_jit: bool | None = None
    metrics_port: int = 0  # its Prometheus metrics on this port; 0: none
    auto_migrate: bool = True  # upgrade the catalog's schema at start; False: check it only
    batch_time_limit_s: float = BATCH_TIME_LIMIT_S  # an embedding batch's soft time limit
    log_level: str | None = None  # None: INFO (indexer.logs)
    log_format: str = "text"  # text or json (indexer.logs)
    extra_env: Mapping[str, str] = field(default_factory=dict)  # more variables for its process
    store: StoreConfig = field(default_factory=StoreConfig)  # FAISS files, or Milvus
    ocr: OcrConfig = field(default_factory=OcrConfig)  # text inside images (indexer.ocr)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or default_database_url(Path(self.data_dir).expanduser())

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or default_broker_url(self.data_dir)


class WorkerOverrides(TypedDict, total=False):
    """:class:`WorkerConfig`'s fields, by name, as ``worker_config(**overrides)`` takes them."""

    data_dir: Path
    model_spec: str
    database_url: str | None
    broker_url: str | None
    queue_prefix: str
    device: str | None
    concurrency: int
    batch_size: int
    decode_workers: int | None
    stale_after_s: float
    embed_delay_s: float
    ready_file: Path | None
    index_compression: str | None
    device_decode: str
    cache_dir: Path | None
    offline: bool | None
    allow_jit: bool | None
    metrics_port: int
    auto_migrate: bool
    batch_time_limit_s: float
    log_level: str | None
    log_format: str
    extra_env: Mapping[str, str]
    store: StoreConfig
    ocr: OcrConfig


@dataclass(frozen=True)
class LibraryConfig:
    """How to reach a library. Only ``data_dir`` is required; the rest default to embedded."""

    data_dir: Path  # thumbnails, index files, the embedded catalog and broker
    database_url: str | None = None  # None: SQLite at <data_dir>/catalog.db
    broker_url: str | None = None  # None: the embedded SQLite broker at <data_dir>/broker.sqlite
    model_spec: str = DEFAULT_MODEL  # the model of a new library (the catalog's model wins)
    device: str | None = None  # None: CUDA when available, else CPU
    queue_prefix: str = ""  # namespaces the queue on a shared broker
    auto_migrate: bool = True  # upgrade the catalog's schema on open; False: check it only
    allowed_roots: Sequence[Path] | None = None  # folders ingest may read; None: any folder
    refresh_interval_s: float = (
        2.0  # how often the index follows the catalog (new vectors, versions)
    )
    batch_size: int = 32  # images per embedding batch (workers started by this library)
    worker_concurrency: int = 1
    extra_worker_env: dict[str, str] = field(default_factory=dict)
    store: StoreConfig = field(default_factory=StoreConfig)  # FAISS files, or Milvus
    ocr: OcrConfig = field(default_factory=OcrConfig)  # text inside images (indexer.ocr)
    # When the served model reads its image tower: "now", or "on_demand" (model.lazy_tower) for a
    # process that embeds only query texts (`clipsearch search` on its own); a door's choice.
    image_tower: str = "now"

    @property
    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or default_database_url(self.resolved_data_dir)

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or default_broker_url(self.resolved_data_dir)

    def worker_config(self, **overrides: Unpack[WorkerOverrides]) -> WorkerConfig:
        """The :class:`~indexer.worker.WorkerConfig` for a worker serving this library."""
        config = WorkerConfig(
            data_dir=self.resolved_data_dir,
            model_spec=self.model_spec,
            database_url=self.resolved_database_url,
            broker_url=self.resolved_broker_url,
            queue_prefix=self.queue_prefix,
            device=self.device,
            concurrency=self.worker_concurrency,
            batch_size=self.batch_size,
            extra_env=dict(self.extra_worker_env),
            store=self.store,
            ocr=self.ocr,
        )
        return replace(config, **overrides) if overrides else config
