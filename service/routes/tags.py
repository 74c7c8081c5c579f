"""Zero-shot tags: tags defined in words, the pictures that have them, a person's decisions.

The decisions are the domain's (indexer/tags.py, indexer/tag_jobs.py): these routes parse, call
and present. A tag's pictures page with a cursor (``after`` = the previous page's
``next_after``); tagging runs as a job (``POST /api/tags/run``), and new pictures are tagged as
they are embedded."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from clipsearch.indexer import tags as domain
from clipsearch.indexer.facade import LibraryFacade
from clipsearch.indexer.tag_vocabulary import TEMPLATE_SETS, Templates

from ..auth import SEEN, ReadAccess, VisibleImage, require_token
from ..deps import LibraryDep
from ..schemas import ImageOut, JobOut
from .common import ERRORS, MAX_ID, image_out, job_out

router = APIRouter(tags=["tags"], responses=ERRORS)

State = Literal["confirmed", "rejected", "auto"]
TagKey = Annotated[str, Path(min_length=1, max_length=64, description="A tag's id or name.")]
assert set(TEMPLATE_SETS) == set(Templates.__args__)  # type: ignore[attr-defined]


class TagOut(BaseModel):
    id: int
    name: str
    descriptions: list[str] = Field(description="What the tag shows, in words.")
    templates: Templates = Field(
        description="The prompt ensemble each description is put in (imagenet80: the CLIP "
        "paper's 80 prompts; clip7: its 7; photo: 'a photo of a {}.'; verbatim: as written)."
    )
    group: str | None = Field(
        None, description="Tags of one group exclude each other: a picture takes the best one."
    )
    target_precision: float | None = Field(None, description="Null: the library's default.")
    assigned: int = Field(description="Pictures with the tag (automatic or confirmed).")
    threshold: float | None = Field(
        None, description="The calibrated cosine for the library's model (null: not run yet)."
    )
    precision: float | None = Field(None, description="The precision estimated at it.")


class TagIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    descriptions: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=16, description="Default: the name."
    )
    group: str | None = Field(None, max_length=64)
    templates: Templates = "imagenet80"
    target_precision: float | None = Field(None, ge=0.5, lt=1.0)


class TagPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=64)
    descriptions: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None, min_length=1, max_length=16
    )
    group: str | None = Field(None, max_length=64, description="Empty: no group.")
    templates: Templates | None = None
    target_precision: float | None = Field(None, ge=0.5, lt=1.0)


class TaggedImageOut(BaseModel):
    image: ImageOut
    score: float | None = Field(description="Cosine of the picture with the tag.")
    state: str = Field(description="auto (the tagger) or confirmed (a person).")


class TagImagesPage(BaseModel):
    tag: TagOut
    items: list[TaggedImageOut]
    next_after: int | None = Field(None, description="Pass as `after`; null at the end.")


class ImageTagOut(BaseModel):
    tag_id: int
    name: str
    group: str | None
    score: float | None
    state: str = Field(description="auto, confirmed or rejected (by a person).")


class DecisionIn(BaseModel):
    state: State = Field(
        description="confirmed: the picture has the tag whatever its score; rejected: it never "
        "gets it from a run; auto: the tagger decides again."
    )


class RunIn(BaseModel):
    full: bool = True


def _sessions(library: LibraryFacade) -> sessionmaker[Session]:
    return library.Session


def tag_out(info: domain.TagInfo) -> TagOut:
    return TagOut(
        id=info.id,
        name=info.name,
        descriptions=info.descriptions,
        templates=info.templates,
        group=info.group,
        target_precision=info.target_precision,
        assigned=info.assigned,
        threshold=info.threshold,
        precision=info.precision,
    )


@router.get(
    "/api/tags",
    operation_id="list_tags",
    response_model=list[TagOut],
    dependencies=[ReadAccess],
)
def list_tags(library: LibraryDep) -> list[TagOut]:
    """Every tag (a starter vocabulary is seeded once; edit or delete any of it). A viewer's
    counts are of the pictures under the folders shared with them."""
    with _sessions(library)() as session:
        return [tag_out(t) for t in domain.list_tags(session, SEEN.get())]


@router.post(
    "/api/tags",
    operation_id="create_tag",
    status_code=201,
    response_model=TagOut,
    dependencies=[Depends(require_token)],
)
def create_tag(library: LibraryDep, body: TagIn) -> TagOut:
    """A new tag in words; `POST /api/tags/run` assigns it to the library."""
    with _sessions(library)() as session:
        return tag_out(
            domain.create_tag(
                session,
                body.name,
                list(body.descriptions),
                body.group,
                body.templates,
                body.target_precision,
            )
        )


@router.post(
    "/api/tags/run",
    operation_id="run_tags",
    status_code=202,
    response_model=JobOut,
    dependencies=[Depends(require_token)],
)
def run_tags(library: LibraryDep, body: RunIn | None = None) -> JobOut:
    """Queue a tagging job over the library's vectors (or return the one queued or running)."""
    return job_out(domain.submit(library, full=True if body is None else body.full))


@router.get(
    "/api/tags/{tag}",
    operation_id="get_tag",
    response_model=TagOut,
    dependencies=[ReadAccess],
)
def get_tag(library: LibraryDep, tag: TagKey) -> TagOut:
    with _sessions(library)() as session:
        return tag_out(domain.get_tag(session, tag, SEEN.get()))


@router.patch(
    "/api/tags/{tag}",
    operation_id="update_tag",
    response_model=TagOut,
    dependencies=[Depends(require_token)],
)
def update_tag(library: LibraryDep, tag: TagKey, body: TagPatch) -> TagOut:
    """Change a tag's words: its automatic assignments are dropped until the next run; a
    person's confirmations and rejections stay."""
    given = body.model_fields_set
    kwargs: dict[str, Any] = {}
    if "name" in given and body.name is not None:
        kwargs["name"] = body.name
    if "descriptions" in given and body.descriptions is not None:
        kwargs["descriptions"] = list(body.descriptions)
    if "group" in given:
        kwargs["group"] = body.group or None
    if "templates" in given and body.templates is not None:
        kwargs["templates"] = body.templates
    if "target_precision" in given:
        kwargs["target_precision"] = body.target_precision
    with _sessions(library)() as session:
        return tag_out(domain.update_tag(session, tag, **kwargs))


@router.delete(
    "/api/tags/{tag}",
    operation_id="delete_tag",
    response_model=TagOut,
    dependencies=[Depends(require_token)],
)
def delete_tag(library: LibraryDep, tag: TagKey) -> TagOut:
    """Delete a tag and its assignments. Returns what it was."""
    with _sessions(library)() as session:
        return tag_out(domain.delete_tag(session, tag))


@router.get(
    "/api/tags/{tag}/images",
    operation_id="list_tag_images",
    response_model=TagImagesPage,
    dependencies=[ReadAccess],
)
def list_tag_images(
    request: Request,
    library: LibraryDep,
    tag: TagKey,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="The previous page's `next_after`.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=domain.MAX_PAGE)] = 50,
) -> TagImagesPage:
    """The pictures with a tag, in id order (rejected ones never; a viewer's: those under the
    folders shared with them)."""
    seen = SEEN.get()
    with _sessions(library)() as session:
        info = domain.get_tag(session, tag, seen)
        items, next_after = domain.images_page(session, info.id, after, limit, seen)
    return TagImagesPage(
        tag=tag_out(info),
        items=[
            TaggedImageOut(image=image_out(request, i.image), score=i.score, state=i.state)
            for i in items
        ],
        next_after=next_after,
    )


@router.put(
    "/api/tags/{tag}/images/{id}",
    operation_id="decide_tag",
    response_model=ImageTagOut,
    dependencies=[Depends(require_token)],
)
def decide_tag(
    library: LibraryDep,
    tag: TagKey,
    id: Annotated[int, Path(ge=1, le=MAX_ID, description="The picture's id.")],
    body: DecisionIn,
) -> ImageTagOut:
    """Confirm or reject a tag on a picture; a rejection is never overridden by a later run."""
    with _sessions(library)() as session:
        out = domain.set_assignment(session, tag, id, body.state)
    return ImageTagOut(
        tag_id=out.tag_id, name=out.name, group=out.group, score=out.score, state=out.state
    )


@router.get(
    "/api/images/{id}/tags",
    operation_id="list_image_tags",
    response_model=list[ImageTagOut],
    dependencies=[ReadAccess, VisibleImage],
)
def list_image_tags(
    library: LibraryDep, id: Annotated[int, Path(ge=1, le=MAX_ID, description="The picture's id.")]
) -> list[ImageTagOut]:
    """A picture's tags, with the ones a person rejected (state `rejected`)."""
    with _sessions(library)() as session:
        library.get_image(id)  # 404 for a picture the library does not have
        return [
            ImageTagOut(tag_id=t.tag_id, name=t.name, group=t.group, score=t.score, state=t.state)
            for t in domain.image_tags(session, id)
        ]
