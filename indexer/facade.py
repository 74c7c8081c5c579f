"""What the service may ask of a library: one Protocol per library service, and
:class:`LibraryFacade`, their sum with the search members, the typed surface of
:class:`indexer.library.Library` that service/ depends on.

Each service class is checked against its Protocol (at the end of its module: indexer.serving,
images, removals, folders, job_queue, stats), the real Library against :class:`LibraryFacade`
(in indexer/library.py) and so is the service tests' stand-in, so no side can drift from the
other without mypy saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .ingest_problems import PROBLEMS_PAGE_DEFAULT, FolderProblemPage
from .safe_files import OpenedFile
from .types import (
    FolderInfo,
    Hit,
    ImageInfo,
    JobInfo,
    RemovedInfo,
    RestoreResult,
    SearchFilters,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from clipsearch.model.base import EmbeddingModel

    from .browse import Timeline
    from .configs import OcrConfig
    from .keywords import ImageText, KeywordHit
    from .relevance import Calibration
    from .stats import LibraryStats

__all__ = [
    "FoldersApi",
    "ImagesApi",
    "IndexApi",
    "JobsApi",
    "LibraryFacade",
    "RemovalsApi",
    "StatsApi",
]


class IndexApi(Protocol):
    """Index and freshness (indexer.serving.IndexService)."""

    @property
    def model(self) -> EmbeddingModel: ...

    @property
    def model_spec(self) -> str: ...

    def refresh_index(self) -> int: ...


class ImagesApi(Protocol):
    """Images and files (indexer.images.ImageService)."""

    def get_image(self, image_id: int) -> ImageInfo: ...

    def list_images(
        self, offset: int = 0, limit: int = 50, state: str | None = None, after: int | None = None
    ) -> tuple[list[ImageInfo], int]: ...

    def browse_images(
        self,
        limit: int = 50,
        state: str | None = None,
        filters: SearchFilters | None = None,
        sort: str = "id",
        after: int | None = None,
        after_key: str | None = None,
    ) -> tuple[list[ImageInfo], int, int | None, str | None]: ...

    def timeline(
        self,
        state: str | None = None,
        filters: SearchFilters | None = None,
        sort: str = "date_desc",
        limit: int = 1200,
    ) -> Timeline: ...

    def image_vector(self, image_id: int) -> np.ndarray: ...

    def open_thumbnail(self, image_id: int) -> OpenedFile: ...

    def open_file(self, image_id: int) -> tuple[OpenedFile, str | None]: ...

    def serving_roots(self, refresh: bool = False) -> list[str]: ...


class RemovalsApi(Protocol):
    """Removing and restoring (indexer.removals.RemovalService)."""

    def delete_image(self, image_id: int, from_disk: bool = False) -> RemovedInfo: ...

    def list_removed(
        self, limit: int = 50, before: int | None = None, within: tuple[str, ...] | None = None
    ) -> list[RemovedInfo]: ...

    def get_removed(self, removed_id: int) -> RemovedInfo: ...

    def open_removed_thumbnail(self, removed_id: int) -> OpenedFile: ...

    def restore(self, removed_id: int) -> RestoreResult: ...

    def restore_image(self, image_id: int) -> RestoreResult: ...


class FoldersApi(Protocol):
    """Watched folders (indexer.folders.FolderService)."""

    def add_watched_folder(self, path: str, recursive: bool = True) -> FolderInfo: ...

    def list_watched_folders(self) -> list[FolderInfo]: ...

    def remove_watched_folder(self, folder_id: int) -> FolderInfo: ...

    def scan_watched_folder(
        self, folder_id: int, sub_path: str | None = None
    ) -> JobInfo | None: ...

    def watched_folder_problems(
        self, folder_id: int, limit: int = PROBLEMS_PAGE_DEFAULT, after: str | None = None
    ) -> FolderProblemPage: ...


class JobsApi(Protocol):
    """Submitting and reading jobs (indexer.job_queue.JobService)."""

    def submit_ingest(self, path: str, recursive: bool = True) -> JobInfo: ...

    def submit_reindex(self, model_spec: str | None = None) -> JobInfo: ...

    def get_job(self, job_id: int) -> JobInfo: ...

    def list_jobs(self, limit: int = 50, before: int | None = None) -> list[JobInfo]: ...


class StatsApi(Protocol):
    """Stats (indexer.stats.StatsService)."""

    def stats(self) -> LibraryStats: ...


class LibraryFacade(ImagesApi, RemovalsApi, FoldersApi, JobsApi, StatsApi, Protocol):
    """The library as the service sees it (see indexer.library.Library for each member)."""

    @property
    def model(self) -> EmbeddingModel: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def Session(self) -> sessionmaker[Session]:
        """The catalog's sessions (the domain modules' functions take them: albums, tags, ...)."""
        ...

    def send_job(self, task: str, job_id: int) -> None:
        """Queue a recorded job's task (the domain modules' ``submit`` record, then send)."""
        ...

    @property
    def ocr_config(self) -> OcrConfig | None:
        """How images get their text read (None: this library reads none)."""
        ...

    # search
    def search(
        self,
        vector: np.ndarray,
        k: int = 20,
        offset: int = 0,
        min_score: float | None = None,
        filters: SearchFilters | None = None,
    ) -> list[Hit]: ...

    def search_text(
        self,
        vector: np.ndarray | None,
        query: str,
        mode: str | None = None,
        k: int = 20,
        offset: int = 0,
        min_score: float | None = None,
        filters: SearchFilters | None = None,
        keywords: tuple[int, list[KeywordHit]] | None = None,
    ) -> list[Hit]: ...

    def keyword_hits(
        self, query: str, k: int = 20, offset: int = 0, filters: SearchFilters | None = None
    ) -> tuple[int, list[KeywordHit]]: ...

    def has_keywords(self) -> bool: ...

    def keywords_known(self) -> bool: ...

    def calibration(self) -> Calibration | None: ...

    def image_text(self, image_id: int) -> ImageText: ...

    def submit_ocr(self, force: bool = False, folder: str | None = None) -> JobInfo: ...

    def close(self) -> None: ...
