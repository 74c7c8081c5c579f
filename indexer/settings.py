"""The library's half of clipsearch's one settings tree, read from ``CLIPSEARCH_*`` variables.

:class:`LibrarySettings` is one pydantic-settings model of nested groups: ``catalog`` (where the
library lives: data folder, catalog database, broker, queue prefix), ``models`` (the model, the
device, downloads), ``store`` (FAISS files or Milvus), ``ocr`` and ``worker``. The API's
``clipsearch.service.settings.Settings`` is the same model with the service's groups added
(server, folders, limits, search, serve), so the API, the CLI and the worker processes read every
variable the same way, with the same defaults and validators, defined here once.

Each setting has one flat variable, the name the README documents (``CLIPSEARCH_MODEL``,
``CLIPSEARCH_WORKER_CONCURRENCY``, ``CLIPSEARCH_OCR_LANG``...), and a nested one,
``CLIPSEARCH_<GROUP>__<FIELD>`` (``CLIPSEARCH_WORKER__CONCURRENCY``); an empty value counts as
unset. Keyword arguments take the flat names too (``Settings(data_dir=..., port=0)``) or whole
groups. Settings are read once, at each edge: the API's start, a worker process's start
(:meth:`LibrarySettings.from_env`), each CLI command; below the edges the typed groups are passed
down (:meth:`LibrarySettings.library_config`, :meth:`LibrarySettings.worker_config`). A variable
with the prefix that no setting has is reported at start with the closest known name
(:func:`report_unknown_variables`). Nothing is read at import time.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, Unpack

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .configs import (
    BATCH_TIME_LIMIT_S,
    DEFAULT_MODEL,
    LibraryConfig,
    OcrConfig,
    StoreConfig,
    WorkerConfig,
    WorkerOverrides,
)
from .errors import IndexerError

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_MODEL",
    "ENV_PREFIX",
    "NOT_SETTINGS",
    "CatalogSettings",
    "LibrarySettings",
    "LogSettings",
    "ModelSettings",
    "OcrSettings",
    "SettingsError",
    "SettingsGroup",
    "StoreSettings",
    "WorkerSettings",
    "default_data_dir",
    "env",
    "report_unknown_variables",
    "unknown_variables",
]

log = logging.getLogger(__name__)

ENV_PREFIX = "CLIPSEARCH_"
NESTED = "__"  # CLIPSEARCH_<GROUP>__<FIELD>
COMPRESSIONS = ("sq8", "fp16", "pq")  # IVF codes besides float32 (CLIPSEARCH_INDEX_COMPRESSION)

#: Variables with the prefix that are not settings: read by the test suite only (deploy/README.md),
#: and POOL_OWNER, the pid the decode pool's forkserver watches (indexer.pool_guard).
NOT_SETTINGS = frozenset(
    ENV_PREFIX + name
    for name in ("TEST_PG", "TEST_REDIS_HOST", "CHROMIUM", "SCREENSHOTS", "POOL_OWNER")
)

# LibrarySettings.from_env(environ): that mapping instead of this process's environment
_environ: ContextVar[Mapping[str, str] | None] = ContextVar("_environ", default=None)
_reported: set[str] = set()  # unknown variables already reported by this process
_TABLES: dict[type, dict[str, tuple[str, str]]] = {}  # LibrarySettings.env_table, per class

S = TypeVar("S", bound="LibrarySettings")


class LoadOptions(TypedDict):
    """What ``clipsearch.model.load`` takes from the models group (:meth:`ModelSettings.load_options`)."""

    cache_dir: Path
    offline: bool
    allow_jit: bool


class SettingsError(IndexerError):
    """A setting has a value that cannot be used; the message names the variable and why."""


def env(name: str) -> JsonDict:
    """``json_schema_extra`` naming a setting's flat variable, when it is not the field's name
    (``Field(json_schema_extra=env("OCR_LANG"))`` reads ``CLIPSEARCH_OCR_LANG``)."""
    return {"env": ENV_PREFIX + name}


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/clipsearch`` (``~/.local/share/clipsearch``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "clipsearch"


class SettingsGroup(BaseModel):
    """One group of the tree; each field's variable is ``CLIPSEARCH_`` + its upper-case name,
    unless ``json_schema_extra=env(NAME)`` names another."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> its flat variable."""
        names = {}
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            flat = extra.get("env") if isinstance(extra, dict) else None
            names[name] = str(flat) if flat else ENV_PREFIX + name.upper()
        return names


# --- the library's groups ----------------------------------------------------------------------


class CatalogSettings(SettingsGroup):
    """Where the library lives: its folder, its catalog database, the broker its jobs go through."""

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
    auto_migrate: bool = Field(
        default=True,
        description="Upgrade the catalog's schema when a process starts; false: only "
        "`clipsearch migrate` does, and a process finding an older schema stops saying so.",
    )

    @field_validator("data_dir", mode="after")
    @classmethod
    def _data_dir(cls, value: Path) -> Path:
        if "\x00" in str(value):
            raise ValueError("data_dir contains a NUL byte")
        return Path(value).expanduser().resolve()

    @field_validator("database_url", "broker_url", mode="after")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return value or None


class ModelSettings(SettingsGroup):
    """Which model embeds, where, and where its weights come from."""

    spec: str = Field(
        default=DEFAULT_MODEL,
        min_length=1,
        json_schema_extra=env("MODEL"),
        description="Model registry name or path to weights (a library's catalog names its own).",
    )
    device: str | None = Field(
        default=None, description="torch device (cpu, cuda, cuda:1); default auto."
    )
    cache_dir: Path | None = Field(
        default=None,
        json_schema_extra=env("CACHE"),
        description="Folder downloads go to; default ~/.cache/clipsearch.",
    )
    offline: bool = Field(default=False, description="Never download weights.")
    allow_jit: bool = Field(
        default=False, description="Open TorchScript files that are not OpenAI's (runs their code)."
    )

    @field_validator("device", mode="after")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        return value or None

    def load_options(self) -> LoadOptions:
        """What ``clipsearch.model.load`` (and ``registry.resolve``/``check_spec``) take from
        this group: ``cache_dir``, ``offline``, ``allow_jit`` (load's keyword arguments)."""
        cache = (self.cache_dir or Path("~/.cache/clipsearch")).expanduser()
        return {"cache_dir": cache, "offline": self.offline, "allow_jit": self.allow_jit}


class StoreSettings(SettingsGroup):
    """The vector store: the embedded FAISS index files, or Milvus."""

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

    @model_validator(mode="after")
    def _checked(self) -> StoreSettings:
        try:
            self.config()
        except IndexerError as exc:
            raise ValueError(str(exc)) from None
        return self

    def config(self) -> StoreConfig:
        """The indexer's :class:`~indexer.vector_store.StoreConfig` (IndexerError if wrong)."""
        token = self.milvus_token.get_secret_value() if self.milvus_token else None
        return StoreConfig(
            milvus_uri=(self.milvus_uri or "").strip() or None,
            milvus_token=token or None,
            milvus_collection=self.milvus_collection,
            milvus_index=self.milvus_index.upper(),
            milvus_nlist=self.milvus_nlist,
            milvus_nprobe=self.milvus_nprobe,
        ).checked()


class OcrSettings(SettingsGroup):
    """Text inside images (indexer.ocr)."""

    mode: Literal["auto", "on", "off"] = Field(
        default="auto",
        json_schema_extra=env("OCR"),
        description="auto: when the tesseract program is found; on: the same, and health reports "
        "a missing program as a problem; off.",
    )
    tesseract: str = Field(
        default="tesseract", min_length=1, description="The program: a name on PATH, or a path."
    )
    lang: str = Field(
        default="eng",
        pattern=r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$",
        json_schema_extra=env("OCR_LANG"),
        description="Tesseract language codes joined by '+', e.g. eng+deu.",
    )
    timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=600,
        json_schema_extra=env("OCR_TIMEOUT_S"),
        description="Seconds per image; a slower image is recorded as failed.",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    def config(self) -> OcrConfig:
        """The indexer's :class:`~indexer.ocr.OcrConfig`."""
        return OcrConfig(self.mode, self.tesseract, self.lang, float(self.timeout_s))


class WorkerSettings(SettingsGroup):
    """A worker process's own knobs (``clipsearch worker``, and the one ``serve`` starts)."""

    concurrency: int = Field(
        default=1,
        ge=1,
        json_schema_extra=env("WORKER_CONCURRENCY"),
        description="Tasks at once (threads sharing one model).",
    )
    embed_batch_size: int = Field(default=32, ge=1, description="Images per embedding batch.")
    decode_workers: int = Field(
        default=0, ge=0, description="Decoder processes; 0: one per core, 1: in-process."
    )
    device_decode: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="JPEG pixels for the model decoded by nvJPEG on the GPU: auto (when the model "
        "runs on CUDA and torchvision's decoder is installed), on (always), off.",
    )
    stale_after_s: float = Field(
        default=120.0, gt=0, description="A job this long without progress is taken over."
    )
    index_compression: str | None = Field(
        default=None, description="IVF codes: none (float32), sq8, fp16 or pq."
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        json_schema_extra=env("WORKER_METRICS_PORT"),
        description="Port the worker serves its Prometheus metrics on (/metrics, all "
        "interfaces); 0: none.",
    )
    batch_time_limit_s: float = Field(
        default=BATCH_TIME_LIMIT_S,
        gt=0,
        json_schema_extra=env("BATCH_TIME_LIMIT_S"),
        description="An embedding batch's soft time limit in seconds (its job fails saying "
        "so); its hard limit, which ends the worker process, is twice it (at most 5 min more).",
    )
    test_embed_delay_s: float = Field(
        default=0.0, ge=0, description="Test-only: sleep before each batch (kill -9 tests)."
    )
    ready_file: Path | None = Field(
        default=None,
        json_schema_extra=env("WORKER_READY_FILE"),
        description="Test-only: touched once the worker consumes (tests, serve).",
    )

    @field_validator("device_decode", mode="before")
    @classmethod
    def _device_decode(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("index_compression", mode="before")
    @classmethod
    def _compression(cls, value: object) -> object:
        if value is None:
            return None
        text = str(value).strip().lower()
        if text in ("", "none", "flat"):
            return None
        if text not in COMPRESSIONS:
            raise ValueError(f"{text!r}: use none, sq8, fp16 or pq")
        return text


class LogSettings(SettingsGroup):
    """How every process logs (indexer.logs): the API, the workers and the CLI alike."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = Field(
        default=None,
        json_schema_extra=env("LOG_LEVEL"),
        description="Least level logged; default INFO for serve and worker, WARNING for the "
        "other commands (-v lowers it).",
    )
    format: Literal["text", "json"] = Field(
        default="text",
        json_schema_extra=env("LOG_FORMAT"),
        description="text (one readable line) or json (one object per line with timestamp, "
        "level, logger, message, request_id; access log on).",
    )

    @field_validator("level", "format", mode="before")
    @classmethod
    def _case(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


# --- the tree ----------------------------------------------------------------------------------


def _groups(cls: type[BaseModel]) -> Iterator[tuple[str, type[SettingsGroup]]]:
    for name, info in cls.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, SettingsGroup):
            yield name, kind


def _flat_table(cls: type[BaseModel]) -> dict[str, tuple[str, str]]:
    """Every variable the tree reads -> (group, field): the flat names and the nested ones."""
    table: dict[str, tuple[str, str]] = {}
    for group, kind in _groups(cls):
        for field, flat in kind.env_names().items():
            table[flat] = (group, field)
            table[f"{ENV_PREFIX}{group.upper()}{NESTED}{field.upper()}"] = (group, field)
    return table


class _EnvSource(PydanticBaseSettingsSource):
    """``CLIPSEARCH_*`` variables (this process's environment, or the mapping given to
    :meth:`LibrarySettings.from_env`) as nested group values; empty ones count as unset."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[object, str, bool]:
        return None, field_name, False  # __call__ reads every group at once

    def __call__(self) -> dict[str, dict[str, str]]:
        environ = _environ.get()
        environ = os.environ if environ is None else environ
        values: dict[str, dict[str, str]] = {}
        for name, (group, field) in self.settings_cls.env_table().items():  # type: ignore[attr-defined]
            raw = environ.get(name)
            if raw is None or not raw.strip():
                continue
            # a flat name and a nested one for the same setting: the nested one wins
            if NESTED in name or field not in values.get(group, {}):
                values.setdefault(group, {})[field] = raw.strip()
        return values


class LibrarySettings(BaseSettings):
    """How to reach a library, embed its images and run its workers (module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", validate_default=True, env_file=None
    )

    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    ocr: OcrSettings = Field(default_factory=OcrSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    logs: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(settings_cls))

    # -- the names

    @classmethod
    def env_table(cls) -> dict[str, tuple[str, str]]:
        """Every variable this model reads -> (group, field)."""
        cached = _TABLES.get(cls)
        if cached is None:
            cached = _TABLES[cls] = _flat_table(cls)
        return dict(cached)

    @classmethod
    def flat_names(cls) -> dict[str, tuple[str, str]]:
        """The flat keyword names (``port``, ``worker_concurrency``, ``ocr_lang``: a flat
        variable without its prefix, lower case) -> (group, field)."""
        return {
            name[len(ENV_PREFIX) :].lower(): where
            for name, where in cls.env_table().items()
            if NESTED not in name
        }

    @classmethod
    def variable_of(cls, group: str, field: str) -> str:
        """The flat variable of ``group.field``, as the README names it."""
        for name, where in cls.env_table().items():
            if where == (group, field) and NESTED not in name:
                return name
        return f"{ENV_PREFIX}{group.upper()}{NESTED}{field.upper()}"

    @model_validator(mode="before")
    @classmethod
    def _flat_keywords(cls, data: object) -> object:
        """``Settings(port=0, model="RN50")``: flat names into their groups (they win over the
        environment, which arrives as groups)."""
        if not isinstance(data, dict):
            return data
        flat = cls.flat_names()
        groups = dict(_groups(cls))
        out: dict[str, object] = {}
        moved: list[tuple[str, str, object]] = []
        for key, value in data.items():
            if key in groups and (isinstance(value, (Mapping, BaseModel)) or value is None):
                out[key] = value
            elif key in flat:
                moved.append((*flat[key], value))
            else:
                out[key] = value
        for group, field, value in moved:
            current = out.get(group)
            if isinstance(current, BaseModel):
                current = current.model_dump(exclude_unset=True)
            if isinstance(current, Mapping):
                merged = dict(current)
            elif not current:
                merged = {}
            else:
                raise ValueError(f"{group}: give the group as a mapping")
            merged[field] = value
            out[group] = merged
        return out

    if not TYPE_CHECKING:  # the typed surface is the groups; the packages' code reads those

        def __getattr__(self, name: str) -> object:
            """Flat reads (``settings.port``, ``settings.model``) resolved through the same
            table as the variables, for scripts and tests written before the groups."""
            if not name.startswith("_"):
                where = type(self).flat_names().get(name)
                if where is not None:
                    return getattr(getattr(self, where[0]), where[1])
                for group, kind in _groups(type(self)):  # a group's property (settings.token)
                    if isinstance(getattr(kind, name, None), property):
                        return getattr(getattr(self, group), name)
            return super().__getattr__(name)

    def is_set(self, name: str) -> bool:
        """Whether a setting (by its flat name) was given, by a variable or a flag."""
        group, field = type(self).flat_names()[name]
        return field in getattr(self, group).model_fields_set

    # -- reading at an edge

    @classmethod
    def from_env(
        cls: type[S],
        environ: Mapping[str, str] | None = None,
        *,
        report_unknown: bool = False,
        **overrides: object,
    ) -> S:
        """The settings ``environ`` gives (default: this process's environment), with
        ``overrides`` (flat names or groups) winning. A bad value is a :class:`SettingsError`
        naming the variable; ``report_unknown`` logs the prefixed variables no setting has."""
        if report_unknown:
            report_unknown_variables(cls, os.environ if environ is None else environ)
        token = _environ.set(environ)
        values: dict[str, Any] = dict(overrides)  # flat names or groups, validated by pydantic
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(describe_errors(cls, exc)) from None
        finally:
            _environ.reset(token)

    def env_overrides(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The flat variables to add to ``environ`` (default: this process's environment) for
        a child process to read these settings: only those whose value differs from what it
        would read there (an empty value: back to the default)."""
        environ = os.environ if environ is None else environ
        there = type(self).from_env(environ)
        out: dict[str, str] = {}
        for group, kind in _groups(type(self)):
            mine, theirs = getattr(self, group), getattr(there, group)
            for field, name in kind.env_names().items():
                value = getattr(mine, field)
                if value == getattr(theirs, field):
                    continue
                nested = f"{ENV_PREFIX}{group.upper()}{NESTED}{field.upper()}"
                if environ.get(nested, "").strip():
                    out[nested] = ""  # the nested form would win over the flat one
                out[name] = _as_env(value)
        return out

    # -- the typed groups the layers below take

    def store_config(self) -> StoreConfig:
        """The indexer's StoreConfig for these settings."""
        return self.store.config()

    def library_config(self, allowed_roots: Sequence[Path] | None = None) -> LibraryConfig:
        """The :class:`~indexer.library.LibraryConfig` of these settings (``allowed_roots``:
        the folders its ingestion may read; None: any)."""
        return LibraryConfig(
            data_dir=self.catalog.data_dir,
            database_url=self.catalog.database_url,
            broker_url=self.catalog.broker_url,
            model_spec=self.models.spec,
            device=self.models.device,
            queue_prefix=self.catalog.queue_prefix,
            auto_migrate=self.catalog.auto_migrate,
            allowed_roots=allowed_roots,
            batch_size=self.worker.embed_batch_size,
            worker_concurrency=self.worker.concurrency,
            store=self.store.config(),
            ocr=self.ocr.config(),
        )

    def worker_config(self, **overrides: Unpack[WorkerOverrides]) -> WorkerConfig:
        """The :class:`~indexer.worker.WorkerConfig` of these settings; ``overrides`` by its
        field names (``concurrency=4``)."""
        from dataclasses import replace

        values: dict[str, Any] = {}  # read by name through WORKER_FIELDS
        for field, (group, name) in WORKER_FIELDS.items():
            values[field] = getattr(getattr(self, group), name)
        values["decode_workers"] = values["decode_workers"] or None
        config = WorkerConfig(**values, store=self.store.config(), ocr=self.ocr.config())
        return replace(config, **overrides) if overrides else config


#: WorkerConfig's fields -> their (group, field) in the tree: the one place the two meet, read
#: by LibrarySettings.worker_config and by indexer.worker.worker_environment.
WORKER_FIELDS: dict[str, tuple[str, str]] = {
    "data_dir": ("catalog", "data_dir"),
    "database_url": ("catalog", "database_url"),
    "broker_url": ("catalog", "broker_url"),
    "queue_prefix": ("catalog", "queue_prefix"),
    "auto_migrate": ("catalog", "auto_migrate"),
    "batch_time_limit_s": ("worker", "batch_time_limit_s"),
    "model_spec": ("models", "spec"),
    "device": ("models", "device"),
    "concurrency": ("worker", "concurrency"),
    "batch_size": ("worker", "embed_batch_size"),
    "decode_workers": ("worker", "decode_workers"),
    "device_decode": ("worker", "device_decode"),
    "stale_after_s": ("worker", "stale_after_s"),
    "embed_delay_s": ("worker", "test_embed_delay_s"),
    "ready_file": ("worker", "ready_file"),
    "index_compression": ("worker", "index_compression"),
    "cache_dir": ("models", "cache_dir"),
    "offline": ("models", "offline"),
    "allow_jit": ("models", "allow_jit"),
    "metrics_port": ("worker", "metrics_port"),
    "log_level": ("logs", "level"),
    "log_format": ("logs", "format"),
}


def _as_env(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        import json

        return json.dumps([str(v) for v in value])
    return str(value)


def describe_errors(cls: type[LibrarySettings], exc: ValidationError) -> str:
    """A ValidationError as one line naming each variable: ``CLIPSEARCH_PORT: ...; ...``."""
    problems = []
    groups = dict(_groups(cls))
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] in groups:
            problems.append(f"{cls.variable_of(loc[0], loc[1])}: {message}")
        elif len(loc) == 1 and loc[0] in groups:
            problems.append(message)  # a group's own check names its variables
        elif loc:
            problems.append(f"{'.'.join(loc)}: {message}")
        else:
            problems.append(message)
    return "; ".join(problems)


def unknown_variables(
    cls: type[LibrarySettings], environ: Mapping[str, str]
) -> list[tuple[str, str | None]]:
    """The ``CLIPSEARCH_*`` variables in ``environ`` that no setting of ``cls`` reads, each with
    the closest known name (None when none is close)."""
    known = cls.env_table()
    flat = sorted(n[len(ENV_PREFIX) :] for n in known if NESTED not in n)
    out = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in NOT_SETTINGS:
            continue
        close = difflib.get_close_matches(name[len(ENV_PREFIX) :], flat, n=1, cutoff=0.75)
        out.append((name, ENV_PREFIX + close[0] if close else None))
    return out


def report_unknown_variables(cls: type[LibrarySettings], environ: Mapping[str, str]) -> None:
    """Log a warning for each unknown ``CLIPSEARCH_*`` variable (once per process)."""
    for name, close in unknown_variables(cls, environ):
        if name in _reported:
            continue
        _reported.add(name)
        hint = f"; did you mean {close}?" if close else ""
        log.warning("%s is not a clipsearch setting and is ignored%s", name, hint)
