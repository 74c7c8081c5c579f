"""Service settings: the one settings tree, read from ``CLIPSEARCH_*`` variables and CLI flags.

:class:`Settings` is clipsearch.indexer.settings.LibrarySettings (the library's groups, which the
workers read the same way) with the service's groups: ``server``, ``folders``, ``limits``,
``search``, ``serve``. It is read once at each edge: :func:`load_settings` at the API's start and
:func:`settings_from_args` for each CLI command (flags mapped onto settings there, in
:data:`FLAG_SETTINGS`); below the edges the typed groups are passed down. Nothing here runs at
import time. Validators refuse values that would expose a library to the network by accident (a
non-loopback address without a token) or that make no sense (limits <= 0).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from clipsearch.indexer.settings import LibrarySettings, SettingsGroup

MIN_TOKEN_LENGTH = 16
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _machine_names() -> list[str]:
    """This machine's host name (also as NAME.local) and the addresses it resolves to."""
    import socket

    names: list[str] = []
    try:
        host = socket.gethostname().lower()
    except OSError:
        return names
    if host:
        names += [host, f"{host}.local"]
        try:
            for info in socket.getaddrinfo(host, None):
                addr = str(info[4][0])
                names.append(f"[{addr}]" if ":" in addr else addr)
        except OSError:
            pass
    return names


def _split_list(value: object, paths: bool = True) -> object:
    """Environment lists: JSON (``["a","b"]``), or separated by ``os.pathsep`` (paths) or commas."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            import json

            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"not a JSON list: {text!r}") from exc
        sep = os.pathsep if paths and os.pathsep in text else ","
        return [part.strip() for part in text.split(sep) if part.strip()]
    return value


class ServerSettings(SettingsGroup):
    """Where the API listens, who may use it, and how long clients may hold a connection."""

    # network
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on.")
    api_token: SecretStr | None = Field(
        default=None,
        description="API token: with it set, reads (API, photos, gallery) and writes need it "
        "(or a gallery session); without it the API is open to whoever can connect.",
    )
    public_read: bool = Field(
        default=False,
        description="With a token set, let anyone who can connect search and view photos (writes "
        "and job details still need the token).",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names (Host header) the server answers to; default: loopback names and "
        "the address it listens on (this machine's names when that is 0.0.0.0). Stops DNS rebinding.",
    )
    session_hours: float = Field(
        default=168.0, gt=0, le=24 * 366, description="How long a gallery sign-in lasts."
    )
    # accounts (indexer.accounts, service.auth)
    session_idle_minutes: float = Field(
        default=120.0,
        gt=0,
        le=24 * 60 * 31,
        description="An account's sign-in ends after this long without a request.",
    )
    signin_limit_account: str = Field(
        default="5/minute",
        description="Failed sign-ins allowed per account name (a `limits` rate such as 5/minute); "
        "beyond it the account's sign-ins get 429 for the rest of the window.",
    )
    signin_limit_address: str = Field(
        default="20/minute",
        description="Failed sign-ins allowed per client address (a `limits` rate); beyond it 429.",
    )
    # single sign-on (service.routes.oidc): OpenID Connect, on when an issuer is set
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer URL (its /.well-known/openid-configuration is read); "
        "set it to offer single sign-on.",
    )
    oidc_client_id: str | None = Field(
        default=None, description="This server's client id at the OpenID Connect provider."
    )
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="This server's client secret at the OpenID Connect provider."
    )
    oidc_role_claim: str = Field(
        default="clipsearch_role",
        description="The ID token claim holding the role (viewer, editor or admin).",
    )
    oidc_default_role: Literal["viewer", "editor", "admin", "none"] = Field(
        default="viewer",
        description="The role of a single sign-on without the role claim; none: refuse it.",
    )
    oidc_create_accounts: bool = Field(
        default=True,
        description="Make an account on a person's first single sign-on (else only accounts "
        "already linked may sign in).",
    )
    insecure: bool = Field(
        default=False, description="Allow a non-loopback host without an API token."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS; empty (default) = CORS off."
    )
    # connections (uvicorn and the app)
    max_connections: int = Field(
        default=100,
        gt=0,
        le=100_000,
        description="Open connections and requests in progress. Beyond it, a new connection "
        "closes the longest idle one (waiting for its headers or keep-alive) and only when none "
        "is idle gets 503; requests in progress beyond it get 503.",
    )
    header_timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="A request's headers must arrive within this."
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="A request's body must arrive within this."
    )
    # the body rate floor: after header_timeout_s, a body must have kept up this average rate
    body_min_rate: int = Field(
        default=4096,
        ge=0,
        description="Bytes per second a request body must average once header_timeout_s has "
        "passed since its headers (0: no floor); a trickling client gets 408.",
    )
    # the share of max_connections one address may hold with requests that carry no token
    unauthenticated_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="With an API token set: the share of max_connections one client address "
        "may hold with requests in progress that carry neither the token nor a session; beyond "
        "it they get 503.",
    )
    keepalive_timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="Idle keep-alive connections are closed after this."
    )
    # health: what /api/health reports as degraded
    disk_free_min_mb: int = Field(
        default=100,
        ge=0,
        description="Below this much free space on the data folder's disk, /api/health reports "
        "the disk full and ingests are refused with 507 (thumbnails, the index and the catalog "
        "could not be written).",
    )
    # health: a job without progress for this long is reported stalled
    ingest_stall_s: float = Field(
        default=90.0,
        gt=0,
        description="A queued or running job without progress (or heartbeat) for this long is "
        "reported as stalled by /api/health (a worker takes it over after "
        "CLIPSEARCH_STALE_AFTER_S).",
    )

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _origin_list(cls, value: object) -> object:
        return _split_list(value, paths=False)

    @field_validator("allowed_hosts", mode="after")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        out = []
        for host in value:
            host = host.strip().lower()
            if not host or "/" in host or " " in host or "*" in host[1:]:
                raise ValueError(
                    f"allowed host {host!r} must be a host name or address without scheme, port "
                    "or path (e.g. photos.example.org, 192.168.1.20, *.example.org), or '*'"
                )
            if host != "*" and host.startswith("*") and not host.startswith("*."):
                raise ValueError(f"allowed host {host!r}: a wildcard must look like *.example.org")
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"  # an IPv6 address as it appears in a Host header
            out.append(host)
        return out

    @field_validator("signin_limit_account", "signin_limit_address", mode="after")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a rate: write it as COUNT/PERIOD, e.g. 5/minute or 20/hour"
            ) from exc
        return value

    @field_validator("api_token", mode="after")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw == "":
            return None
        from .token_rules import TOKEN_HOWTO, weak_token_reason

        reason = weak_token_reason(raw)
        if reason is not None:
            raise ValueError(
                f"CLIPSEARCH_API_TOKEN is too easy to guess ({reason}): it must be at least "
                f"{MIN_TOKEN_LENGTH} characters, random, without spaces; generate one with: "
                f"{TOKEN_HOWTO}"
            )
        return value

    @field_validator("cors_origins", mode="after")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {origin!r} must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _safe(self) -> ServerSettings:
        if not is_loopback(self.host) and self.api_token is None and not self.insecure:
            raise ValueError(
                f"refusing to listen on {self.host!r} (reachable from other machines) without an "
                "API token: set CLIPSEARCH_API_TOKEN, or pass --insecure if this network is trusted"
            )
        if "*" in self.cors_origins and self.api_token is not None and not self.insecure:
            raise ValueError(
                "CORS origin '*' with an API token would let any web page drive this library: "
                "list the origins explicitly"
            )
        return self

    @property
    def effective_allowed_hosts(self) -> list[str]:
        """The Host header values accepted: the configured ones, else loopback names plus the
        address listened on (and this machine's names and addresses when that is a wildcard)."""
        if self.allowed_hosts:
            return list(self.allowed_hosts)
        hosts = ["localhost", "127.0.0.1", "[::1]"]
        name = self.host.strip().strip("[]").lower()
        if name in ("0.0.0.0", "::", ""):
            hosts += _machine_names()
        elif not is_loopback(name):
            hosts.append(f"[{name}]" if ":" in name else name)
        return list(dict.fromkeys(hosts))

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token is not None else None


class FoldersSettings(SettingsGroup):
    """The folders `serve` ingests and watches, and those the API may read under."""

    # what may be ingested
    images: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Folders `serve` ingests at start."
    )
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders under which POST /api/ingest and /api/folders may read, besides "
        "the `images` folders.",
    )
    # watched folders
    watch: bool = Field(
        default=True,
        description="`serve` watches the library's watched folders (the --images folders and "
        "those added through the API, CLI or gallery) and ingests what changes; in a deployment "
        "with several API replicas, turn it on in one of them only.",
    )
    rescan_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds between full re-scans of each watched folder, the safety net for "
        "drives that deliver no change events (0: only events).",
    )
    watch_debounce_s: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="Quiet seconds after a folder's last change before its ingest is queued.",
    )

    @field_validator("images", "allowed_roots", mode="before")
    @classmethod
    def _path_lists(cls, value: object) -> object:
        return _split_list(value, paths=True)

    @field_validator("images", "allowed_roots", mode="after")
    @classmethod
    def _paths(cls, value: list[Path]) -> list[Path]:
        out = []
        for path in value:
            if "\x00" in str(path):
                raise ValueError("a folder path contains a NUL byte")
            out.append(Path(path).expanduser().resolve())
        return out

    @property
    def effective_allowed_roots(self) -> list[Path]:
        """Where ingestion through the API may read: the images folders and the allowed_roots
        (`serve --images A --allowed-root B` serves and ingests A, and lets the API add B)."""
        roots = list(self.allowed_roots)
        return roots + [p for p in self.images if p not in roots]


class LimitsSettings(SettingsGroup):
    """The largest requests, pages and queries the API takes."""

    # limits
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0, description="Largest upload.")
    max_upload_pixels: int = Field(
        default=12_000_000,
        gt=0,
        description="Most pixels decoded for a search-by-image upload (JPEGs count at the reduced "
        "size they are decoded at: 1/2 to 1/8 of each side).",
    )
    upload_decode_slots: int = Field(
        default=2, gt=0, le=64, description="Uploads decoded at once; the others wait."
    )
    upload_queue: int = Field(
        default=8, ge=0, le=1024, description="Uploads that may wait for a slot; beyond: 503."
    )
    upload_decode_seconds: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Longest a search upload may take to decode, in its own process; past it the "
        "process is killed and the search answers 422.",
    )
    preview_decode_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Longest a preview may take to render, in its own process; past it the "
        "process is killed and the preview answers 422.",
    )
    decode_memory_mb: int = Field(
        default=1024,
        ge=0,
        le=1 << 20,
        description="Memory (address space, MiB) a process decoding an upload or a preview may "
        "add to its own; beyond, the decode is refused (413 or 422). 0: no limit.",
    )
    max_json_bytes: int = Field(default=1024 * 1024, gt=0, description="Largest JSON body.")
    search_k_max: int = Field(default=500, gt=0, description="Largest k a search may ask for.")
    search_offset_max: int = Field(default=10_000, ge=0, description="Largest search offset.")
    gallery_min_relevance: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="The gallery's default relevance cut (its slider starts here; 0: none).",
    )
    list_limit_max: int = Field(default=500, gt=0, description="Largest page of GET /api/images.")
    max_query_chars: int = Field(default=1000, gt=0, description="Longest query text.")
    max_negative_terms: int = Field(default=16, ge=0, description="Most negative texts per query.")


class SearchSettings(SettingsGroup):
    """How queries are embedded and searched in the API process."""

    # query embedding
    query_cache_size: int = Field(default=4096, ge=0, description="Cached query embeddings (LRU).")
    batch_window_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="How long the text encoder waits for more queries before encoding one. 0: "
        "none; queries that arrive while a batch is encoded form the next batch.",
    )
    batch_max: int = Field(default=32, gt=0, description="Most texts encoded in one batch.")
    query_precision: Literal["exact", "int8", "fp16"] = Field(
        default="int8",
        description="How the API and `clipsearch search` encode query texts on a CPU: int8 (the "
        "text tower's Linear weights in int8, several times faster, embeddings within a measured "
        "drift of exact, see BENCHMARKS.md), fp16 (float16 weights, nearly exact, faster than "
        "exact), exact (the float model, bit for bit). GPU models and non-CLIP families always "
        "use exact. Images are always embedded exactly.",
    )
    compute_threads: int = Field(
        default=1,
        ge=0,
        le=256,
        description="torch and FAISS (OpenMP) threads per request in the API process (0: their "
        "defaults). One is fastest for single queries on a shared CPU: concurrency comes from "
        "batching and concurrent requests, not from thread teams spinning against each other.",
    )
    search_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Searches run at once in the API process; more wait their turn. A search is "
        "mostly Python holding the GIL, so more threads than cores hand it around and serve "
        "fewer queries per second, not more.",
    )
    inference_threads: int = Field(
        default=2, gt=0, le=64, description="Threads for image decoding/encoding of queries."
    )
    search_slots: int = Field(
        default=8,
        gt=0,
        le=1024,
        description="Searches in progress at once in an API process (their texts are encoded "
        "together, their searches take the search threads in turn); more wait in the queue.",
    )
    search_queue: int = Field(
        default=64,
        ge=0,
        le=100_000,
        description="Searches that may wait for a slot; beyond, or after 10 s of waiting, a "
        "fast 503 with Retry-After instead of a growing wait.",
    )


class ServeSettings(SettingsGroup):
    """What `clipsearch serve` starts beside the API."""

    # serve
    embedded_worker: bool = Field(
        default=True, description="`serve` starts a Celery worker process beside the API."
    )
    preload_model: bool = Field(default=True, description="Load the model before taking requests.")
    api_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API processes `serve` runs on its port (`--workers`); recommended: one per "
        "core. The first owns the embedded worker and the folder watcher; every one serves reads "
        "from the same memory-mapped index and follows the catalog's changes.",
    )


class Settings(LibrarySettings):
    """Every knob of ``clipsearch serve``, the API, the CLI and the workers: one tree of groups.

    The library's groups (``catalog``, ``models``, ``store``, ``ocr``, ``worker``) come from
    :class:`clipsearch.indexer.settings.LibrarySettings`, which the worker processes read the
    same way; the service adds ``server``, ``folders``, ``limits``, ``search`` and ``serve``.
    Every variable keeps its flat name (``CLIPSEARCH_PORT`` is ``server.port``); see the
    module docstring of indexer.settings for the reading rules."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    folders: FoldersSettings = Field(default_factory=FoldersSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @property
    def effective_allowed_roots(self) -> list[Path]:
        """Where ingestion through the API may read (FoldersSettings.effective_allowed_roots)."""
        return self.folders.effective_allowed_roots

    @property
    def token(self) -> str | None:
        """The API token, if one is set."""
        return self.server.token


#: The CLI's flags (argparse destinations) -> the flat setting each sets: the one place flags
#: meet settings. A switch sets True (or False: the ``no_`` ones) when given.
FLAG_SETTINGS: dict[str, str] = {
    "data_dir": "data_dir",
    "database_url": "database_url",
    "broker_url": "broker_url",
    "model": "model",
    "device": "device",
    "host": "host",
    "port": "port",
    "images": "images",
    "allowed_root": "allowed_roots",
    "insecure": "insecure",
    "no_worker": "embedded_worker",
    "workers": "api_workers",
    "concurrency": "worker_concurrency",
}


def load_settings(*, report_unknown: bool = True, **overrides: object) -> Settings:
    """The settings of this process, read once at an edge (the API's start, a CLI command):
    the ``CLIPSEARCH_*`` variables with ``overrides`` winning (flat names or groups). Unknown
    ``CLIPSEARCH_*`` variables are logged with the closest known name; a bad value raises
    :class:`~clipsearch.indexer.settings.SettingsError` naming the variable."""
    return Settings.from_env(None, report_unknown=report_unknown, **overrides)


def flag_overrides(args: argparse.Namespace, **extra: object) -> dict[str, object]:
    """The settings a command's flags override (:data:`FLAG_SETTINGS`), for the flags given
    (not None, not an unset switch, not an empty list), and ``extra`` (flat names; None: not
    given)."""
    overrides: dict[str, object] = {}
    for dest, name in FLAG_SETTINGS.items():
        value = getattr(args, dest, None)
        if value is None or value is False or value == []:
            continue
        if dest.startswith("no_") and value is True:
            value = False  # --no-worker: embedded_worker=False
        overrides[name] = value
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return overrides


def settings_from_args(args: argparse.Namespace, **extra: object) -> Settings:
    """The settings of a CLI command: the environment, with the flags the user gave winning
    (:func:`flag_overrides`). The one place flags meet settings."""
    return load_settings(report_unknown=True, **flag_overrides(args, **extra))
