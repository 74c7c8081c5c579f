"""The settings the API and the workers share, read from ``CLIPSEARCH_*`` variables by one
pydantic-settings model: where the library lives, which model, which device, which vector store.

:class:`LibrarySettings` is the base of the API's ``service.settings.Settings`` and of
:class:`WorkerSettings` (the worker's own knobs besides them), so both read each variable the same
way, with the same defaults (the data folder, the model). Nothing is read at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import IndexerError

if TYPE_CHECKING:
    from .vector_store import StoreConfig

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_MODEL",
    "ENV_PREFIX",
    "LibrarySettings",
    "WorkerSettings",
    "default_data_dir",
]

ENV_PREFIX = "CLIPSEARCH_"
DEFAULT_MODEL = "ViT-B-32"  # the model of a new library (a library's catalog names its own)
COMPRESSIONS = ("sq8", "fp16", "pq")  # IVF codes besides float32 (CLIPSEARCH_INDEX_COMPRESSION)

# WorkerSettings.from_env(mapping): the mapping alone, not this process's environment
_mapping_only: ContextVar[bool] = ContextVar("_mapping_only", default=False)


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/clipsearch`` (``~/.local/share/clipsearch``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "clipsearch"


class LibrarySettings(BaseSettings):
    """How to reach a library and embed its images; env var = ``CLIPSEARCH_`` + upper-case name."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", validate_default=True, env_file=None
    )

    # where things live
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Folder for the SQLite catalog, thumbnails, FAISS files and the embedded broker.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the catalog; default SQLite in data_dir."
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker URL (redis://...); default: embedded SQLite broker.",
    )
    queue_prefix: str = Field(
        default="", description="Namespace of the Celery queue on a shared broker."
    )
    model: str = Field(default=DEFAULT_MODEL, description="Model registry name or path to weights.")

    # vector store: the embedded FAISS index, or Milvus
    milvus_uri: str | None = Field(
        default=None,
        description="Milvus to keep the vectors in (http://host:19530, Standalone or Distributed; "
        "needs clipsearch[milvus]); default: the embedded FAISS index files in data_dir.",
    )
    milvus_token: SecretStr | None = Field(
        default=None, description="Milvus credentials (user:password or an API key), if it asks."
    )
    milvus_collection: str = Field(
        default="clipsearch",
        description="Milvus alias of the active collection; collections are <it>_v<version>_m<model>.",
    )
    milvus_index: str = Field(
        default="AUTO",
        description="Milvus index type: AUTO (FLAT below 20,000 vectors, else IVF_FLAT), FLAT, "
        "IVF_FLAT, IVF_SQ8, IVF_PQ or HNSW; applied by the next re-index.",
    )
    milvus_nlist: int = Field(
        default=0, ge=0, description="Milvus IVF lists; 0: by the number of vectors (as FAISS)."
    )
    milvus_nprobe: int = Field(
        default=0, ge=0, description="Milvus lists probed per query; 0: tuned to 95% recall@10."
    )
    device: str | None = Field(
        default=None, description="torch device (cpu, cuda, cuda:1); default auto."
    )

    @field_validator("data_dir", mode="after")
    @classmethod
    def _data_dir(cls, value: Path) -> Path:
        if "\x00" in str(value):
            raise ValueError("data_dir contains a NUL byte")
        return Path(value).expanduser().resolve()

    def store_config(self) -> StoreConfig:
        """The indexer's StoreConfig for these settings (refused with a clear message if wrong)."""
        from .vector_store import StoreConfig

        token = self.milvus_token.get_secret_value() if self.milvus_token else None
        return StoreConfig(
            milvus_uri=(self.milvus_uri or "").strip() or None,
            milvus_token=token or None,
            milvus_collection=self.milvus_collection,
            milvus_index=self.milvus_index.upper(),
            milvus_nlist=self.milvus_nlist,
            milvus_nprobe=self.milvus_nprobe,
        ).checked()


class WorkerSettings(LibrarySettings):
    """A worker process's settings: the shared ones and the worker's own. As the worker's
    environment is written by ``WorkerConfig.to_env``, an empty variable counts as unset."""

    model_config = SettingsConfigDict(env_ignore_empty=True, str_strip_whitespace=True)

    worker_concurrency: int = Field(
        default=1, ge=1, description="Tasks at once (threads sharing one model)."
    )
    embed_batch_size: int = Field(default=32, ge=1, description="Images per embedding batch.")
    decode_workers: int = Field(
        default=0, ge=0, description="Decoder processes; 0: one per core, 1: in-process."
    )
    stale_after_s: float = Field(
        default=120.0, description="A job this long without progress is taken over on start."
    )
    test_embed_delay_s: float = Field(
        default=0.0, description="Test-only: sleep before each batch (kill -9 tests)."
    )
    worker_ready_file: Path | None = Field(
        default=None, description="Touched once the worker consumes (tests, serve)."
    )
    index_compression: str | None = Field(
        default=None, description="IVF codes: none (float32), sq8, fp16 or pq."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _mapping_only.get():
            return (init_settings,)
        return (init_settings, env_settings, dotenv_settings, file_secret_settings)

    @field_validator("index_compression", mode="before")
    @classmethod
    def _compression(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip().lower()
        if text in ("", "none", "flat"):
            return None
        if text not in COMPRESSIONS:
            raise ValueError(f"{text!r}: use none, sq8, fp16 or pq")
        return text

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """The settings ``env`` gives (default: this process's environment); empty values count
        as unset. A bad value is an :class:`IndexerError` naming the variable."""
        try:
            if env is None:
                return cls()
            values: dict[str, Any] = {}
            for name in cls.model_fields:
                raw = env.get(ENV_PREFIX + name.upper())
                if raw is not None and raw.strip():
                    values[name] = raw.strip()
            token = _mapping_only.set(True)  # only ``env``, not this process's environment
            try:
                return cls(**values)
            finally:
                _mapping_only.reset(token)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                field = str(err["loc"][0]) if err.get("loc") else ""
                message = str(err.get("msg", "")).removeprefix("Value error, ")
                problems.append(f"{ENV_PREFIX}{field.upper()}: {message}")
            raise IndexerError("; ".join(problems) + "; fix or unset it") from None
