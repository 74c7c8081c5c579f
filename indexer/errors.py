"""The indexer's exception family.

Every error the indexer raises on purpose is an :class:`IndexerError`. The service maps them to
HTTP status codes at its edge (``NotFound`` -> 404, ``Conflict`` -> 409, ``PathNotAllowed`` -> 403,
``CatalogUnavailable`` -> 503, other ``IndexerError`` -> 400/500). Messages name the thing that went
wrong and what the user can do about it.
"""

from __future__ import annotations


class IndexerError(Exception):
    """Base class of every error raised on purpose by the indexer."""


class IngestError(IndexerError):
    """An ingestion job cannot proceed (folder missing, not a folder, not readable...)."""


class NotFound(IndexerError):
    """An image, job, model or index version does not exist in the catalog."""


class Conflict(IndexerError):
    """The request conflicts with the current state (a job already finished, a duplicate...)."""


class CatalogUnavailable(IndexerError):
    """The catalog database cannot be reached or is locked; retrying later may succeed."""


class PathNotAllowed(IndexerError):
    """A path lies outside the folders this installation is allowed to read."""


class QueueUnavailable(IndexerError):
    """A job was recorded but the job queue (the broker) did not take its task: the caller is
    told, and the job runs when a worker starts (it re-sends unfinished jobs) or the queue
    answers again."""


class StoreUnavailable(IndexerError):
    """The vector store (Milvus) cannot be reached or lacks the library's collection; searches
    get 503, jobs wait and resume. Retrying later, or a re-index, repairs it."""
