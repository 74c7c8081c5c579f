"""Duplicates: the same picture in several places, and shots of the same scene.

Three kinds of group, each member with why it is there:

* **exact**: the same bytes (equal content sha256) at several paths.
* **near**: the same picture re-encoded, resized, lightly cropped or with edited colours: cosine
  similarity of the library model's vectors at least :data:`NEAR_SIMILARITY` *and* a 64-bit
  difference hash (dHash, from the thumbnail) at most :data:`NEAR_HASH_BITS` bits apart; or, with
  the thresholds the job measures per library (indexer.duplicate_thresholds), the two thumbnails'
  pixel match (indexer.duplicates_pixels) in place of the hash where that finds more copies. The
  second measure is what keeps two frames of a burst (similar vectors, different pixels) out.
* **similar** (a separate family, ``family="similar"``): shots of the same scene, vectors at least
  :data:`SIMILAR_SIMILARITY` alike; the Immich complaint of "false duplicates" for bursts is
  answered by listing these apart, never mixed into the duplicates.

Nothing here runs per request. A ``duplicates`` job (:func:`find_duplicates`) reads what the
catalog's change sequence says changed since its mark ``dups_seq`` (all of it the first time or
after a model switch), searches each changed vector's neighbours above :data:`SIMILAR_SIMILARITY`
among the library's vectors (an exact inner-product range search, FAISS), and stores the pairs
(``duplicate_pairs``, migration 0005). Groups are the connected components of the stored pairs,
rewritten from the pairs alone (their count follows the duplicates, not the library), keyed by
the smallest image id of each group so pages are range reads on ``(family, anchor_id)``.
A finished ingest queues the job (:func:`maybe_queue`); the API, CLI and gallery can too.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from . import catalog
from .catalog import Base, Embedding, Image, IndexVersion, Job, UTCDateTime
from .duplicate_keeper import keeper_key
from .duplicate_thresholds import DuplicateThresholds, default_thresholds, is_near
from .duplicates_pixels import pixel_matches
from .errors import IndexerError
from .picture_hash import dhash, hash_distance
from .sharing import EVERYTHING, Visibility, folder_condition

if TYPE_CHECKING:
    from .facade import LibraryFacade
    from .types import JobInfo

log = logging.getLogger(__name__)


#: Cosine similarity at or above which two different files may be the same picture (with the
#: hash check below). Model-dependent; not measured with real weights (none can be fetched here).
NEAR_SIMILARITY = 0.95
#: dHash bits (of 64) at most this far apart for a near duplicate. Measured on bench/duplicates.py's
#: generated set (BENCHMARKS.md): at 8 bits 94 % of the copies are found (re-encoded, resized
#: 50 %, +10 % brightness: 99 %; 5 % crops: 78 %) and 11 % of burst frames pass the hash (at 12:
#: 98.5 % and 40 %); bursts are what users complain of, so the stricter line.
NEAR_HASH_BITS = 8
#: Cosine similarity at or above which two images are listed as similar shots (bursts).
SIMILAR_SIMILARITY = 0.90
#: Neighbours kept per image (the closest): bounds the pairs a burst of hundreds can make.
MAX_NEIGHBOURS = 32
#: Group families and kinds.
FAMILIES = ("dup", "similar")
GroupKind = Literal["exact", "near", "similar"]
KINDS: tuple[GroupKind, ...] = ("exact", "near", "similar")

_MARK_SEQ = "dups_seq"
_MARK_MODEL = "dups_model"
_MARK_JOB = "dups_job"
_MARK_LIMITS = "dups_limits_job"  # the job whose params hold the thresholds the groups use
_CHUNK = 500


# --------------------------------------------------------------------------------------------
# Tables (migration 0005)


class DuplicatePair(Base):
    __tablename__ = "duplicate_pairs"

    a_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    b_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(sa.String(16))
    similarity: Mapped[float] = mapped_column(sa.Float)
    phash_distance: Mapped[int | None] = mapped_column(sa.Integer)
    __table_args__ = (sa.Index("ix_duplicate_pairs_b_id", "b_id"),)


class DuplicateGroup(Base):
    __tablename__ = "duplicate_groups"

    family: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    anchor_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(sa.String(16))
    size: Mapped[int] = mapped_column(sa.Integer)
    min_similarity: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=catalog.utcnow)


class DuplicateMember(Base):
    __tablename__ = "duplicate_members"
    __table_args__ = (sa.Index("ix_duplicate_members_group", "family", "anchor_id", "image_id"),)

    family: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    image_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    anchor_id: Mapped[int] = mapped_column(sa.BigInteger)
    reason: Mapped[str] = mapped_column(sa.Text)
    similarity: Mapped[float] = mapped_column(sa.Float)


class ContentHash(Base):
    __tablename__ = "content_phash"

    sha256: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    dhash: Mapped[int] = mapped_column(sa.BigInteger)  # 64 bits, stored signed


# --------------------------------------------------------------------------------------------
# Plain results


@dataclass(frozen=True)
class DuplicateMemberInfo:
    image: Any  # indexer.types.ImageInfo
    reason: str
    similarity: float


@dataclass(frozen=True)
class DuplicateGroupInfo:
    id: int  # the group's key: its smallest image id
    family: str  # dup | similar
    kind: GroupKind
    size: int
    min_similarity: float
    members: list[DuplicateMemberInfo]  # the suggested keeper first (indexer.duplicate_keeper)
    keeper_id: int | None = None  # the suggested keeper's image id


@dataclass(frozen=True)
class DuplicatesPage:
    items: list[DuplicateGroupInfo]
    next_after: int | None
    stale: bool  # the library changed since the groups were computed
    job: JobInfo | None  # the newest duplicates job
    thresholds: dict[str, Any]  # thresholds(): what made "the same picture", and how measured


@dataclass
class FindResult:
    full: bool
    changed: int
    pairs: int
    groups: dict[str, int]


def thresholds(limits: DuplicateThresholds | None = None) -> dict[str, object]:
    """The thresholds the groups were made with, and how they were chosen (for every door)."""
    limits = limits or default_thresholds(NEAR_SIMILARITY, NEAR_HASH_BITS)
    return {
        **limits.to_dict(),
        "near_hash_bits": float(limits.near_hash_bits),
        "similar_similarity": SIMILAR_SIMILARITY,
    }


def applied_thresholds(session: Session) -> DuplicateThresholds | None:
    """The measured thresholds the stored groups were made with (None: the fixed defaults)."""
    job_id = catalog.get_mark(session, _MARK_LIMITS)
    job = None if job_id is None else session.get(Job, job_id)
    return None if job is None else DuplicateThresholds.from_dict((job.params or {}).get("limits"))


# --------------------------------------------------------------------------------------------
# Perceptual hash


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def content_hashes(
    session: Session, thumb_dir: Path, rows: dict[str, str | None]
) -> dict[str, int]:
    """sha256 -> dHash for these contents (``rows``: sha256 -> thumbnail key): stored ones read
    by key, the others computed from their thumbnails and stored (no commit)."""
    out: dict[str, int] = {}
    shas = sorted(rows)
    for start in range(0, len(shas), _CHUNK):
        for sha, value in session.execute(
            sa.select(ContentHash.sha256, ContentHash.dhash).where(
                ContentHash.sha256.in_(shas[start : start + _CHUNK])
            )
        ):
            out[sha] = int(value) & 0xFFFFFFFFFFFFFFFF
    from PIL import Image as PILImage

    for sha in shas:
        key = rows[sha]
        if sha in out or not key:
            continue
        parts = key.split("/")
        if len(parts) != 2 or not all(p and p not in (".", "..") for p in parts):
            continue
        try:
            with PILImage.open(thumb_dir / parts[0] / parts[1]) as im:
                value = dhash(im)
        except (OSError, ValueError) as exc:
            log.debug("no perceptual hash for %s: %s", sha, exc)
            continue
        out[sha] = value
        session.add(ContentHash(sha256=sha, dhash=_signed(value)))
    return out


# --------------------------------------------------------------------------------------------
# Finding pairs (the job)


def library_model_id(session: Session) -> int | None:
    """The model searches use: the active index's, else the one of the oldest vector."""
    row = session.scalar(sa.select(IndexVersion).where(IndexVersion.active.is_(True)).limit(1))
    if row is not None:
        return int(row.model_id)
    oldest = sa.select(sa.func.min(Embedding.id)).scalar_subquery()
    mid = session.scalar(sa.select(Embedding.model_id).where(Embedding.id == oldest))
    return None if mid is None else int(mid)


def _neighbours(
    base_ids: np.ndarray, base: np.ndarray, query_ids: np.ndarray, queries: np.ndarray
) -> dict[tuple[int, int], float]:
    """Pairs (a < b) of a query and a base vector with cosine >= SIMILAR_SIMILARITY, at most
    MAX_NEIGHBOURS per query (the closest)."""
    import faiss

    pairs: dict[tuple[int, int], float] = {}
    if len(base_ids) == 0 or len(query_ids) == 0:
        return pairs
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    # faiss keeps results strictly above the radius: step just below the threshold
    radius = float(np.nextafter(np.float32(SIMILAR_SIMILARITY), np.float32(0)))
    for start in range(0, len(query_ids), 1024):
        q = np.ascontiguousarray(queries[start : start + 1024], dtype=np.float32)
        lims, dist, labels = index.range_search(q, radius)
        for i in range(len(q)):
            qid = int(query_ids[start + i])
            sims = dist[lims[i] : lims[i + 1]]
            labs = labels[lims[i] : lims[i + 1]]
            order = np.argsort(-sims, kind="stable")
            kept = 0
            for j in order:
                other = int(base_ids[int(labs[j])])
                if other == qid:
                    continue
                key = (qid, other) if qid < other else (other, qid)
                sim = min(1.0, float(sims[j]))
                if sim > pairs.get(key, -1.0):
                    pairs[key] = sim
                kept += 1
                if kept >= MAX_NEIGHBOURS:
                    break
    return pairs


def _lock(session: Session) -> None:
    """One writer of the duplicate tables at a time (SQLite's write lock does it there)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(7342190552)"))


def find_duplicates(
    Session_: sessionmaker[Session],
    thumb_dir: Path,
    full: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    limits: DuplicateThresholds | None = None,
) -> FindResult:
    """Bring the stored pairs and groups up to date with the catalog (see the module doc).
    Safe to run twice; reads what changed since the last run unless ``full``. ``limits``: the
    library's measured near-duplicate thresholds (indexer.duplicate_thresholds; default: the
    fixed ones)."""
    limits = limits or default_thresholds(NEAR_SIMILARITY, NEAR_HASH_BITS)
    with Session_() as session:
        model_id = library_model_id(session)
        if model_id is None:  # nothing embedded yet
            _lock(session)
            for table in (DuplicatePair, DuplicateGroup, DuplicateMember):
                session.execute(sa.delete(table))
            session.commit()
            return FindResult(True, 0, 0, {})
        if catalog.get_mark(session, _MARK_MODEL) != model_id:
            full = True
        changed: set[int] = set()
        gone: set[int] = set()
        watermark = int(catalog.get_mark(session, _MARK_SEQ) or 0)
        while not full:
            ch = catalog.changes_since(session, model_id, watermark)
            if ch.reload:  # deletions older than the mark were pruned: start again
                full = True
                break
            changed.update(int(i) for i in ch.upsert_ids)
            gone.update(int(i) for i in ch.removed)
            watermark = max(watermark, ch.watermark)
            if not ch.more:
                break
        if full:  # every vector is a query; the mark read first so nothing later is missed
            watermark = catalog.change_watermark(session)
        gone -= changed
        if not full and not changed and not gone:
            return FindResult(False, 0, 0, {})
        base_ids, base = catalog.load_vectors(session, model_id)
        if full:
            changed = {int(i) for i in base_ids}
        position = {int(i): n for n, i in enumerate(base_ids)}
        query_rows = [position[i] for i in sorted(changed) if i in position]
        if on_progress:
            on_progress(0, len(query_rows))
        found = _neighbours(base_ids, base, base_ids[query_rows], base[query_rows])
        if on_progress:
            on_progress(len(query_rows), len(query_rows))
        kinds = _classify(session, thumb_dir, found, limits)

        _lock(session)
        touched = sorted(changed | gone)
        if full:
            session.execute(sa.delete(DuplicatePair))
        else:
            for start in range(0, len(touched), _CHUNK):
                part = touched[start : start + _CHUNK]
                session.execute(
                    sa.delete(DuplicatePair).where(
                        sa.or_(DuplicatePair.a_id.in_(part), DuplicatePair.b_id.in_(part))
                    )
                )
        session.add_all(
            DuplicatePair(a_id=a, b_id=b, kind=kind, similarity=sim, phash_distance=bits)
            for (a, b), (kind, sim, bits) in sorted(kinds.items())
        )
        catalog.set_mark(session, _MARK_SEQ, watermark)
        catalog.set_mark(session, _MARK_MODEL, model_id)
        groups = _regroup(session)
        session.commit()
    log.info(
        "duplicates: %s pass over %d changed images, %d pairs; groups %s",
        "full" if full else "incremental", len(changed), len(kinds), groups,
    )  # fmt: skip
    return FindResult(full, len(changed), len(kinds), groups)


def _classify(
    session: Session,
    thumb_dir: Path,
    found: dict[tuple[int, int], float],
    limits: DuplicateThresholds,
) -> dict[tuple[int, int], tuple[str, float, int | None]]:
    """(a, b) -> (kind, similarity, hash distance or None)."""
    ids = sorted({i for pair in found for i in pair})
    meta: dict[int, tuple[str | None, str | None]] = {}
    for start in range(0, len(ids), _CHUNK):
        for image_id, sha, thumb in session.execute(
            sa.select(Image.id, Image.sha256, Image.thumbnail).where(
                Image.id.in_(ids[start : start + _CHUNK])
            )
        ):
            meta[int(image_id)] = (sha, thumb)
    need: dict[str, str | None] = {}
    for (a, b), sim in found.items():
        sa_, sb = meta.get(a, (None, None)), meta.get(b, (None, None))
        if limits.near_allowed and sim >= limits.near_similarity and sa_[0] != sb[0]:
            for sha, thumb in (sa_, sb):
                if sha:
                    need[sha] = thumb
    hashes = content_hashes(session, thumb_dir, need)
    known: dict[tuple[int, int], tuple[float, int | None]] = {}
    out: dict[tuple[int, int], tuple[str, float, int | None]] = {}
    for (a, b), sim in found.items():
        sha_a, sha_b = meta.get(a, (None, None))[0], meta.get(b, (None, None))[0]
        if sha_a is None or sha_b is None:
            continue  # gone since the vectors were read
        if sha_a == sha_b:
            out[(a, b)] = ("exact", 1.0, 0)
            continue
        bits = None
        if sha_a in hashes and sha_b in hashes:
            bits = hash_distance(hashes[sha_a], hashes[sha_b])
        known[(a, b)] = (sim, bits)
    # the thumbnails' pixels are read only for the pairs that pass everything else
    pixels = {} if limits.pixel_match is None else pixel_matches(
        thumb_dir, [p for p, (sim, bits) in known.items() if is_near(limits, sim, bits, 1.0)], meta
    )  # fmt: skip
    for (a, b), (sim, bits) in known.items():
        near = is_near(limits, sim, bits, pixels.get((a, b)))
        out[(a, b)] = ("near" if near else "similar", sim, bits)
    return out


# --------------------------------------------------------------------------------------------
# Groups from pairs


class _Sets:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for x in list(self.parent):
            out.setdefault(self.find(x), []).append(x)
        return out


def _reason(kind: str, other: int, sim: float, bits: int | None) -> str:
    if kind == "exact":
        return f"the same file content as image {other}"
    if kind == "near":
        hashed = "" if bits is None else f", picture hash {bits} of 64 bits apart"
        return f"the same picture as image {other} (similarity {sim:.3f}{hashed})"
    return f"a similar shot to image {other} (similarity {sim:.3f})"


def _regroup(session: Session) -> dict[str, int]:
    """Rewrite groups and members from the stored pairs (no commit)."""
    pairs = [
        (int(a), int(b), str(k), float(s), None if d is None else int(d))
        for a, b, k, s, d in session.execute(
            sa.select(
                DuplicatePair.a_id,
                DuplicatePair.b_id,
                DuplicatePair.kind,
                DuplicatePair.similarity,
                DuplicatePair.phash_distance,
            )
        )
    ]
    session.execute(sa.delete(DuplicateMember))
    session.execute(sa.delete(DuplicateGroup))
    counts: dict[str, int] = {}
    now = catalog.utcnow()
    rank = {"exact": 0, "near": 1, "similar": 2}
    for family, allowed in (("dup", ("exact", "near")), ("similar", KINDS)):
        sets = _Sets()
        edges = [p for p in pairs if p[2] in allowed]
        for a, b, *_ in edges:
            sets.union(a, b)
        by_root: dict[int, list[tuple[int, int, str, float, int | None]]] = {}
        for e in edges:
            by_root.setdefault(sets.find(e[0]), []).append(e)
        for root, members in sets.groups().items():
            group_edges = by_root.get(root, [])
            edge_kinds = {e[2] for e in group_edges}
            if family == "similar" and "similar" not in edge_kinds:
                continue  # exactly a duplicates group: listed there, not twice
            kind = "exact" if edge_kinds == {"exact"} else "near" if family == "dup" else "similar"
            best: dict[int, tuple[int, float, str, int, int | None]] = {}
            for a, b, k, s, d in group_edges:
                for me, other in ((a, b), (b, a)):
                    key = (rank[k], -s, other)
                    cur = best.get(me)
                    if cur is None or key < (cur[0], -cur[1], cur[3]):
                        best[me] = (rank[k], s, k, other, d)
            anchor = min(members)
            session.add(
                DuplicateGroup(
                    family=family,
                    anchor_id=anchor,
                    kind=kind,
                    size=len(members),
                    min_similarity=min(e[3] for e in group_edges),
                    updated_at=now,
                )
            )
            for image_id in sorted(members):
                _r, s, k, other, d = best[image_id]
                session.add(
                    DuplicateMember(
                        family=family,
                        image_id=image_id,
                        anchor_id=anchor,
                        reason=_reason(k, other, s, d),
                        similarity=s,
                    )
                )
            counts[kind] = counts.get(kind, 0) + 1
    return counts


# --------------------------------------------------------------------------------------------
# Reading pages (per request: range reads on keys only)

MAX_PAGE = 200


def _family_of(kind: str) -> tuple[str, str | None]:
    if kind in ("duplicates", "dup", "all"):
        return "dup", None
    if kind in ("exact", "near"):
        return "dup", kind
    if kind == "similar":
        return "similar", None
    raise IndexerError(
        f"unknown duplicates kind {kind!r}: use duplicates (exact and near), exact, near or similar"
    )


def list_groups(
    session: Session,
    kind: str = "duplicates",
    after: int | None = None,
    limit: int = 20,
    seen: Visibility = EVERYTHING,
) -> tuple[list[DuplicateGroupInfo], int | None]:
    """A page of groups ordered by their key, after ``after``, each with its suggested keeper
    first (indexer.duplicate_keeper); members that are no longer in the
    library (removed since the last run) are left out, and groups left with one member too. For
    a viewer of some folders (``seen``, indexer.sharing) only the members under them count: the
    groups with two of them, showing those alone."""
    family, only = _family_of(kind)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise IndexerError(f"limit must be between 1 and {MAX_PAGE}, got {limit!r}")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        raise IndexerError(f"after must be a group id (next_after), got {after!r}")
    stmt = sa.select(DuplicateGroup).where(DuplicateGroup.family == family)
    if after is not None:
        stmt = stmt.where(DuplicateGroup.anchor_id > int(after))
    if only is not None:
        stmt = stmt.where(DuplicateGroup.kind == only)
    cond = folder_condition(seen, ranged=catalog.bytewise_text(session))
    if cond is not None:  # the groups with two members the viewer may see, in the query
        stmt = stmt.where(
            DuplicateGroup.anchor_id.in_(
                sa.select(DuplicateMember.anchor_id)
                .join(Image, Image.id == DuplicateMember.image_id)
                .where(DuplicateMember.family == family, Image.state == "ready", cond)
                .group_by(DuplicateMember.anchor_id)
                .having(sa.func.count() >= 2)
            )
        )
    rows = list(session.scalars(stmt.order_by(DuplicateGroup.anchor_id).limit(limit)))
    next_after = int(rows[-1].anchor_id) if len(rows) == limit else None
    if not rows:
        return [], None
    anchors = [int(r.anchor_id) for r in rows]
    members: dict[int, list[DuplicateMember]] = {}
    for m in session.scalars(
        sa.select(DuplicateMember)
        .where(DuplicateMember.family == family, DuplicateMember.anchor_id.in_(anchors))
        .order_by(DuplicateMember.anchor_id, DuplicateMember.image_id)
    ):
        members.setdefault(int(m.anchor_id), []).append(m)
    ids = sorted({int(m.image_id) for ms in members.values() for m in ms})
    images: dict[int, Image] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = sa.select(Image).where(Image.id.in_(ids[start : start + _CHUNK]))
        for img in session.scalars(chunk if cond is None else chunk.where(cond)):
            images[int(img.id)] = img
    out: list[DuplicateGroupInfo] = []
    for row in rows:
        live = [
            DuplicateMemberInfo(catalog.image_info(images[int(m.image_id)]), m.reason, m.similarity)
            for m in members.get(int(row.anchor_id), [])
            if int(m.image_id) in images and images[int(m.image_id)].state == "ready"
        ]
        if len(live) < 2:
            continue
        live.sort(key=lambda m: keeper_key(m.image))
        out.append(
            DuplicateGroupInfo(
                id=int(row.anchor_id),
                family=family,
                kind=_group_kind(row.kind),
                size=len(live),
                min_similarity=float(row.min_similarity),
                members=live,
                keeper_id=int(live[0].image.id),
            )
        )
    return out, next_after


def _group_kind(value: str) -> GroupKind:
    match value:
        case "exact" | "near" | "similar":
            return value
    raise IndexerError(f"a duplicate group has the unknown kind {value!r} in the catalog")


def is_stale(session: Session) -> bool:
    """Whether the catalog changed since the groups were computed (two index look-ups)."""
    seq = catalog.get_mark(session, _MARK_SEQ)
    return seq is None or catalog.change_watermark(session) > seq


def newest_job(session: Session) -> Job | None:
    job_id = catalog.get_mark(session, _MARK_JOB)
    return None if job_id is None else session.get(Job, job_id)


def record_job(session: Session, full: bool = False) -> tuple[Job, bool]:
    """The queued or running duplicates job, else a new one (committed). ``(job, created)``."""
    current = newest_job(session)
    if current is not None and current.state in ("queued", "running"):
        return current, False
    job = Job(kind="duplicates", state="queued", params={"full": True} if full else {}, done=0,
              failed=0, errors=[])  # fmt: skip
    session.add(job)
    session.flush()
    catalog.set_mark(session, _MARK_JOB, int(job.id))
    session.commit()
    return job, True


# --------------------------------------------------------------------------------------------
# What the service and the CLI call (with an indexer.library.Library)


def page(
    lib: LibraryFacade,
    kind: str = "duplicates",
    after: int | None = None,
    limit: int = 20,
    seen: Visibility = EVERYTHING,
) -> DuplicatesPage:
    """A page of groups, whether they are out of date, and the newest duplicates job."""
    with lib.Session() as session:
        items, next_after = list_groups(session, kind, after, limit, seen)
        job = newest_job(session)
        return DuplicatesPage(
            items=items,
            next_after=next_after,
            stale=is_stale(session),
            job=None if job is None else catalog.job_info(job),
            thresholds=thresholds(applied_thresholds(session)),
        )


__all__ = [
    "KINDS",
    "NEAR_HASH_BITS",
    "NEAR_SIMILARITY",
    "SIMILAR_SIMILARITY",
    "DuplicateGroupInfo",
    "DuplicateMemberInfo",
    "DuplicatesPage",
    "dhash",
    "find_duplicates",
    "list_groups",
]
