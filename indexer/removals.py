"""Removals: taking an image out of the library (and its file to the trash), the Removed view,
and bringing removed images back.

A removal is remembered (:class:`~indexer.catalog.RemovedImage`) so that no later scan adds the
file again, at its path or any other with the same content, until it is restored. A file is
never unlinked: ``from_disk`` moves it into ``<data_dir>/trash/<removed id>/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa

from . import catalog, file_moves, safe_files
from .context import MAX_LIST, MAX_ROW_ID, CatalogContext, as_id
from .errors import Conflict, IndexerError, NotFound
from .filtering import within_condition
from .images import ImageService
from .job_queue import JobService
from .serving import IndexService
from .types import RemovedInfo, RestoreResult, check_page

log = logging.getLogger(__name__)

__all__ = ["RemovalService"]


class RemovalService:
    """Removing images from one library and restoring them (thread-safe)."""

    def __init__(
        self, ctx: CatalogContext, images: ImageService, index: IndexService, jobs: JobService
    ) -> None:
        self.ctx = ctx
        self.images = images
        self.index = index
        self.jobs = jobs

    @property
    def trash_dir(self) -> Path:
        return self.ctx.trash_dir

    def delete_image(self, image_id: int, from_disk: bool = False) -> RemovedInfo:
        """Remove an image from the library: out of the catalog and every vector store, and
        remembered (:class:`~indexer.catalog.RemovedImage`) so that no later scan adds the file
        again, at this path or any other with the same content, until :meth:`restore`.

        The file on disk is left alone unless ``from_disk``: then it is moved (never unlinked)
        into ``<data_dir>/trash/<removed id>/``, and only if it still is the file catalogued."""
        image_id = as_id(image_id)
        opened = None
        if from_disk:
            try:
                opened, _media = self.images.open_file(image_id)
            except NotFound as exc:
                raise Conflict(
                    f"{exc}; the file was not moved to the trash (remove it from the library "
                    "without from_disk, or ingest its folder again first)"
                ) from None
            opened.close()
        moved: tuple[str, str] | None = None
        try:
            with self.ctx.session() as session:
                row = catalog.get_image(session, image_id)
                removed = catalog.record_removal(session, row)
                if from_disk:
                    source = catalog.path_from_db(row.path)
                    target = self.ctx.trash_dir / str(removed.id) / os.path.basename(source)
                    file_moves.move_confined(  # by descriptors: no swapped link redirects it
                        source,
                        self.images.serving_roots(),
                        target,
                        [self.ctx.trash_dir],
                        expect=None if opened is None else (opened.st.st_dev, opened.st.st_ino),
                        create_target_folder=self.ctx.trash_dir,
                    )
                    moved = (source, str(target))
                    removed.trash_path = catalog.path_to_db(target)
                keys = catalog.delete_images(session, [image_id])
                session.commit()
                info = catalog.removed_info(removed)
        except BaseException:
            if moved is not None:  # the catalog did not record it: put the file back
                with contextlib.suppress(OSError, IndexerError):
                    file_moves.move_confined(
                        moved[1], [self.ctx.trash_dir], moved[0], self.images.serving_roots()
                    )
            raise
        catalog.remove_thumbnails(self.ctx.thumbnails_dir, keys)
        self.index.forget([image_id])
        log.info(
            "image %s removed from the library%s",
            image_id,
            " and moved to the trash" if moved else "",
        )
        return info

    def list_removed(
        self, limit: int = 50, before: int | None = None, within: tuple[str, ...] | None = None
    ) -> list[RemovedInfo]:
        """Removed images, the most recently removed first; page with ``before`` (the last id of
        the previous page): a range read on the key. ``within``: only those that were under
        these folders (a viewer's, indexer.sharing)."""
        limit, _ = check_page(limit, 0, MAX_LIST)
        if before is None:
            before = MAX_ROW_ID
        if isinstance(before, bool) or not isinstance(before, (int, np.integer)) or before < 1:
            raise IndexerError(f"before must be a positive id, got {before!r}")
        stmt = (
            sa.select(catalog.RemovedImage)
            .where(catalog.RemovedImage.id < min(int(before), MAX_ROW_ID))
            .order_by(catalog.RemovedImage.id.desc())
            .limit(limit)
        )
        if within is not None:
            stmt = stmt.where(within_condition(within, catalog.RemovedImage.folder))
        with self.ctx.session() as session:
            return [catalog.removed_info(r) for r in session.scalars(stmt)]

    def get_removed(self, removed_id: int) -> RemovedInfo:
        with self.ctx.session() as session:
            return catalog.removed_info(catalog.get_removed(session, as_id(removed_id, "removed")))

    def restore_image(self, image_id: int) -> RestoreResult:
        """:meth:`restore` by the id the image had before it was removed."""
        with self.ctx.session() as session:
            removed_id = catalog.removed_for_image(session, as_id(image_id)).id
        return self.restore(removed_id)

    def restore(self, removed_id: int) -> RestoreResult:
        """Bring a removed image back: every removal of the same content is forgotten (a copy
        would otherwise keep it out), files in the trash go back to their folders, and an ingest
        of each folder adds them again (with new ids; a kept embedding is not computed again)."""
        removed_id = as_id(removed_id, "removed")
        moved_back: list[tuple[str, str]] = []
        with self.ctx.session() as session:
            first = catalog.get_removed(session, removed_id)
            rows = [first]
            if first.sha256:
                rows = list(
                    session.scalars(
                        sa.select(catalog.RemovedImage).where(
                            catalog.RemovedImage.sha256 == first.sha256
                        )
                    )
                )
            folders = sorted({catalog.path_from_db(r.folder) for r in rows})
            for folder in folders:  # refuse before changing anything (outside the roots, gone)
                self.jobs.check_ingest_path(folder)
            infos = [catalog.removed_info(r) for r in rows]
            try:
                for r in rows:
                    if r.trash_path:
                        source = catalog.path_from_db(r.trash_path)
                        target = catalog.path_from_db(r.path)
                        if os.path.lexists(target):
                            raise Conflict(
                                f"cannot restore {target}: another file is there now; move it "
                                "away first"
                            )
                        file_moves.move_confined(  # by descriptors, never replacing a file
                            source,
                            [self.ctx.trash_dir],
                            target,
                            self.images.serving_roots(refresh=True),
                        )
                        moved_back.append((target, source))
                    session.delete(r)
                session.commit()
            except BaseException:
                for target, source in moved_back:
                    with contextlib.suppress(OSError, IndexerError):
                        file_moves.move_confined(
                            target, self.images.serving_roots(), source, [self.ctx.trash_dir]
                        )
                raise
        for info in infos:
            if info.trash_path:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(catalog.path_from_db(info.trash_path)))
        jobs = []
        for folder in folders:  # restored already: a folder that cannot be queued now is logged
            try:
                jobs.append(self.jobs.submit_ingest(folder, recursive=False))
            except IndexerError as exc:
                log.warning("restored into %s, but its ingest was not queued: %s", folder, exc)
        log.info("restored %d removed image(s) of removal %s", len(infos), removed_id)
        return RestoreResult(restored=infos, jobs=jobs)

    def open_removed_thumbnail(self, removed_id: int) -> safe_files.OpenedFile:
        """The thumbnail a removed image had (kept for the Removed view). Raises NotFound."""
        with self.ctx.session() as session:
            key = catalog.get_removed(session, as_id(removed_id, "removed")).thumbnail
        return self.images.open_thumbnail_key(key, f"removed image {removed_id}")


if TYPE_CHECKING:  # the service's view of it (indexer.facade) is this class's
    from .facade import RemovalsApi

    _removals_is_a_removals_api: type[RemovalsApi] = RemovalService
