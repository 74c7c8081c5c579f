"""Health and metrics."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from ..auth import ReadAccess, is_authorised
from ..deps import StateDep
from ..schemas import HealthOut, ImageCounts, IndexOut, OcrOut
from .common import ERRORS

router = APIRouter(tags=["health"], responses=ERRORS)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


@router.get("/api/health", operation_id="health", response_model=HealthOut)
async def health(request: Request, state: StateDep) -> HealthOut:
    """Model, device, image counts and the served index; 503 when the catalog does not answer.

    Open to all (health checks carry no token); a model given as a path is shown by its folder
    name only, unless the caller holds the token."""
    stats: dict[str, Any] = await run_in_threadpool(state.library.stats)
    images = stats.get("images") or {}
    index = stats.get("index") or {}
    status = (
        "ok" if state.model_name is not None else ("degraded" if state.model_error else "starting")
    )
    if index.get("error") or index.get("missing"):
        status = "degraded"  # the store cannot answer, or lacks vectors the catalog has
    return HealthOut(
        gallery_min_relevance=state.settings.gallery_min_relevance,
        status=status,
        # the model of the index being served: after a re-index to another model it is the new
        # one at once, not only after the next search loads it into the encoder
        model=_shown_model(
            str(stats.get("model") or state.model_name or state.settings.model),
            is_authorised(request),
        ),
        device=state.model_device or state.settings.device,
        images=ImageCounts(
            total=_int(images.get("total")),
            ready=_int(images.get("ready")),
            failed=_int(images.get("failed")),
            pending=_int(images.get("pending")),
        ),
        index=IndexOut(
            version=index.get("version"),
            kind=index.get("kind"),
            size=_int(index.get("size")),
            delta=_int(index.get("delta")),
            store=index.get("store"),
            entities=index.get("entities"),
            catalog_vectors=index.get("catalog_vectors"),
            missing=index.get("missing"),
            error=index.get("error"),
        ),
        ocr=await run_in_threadpool(_ocr_status, state),
    )


def _ocr_status(state: Any) -> OcrOut | None:
    """Whether images get their text read (probed once per process; see indexer.ocr)."""
    config = getattr(getattr(state.library, "config", None), "ocr", None)
    if config is None:
        return None
    from clipsearch.indexer.ocr import probe

    return OcrOut(**probe(config).as_dict())


def _shown_model(model: str, authorised: bool) -> str:
    if authorised or not ("/" in model or "\\" in model):
        return model
    return os.path.basename(model.rstrip("/\\")) or "custom model"


@router.get("/metrics", operation_id="metrics", include_in_schema=False, dependencies=[ReadAccess])
async def metrics(state: StateDep) -> Response:
    body = await run_in_threadpool(state.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
