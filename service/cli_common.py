"""What every ``clipsearch`` command shares: the one-line user error, the settings and the library
of the flags given, JSON output, following a job to its end, and the library flags."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clipsearch.indexer.facade import JobsApi
    from clipsearch.indexer.library import Library
    from clipsearch.indexer.types import FolderInfo, JobInfo
    from clipsearch.indexer.worker_supervisor import SupervisedWorker

    from .settings import Settings

EXIT_USAGE = 2
JOB_POLL_S = 0.5


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def cli_settings(args: argparse.Namespace, **extra: object) -> Settings:
    """Settings from the environment, overridden by the flags the user gave (the mapping is
    service.settings.FLAG_SETTINGS); a bad value is one line naming the variable."""
    from clipsearch.indexer.settings import SettingsError

    from .settings import settings_from_args

    try:
        return settings_from_args(args, **extra)
    except SettingsError as exc:
        raise CLIError(str(exc)) from exc


def open_library(settings: Settings, image_tower: str = "now") -> Library:
    """The library of the settings' data folder. Its catalog's model wins over the configured
    one; a different model asked for explicitly (``--model``, ``CLIPSEARCH_MODEL``) is named,
    with how to switch to it, instead of being used silently. ``image_tower="on_demand"``: a
    command that embeds only texts keeps the image tower out of memory until it is needed."""
    from clipsearch.indexer.context import library_model_spec, normalise_spec

    from .app import build_library

    lib = build_library(settings, confine=False, image_tower=image_tower)
    if settings.is_set("model"):
        with lib.Session() as session:
            current = library_model_spec(session)
        try:
            wanted = normalise_spec(settings.models.spec)
        except Exception:  # an empty name: the settings refuse it elsewhere
            wanted = settings.models.spec
        if current is not None and current != wanted:
            print(
                f"clipsearch: this library uses the model {current} (searches and ingests use "
                f"it); to switch to {settings.models.spec}, run `clipsearch reindex --model "
                f"{settings.models.spec}` (searches keep the old model until the new index is complete)",
                file=sys.stderr,
            )
    return lib


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types shown as one line. Only layers already imported can have raised theirs,
    so nothing is imported here (importing the model layer would load torch: seconds)."""
    errors: list[type[BaseException]] = [
        CLIError,
        FileNotFoundError,
        NotADirectoryError,
        PermissionError,
    ]
    for module, name in (
        ("clipsearch.indexer.errors", "IndexerError"),
        ("clipsearch.model.errors", "ModelError"),
        ("clipsearch.service.query", "QueryError"),
        ("clipsearch.service.serve", "ServeError"),
    ):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            errors.append(cls)
    return tuple(errors)


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


def job_line(job: JobInfo) -> str:
    total = "?" if job.total is None else str(job.total)
    return (
        f"job {job.id} ({job.kind}): {job.state}, {job.done} done, {job.failed} failed of {total}"
    )


def wait_for_job(
    lib: JobsApi, job_id: int, quiet: bool = False, timeout: float | None = None
) -> JobInfo:
    """Poll the catalog until the job finishes, with a progress bar on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    job = lib.get_job(job_id)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        task = progress.add_task(f"{job.kind} #{job.id}", total=job.total, failed=0)
        while job.state not in ("done", "failed", "cancelled"):
            if deadline is not None and time.monotonic() > deadline:
                raise CLIError(
                    f"job {job.id} did not finish in {timeout:.0f} s (state {job.state})"
                )
            time.sleep(JOB_POLL_S)  # polling the catalog for progress, not synchronisation
            job = lib.get_job(job_id)
            progress.update(
                task, total=job.total, completed=job.done + job.failed, failed=job.failed
            )
        progress.update(task, total=job.total, completed=job.done + job.failed, failed=job.failed)
    return job


def report_job(job: JobInfo) -> int:
    print(job_line(job))
    if getattr(job, "message", None):
        print(f"  why: {job.message}")
    for err in (job.errors or [])[:10]:
        print(f"  failed: {err.get('path', '?')}: {err.get('reason', '')}")
    return 0 if job.state == "done" else 1


def maybe_worker(settings: Settings, wanted: bool) -> SupervisedWorker | None:
    """Start a worker for the duration of a --wait command on the embedded broker."""
    if not wanted:
        return None
    from .serve import start_embedded_worker

    return start_embedded_worker(settings)


def follow_job(args: argparse.Namespace, settings: Settings, lib: JobsApi, job: JobInfo) -> int:
    """After a submit: print the job, or with --wait follow it to the end (starting a worker for
    the wait on the embedded broker unless --no-worker) and report how it ended."""
    if not args.wait:
        print(f"{job_line(job)}; watch it with `clipsearch status`")
        return 0
    worker = maybe_worker(settings, args.worker and not settings.catalog.broker_url)
    try:
        job = wait_for_job(lib, job.id, quiet=args.quiet, timeout=args.timeout)
    finally:
        if worker is not None:
            worker.stop()
    return report_job(job)


def catalog_path(text: str) -> str:
    from clipsearch.indexer.catalog import path_from_db

    return path_from_db(text).encode("utf-8", "backslashreplace").decode("utf-8")


def common_flags(p: argparse.ArgumentParser, model: bool = True) -> None:
    g = p.add_argument_group("library (default from CLIPSEARCH_* variables)")
    g.add_argument(
        "--data-dir", help="data folder (catalog, thumbnails, index); $CLIPSEARCH_DATA_DIR"
    )
    g.add_argument("--database-url", help="catalog URL (default SQLite in the data folder)")
    g.add_argument("--broker-url", help="Celery broker URL (default: embedded SQLite broker)")
    if model:
        g.add_argument(
            "--model",
            help="model registry name or weights path; a library keeps the model that built it "
            "(`clipsearch reindex --model` switches), this one is used for a new library "
            "(default: $CLIPSEARCH_MODEL, else ViT-B-32)",
        )
    g.add_argument("--device", help="torch device: cpu, cuda, cuda:1 (default: automatic)")


def wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar")
    p.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        help="with --wait on the embedded broker, do not start a worker for the wait "
        "(use when `clipsearch serve` or `clipsearch worker` is already running)",
    )
    p.add_argument("--timeout", type=float, default=None, help="give up waiting after SECONDS")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def folder_line(f: FolderInfo) -> str:
    job = f.last_job
    last = f"; last job {job.id}: {job.state}" if job is not None else ""
    sub = "" if f.recursive else " (not sub-folders)"
    return f"{f.id:4d}  {f.state:9s} {f.path}{sub}{last}"
