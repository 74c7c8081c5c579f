"""The catalog: the source of truth for images, embeddings, models, jobs and index versions.

SQLAlchemy 2 typed ORM over SQLite (the embedded default, in WAL mode) or PostgreSQL (deployed,
through psycopg 3). The schema is created and upgraded by Alembic (``init_db`` runs
``upgrade head`` programmatically from the migrations shipped inside the package).

Design choices worth knowing before you query these tables:

* **Embeddings belong to content, not to paths.** ``embeddings`` is keyed on
  ``(sha256, model_id)``: the same bytes found in two places (a copy, a file reachable through two
  folders) are decoded twice but embedded and stored once, and both ``images`` rows read the one
  vector through their ``sha256``. A moved or renamed file keeps its ``images`` row (and its id, so
  the vector index needs no change); a file whose content changed gets a new ``sha256`` and the old
  vector is garbage-collected once no image refers to it. Use :func:`load_vectors` to get
  ``(image ids, vectors)`` for a model; :func:`image_vector` for one image.
* **Paths are text, losslessly.** File names that are not valid UTF-8 cannot be stored as text by
  either database, so ``images.path`` holds :func:`path_to_db` of the filesystem path: backslashes
  are doubled and each undecodable byte is written ``\\xNN``. :func:`path_from_db` gives back the
  exact filesystem ``str`` (with surrogate escapes) to ``open()``. Valid UTF-8 names without a
  backslash are stored unchanged. ``images.folder`` is the parent folder in the same form.
* **mtime is stored in nanoseconds** (``mtime_ns``) so "unchanged" is an exact integer comparison.
* **Timestamps** are stored in UTC and read back as timezone-aware UTC datetimes on both databases.
  ``taken_at`` (EXIF DateTimeOriginal) is the camera's wall-clock time and stays naive.
* **Thumbnails** are content-addressed (``thumbnail`` holds a key such as ``ab/abcd...jpg``
  relative to the thumbnail folder), shared by images with equal content.

The package, one module per idea (``from clipsearch.indexer.catalog import X`` keeps working for
every name below):

* :mod:`.schema`: the tables (ORM classes) and column types;
* :mod:`.codecs`: paths as text, vectors as bytes;
* :mod:`.engine`: engines, sessions, and the Alembic migration runner;
* :mod:`.rows`: model records, rows read out as dataclasses, vectors read per model;
* :mod:`.changes`: the change feed (what changed since a watermark), marks, tombstones;
* :mod:`.deletion`: deleting images and files, and the removals that stick.
"""

from __future__ import annotations

from clipsearch.model.fingerprint import model_fingerprint

from ..configs import default_database_url
from .changes import (
    TOMBSTONE_KEEP_DAYS,
    Changes,
    advance_mark,
    change_watermark,
    changes_since,
    get_mark,
    prune_tombstones,
    set_mark,
)
from .codecs import (
    bytes_to_vector,
    folder_of,
    folder_range,
    pack_vectors,
    path_from_db,
    path_range,
    path_to_db,
    under_folder,
    vector_to_bytes,
)
from .deletion import (
    delete_images,
    gc_embeddings,
    get_removed,
    orphan_thumbnails,
    record_removal,
    remove_thumbnails,
    removed_content_by_size,
    removed_for_image,
    removed_info,
    removed_paths,
)
from .engine import (
    MIGRATIONS_DIR,
    PG_CONNECT_DEFAULTS,
    SQLITE_BUSY_TIMEOUT_MS,
    SQLITE_POOL_SIZE,
    SchemaNotCurrent,
    alembic_config,
    bytewise_text,
    head_revision,
    init_db,
    make_engine,
    schema_revision,
    session_factory,
)
from .rows import (
    HIT_COLUMNS,
    ID_IN,
    JOB_ERROR_SAMPLE,
    create_job,
    ensure_model,
    get_image,
    get_job,
    get_or_create_model,
    hit_from_row,
    image_info,
    image_vector,
    iter_vectors,
    job_info,
    load_vectors,
    state_counts,
)
from .schema import (
    Base,
    CatalogMark,
    Embedding,
    Image,
    ImageCount,
    ImageTombstone,
    IndexVersion,
    Job,
    ModelRecord,
    RemovedImage,
    UTCDateTime,
    WatchedFolder,
    utcnow,
)

__all__ = [
    "HIT_COLUMNS",
    "ID_IN",
    "JOB_ERROR_SAMPLE",
    "MIGRATIONS_DIR",
    "PG_CONNECT_DEFAULTS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_POOL_SIZE",
    "TOMBSTONE_KEEP_DAYS",
    "Base",
    "CatalogMark",
    "Changes",
    "Embedding",
    "Image",
    "ImageCount",
    "ImageTombstone",
    "IndexVersion",
    "Job",
    "ModelRecord",
    "RemovedImage",
    "SchemaNotCurrent",
    "UTCDateTime",
    "WatchedFolder",
    "advance_mark",
    "alembic_config",
    "bytes_to_vector",
    "bytewise_text",
    "change_watermark",
    "changes_since",
    "create_job",
    "default_database_url",
    "delete_images",
    "ensure_model",
    "folder_of",
    "folder_range",
    "gc_embeddings",
    "get_image",
    "get_job",
    "get_mark",
    "get_or_create_model",
    "get_removed",
    "head_revision",
    "hit_from_row",
    "image_info",
    "image_vector",
    "init_db",
    "iter_vectors",
    "job_info",
    "load_vectors",
    "make_engine",
    "model_fingerprint",
    "orphan_thumbnails",
    "pack_vectors",
    "path_from_db",
    "path_range",
    "path_to_db",
    "prune_tombstones",
    "record_removal",
    "remove_thumbnails",
    "removed_content_by_size",
    "removed_for_image",
    "removed_info",
    "removed_paths",
    "schema_revision",
    "session_factory",
    "set_mark",
    "state_counts",
    "under_folder",
    "utcnow",
    "vector_to_bytes",
]
