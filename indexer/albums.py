"""Albums: hand-picked ones, and smart ones that fill themselves from a saved search.

An album (``albums``) is ``manual`` (its pictures are the ones people put there) or ``smart``:
a saved search query (:class:`SavedQuery`: the text with its ``-negatives``, weighted terms
that are texts or library pictures, the search filters, the relevance cut), searched the way
:mod:`indexer.search_service` searches (the same :class:`~indexer.search_service.SearchQuery`
built from it, the same cut, the same filters), over every stored vector by the album job
(:mod:`indexer.album_jobs`) and over each newly embedded picture as it arrives. A picture that
leaves the library leaves its albums (foreign keys).

People keep the last word (``album_members.state``): ``pinned`` pictures are always shown,
whatever the query says (every picture of a hand-picked album is pinned); ``excluded`` ones are
never shown, even when they match; ``auto`` rows are the query's matches, rewritten by each
computation. A page of an album is a range read on ``(album_id, image_id)`` (migration 0009).

Exports: a zip streamed file by file (:func:`zip_chunks`: memory bounded by one read chunk) and
a folder of symbolic links (:func:`link_folder`) under a destination inside the folders the
server may read; both at most :data:`MAX_EXPORT` pictures.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import catalog
from .catalog import Base, Image, Job, UTCDateTime
from .celery_app import TASK_ALBUMS
from .errors import Conflict, IndexerError, NotFound
from .filtering import filter_conditions
from .scan import check_path_allowed
from .search_service import SearchQuery
from .search_terms import QueryPlan, Term, plan_query
from .types import AlbumKind, SearchFilters

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .facade import ImagesApi, LibraryFacade
    from .types import ImageInfo, JobInfo

log = logging.getLogger(__name__)

KINDS: tuple[AlbumKind, ...] = ("manual", "smart")
STATES = ("auto", "pinned", "excluded")
MAX_PAGE = 200
MAX_ALBUMS = 1000
MAX_CHANGE = 500  # pictures per pin/exclude/add/remove request
MAX_EXPORT = 10_000  # pictures per export
MAX_NAME = 128
_MARK_JOB = "albums_job"

__all__ = [
    "KINDS",
    "MAX_EXPORT",
    "MAX_PAGE",
    "STATES",
    "TASK_ALBUMS",
    "Album",
    "AlbumImage",
    "AlbumInfo",
    "AlbumMember",
    "SavedQuery",
    "change_members",
    "create",
    "create_album",
    "delete_album",
    "get_album",
    "link_folder",
    "list_albums",
    "members_page",
    "submit",
    "update",
    "update_album",
    "zip_chunks",
]


# --------------------------------------------------------------------------------------------
# Tables (migration 0009)


class Album(Base):
    __tablename__ = "albums"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('manual', 'smart')", name="ck_albums_kind"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(MAX_NAME), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    query: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    model_id: Mapped[int | None] = mapped_column(sa.ForeignKey("models.id", ondelete="SET NULL"))
    vector: Mapped[bytes | None] = mapped_column(sa.LargeBinary)  # the query's, float32
    min_score: Mapped[float | None] = mapped_column(sa.Float)  # the cut as a cosine
    computed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=catalog.utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=catalog.utcnow)


class AlbumMember(Base):
    __tablename__ = "album_members"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('auto', 'pinned', 'excluded')", name="ck_album_members_state"
        ),
        sa.Index("ix_album_members_image", "image_id"),
    )

    album_id: Mapped[int] = mapped_column(
        sa.ForeignKey("albums.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(
        sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(sa.String(16))
    score: Mapped[float | None] = mapped_column(sa.Float)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=catalog.utcnow)


# --------------------------------------------------------------------------------------------
# The saved query of a smart album


@dataclass(frozen=True)
class SavedQuery:
    """What a smart album searches for: the inputs of :func:`indexer.search_terms.plan_query`
    (``text`` with its ``-negatives``, extra ``negative`` texts, weighted ``terms``: each a text
    or a library picture, never an upload) and of the search's
    :class:`~indexer.search_service.SearchQuery` (``filters``, ``min_relevance``: None is the
    search's default cut)."""

    text: str | None = None
    negative: tuple[str, ...] = ()
    terms: tuple[Term, ...] = ()
    filters: SearchFilters = field(default_factory=SearchFilters)
    min_relevance: float | None = None

    def plan(self) -> QueryPlan:
        return plan_query(self.text or None, list(self.negative), None, list(self.terms))

    def search_query(self, vector: np.ndarray) -> SearchQuery:
        """The search this album is: its query's vector (:meth:`QueryPlan.vector` of the
        encoded terms) with the album's filters and cut."""
        plan = self.plan()
        return SearchQuery(
            vector=vector,
            text=plan.text,
            mode="semantic",
            filters=self.filters,
            exclude=plan.exclude,
            image_share=plan.image_share(),
            min_relevance=self.min_relevance,
        )

    def to_json(self) -> dict[str, object]:
        f = self.filters
        return {
            "text": self.text,
            "negative": list(self.negative),
            "terms": [
                {"text": t.text, "weight": t.weight}
                if t.text is not None
                else {"image_id": t.image_id, "weight": t.weight}
                for t in self.terms
            ],
            "filters": {
                "folder": f.folder,
                "date_from": None if f.date_from is None else f.date_from.isoformat(),
                "date_to": None if f.date_to is None else f.date_to.isoformat(),
                "formats": None if f.formats is None else list(f.formats),
                "tag": f.tag,
            },
            "min_relevance": self.min_relevance,
        }

    @classmethod
    def from_json(cls, data: object) -> SavedQuery:
        """The saved query of a stored (or sent) JSON object; :class:`IndexerError` naming what
        is wrong. Checked like a search: an empty query or bad weights are refused."""
        if not isinstance(data, dict):
            raise IndexerError("a smart album's query is an object (text, terms, filters, ...)")
        unknown = set(data) - {"text", "negative", "terms", "filters", "min_relevance"}
        if unknown:
            raise IndexerError(f"unknown query fields: {', '.join(sorted(unknown))}")
        terms: list[Term] = []
        for raw in data.get("terms") or []:
            if not isinstance(raw, dict) or ("text" in raw) == ("image_id" in raw):
                raise IndexerError("a term is {text, weight} or {image_id, weight}")
            weight = float(raw.get("weight", 1.0))
            if raw.get("text") is not None:
                terms.append(Term(text=str(raw["text"]), weight=weight))
            else:
                terms.append(Term(image_id=_int(raw["image_id"], "image_id"), weight=weight))
        fl = data.get("filters") or {}
        if not isinstance(fl, dict):
            raise IndexerError("filters is an object (folder, date_from, date_to, formats, tag)")
        formats = fl.get("formats")
        filters = SearchFilters(
            folder=fl.get("folder") or None,
            date_from=_date(fl.get("date_from"), "date_from"),
            date_to=_date(fl.get("date_to"), "date_to"),
            formats=tuple(str(x) for x in formats) if formats else None,
            tag=None if fl.get("tag") in (None, "") else str(fl["tag"]),
        )
        cut = data.get("min_relevance")
        if cut is not None:
            cut = float(cut)
            if not 0.0 <= cut <= 1.0:
                raise IndexerError("min_relevance is a number from 0 to 1")
        negative = data.get("negative") or []
        if not isinstance(negative, list):
            raise IndexerError("negative is a list of texts")
        text = data.get("text")
        out = cls(
            text=None if text is None else str(text),
            negative=tuple(str(n) for n in negative),
            terms=tuple(terms),
            filters=filters,
            min_relevance=cut,
        )
        out.plan()  # an empty query, bad weights, too many terms: refused now, not at a run
        return out


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise IndexerError(f"{what} must be a picture's id, got {value!r}")
    return value


def _date(value: object, what: str) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise IndexerError(f"{what} must be a date or time (YYYY-MM-DD[THH:MM])") from None


# --------------------------------------------------------------------------------------------
# Plain results


@dataclass(frozen=True)
class AlbumInfo:
    id: int
    name: str
    kind: AlbumKind
    query: dict[str, Any] | None
    size: int  # the pictures it shows (pinned and matching, excluded ones not)
    pinned: int
    excluded: int
    computed_at: dt.datetime | None  # a smart album's last computation (None: not yet)


@dataclass(frozen=True)
class AlbumImage:
    image: Any  # indexer.types.ImageInfo
    state: str  # auto | pinned
    score: float | None


def _counts(session: Session, album_id: int) -> dict[str, int]:
    """Per state, the album's pictures (a range read on its key, never the library)."""
    rows = session.execute(
        sa.select(AlbumMember.state, sa.func.count())
        .where(AlbumMember.album_id == album_id)
        .group_by(AlbumMember.state)
    )
    return {str(s): int(n) for s, n in rows}


def _info(session: Session, row: Album) -> AlbumInfo:
    n = _counts(session, int(row.id))
    match row.kind:
        case "manual" | "smart":
            return AlbumInfo(
                id=int(row.id),
                name=row.name,
                kind=row.kind,
                query=row.query,
                size=n.get("auto", 0) + n.get("pinned", 0),
                pinned=n.get("pinned", 0),
                excluded=n.get("excluded", 0),
                computed_at=row.computed_at,
            )
    raise IndexerError(f"album {row.id} has kind {row.kind!r}, not one of {KINDS}")


# --------------------------------------------------------------------------------------------
# Albums


def _name(name: str) -> str:
    text = " ".join(str(name).split())
    if not 0 < len(text) <= MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise IndexerError(f"an album's name is 1 to {MAX_NAME} printable characters")
    if text.isascii() and text.isdigit():
        raise IndexerError("an album's name needs a letter (numbers are albums' ids)")
    return text


def find_album(session: Session, album: int | str) -> Album:
    """An album by id or by name, or NotFound."""
    if isinstance(album, str) and album.isascii() and album.isdigit() and len(album) <= 18:
        album = int(album)
    if isinstance(album, int):
        row = session.get(Album, album) if 0 < album < 2**63 else None
    else:
        row = session.scalar(sa.select(Album).where(Album.name == " ".join(str(album).split())))
    if row is None:
        raise NotFound(f"no album {album!r}: `clipsearch albums list` shows the albums")
    return row


def get_album(session: Session, album: int | str) -> AlbumInfo:
    return _info(session, find_album(session, album))


def list_albums(session: Session) -> list[AlbumInfo]:
    """Every album by name (at most :data:`MAX_ALBUMS` exist)."""
    return [_info(session, r) for r in session.scalars(sa.select(Album).order_by(Album.name))]


def create_album(session: Session, name: str, query: SavedQuery | None = None) -> AlbumInfo:
    """A new album (committed): smart with a ``query`` (the album job computes it: queue it with
    :func:`submit`), hand-picked without. Conflict when the name is taken."""
    text = _name(name)
    if session.scalar(sa.select(Album.id).where(Album.name == text)) is not None:
        raise Conflict(f"an album named {text!r} exists already: pick another name")
    if (session.scalar(sa.select(sa.func.count()).select_from(Album)) or 0) >= MAX_ALBUMS:
        raise Conflict(f"the library has {MAX_ALBUMS} albums, the most it keeps: delete one")
    if query is not None:
        _check_images(session, query)
    now = catalog.utcnow()
    row = Album(
        name=text,
        kind="manual" if query is None else "smart",
        query=None if query is None else query.to_json(),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.commit()
    return _info(session, row)


def _check_images(session: Session, query: SavedQuery) -> None:
    for t in query.terms:
        if t.image_id is not None:
            catalog.get_image(session, t.image_id)  # NotFound names the missing picture


def update_album(
    session: Session, album: int | str, name: str | None = None, query: SavedQuery | None = None
) -> AlbumInfo:
    """Rename an album, or give a smart album a new query (its matches are dropped until the
    album job computed the new one; pinned and excluded pictures stay). Committed."""
    row = find_album(session, album)
    if name is not None:
        text = _name(name)
        if text != row.name and session.scalar(sa.select(Album.id).where(Album.name == text)):
            raise Conflict(f"an album named {text!r} exists already")
        row.name = text
    if query is not None:
        if row.kind != "smart":
            raise IndexerError("a hand-picked album has no query: create a smart album")
        _check_images(session, query)
        row.query = query.to_json()
        row.vector, row.min_score, row.model_id, row.computed_at = None, None, None, None
        session.execute(
            sa.delete(AlbumMember).where(
                AlbumMember.album_id == row.id, AlbumMember.state == "auto"
            )
        )
    row.updated_at = catalog.utcnow()
    session.commit()
    return _info(session, row)


def delete_album(session: Session, album: int | str) -> AlbumInfo:
    """Delete an album (never its pictures). Returns what it was."""
    row = find_album(session, album)
    info = _info(session, row)
    session.execute(sa.delete(AlbumMember).where(AlbumMember.album_id == row.id))
    session.delete(row)
    session.commit()
    return info


# --------------------------------------------------------------------------------------------
# Members


def _check_page(after: int | None, limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise IndexerError(f"limit must be between 1 and {MAX_PAGE}, got {limit!r}")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        raise IndexerError(f"after must be a picture id (next_after), got {after!r}")


def page_statement(
    album_id: int, after: int | None, limit: int, excluded: bool = False
) -> sa.Select[Image, str, float | None]:
    """The SELECT of one page of an album (EXPLAIN-able: a range read on its key); with
    ``excluded``, of the pictures people took out of it (whatever their state)."""
    shown = (
        (AlbumMember.state == "excluded",)
        if excluded
        else (AlbumMember.state != "excluded", Image.state == "ready")
    )
    stmt = (
        sa.select(Image, AlbumMember.state, AlbumMember.score)
        .join(Image, Image.id == AlbumMember.image_id)
        .where(AlbumMember.album_id == album_id, *shown)
        .order_by(AlbumMember.image_id)
        .limit(limit)
    )
    if after is not None:
        # on both sides of the join: PostgreSQL's merge join then starts both at the cursor
        # instead of reading the pictures from the first id
        stmt = stmt.where(AlbumMember.image_id > int(after), Image.id > int(after))
    return stmt


def members_page(
    session: Session,
    album: int | str,
    after: int | None = None,
    limit: int = 50,
    excluded: bool = False,
) -> tuple[list[AlbumImage], int | None]:
    """A page of an album's pictures in id order after ``after`` (``next_after`` None at the
    end); with ``excluded``, the pictures people took out of it instead."""
    _check_page(after, limit)
    row = find_album(session, album)
    rows = list(session.execute(page_statement(int(row.id), after, limit, excluded)))
    items = [AlbumImage(catalog.image_info(img), state, score) for img, state, score in rows]
    return items, (int(rows[-1][0].id) if len(rows) == limit else None)


def change_members(
    session: Session, album: int | str, image_ids: Sequence[int], action: str
) -> AlbumInfo:
    """A person's change (committed). ``pin`` (``add``): always shown; ``exclude``: never shown;
    ``remove``: out of a hand-picked album, excluded from a smart one (else it would come back
    as a match); ``auto``: handed back to the smart album's query (judged again now)."""
    if action == "add":
        action = "pin"
    if action not in ("pin", "exclude", "remove", "auto"):
        raise IndexerError(f"action must be add, pin, exclude, remove or auto, got {action!r}")
    ids = sorted({_int(i, "image id") for i in image_ids})
    if not ids or len(ids) > MAX_CHANGE:
        raise IndexerError(f"give 1 to {MAX_CHANGE} picture ids")
    row = find_album(session, album)
    known = set(session.scalars(sa.select(Image.id).where(Image.id.in_(ids))))
    missing = [i for i in ids if i not in known]
    if missing:
        raise NotFound(f"no picture {missing[0]} in the library ({len(missing)} unknown ids)")
    if action == "remove" and row.kind == "smart":
        action = "exclude"
    now = catalog.utcnow()
    current = {
        int(m.image_id): m
        for m in session.scalars(
            sa.select(AlbumMember).where(
                AlbumMember.album_id == row.id, AlbumMember.image_id.in_(ids)
            )
        )
    }
    if action in ("remove", "auto"):
        session.execute(
            sa.delete(AlbumMember).where(
                AlbumMember.album_id == row.id, AlbumMember.image_id.in_(ids)
            )
        )
        if action == "auto" and row.kind == "smart":
            scores = matches(session, row, ids)
            for image_id, score in scores.items():
                session.add(AlbumMember(album_id=row.id, image_id=image_id, state="auto",
                                        score=score, updated_at=now))  # fmt: skip
    else:
        state = "pinned" if action == "pin" else "excluded"
        for image_id in ids:
            m = current.get(image_id)
            if m is None:
                session.add(AlbumMember(album_id=row.id, image_id=image_id, state=state,
                                        score=None, updated_at=now))  # fmt: skip
            else:
                m.state, m.updated_at = state, now
    row.updated_at = now
    session.commit()
    return _info(session, row)


def saved_query(row: Album) -> SavedQuery:
    return SavedQuery.from_json(row.query or {})


def matches(session: Session, row: Album, image_ids: Sequence[int]) -> dict[int, float]:
    """Of these pictures, those a computed smart album's query takes (its stored vector and
    cut, its filters), with their cosines: how a newly embedded picture is judged without
    encoding the query again. Nothing before the album job computed the album."""
    if row.kind != "smart" or row.vector is None or row.min_score is None or row.model_id is None:
        return {}
    ids, vectors = catalog.load_vectors(session, int(row.model_id), list(image_ids))
    if not len(ids):
        return {}
    q = catalog.bytes_to_vector(row.vector)
    if vectors.shape[1] != q.shape[0]:
        return {}
    scores = vectors @ q
    query = saved_query(row).search_query(q)
    keep = {
        int(i): float(s)
        for i, s in zip(ids.tolist(), scores.tolist(), strict=True)
        if s >= row.min_score and int(i) not in query.exclude
    }
    return {i: keep[i] for i in filtered(session, query.filters, sorted(keep))}


def filtered(session: Session, filters: SearchFilters | None, ids: Sequence[int]) -> list[int]:
    """Of ``ids``, those the search filters keep (by key, in chunks)."""
    conds = [] if filters is None else filter_conditions(filters)
    if not conds:
        return list(ids)
    out: list[int] = []
    for start in range(0, len(ids), 5_000):
        part = list(ids[start : start + 5_000])
        out += [
            int(i) for i in session.scalars(sa.select(Image.id).where(Image.id.in_(part), *conds))
        ]
    return out


# --------------------------------------------------------------------------------------------
# The job's bookkeeping


def record_job(session: Session, album_id: int | None = None) -> tuple[Job, bool]:
    """The queued albums job, else a new one (committed): ``(job, created)``. One queued job
    computes every smart album, so a burst of edits queues one computation."""
    job_id = catalog.get_mark(session, _MARK_JOB)
    current = None if job_id is None else session.get(Job, job_id)
    if current is not None and current.state == "queued":
        return current, False
    job = Job(kind="albums", state="queued", params={}, done=0, failed=0, errors=[])
    session.add(job)
    session.flush()
    catalog.set_mark(session, _MARK_JOB, int(job.id))
    session.commit()
    return job, True


def submit(lib: LibraryFacade) -> JobInfo:
    """Queue the albums job (or return the one queued): its JobInfo."""
    with lib.Session() as session:
        job, created = record_job(session)
        info = catalog.job_info(job)
    if created:
        lib.send_job(TASK_ALBUMS, info.id)
    return info


def create(lib: LibraryFacade, name: str, query: SavedQuery | None = None) -> AlbumInfo:
    """What every door does to create an album: :func:`create_album`, then for a smart album
    the albums job queued to compute it."""
    with lib.Session() as session:
        info = create_album(session, name, query)
    if query is not None:
        submit(lib)
    return info


def update(
    lib: LibraryFacade, album: int | str, name: str | None = None, query: SavedQuery | None = None
) -> AlbumInfo:
    """:func:`update_album`, then for a new query the albums job queued."""
    with lib.Session() as session:
        info = update_album(session, album, name, query)
    if query is not None:
        submit(lib)
    return info


# --------------------------------------------------------------------------------------------
# Exports


def export_rows(session: Session, album: int | str) -> tuple[AlbumInfo, list[ImageInfo]]:
    """The album and its shown pictures (at most :data:`MAX_EXPORT`, else IndexerError)."""
    row = find_album(session, album)
    info = _info(session, row)
    if info.size > MAX_EXPORT:
        raise IndexerError(
            f"the album shows {info.size} pictures; an export takes at most {MAX_EXPORT}: "
            "narrow its query or split it"
        )
    images = list(
        session.scalars(page_statement(int(row.id), None, MAX_EXPORT).with_only_columns(Image))
    )
    return info, [catalog.image_info(i) for i in images]


def _arcname(image: ImageInfo) -> str:
    base = os.path.basename(catalog.path_from_db(image.path)) or "picture"
    safe = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in base)
    return f"{int(image.id)}-{safe}"


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream for :class:`zipfile.ZipFile` (which then writes data
    descriptors) whose bytes are handed out as they are written."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        self.parts.append(bytes(data))
        return len(self.parts[-1])

    def drain(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def zip_chunks(lib: ImagesApi, images: Sequence[ImageInfo]) -> Iterator[bytes]:
    """A zip of these pictures (stored, not recompressed), streamed: each file is read through
    the library's confined open in chunks and its bytes handed out as they are written.
    Pictures that cannot be read now are listed in ``MISSING.txt`` instead."""
    sink = _Sink()
    missing: list[str] = []
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for image in images:
            try:
                opened, _ = lib.open_file(int(image.id))
            except (NotFound, OSError) as exc:
                missing.append(f"{image.id}\t{catalog.path_from_db(image.path)}\t{exc}")
                continue
            with zf.open(_arcname(image), "w", force_zip64=True) as out:
                for chunk in opened.chunks():
                    out.write(chunk)
                    data = sink.drain()
                    if data:
                        yield data
        if missing:
            zf.writestr("MISSING.txt", "\n".join(missing) + "\n")
    yield sink.drain()


def link_folder(
    lib: ImagesApi, images: Sequence[ImageInfo], destination: str
) -> tuple[str, int, int]:
    """Symbolic links to these pictures in a new folder ``destination``, which must lie inside
    the folders the library may serve files from (its allowed folders and the folders it
    ingested: ``lib.serving_roots()``) and must not exist yet, or be an empty folder. Returns
    ``(folder, linked, missing)``."""
    folder = check_path_allowed(destination, lib.serving_roots(refresh=True))
    parent = os.path.dirname(folder)
    if not os.path.isdir(parent):
        raise IndexerError(f"{parent!r} is not a folder: create it first")
    if os.path.lexists(folder):
        if os.path.islink(folder) or not os.path.isdir(folder) or os.listdir(folder):
            raise Conflict(f"{folder!r} exists and is not an empty folder: pick a new one")
    else:
        os.mkdir(folder)
    linked = missing = 0
    for image in images:
        target = catalog.path_from_db(image.path)
        if not os.path.isfile(target):
            missing += 1
            continue
        os.symlink(target, os.path.join(folder, _arcname(image)))
        linked += 1
    return folder, linked, missing
