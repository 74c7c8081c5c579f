"""Albums: hand-picked ones and smart ones that fill themselves from a saved search.

The decisions are the domain's (indexer/albums.py, indexer/album_jobs.py): these routes parse,
call and present. A smart album's query has the fields of a search (text with ``-negatives``,
weighted terms that are texts or library pictures, filters, the relevance cut); creating or
changing one queues the albums job, and newly embedded pictures join the albums they match. An
album's pictures page with a cursor (``after`` = the previous page's ``next_after``). Exports:
``GET .../export.zip`` streams a zip; ``POST .../export`` writes a folder of symbolic links
inside the folders the server may read."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from clipsearch.indexer import album_views as views
from clipsearch.indexer import albums as domain
from clipsearch.indexer.facade import LibraryFacade
from clipsearch.indexer.types import AlbumKind

from ..auth import SEEN, ReadAccess, require_token
from ..deps import LibraryDep
from ..schemas import ImageOut, JobOut
from .common import ERRORS, MAX_ID, image_out, job_out

router = APIRouter(tags=["albums"], responses=ERRORS)

AlbumKey = Annotated[
    str, Path(min_length=1, max_length=domain.MAX_NAME, description="An album's id or name.")
]
Text = Annotated[str, Field(min_length=1, max_length=1000)]


class TermIn(BaseModel):
    text: Text | None = Field(None, description="A text term (give this or image_id).")
    image_id: int | None = Field(None, ge=1, le=MAX_ID, description="A library picture's id.")
    weight: float = Field(1.0, ge=-100, le=100, description="Negative: steer away from it.")


class FiltersIn(BaseModel):
    folder: str | None = Field(None, max_length=4096)
    date_from: dt.datetime | None = None
    date_to: dt.datetime | None = None
    formats: list[Annotated[str, Field(max_length=16)]] | None = Field(None, max_length=16)
    tag: str | None = Field(None, max_length=64, description="Only pictures with this tag.")


class QueryIn(BaseModel):
    """A saved search: the fields of `POST /api/search` an album keeps."""

    text: str | None = Field(None, max_length=1000, description="'beach -people' style.")
    negative: list[Text] = Field(default_factory=list, max_length=16)
    terms: list[TermIn] = Field(default_factory=list, max_length=64)
    filters: FiltersIn | None = None
    min_relevance: float | None = Field(
        None, ge=0.0, le=1.0, description="The relevance cut; null: the search's default."
    )


class AlbumIn(BaseModel):
    name: str = Field(min_length=1, max_length=domain.MAX_NAME)
    query: QueryIn | None = Field(None, description="A smart album's query; none: hand-picked.")


class AlbumPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=domain.MAX_NAME)
    query: QueryIn | None = None


class AlbumOut(BaseModel):
    id: int
    name: str
    kind: AlbumKind
    query: dict[str, Any] | None = Field(description="A smart album's saved query.")
    size: int = Field(description="Pictures it shows (pinned and matching).")
    pinned: int
    excluded: int = Field(description="Pictures people took out of it: never shown.")
    computed_at: dt.datetime | None = Field(
        None, description="A smart album's last computation (null: the albums job is queued)."
    )


class AlbumImageOut(BaseModel):
    image: ImageOut
    state: str = Field(description="auto (matches the query), pinned or excluded (by a person).")
    score: float | None = Field(description="Cosine of the picture with the album's query.")


class AlbumPage(BaseModel):
    album: AlbumOut
    items: list[AlbumImageOut]
    next_after: int | None = Field(None, description="Pass as `after`; null at the end.")


class MembersIn(BaseModel):
    action: Literal["add", "pin", "exclude", "remove", "auto"] = Field(
        description="add/pin: always shown; exclude: never shown; remove: out of a hand-picked "
        "album (excluded from a smart one); auto: the smart album's query decides again."
    )
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        min_length=1, max_length=domain.MAX_CHANGE
    )


class LinkExportIn(BaseModel):
    destination: str = Field(
        min_length=1, max_length=4096, description="A new folder inside the allowed folders."
    )


class LinkExportOut(BaseModel):
    folder: str
    linked: int
    missing: int = Field(description="Pictures no longer on disk (not linked).")


def _sessions(library: LibraryFacade) -> sessionmaker[Session]:
    return library.Session


def album_out(info: domain.AlbumInfo) -> AlbumOut:
    return AlbumOut(
        id=info.id, name=info.name, kind=info.kind, query=info.query, size=info.size,
        pinned=info.pinned, excluded=info.excluded, computed_at=info.computed_at,
    )  # fmt: skip


def _saved(body: QueryIn) -> domain.SavedQuery:
    return domain.SavedQuery.from_json(body.model_dump(mode="json"))


@router.get(
    "/api/albums", operation_id="list_albums", response_model=list[AlbumOut],
    dependencies=[ReadAccess],
)  # fmt: skip
def list_albums(library: LibraryDep) -> list[AlbumOut]:
    """Every album by name, with how many pictures each shows (a viewer: the albums showing
    pictures under the folders shared with them, counted over those)."""
    with _sessions(library)() as session:
        return [album_out(a) for a in views.list_albums(session, SEEN.get())]


@router.post(
    "/api/albums", operation_id="create_album", status_code=201, response_model=AlbumOut,
    dependencies=[Depends(require_token)],
)  # fmt: skip
def create_album(library: LibraryDep, body: AlbumIn) -> AlbumOut:
    """A hand-picked album, or with a query a smart one (the albums job computes it)."""
    query = None if body.query is None else _saved(body.query)
    return album_out(domain.create(library, body.name, query))


@router.post(
    "/api/albums/refresh", operation_id="refresh_albums", status_code=202,
    response_model=JobOut, dependencies=[Depends(require_token)],
)  # fmt: skip
def refresh_albums(library: LibraryDep) -> JobOut:
    """Queue the albums job: every smart album computed again over the library's vectors."""
    return job_out(domain.submit(library))


@router.get(
    "/api/albums/{album}", operation_id="get_album", response_model=AlbumOut,
    dependencies=[ReadAccess],
)  # fmt: skip
def get_album(library: LibraryDep, album: AlbumKey) -> AlbumOut:
    with _sessions(library)() as session:
        return album_out(views.get_album(session, album, SEEN.get()))


@router.patch(
    "/api/albums/{album}", operation_id="update_album", response_model=AlbumOut,
    dependencies=[Depends(require_token)],
)  # fmt: skip
def update_album(library: LibraryDep, album: AlbumKey, body: AlbumPatch) -> AlbumOut:
    """Rename an album or change a smart album's query (computed again by the albums job;
    pinned and excluded pictures stay)."""
    query = None if body.query is None else _saved(body.query)
    return album_out(domain.update(library, album, body.name, query))


@router.delete(
    "/api/albums/{album}", operation_id="delete_album", response_model=AlbumOut,
    dependencies=[Depends(require_token)],
)  # fmt: skip
def delete_album(library: LibraryDep, album: AlbumKey) -> AlbumOut:
    """Delete an album (never its pictures). Returns what it was."""
    with _sessions(library)() as session:
        return album_out(domain.delete_album(session, album))


@router.get(
    "/api/albums/{album}/images", operation_id="list_album_images", response_model=AlbumPage,
    dependencies=[ReadAccess],
)  # fmt: skip
def list_album_images(
    request: Request,
    library: LibraryDep,
    album: AlbumKey,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="The previous page's `next_after`.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=domain.MAX_PAGE)] = 50,
    excluded: Annotated[bool, Query(description="The pictures taken out instead.")] = False,
) -> AlbumPage:
    """An album's pictures in id order (excluded ones never, unless asked for)."""
    seen = SEEN.get()
    with _sessions(library)() as session:
        info = views.get_album(session, album, seen)
        items, next_after = views.members_page(session, info.id, after, limit, excluded, seen)
    return AlbumPage(
        album=album_out(info),
        items=[
            AlbumImageOut(image=image_out(request, i.image), state=i.state, score=i.score)
            for i in items
        ],
        next_after=next_after,
    )


@router.post(
    "/api/albums/{album}/images", operation_id="change_album_images", response_model=AlbumOut,
    dependencies=[Depends(require_token)],
)  # fmt: skip
def change_album_images(library: LibraryDep, album: AlbumKey, body: MembersIn) -> AlbumOut:
    """Add, pin, exclude or remove pictures by hand (a person's choice outlives every
    computation), or hand them back to the query (`auto`)."""
    with _sessions(library)() as session:
        return album_out(domain.change_members(session, album, body.ids, body.action))


@router.get(
    "/api/albums/{album}/export.zip", operation_id="export_album_zip",
    response_class=StreamingResponse, dependencies=[ReadAccess],
    responses={200: {"content": {"application/zip": {}}, "description": "The album's files."}},
)  # fmt: skip
def export_album_zip(library: LibraryDep, album: AlbumKey) -> StreamingResponse:
    """The album's original files as a zip, streamed (at most 10,000 pictures)."""
    with _sessions(library)() as session:
        info, images = views.export_rows(session, album, SEEN.get())
    name = "".join(c if c.isascii() and c.isalnum() else "_" for c in info.name)[:64] or "album"
    return StreamingResponse(
        domain.zip_chunks(library, images),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
    )


@router.post(
    "/api/albums/{album}/export", operation_id="export_album_links",
    response_model=LinkExportOut, dependencies=[Depends(require_token)],
)  # fmt: skip
def export_album_links(library: LibraryDep, album: AlbumKey, body: LinkExportIn) -> LinkExportOut:
    """A new folder of symbolic links to the album's files, inside the allowed folders."""
    with _sessions(library)() as session:
        _, images = domain.export_rows(session, album)
    folder, linked, missing = domain.link_folder(library, images, body.destination)
    return LinkExportOut(folder=folder, linked=linked, missing=missing)
