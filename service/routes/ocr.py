"""Text inside images: what was read in (and beside) one image, and the job that reads a library."""

from __future__ import annotations

import datetime as dt
import os
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..auth import ReadAccess, VisibleImage, require_token
from ..deps import LibraryDep
from ..schemas import JobOut
from .common import ERRORS, MAX_ID, job_out

router = APIRouter(prefix="/api", tags=["text"], responses=ERRORS)


class ImageTextOut(BaseModel):
    id: int
    text: str | None = Field(default=None, description="The words Tesseract read in the image.")
    caption: str | None = Field(
        default=None, description="A sidecar caption (.txt, .xmp) or the EXIF description."
    )
    name: str | None = Field(default=None, description="The file name the index keeps.")
    folder: str | None = Field(default=None, description="The folder name the index keeps.")
    ocr_state: str | None = Field(
        default=None,
        description="done, failed (see ocr_error), skipped (too small for text), or null: not "
        "read yet (Tesseract missing or OCR off when it was ingested; `clipsearch ocr` reads it).",
    )
    ocr_error: str | None = None
    ocr_at: dt.datetime | None = None


class OcrIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(
        default=False, description="Read every image again, not only those never read."
    )
    folder: str | None = Field(
        default=None, max_length=4096, description="Only images under this folder (absolute path)."
    )


@router.get(
    "/images/{id}/text",
    operation_id="image_text",
    response_model=ImageTextOut,
    dependencies=[ReadAccess, VisibleImage],
)
async def image_text(
    library: LibraryDep,
    id: Annotated[int, Path(ge=1, le=MAX_ID, description="Catalog id of the image.")],
) -> ImageTextOut:
    """The text recognised in an image and its caption, as the keyword index holds them."""
    found = await run_in_threadpool(library.image_text, id)
    return ImageTextOut(id=id, **found)


@router.post(
    "/ocr",
    operation_id="ocr",
    status_code=202,
    response_model=JobOut,
    dependencies=[Depends(require_token)],
)
async def ocr(library: LibraryDep, body: OcrIn | None = None) -> JobOut:
    """Queue a job that reads the text inside the library's images (those never read, or all
    with `force`), without embedding anything again; returns the job to watch."""
    body = body or OcrIn()
    folder = body.folder or None
    if folder is not None:
        if "\x00" in folder:
            raise HTTPException(400, detail="the folder contains a NUL byte")
        if not os.path.isabs(folder):
            raise HTTPException(
                400, detail=f"folder {folder!r} must be an absolute path, as the images list it"
            )
    job = await run_in_threadpool(library.submit_ocr, body.force, folder)
    return job_out(job)
