"""Zero-shot tags: a name and descriptions in words, assigned to pictures by the library's vectors.

A tag (``tags``) holds its words: a name, one or more descriptions, the template set its text
embedding is built with (:mod:`indexer.tag_vocabulary`), an optional group of mutually exclusive
tags, and optionally its own target precision. Per model, ``tag_vectors`` keeps its embedding and
its calibrated threshold (:mod:`indexer.tag_decisions`); ``tag_assignments`` keeps, per picture,
its score and who decided: ``auto`` (the tagging job), ``confirmed`` or ``rejected`` (a person).
A person's decision is never overridden by a later run: a rejected picture never gets the tag
back, a confirmed one keeps it whatever its score. Deleting a picture or a tag deletes its
assignments (foreign keys). A page of a tag's pictures is a range read on the key
``(tag_id, image_id)``; a picture's tags a read on ``image_id`` (migration 0008).

The starter vocabulary is seeded once per library (mark ``tags_seeded``): deleted starter tags
stay deleted. The job that assigns tags, and the hook that tags newly embedded pictures, are
:mod:`indexer.tag_jobs`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import catalog
from .catalog import Base, Embedding, Image, IndexVersion, Job, UTCDateTime
from .celery_app import TASK_TAGS
from .errors import Conflict, IndexerError, NotFound
from .sharing import EVERYTHING, Visibility, folder_condition
from .tag_vocabulary import DEFAULT_TEMPLATES, STARTER_VOCABULARY, TagSpec, Templates, check_spec

if TYPE_CHECKING:
    from .facade import LibraryFacade
    from .types import JobInfo

log = logging.getLogger(__name__)

STATES = ("auto", "confirmed", "rejected")
MAX_PAGE = 200
_MARK_SEEDED = "tags_seeded"
_MARK_JOB = "tags_job"
_CHUNK = 500

__all__ = [
    "STATES",
    "TASK_TAGS",
    "Tag",
    "TagAssignment",
    "TagInfo",
    "TagVector",
    "create_tag",
    "delete_tag",
    "ensure_vocabulary",
    "image_tags",
    "images_page",
    "list_tags",
    "set_assignment",
    "update_tag",
]


# --------------------------------------------------------------------------------------------
# Tables (migration 0008)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    descriptions: Mapped[list[str]] = mapped_column(sa.JSON)
    templates: Mapped[str] = mapped_column(sa.String(16), default=DEFAULT_TEMPLATES)
    group_name: Mapped[str | None] = mapped_column(sa.String(64))
    target_precision: Mapped[float | None] = mapped_column(sa.Float)
    assigned: Mapped[int] = mapped_column(sa.Integer, default=0)  # kept by the job and people
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=catalog.utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=catalog.utcnow)


class TagVector(Base):
    """A tag's text embedding and calibrated threshold for one model."""

    __tablename__ = "tag_vectors"

    tag_id: Mapped[int] = mapped_column(
        sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[int] = mapped_column(
        sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    vector: Mapped[bytes] = mapped_column(sa.LargeBinary)  # float32, L2-normalised
    threshold: Mapped[float | None] = mapped_column(sa.Float)  # None: assigns nothing
    location: Mapped[float | None] = mapped_column(sa.Float)
    scale: Mapped[float | None] = mapped_column(sa.Float)
    precision: Mapped[float | None] = mapped_column(sa.Float)
    softmax_scale: Mapped[float | None] = mapped_column(sa.Float)  # a trusted group's (0009)
    library_size: Mapped[int] = mapped_column(sa.Integer, default=0)
    calibrated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class TagAssignment(Base):
    __tablename__ = "tag_assignments"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('auto', 'confirmed', 'rejected')", name="ck_tag_assignments_state"
        ),
        sa.Index("ix_tag_assignments_image", "image_id"),
    )

    tag_id: Mapped[int] = mapped_column(
        sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(
        sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    score: Mapped[float | None] = mapped_column(sa.Float)
    state: Mapped[str] = mapped_column(sa.String(16), default="auto")
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=catalog.utcnow)


# --------------------------------------------------------------------------------------------
# Plain results


@dataclass(frozen=True)
class TagInfo:
    id: int
    name: str
    descriptions: list[str]
    templates: Templates
    group: str | None
    target_precision: float | None
    assigned: int  # pictures with the tag (auto or confirmed)
    threshold: float | None  # the calibrated cosine for the library's model (None: not yet)
    precision: float | None  # the precision estimated at that threshold


@dataclass(frozen=True)
class TaggedImage:
    image: Any  # indexer.types.ImageInfo
    score: float | None
    state: str


@dataclass(frozen=True)
class ImageTag:
    tag_id: int
    name: str
    group: str | None
    score: float | None
    state: str


# --------------------------------------------------------------------------------------------
# The vocabulary


def ensure_vocabulary(session: Session) -> bool:
    """Seed the starter vocabulary once per library (committed). True when it was seeded now."""
    if catalog.get_mark(session, _MARK_SEEDED) is not None:
        return False
    taken = set(session.scalars(sa.select(Tag.name)))
    for spec in STARTER_VOCABULARY:
        if spec.name not in taken:
            session.add(_row(spec))
    catalog.set_mark(session, _MARK_SEEDED, 1)
    try:
        session.commit()
    except sa.exc.IntegrityError:  # another process seeded it at the same moment
        session.rollback()
        return False
    return True


def _row(spec: TagSpec, target_precision: float | None = None) -> Tag:
    now = catalog.utcnow()
    return Tag(
        name=spec.name,
        descriptions=list(spec.descriptions),
        templates=spec.templates,
        group_name=spec.group,
        target_precision=target_precision,
        assigned=0,
        created_at=now,
        updated_at=now,
    )


def library_model_id(session: Session) -> int | None:
    """The model searches use: the active index's, else the one of the oldest vector."""
    row = session.scalar(sa.select(IndexVersion).where(IndexVersion.active.is_(True)).limit(1))
    if row is not None:
        return int(row.model_id)
    oldest = sa.select(sa.func.min(Embedding.id)).scalar_subquery()
    mid = session.scalar(sa.select(Embedding.model_id).where(Embedding.id == oldest))
    return None if mid is None else int(mid)


def _check_precision(value: float | None) -> float | None:
    if value is None:
        return None
    if not 0.5 <= float(value) < 1.0:
        raise IndexerError(f"target precision must be at least 0.5 and below 1, got {value!r}")
    return float(value)


def _templates(value: str) -> Templates:
    match value:
        case "imagenet80" | "clip7" | "photo" | "verbatim":
            return value
    raise IndexerError(f"a tag has the unknown template set {value!r} in the catalog")


def _info(session: Session, row: Tag, model_id: int | None) -> TagInfo:
    vec = None if model_id is None else session.get(TagVector, (int(row.id), model_id))
    return TagInfo(
        id=int(row.id),
        name=row.name,
        descriptions=list(row.descriptions or []),
        templates=_templates(row.templates),
        group=row.group_name,
        target_precision=row.target_precision,
        assigned=int(row.assigned or 0),
        threshold=None if vec is None else vec.threshold,
        precision=None if vec is None else vec.precision,
    )


def list_tags(session: Session, seen: Visibility = EVERYTHING) -> list[TagInfo]:
    """Every tag by name (the starter vocabulary seeded on first use); for a viewer of some
    folders (indexer.sharing), ``assigned`` counts only the pictures under them."""
    ensure_vocabulary(session)
    model_id = library_model_id(session)
    found = [
        _info(session, r, model_id) for r in session.scalars(sa.select(Tag).order_by(Tag.name))
    ]
    return _seen_counts(session, found, seen)


def _seen_counts(session: Session, tags: list[TagInfo], seen: Visibility) -> list[TagInfo]:
    """``tags`` with ``assigned`` counted over the ready pictures ``seen`` allows (one grouped
    count in the catalog); unchanged for those who see everything."""
    cond = folder_condition(seen, ranged=catalog.bytewise_text(session))
    if cond is None or not tags:
        return tags
    stmt = (
        sa.select(TagAssignment.tag_id, sa.func.count())
        .join(Image, Image.id == TagAssignment.image_id)
        .where(
            TagAssignment.tag_id.in_([t.id for t in tags]),
            TagAssignment.state != "rejected",
            Image.state == "ready",
            cond,
        )
        .group_by(TagAssignment.tag_id)
    )
    counts = {int(t): int(n) for t, n in session.execute(stmt)}
    return [dataclasses.replace(t, assigned=counts.get(t.id, 0)) for t in tags]


def find_tag(session: Session, tag: int | str) -> Tag:
    """A tag by id or by name, or NotFound."""
    ensure_vocabulary(session)
    if isinstance(tag, str) and tag.isascii() and tag.isdigit() and len(tag) <= 18:
        tag = int(tag)  # an id given as text (a door's path)
    if isinstance(tag, int):
        row = session.get(Tag, tag) if 0 < tag < 2**63 else None
    else:
        row = session.scalar(sa.select(Tag).where(Tag.name == " ".join(str(tag).split())))
    if row is None:
        raise NotFound(f"no tag {tag!r}: `clipsearch tags list` shows the tags")
    return row


def get_tag(session: Session, tag: int | str, seen: Visibility = EVERYTHING) -> TagInfo:
    info = _info(session, find_tag(session, tag), library_model_id(session))
    return _seen_counts(session, [info], seen)[0]


def create_tag(
    session: Session,
    name: str,
    descriptions: list[str] | None = None,
    group: str | None = None,
    templates: str = DEFAULT_TEMPLATES,
    target_precision: float | None = None,
) -> TagInfo:
    """A new tag (committed); Conflict when the name is taken. It is assigned by the next run."""
    ensure_vocabulary(session)
    try:
        spec = check_spec(TagSpec(name, tuple(descriptions or ()), group, templates))
    except ValueError as exc:
        raise IndexerError(str(exc)) from exc
    if session.scalar(sa.select(Tag.id).where(Tag.name == spec.name)) is not None:
        raise Conflict(f"a tag named {spec.name!r} exists already: edit it instead")
    row = _row(spec, _check_precision(target_precision))
    session.add(row)
    session.commit()
    return _info(session, row, library_model_id(session))


_UNSET: Any = object()


def update_tag(
    session: Session,
    tag: int | str,
    *,
    name: str | None = None,
    descriptions: list[str] | None = None,
    group: str | None = _UNSET,
    templates: str | None = None,
    target_precision: float | None = _UNSET,
) -> TagInfo:
    """Change a tag's words (committed). New words drop its embeddings and automatic assignments
    (the next run assigns it again); a person's confirmations and rejections stay."""
    row = find_tag(session, tag)
    spec = TagSpec(
        row.name if name is None else name,
        tuple(row.descriptions or ()) if descriptions is None else tuple(descriptions),
        row.group_name if group is _UNSET else group,
        row.templates if templates is None else templates,
    )
    try:
        spec = check_spec(spec)
    except ValueError as exc:
        raise IndexerError(str(exc)) from exc
    if spec.name != row.name and session.scalar(sa.select(Tag.id).where(Tag.name == spec.name)):
        raise Conflict(f"a tag named {spec.name!r} exists already")
    words_changed = (list(spec.descriptions), spec.templates) != (
        list(row.descriptions or []),
        row.templates,
    )
    if target_precision is not _UNSET:
        row.target_precision = _check_precision(target_precision)
    regrouped = spec.group != row.group_name
    row.name, row.descriptions, row.templates = spec.name, list(spec.descriptions), spec.templates
    row.group_name = spec.group
    row.updated_at = catalog.utcnow()
    if words_changed or regrouped or target_precision is not _UNSET:
        session.execute(sa.delete(TagVector).where(TagVector.tag_id == row.id))
        session.execute(
            sa.delete(TagAssignment).where(
                TagAssignment.tag_id == row.id, TagAssignment.state == "auto"
            )
        )
        recount(session, [int(row.id)])
    session.commit()
    return _info(session, row, library_model_id(session))


def delete_tag(session: Session, tag: int | str) -> TagInfo:
    """Delete a tag with its assignments (committed). Returns what it was."""
    row = find_tag(session, tag)
    info = _info(session, row, library_model_id(session))
    tag_id = int(row.id)
    session.execute(sa.delete(TagAssignment).where(TagAssignment.tag_id == tag_id))
    session.execute(sa.delete(TagVector).where(TagVector.tag_id == tag_id))
    session.delete(row)
    session.commit()
    return info


def recount(session: Session, tag_ids: list[int]) -> None:
    """Store how many pictures have each of these tags (range counts on the key; no commit)."""
    for tag_id in tag_ids:
        n = session.scalar(
            sa.select(sa.func.count())
            .select_from(TagAssignment)
            .where(TagAssignment.tag_id == tag_id, TagAssignment.state != "rejected")
        )
        session.execute(sa.update(Tag).where(Tag.id == tag_id).values(assigned=int(n or 0)))


# --------------------------------------------------------------------------------------------
# People's decisions


def set_assignment(session: Session, tag: int | str, image_id: int, state: str) -> ImageTag:
    """A person confirms or rejects a tag on a picture (``confirmed`` | ``rejected``), or hands
    it back to the tagger (``auto``: the next run decides again). Committed."""
    if state not in STATES:
        raise IndexerError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    row = find_tag(session, tag)
    catalog.get_image(session, int(image_id))  # NotFound when there is no such picture
    key = (int(row.id), int(image_id))
    current = session.get(TagAssignment, key)
    if current is None:
        if state == "auto":
            raise NotFound(f"picture {image_id} has no decision about tag {row.name!r}")
        current = TagAssignment(tag_id=key[0], image_id=key[1], score=None, state=state)
        session.add(current)
    elif state == "auto":
        session.delete(current)  # the next run scores it again
    else:
        current.state = state
    current.updated_at = catalog.utcnow()
    session.flush()
    recount(session, [key[0]])
    session.commit()
    return ImageTag(key[0], row.name, row.group_name, current.score, state)


def image_tags(session: Session, image_id: int, rejected: bool = True) -> list[ImageTag]:
    """The tags of a picture (and, with ``rejected``, the ones a person rejected), by name."""
    stmt = (
        sa.select(TagAssignment, Tag.name, Tag.group_name)
        .join(Tag, Tag.id == TagAssignment.tag_id)
        .where(TagAssignment.image_id == int(image_id))
        .order_by(Tag.name)
    )
    if not rejected:
        stmt = stmt.where(TagAssignment.state != "rejected")
    return [
        ImageTag(int(a.tag_id), name, group, a.score, a.state)
        for a, name, group in session.execute(stmt)
    ]


def images_page(
    session: Session,
    tag: int | str,
    after: int | None = None,
    limit: int = 50,
    seen: Visibility = EVERYTHING,
) -> tuple[list[TaggedImage], int | None]:
    """A page of a tag's pictures in id order after ``after`` (rejected ones left out): a range
    read on ``(tag_id, image_id)`` joined to the pictures by key; only those under the folders
    ``seen`` allows (a viewer's, indexer.sharing)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise IndexerError(f"limit must be between 1 and {MAX_PAGE}, got {limit!r}")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        raise IndexerError(f"after must be an image id (next_after), got {after!r}")
    row = find_tag(session, tag)
    stmt = tag_page_statement(int(row.id), after, limit)
    cond = folder_condition(seen, ranged=catalog.bytewise_text(session))
    if cond is not None:
        stmt = stmt.where(cond)
    rows = list(session.execute(stmt))
    items = [TaggedImage(catalog.image_info(img), score, state) for img, score, state in rows]
    next_after = int(rows[-1][0].id) if len(rows) == limit else None
    return items, next_after


def tag_page_statement(
    tag_id: int, after: int | None, limit: int
) -> sa.Select[Image, float | None, str]:
    """The SELECT of one page of a tag's pictures (EXPLAIN-able: tests check it uses keys)."""
    stmt = (
        sa.select(Image, TagAssignment.score, TagAssignment.state)
        .join(Image, Image.id == TagAssignment.image_id)
        .where(
            TagAssignment.tag_id == tag_id,
            TagAssignment.state != "rejected",
            Image.state == "ready",
        )
        .order_by(TagAssignment.image_id)
        .limit(limit)
    )
    if after is not None:
        # on both sides of the join: PostgreSQL's merge join then starts both at the cursor
        # instead of reading the pictures from the first id
        stmt = stmt.where(TagAssignment.image_id > int(after), Image.id > int(after))
    return stmt


def tagged_ids_condition(
    tag: int | str, column: sa.SQLColumnExpression[int]
) -> sa.ColumnElement[bool]:
    """A SQL condition keeping the pictures (``column``: an image id column) that have a tag,
    given by id (digits) or by name (the search and browse filter ``tag=``)."""
    text = str(tag).strip()
    if text.isascii() and text.isdigit() and len(text) <= 18:
        which: Any = TagAssignment.tag_id == int(text)
    else:
        which = TagAssignment.tag_id.in_(
            sa.select(Tag.id).where(Tag.name == " ".join(text.split()))
        )
    return column.in_(
        sa.select(TagAssignment.image_id).where(which, TagAssignment.state != "rejected")
    )


# --------------------------------------------------------------------------------------------
# The job's bookkeeping


def newest_job(session: Session) -> Job | None:
    job_id = catalog.get_mark(session, _MARK_JOB)
    return None if job_id is None else session.get(Job, job_id)


def record_job(session: Session, full: bool = False) -> tuple[Job, bool]:
    """The queued or running tags job, else a new one (committed). ``(job, created)``."""
    current = newest_job(session)
    if current is not None and current.state in ("queued", "running"):
        return current, False
    job = Job(kind="tags", state="queued", params={"full": True} if full else {}, done=0,
              failed=0, errors=[])  # fmt: skip
    session.add(job)
    session.flush()
    catalog.set_mark(session, _MARK_JOB, int(job.id))
    session.commit()
    return job, True


def submit(lib: LibraryFacade, full: bool = True) -> JobInfo:
    """Queue a tags job (or return the one queued or running): its JobInfo."""
    with lib.Session() as session:
        job, created = record_job(session, full=full)
        info = catalog.job_info(job)
    if created:
        lib.send_job(TASK_TAGS, info.id)
    return info
