"""Images and files: reading the catalogued images (one, a page, a filtered browse), their
vectors, and opening their thumbnails and original files for serving.

Every file on disk is untrusted at request time: a thumbnail is opened inside the thumbnails
folder and an original inside :meth:`ImageService.serving_roots`, with no symbolic link
followed (indexer.safe_files), and an original must still match the catalog.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa

from . import catalog, safe_files
from .browse import Timeline
from .catalog import Image, Job
from .context import MAX_LIST, MAX_ROW_ID, CatalogContext, as_id
from .errors import IndexerError, NotFound
from .filtering import filter_conditions
from .serving import IndexService
from .types import IMAGE_STATES, ImageInfo, SearchFilters, check_page
from .vector_store import count_under

log = logging.getLogger(__name__)

__all__ = ["RESCAN_MTIME", "ImageService"]

RESCAN_MTIME = -1  # an image's catalog mtime once serving found its file changed: re-scan it


class ImageService:
    """The catalogued images of one library and their files (thread-safe)."""

    def __init__(self, ctx: CatalogContext, index: IndexService) -> None:
        self.ctx = ctx
        self.index = index
        self._ingest_roots: tuple[float, list[str]] | None = None

    # ---- rows

    def get_image(self, image_id: int) -> ImageInfo:
        with self.ctx.session() as session:
            return catalog.image_info(catalog.get_image(session, as_id(image_id)))

    def list_images(
        self,
        offset: int = 0,
        limit: int = 50,
        state: str | None = None,
        after: int | None = None,
    ) -> tuple[list[ImageInfo], int]:
        """A page of images in id order and the total (of ``state``, or all).

        Page with ``after`` (the last id of the previous page): a range read on the primary key
        (or ``ix_images_state_id``) whatever the depth. ``offset`` still works but skips rows one
        by one. The total comes from the trigger-kept counts, not from counting the library."""
        limit, offset = check_page(limit, offset, MAX_LIST)
        _check_state(state)
        if after is None:
            after = 0
        if isinstance(after, bool) or not isinstance(after, (int, np.integer)) or after < 0:
            raise IndexerError(f"after must be a non-negative image id, got {after!r}")
        # a keyset bound even on page one: a range read on the key, never a scan
        where = [Image.id > min(int(after), MAX_ROW_ID)]
        if state is not None:
            where.append(Image.state == state)
        with self.ctx.session() as session:
            counts = catalog.state_counts(session)
            total = counts.get(state, 0) if state is not None else sum(counts.values())
            rows = session.scalars(
                sa.select(Image).where(*where).order_by(Image.id).offset(offset).limit(limit)
            ).all()
            return [catalog.image_info(r) for r in rows], int(total)

    def browse_images(
        self,
        limit: int = 50,
        state: str | None = None,
        filters: SearchFilters | None = None,
        sort: str = "id",
        after: int | None = None,
        after_key: str | None = None,
    ) -> tuple[list[ImageInfo], int, int | None, str | None]:
        """A page of images with the searches' filters, in id or capture-date order
        (:mod:`indexer.browse`): (items, total of ``state`` or all, ignoring the filters,
        next_after for the id order, next_after_key for the date orders)."""
        from .browse import browse

        limit, _ = check_page(limit, 0, MAX_LIST)
        _check_state(state)
        if after is not None and (isinstance(after, bool) or after < 0):
            raise IndexerError(f"after must be a non-negative image id, got {after!r}")
        conditions = filter_conditions(filters) if filters is not None else []
        with self.ctx.session() as session:
            counts = catalog.state_counts(session)
            total = counts.get(state, 0) if state is not None else sum(counts.values())
            if filters is not None and filters.within is not None:
                total = count_under(session, filters.within, state)  # a viewer's count
            rows, next_after, next_key = browse(
                session,
                limit=limit,
                state=state,
                conditions=conditions,
                sort=sort,
                after=None if after is None else min(int(after), MAX_ROW_ID),
                after_key=after_key,
            )
            return [catalog.image_info(r) for r in rows], int(total), next_after, next_key

    def timeline(
        self,
        state: str | None = None,
        filters: SearchFilters | None = None,
        sort: str = "date_desc",
        limit: int = 1200,
    ) -> Timeline:
        """The months that hold pictures (with the filters), in ``sort`` order, each with the
        cursor that starts a browse page there (:func:`indexer.browse.months`)."""
        from .browse import months

        _check_state(state)
        conditions = filter_conditions(filters) if filters is not None else []
        with self.ctx.session() as session:
            return months(session, state=state, conditions=conditions, sort=sort, limit=limit)

    def image_vector(self, image_id: int) -> np.ndarray:
        """The served model's vector of one image (for "more like this"); NotFound if none."""
        served = self.index.ensure_served()
        image_id = as_id(image_id)
        with self.ctx.session() as session:
            row = catalog.get_image(session, image_id)
            if row.state != "ready":
                raise NotFound(f"image {image_id} is {row.state}, not embedded yet")
            return catalog.image_vector(session, image_id, served.model_id)

    # ---- thumbnails

    def thumbnail_path(self, image_id: int) -> Path:
        """The thumbnail file of an image, by catalog id only (never a path from the caller),
        checked as :meth:`open_thumbnail` checks it."""
        with self.open_thumbnail(image_id) as opened:
            return Path(opened.real_path)

    def open_thumbnail(self, image_id: int) -> safe_files.OpenedFile:
        """The thumbnail, opened inside the thumbnails folder with no symbolic link followed,
        and a JPEG (what the decoder writes). Raises NotFound."""
        image_id = as_id(image_id)
        with self.ctx.session() as session:
            key = catalog.get_image(session, image_id).thumbnail
        return self.open_thumbnail_key(key, f"image {image_id}")

    def open_thumbnail_key(self, key: str | None, what: str) -> safe_files.OpenedFile:
        """The thumbnail file of catalog key ``key`` (``what`` names its owner in errors)."""
        parts = (key or "").split("/")
        if len(parts) != 2 or not all(p and p not in (".", "..") and "\\" not in p for p in parts):
            raise NotFound(f"{what} has no thumbnail (it may not be processed yet)")
        folder = self.ctx.thumbnails_dir
        try:
            opened = safe_files.open_confined(folder / parts[0] / parts[1], [folder], "thumbnail")
        except safe_files.UnsafeFile as exc:
            raise NotFound(f"{what}: {exc}") from None
        if safe_files.media_type(opened, "JPEG") is None:
            opened.close()
            raise NotFound(f"the thumbnail of {what} is damaged; ingest its folder again")
        return opened

    # ---- original files

    def file_path(self, image_id: int) -> Path:
        """The original file of an image, by catalog id only, checked as :meth:`open_file`."""
        with self.open_file(image_id)[0] as opened:
            return Path(opened.real_path)

    def serving_roots(self, refresh: bool = False) -> list[str]:
        """The folders whose files may be served: the allowed roots, and every folder an ingest
        was recorded for (the API's are inside the roots; the CLI's were named by a local user).
        Cached; ``refresh`` re-reads the jobs (at most once a second)."""
        now = time.monotonic()
        cached = self._ingest_roots
        if cached is None or now - cached[0] > 30.0 or (refresh and now - cached[0] > 1.0):
            with self.ctx.session() as session:
                params = session.scalars(sa.select(Job.params).where(Job.kind == "ingest")).all()
            folders = {
                catalog.path_from_db(p["path"])
                for p in params
                if isinstance(p, dict) and isinstance(p.get("path"), str) and p["path"]
            }
            cached = self._ingest_roots = (now, sorted(safe_files.resolve_roots(folders)))
        roots = [str(r) for r in self.ctx.roots or []]
        return roots + [r for r in cached[1] if r not in roots]

    def open_file(self, image_id: int) -> tuple[safe_files.OpenedFile, str | None]:
        """The original file, opened for serving, and its media type (None: not a recognised
        image, serve it only as a download).

        Served only if, now, its path resolves to a regular file inside :meth:`serving_roots`,
        opened with no symbolic link followed, that still matches the catalog (size and mtime,
        else the sha256). Otherwise NotFound, and the image is marked for re-scan: its catalog
        mtime is cleared, so the next ingest of its folder decodes the file again (and nothing
        is served until then)."""
        image_id = as_id(image_id)
        with self.ctx.session() as session:
            row = catalog.get_image(session, image_id)
            path = catalog.path_from_db(row.path)
            size, mtime_ns, sha, state, fmt = (
                row.size,
                row.mtime_ns,
                row.sha256,
                row.state,
                row.format,
            )
        try:
            try:
                opened = safe_files.open_confined(path, self.serving_roots())
            except safe_files.UnsafeFile as exc:
                if not exc.outside:
                    raise
                opened = safe_files.open_confined(path, self.serving_roots(refresh=True))
            if not safe_files.matches_catalog(opened, size, mtime_ns, sha):
                opened.close()
                raise safe_files.UnsafeFile(
                    "the file changed on disk since it was scanned; it is not served until its "
                    "folder is ingested again",
                    rescan=True,
                )
        except safe_files.UnsafeFile as exc:
            if exc.rescan:
                self._mark_for_rescan(image_id, mtime_ns)
            raise NotFound(f"image {image_id}: {exc}") from None
        media = safe_files.media_type(opened, fmt) if state == "ready" else None
        return opened, media

    def _mark_for_rescan(self, image_id: int, mtime_ns: int | None) -> None:
        """Clear the image's catalog mtime: the next scan of its folder sees it as changed."""
        if mtime_ns == RESCAN_MTIME:
            return
        try:
            with self.ctx.session() as session:
                session.execute(
                    sa.update(Image).where(Image.id == image_id).values(mtime_ns=RESCAN_MTIME)
                )
                session.commit()
        except Exception as exc:  # serving still refuses the file; the mark is an optimisation
            log.warning("could not mark image %s for re-scan: %s", image_id, exc)
        log.warning("image %s no longer matches the catalog on disk: marked for re-scan", image_id)


def _check_state(state: object) -> None:
    if state is not None and state not in IMAGE_STATES:
        raise IndexerError(f"unknown image state {state!r}: use one of {', '.join(IMAGE_STATES)}")


if TYPE_CHECKING:  # the service's view of it (indexer.facade) is this class's
    from .facade import ImagesApi

    _images_is_an_images_api: type[ImagesApi] = ImageService
