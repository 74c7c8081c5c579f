"""Health and metrics.

``/api/health`` names each part that is not well, with a non-``ok`` status (``degraded``) and a
problem per part that says what is wrong and what repairs it: the model, the index files (served
exactly from the catalog meanwhile; ``clipsearch reindex`` rebuilds them), the vector store, the
disk of the data folder (full: nothing can be written), and ingestion (a job without progress,
since when).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from clipsearch.indexer.facade import LibraryFacade
from clipsearch.indexer.stats import IndexStats
from clipsearch.indexer.types import SearchFilters

from ..auth import AdminAccess, caller_visibility, resolve_principal
from ..deps import ServiceState, StateDep
from ..schemas import HealthOut, HealthProblem, ImageCounts, IndexOut, OcrOut
from .common import ERRORS

router = APIRouter(tags=["health"], responses=ERRORS)


def disk_problem(data_dir: Path, min_free_mb: int, shown: str) -> HealthProblem | None:
    """The data folder's disk below ``min_free_mb`` MB free (or not there): a problem naming the
    folder as ``shown``; None when there is room."""
    where = data_dir
    while not where.exists() and where.parent != where:  # not made yet: the disk it will be on
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        return HealthProblem(
            part="disk", message=f"the data folder {shown} cannot be read ({exc.strerror})"
        )
    if free >= min_free_mb * 1024 * 1024:
        return None
    return HealthProblem(
        part="disk",
        message=f"the disk holding the data folder {shown} is full ({free / 2**20:.1f} MB free, "
        f"below CLIPSEARCH_DISK_FREE_MIN_MB={min_free_mb}): thumbnails, the index and the "
        "catalog cannot be written and ingests are refused; free space there",
    )


def _as_utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def stalled_jobs(
    library: LibraryFacade, stall_s: float, detail: bool = True
) -> list[HealthProblem]:
    """Queued or running jobs without progress (nor heartbeat) for ``stall_s`` seconds (with
    ``detail``, each job's own message, which may name folders)."""
    now = datetime.now(UTC)
    problems = []
    for job in library.list_jobs(limit=50):
        if job.state not in ("queued", "running"):
            continue
        last = max(
            (
                t
                for t in (
                    _as_utc(job.heartbeat_at),
                    _as_utc(job.updated_at),
                    _as_utc(job.started_at),
                    _as_utc(job.created_at),
                )
                if t is not None
            ),
            default=None,
        )
        if last is None or (now - last).total_seconds() < stall_s:
            continue
        waiting = (
            "queued and not started: is a worker running (`clipsearch worker`, or serve without "
            "--no-worker)?"
            if job.state == "queued"
            else "running without progress: its worker may be stuck (a full disk?) or gone"
        )
        problems.append(
            HealthProblem(
                part="ingestion" if job.kind in ("ingest", "reindex", "ocr") else "jobs",
                message=f"{job.kind} job {job.id} stalled since {last:%Y-%m-%d %H:%M:%S} UTC: "
                f"{waiting}"
                + (f" ({job.message})" if job.message and detail else "")
                + "; a worker takes it over after CLIPSEARCH_STALE_AFTER_S without progress",
                since=last,
            )
        )
    return problems


def _problems(
    state: ServiceState, index: IndexStats, authorised: bool, counts: bool
) -> list[HealthProblem]:
    settings = state.settings
    problems = []
    if state.model_error:
        problems.append(HealthProblem(part="model", message=state.model_error))
    if index.damaged:
        problems.append(
            HealthProblem(
                part="index",
                message=f"the index is damaged ({index.damaged}): searches are answered "
                "exactly from the catalog's vectors meanwhile (slower on a large library); "
                "`clipsearch reindex` rebuilds the index files from the stored vectors (no "
                "image is embedded again)",
            )
        )
    if index.error:
        problems.append(
            HealthProblem(
                part="store",
                message=index.error
                if authorised
                else "the vector store does not answer (the server log has the cause)",
            )
        )
    # FAISS follows the catalog by itself (its exact delta catches up within a refresh): ready
    # images it has not loaded yet are a lag, not a loss. A Milvus collection is written as each
    # batch commits; one that lacks vectors was emptied or damaged.
    if index.missing and index.store == "milvus":
        problems.append(
            HealthProblem(
                part="index",
                message=(f"{index.missing} of " if counts else "some of ")
                + "the catalog's vectors are missing from the vector store: `clipsearch "
                "reindex` rebuilds it from the catalog",
            )
        )
    data_dir = Path(settings.catalog.data_dir).expanduser()
    shown = str(data_dir) if authorised else "(CLIPSEARCH_DATA_DIR)"
    disk = disk_problem(data_dir, settings.server.disk_free_min_mb, shown)
    if disk is not None:
        problems.append(disk)
    problems += stalled_jobs(state.library, settings.server.ingest_stall_s, counts)
    return problems


@router.get("/api/health", operation_id="health", response_model=HealthOut)
async def health(request: Request, state: StateDep) -> HealthOut:
    """Model, device, image counts and the served index, and each part that is not well
    (``problems``, status ``degraded``); 503 when the catalog does not answer.

    Open to all (health checks carry no token). The library's counts are the caller's: none
    without credentials, a viewer's folders' only (indexer.sharing), the whole library's (and
    the index's) for editors, admins, the token and an open server. Server details (a model
    given as a path, the data folder, the vector store's error) are shown to those who see the
    whole library; others, a viewer of some folders included, get names and settings only."""
    stats = await run_in_threadpool(state.library.stats)
    index = stats.index
    seen = await caller_visibility(request)
    everything = seen is not None and seen.everything
    # server details: for callers with credentials who see the whole library (not the
    # strangers CLIPSEARCH_PUBLIC_READ lets read the photos, nor a viewer of some folders)
    authorised = everything and await resolve_principal(request) is not None
    images = None
    if seen is not None:
        images = (
            ImageCounts(**asdict(stats.images))
            if seen.everything
            else await run_in_threadpool(_counts_under, state.library, seen.folders)
        )
    problems = await run_in_threadpool(_problems, state, index, authorised, everything)
    status = "ok" if state.model_name is not None or state.model_error else "starting"
    if problems:
        status = "degraded"
    return HealthOut(
        gallery_min_relevance=state.settings.limits.gallery_min_relevance,
        status=status,
        problems=problems,
        # the model of the index being served: after a re-index to another model it is the new
        # one at once, not only after the next search loads it into the encoder
        model=_shown_model(
            str(stats.model or state.model_name or state.settings.models.spec), authorised
        ),
        device=state.model_device or state.settings.models.device,
        images=images,
        index=IndexOut(
            version=index.version,
            kind=index.kind,
            size=index.size if everything else None,
            delta=index.delta if everything else None,
            store=index.store,
            entities=index.entities if everything else None,
            catalog_vectors=index.catalog_vectors if everything else None,
            missing=index.missing if everything else None,
            error=(
                index.error if authorised or not index.error else "the vector store does not answer"
            ),
            damaged=index.damaged,
        ),
        ocr=await run_in_threadpool(_ocr_status, state),
    )


def _counts_under(library: LibraryFacade, folders: tuple[str, ...]) -> ImageCounts:
    """The pictures under a viewer's ``folders``, by state (the browser's count of them)."""
    within = SearchFilters(within=folders)
    by_state = {
        name: library.browse_images(limit=1, state=name, filters=within)[1]
        for name in ("ready", "failed", "pending")
    }
    return ImageCounts(total=library.browse_images(limit=1, filters=within)[1], **by_state)


def _ocr_status(state: ServiceState) -> OcrOut | None:
    """Whether images get their text read (probed once per process; see indexer.ocr)."""
    config = state.library.ocr_config
    if config is None:
        return None
    from clipsearch.indexer.ocr import probe

    return OcrOut(**probe(config).as_dict())


def _shown_model(model: str, authorised: bool) -> str:
    if authorised or not ("/" in model or "\\" in model):
        return model
    return os.path.basename(model.rstrip("/\\")) or "custom model"


@router.get("/metrics", operation_id="metrics", include_in_schema=False, dependencies=[AdminAccess])
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics: they describe the server and count the whole library, so they are
    for its operators: the token or an admin's key (scope admin), even when
    CLIPSEARCH_PUBLIC_READ opens the photos (give Prometheus the key: `authorization`)."""
    body = await run_in_threadpool(state.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
