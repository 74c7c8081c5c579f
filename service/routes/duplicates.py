"""Duplicates: groups of the same picture in several places, and of similar shots.

The groups are computed by a ``duplicates`` job (indexer/duplicates.py: queued after each ingest,
or by ``POST /api/duplicates/scan``) and stored; a page is a range read on the group keys."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from clipsearch.indexer.duplicate_keeper import member_date

from ..auth import SEEN, ReadAccess, require_token
from ..deps import LibraryDep
from ..schemas import ImageOut, JobOut
from .common import ERRORS, MAX_ID, image_out, job_out

if TYPE_CHECKING:
    from clipsearch.indexer.duplicates import DuplicatesPage

router = APIRouter(prefix="/api/duplicates", tags=["duplicates"], responses=ERRORS)

Kind = Literal["duplicates", "exact", "near", "similar"]


class DuplicateMemberOut(BaseModel):
    image: ImageOut
    reason: str = Field(description="Why this image is in the group, naming the image it matches.")
    similarity: float = Field(description="Cosine similarity to that image (1.0 for a copy).")
    date: dt.datetime | None = Field(
        None,
        description="The date the keeper rule compares: when it was taken, else when the file "
        "was last modified (UTC).",
    )


class DuplicateGroupOut(BaseModel):
    id: int = Field(description="The group's key: the smallest image id in it.")
    kind: Literal["exact", "near", "similar"]
    size: int
    min_similarity: float
    members: list[DuplicateMemberOut] = Field(
        description="The suggested keeper first, then the others in the same rule's order."
    )
    keeper_id: int | None = Field(
        None,
        description="The copy to keep, suggested: the largest original (most pixels, then most "
        "bytes), then the earliest date, then the smallest id.",
    )


class DuplicateThresholds(BaseModel):
    near_similarity: float = Field(
        description="Cosine at or above which a pair may be the same picture."
    )
    near_hash_bits: float = Field(
        description="...if their 64-bit picture hashes differ in at most this many bits (where "
        "`pixel_match` is set, a loose bound: the pixels decide)."
    )
    pixel_match: float | None = Field(
        None,
        description="...and their thumbnails' pixels (64x64 grey levels, aligned for a 5 % "
        "crop) at least this alike, when the measurement found the pixels tell copies from "
        "different pictures better than the hash; null: the hash decides.",
    )
    similar_similarity: float = Field(
        description="Cosine at or above which shots are listed as similar."
    )
    mode: Literal["measured", "exact-only", "default"] = Field(
        description="measured: chosen on this library's own pictures and copies of them; "
        "exact-only: the model cannot tell copies from different pictures here, so only "
        "identical files are grouped; default: the fixed values (too few pictures to measure)."
    )
    precision: float | None = Field(
        None, description="Share of the pairs called the same picture that were copies, measured."
    )
    recall: float | None = Field(None, description="Share of the measured copies found.")
    sample: int = Field(0, description="Pictures of the library the measurement used.")
    copies: int = Field(0, description="Copies measured (4 kinds of each sampled picture).")
    different: int = Field(0, description="Pairs of different pictures measured.")
    reason: str = Field("", description="The measurement in words.")


class DuplicatesPageOut(BaseModel):
    items: list[DuplicateGroupOut]
    next_after: int | None = Field(
        None, description="Pass as `after` for the next page; null at the end."
    )
    stale: bool = Field(
        description="Images changed since the groups were computed (a scan updates them)."
    )
    job: JobOut | None = Field(None, description="The newest duplicates job.")
    thresholds: DuplicateThresholds


def _page_out(request: Request, page: DuplicatesPage) -> DuplicatesPageOut:
    return DuplicatesPageOut(
        items=[
            DuplicateGroupOut(
                id=g.id,
                kind=g.kind,
                size=g.size,
                min_similarity=g.min_similarity,
                keeper_id=g.keeper_id,
                members=[
                    DuplicateMemberOut(
                        image=image_out(request, m.image),
                        reason=m.reason,
                        similarity=m.similarity,
                        date=member_date(m.image),
                    )
                    for m in g.members
                ],
            )
            for g in page.items
        ],
        next_after=page.next_after,
        stale=page.stale,
        job=None if page.job is None else job_out(page.job),
        thresholds=DuplicateThresholds(**page.thresholds),
    )


@router.get(
    "",
    operation_id="list_duplicates",
    response_model=DuplicatesPageOut,
    dependencies=[ReadAccess],
)
def list_duplicates(
    request: Request,
    library: LibraryDep,
    kind: Annotated[
        Kind,
        Query(
            description="duplicates: exact copies and near duplicates (re-encoded, resized, "
            "lightly cropped or re-coloured); exact or near alone; similar: similar shots "
            "(bursts), listed apart."
        ),
    ] = "duplicates",
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="The previous page's `next_after`.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Groups per page.")] = 20,
) -> DuplicatesPageOut:
    """Groups of duplicate images, each member with why it is there. Remove the ones you do
    not want with `DELETE /api/images/{id}` (remembered; restore from the Removed view). A
    viewer sees the groups with two pictures under the folders shared with them, showing those."""
    from clipsearch.indexer import duplicates

    return _page_out(request, duplicates.page(library, kind, after, limit, SEEN.get()))


class ScanIn(BaseModel):
    full: bool = Field(
        False,
        description="Compare every image again instead of only what changed since the last scan.",
    )


@router.post(
    "/scan",
    operation_id="scan_duplicates",
    status_code=202,
    response_model=JobOut,
    dependencies=[Depends(require_token)],
)
def scan_duplicates(library: LibraryDep, body: ScanIn | None = None) -> JobOut:
    """Queue a duplicates job (or return the one already queued or running)."""
    from clipsearch.indexer import duplicate_jobs

    return job_out(duplicate_jobs.submit(library, full=bool(body and body.full)))
