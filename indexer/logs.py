"""One logging setup for the API, the workers and the CLI, and the request id that ties them.

:func:`configure_logging` is called once at each edge (``clipsearch serve``, ``clipsearch
worker`` and its child of ``serve``, every other CLI command) with the ``logs`` group of the
settings tree (``CLIPSEARCH_LOG_LEVEL``, ``CLIPSEARCH_LOG_FORMAT``):

- ``text``: ``<UTC time> <LEVEL> <logger> [<request id>]: <message>``, one line per record;
- ``json``: one JSON object per line with ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``,
  ``message``, ``request_id`` (when there is one), and ``exc_info`` for an exception; extra
  fields a record carries under :data:`EXTRA_FIELDS` (the access log's method, path, status...)
  are kept as fields.

Records go to one stream (stdout for the long-running ``serve`` and ``worker``, which is what a
container's log driver collects; stderr for the other commands, whose stdout is their output),
or to a file rotated by size (:data:`ROTATE_BYTES`, :data:`ROTATE_KEEP` old files): the worker
that ``serve`` starts writes ``<data dir>/logs/worker.log`` that way.

The request id (:data:`request_id`) is set by the API for each request (service.middleware),
and travels with every Celery task sent while it is set, as the task header
:data:`TASK_HEADER` (:func:`install_task_request_ids`): the worker sets it again for the time
the task runs, so each log line of that task carries the id of the request that caused it.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import uuid
import weakref
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

__all__ = [
    "EXTRA_FIELDS",
    "LEVELS",
    "ROTATE_BYTES",
    "ROTATE_KEEP",
    "TASK_HEADER",
    "JsonFormatter",
    "TextFormatter",
    "clean_request_id",
    "configure_logging",
    "install_task_request_ids",
    "new_request_id",
    "request_id",
]

LogFormat = Literal["text", "json"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: The request id of the work this thread or task is doing ("" when none).
request_id: ContextVar[str] = ContextVar("clipsearch_request_id", default="")

#: The Celery message header that carries the request id from the API to the worker.
TASK_HEADER = "clipsearch_request_id"

#: What an incoming X-Request-ID may be: up to 128 letters, digits and ``._:-`` (a UUID, a
#: proxy's or a load balancer's id). Anything else is replaced by a new id, so a client cannot
#: write arbitrary text (new lines, JSON, escapes) into the logs.
_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: Record attributes kept as JSON fields when a record carries them (``extra=``).
EXTRA_FIELDS = (
    "method",
    "path",
    "status",
    "duration_ms",
    "client",
    "task",
    "task_id",
    "job_id",
)

ROTATE_BYTES = 10 * 1024 * 1024
ROTATE_KEEP = 5

#: Loggers the servers bring, sent through the root's handler instead of their own.
_FOREIGN = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "kombu", "amqp")
#: The handlers configure_logging installed (replaced when it is called again).
_installed: weakref.WeakSet[logging.Handler] = weakref.WeakSet()

#: Libraries that narrate at INFO what an operator does not need (each request httpx sends,
#: which FAISS build loads, Alembic's plugins): WARNING unless the level asked is DEBUG.
_CHATTY = ("httpx", "httpcore", "faiss.loader", "alembic.runtime.plugins", "PIL")


def new_request_id() -> str:
    return uuid.uuid4().hex


def clean_request_id(value: str | bytes | None) -> str | None:
    """``value`` when it is an acceptable request id, else None."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if value is None or not _ID_RE.match(value):
        return None
    return value


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (``record.request_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "") or request_id.get()
        if rid:
            out["request_id"] = rid
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-12-07T03:51:26.123Z INFO clipsearch.indexer.runs [4f1c...]: message``."""

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", "") or request_id.get()
        head = f"{_timestamp(record)} {record.levelname} {record.name}"
        if rid:
            head += f" [{rid}]"
        text = f"{head}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(
    level: str | int = "INFO",
    fmt: LogFormat = "text",
    *,
    stream: TextIO | None = None,
    file: Path | None = None,
    force: bool = False,
) -> logging.Handler | None:
    """Send every record at ``level`` and above to one handler: ``file`` rotated by size when
    given, else ``stream`` (default stderr), formatted as ``fmt``, and route uvicorn's and
    Celery's loggers through it. Calling it again replaces the handler it installed. Like
    ``logging.basicConfig``, it leaves alone a process whose logging someone else set up (a
    program embedding clipsearch, a test runner) unless ``force``; then it returns None.
    Returns the handler."""
    root = logging.getLogger()
    if not force and any(h not in _installed for h in root.handlers):
        return None
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            file, maxBytes=ROTATE_BYTES, backupCount=ROTATE_KEEP, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    _installed.add(handler)
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, logging.FileHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in _FOREIGN:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True
    debug = root.level <= logging.DEBUG
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
    return handler


# --- the request id in Celery tasks -------------------------------------------------------------


def _on_publish(headers: dict[str, object] | None = None, **_: object) -> None:
    rid = request_id.get()
    if rid and headers is not None and TASK_HEADER not in headers:
        headers[TASK_HEADER] = rid


_tokens: dict[str, Any] = {}


def _on_prerun(task_id: str = "", task: object = None, **_: object) -> None:
    rid = clean_request_id(getattr(getattr(task, "request", None), TASK_HEADER, None))
    _tokens[task_id] = request_id.set(rid or "")
    logging.getLogger("clipsearch.indexer.tasks").info(
        "task %s started", getattr(task, "name", "?"), extra={"task_id": task_id}
    )


def _on_postrun(
    task_id: str = "", task: object = None, state: str | None = None, **_: object
) -> None:
    logging.getLogger("clipsearch.indexer.tasks").info(
        "task %s ended: %s", getattr(task, "name", "?"), state, extra={"task_id": task_id}
    )
    token = _tokens.pop(task_id, None)
    if token is not None:
        try:
            request_id.reset(token)
        except ValueError:  # set in another context (cannot happen with Celery's pools)
            request_id.set("")


def install_task_request_ids() -> None:
    """Connect (once per process) the Celery signals that carry the request id: on publish it
    goes into the message headers; in the worker it is the current id while the task runs."""
    from celery import signals

    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=TASK_HEADER)
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid=TASK_HEADER)
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid=TASK_HEADER)


def configure_from_env(
    serving: bool = False, verbose: int = 0, level: str | None = None
) -> tuple[str, LogFormat]:
    """A CLI command's logging: ``level`` if given, else ``CLIPSEARCH_LOG_LEVEL``, else INFO
    for the long-running ``serve`` and ``worker`` (``serving``: on stdout, which a container
    collects) and WARNING for the other commands (on stderr: their stdout is their output), each
    ``-v`` (``verbose``) one step lower; the format from ``CLIPSEARCH_LOG_FORMAT``. A settings
    tree that does not validate leaves the defaults: the command reports it when it reads its
    settings. Returns the level and format applied."""
    from .settings import LibrarySettings, SettingsError

    chosen: str | None = None
    fmt: LogFormat = "text"
    try:
        logs = LibrarySettings.from_env().logs
        chosen, fmt = logs.level, logs.format
    except SettingsError:
        pass
    name = (level or chosen or ("INFO" if serving else "WARNING")).upper()
    number = logging.getLevelName(name) if name in LEVELS else logging.WARNING
    number = max(logging.DEBUG, int(number) - 10 * max(0, verbose))
    configure_logging(number, fmt, stream=sys.stdout if serving else sys.stderr)
    return logging.getLevelName(number), fmt
