"""Helpers of the service tests (imported by conftest and the test modules)."""

from __future__ import annotations

import functools
import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

TOKEN = "s3cret-token-for-tests-0123456789"

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (240, 220, 20),
    "white": (250, 250, 250),
    "black": (5, 5, 5),
}


def png_bytes(
    size: tuple[int, int] = (48, 32), colour: tuple[int, int, int] = (200, 10, 10)
) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def write_images(folder: Path, names: dict[str, tuple[int, int, int]] | None = None) -> list[Path]:
    """A few small JPEGs, each a different colour with a stripe (so they differ as vectors)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (name, colour) in enumerate((names or COLOURS).items()):
        img = Image.new("RGB", (64 + 8 * i, 48), colour)
        ImageDraw.Draw(img).rectangle(
            [4 * i, 4, 4 * i + 12, 40], fill=(255 - colour[0], 128, i * 30)
        )
        path = folder / f"{name}.jpg"
        img.save(path, "JPEG", quality=90)
        out.append(path)
    return out


@functools.lru_cache(maxsize=1)
def shared_tiny_model() -> Any:
    """One tiny CLIP per test process (read-only use: eval mode, no grads)."""
    from clipsearch.model.testing import tiny_model

    return tiny_model(seed=0)


class FakeLibrary:
    """Stands in for the Library where only the service edge is under test; records calls."""

    def __init__(self) -> None:
        self.model = shared_tiny_model()
        self.data_dir = Path(tempfile.gettempdir()) / "clipsearch-fake-library"  # never written
        self.calls: list[tuple[str, Any]] = []

    @property
    def Session(self) -> sessionmaker[Session]:
        raise AssertionError("the stand-in library has no catalog: use a real Library for that")

    def send_job(self, task: str, job_id: int) -> None:
        self.calls.append(("send_job", (task, job_id)))

    def serving_roots(self, refresh: bool = False) -> list[str]:
        return []  # no folder may be served

    def has_keywords(self) -> bool:
        return False  # no keyword index: text queries run semantic, as on a real empty index

    def keywords_known(self) -> bool:
        return False

    def calibration(self):
        return None  # no relevance calibration: hits show no relevance, nothing is cut by it

    @property
    def ocr_config(self):
        return None  # this stand-in reads no text in images

    def search(
        self, vector: np.ndarray, k: int = 20, offset: int = 0, min_score=None, filters=None
    ):
        from clipsearch.indexer.types import Hit

        self.calls.append(("search", (k, offset, min_score, filters)))
        return [
            Hit(id=offset + i + 1, score=0.9 - 0.01 * i, path=f"/p/{offset + i}.jpg")
            for i in range(k)
        ]

    def search_text(
        self,
        vector,
        query: str,
        mode=None,
        k: int = 20,
        offset: int = 0,
        min_score=None,
        filters=None,
        keywords=None,
    ):
        # no keyword index here: every text query is the vector search (mode semantic)
        return self.search(vector, k=k, offset=offset, min_score=min_score, filters=filters)

    def keyword_hits(self, query: str, k: int = 20, offset: int = 0, filters=None):
        return 100, []  # no keyword index

    def submit_ingest(self, path: str, recursive: bool = True):
        self.calls.append(("submit_ingest", (path, recursive)))
        return _job(1, "ingest", {"path": path, "recursive": recursive})

    def submit_reindex(self, model_spec: str | None = None):
        self.calls.append(("submit_reindex", model_spec))
        return _job(2, "reindex", {"model": model_spec})

    def delete_image(self, image_id: int, from_disk: bool = False):
        self.calls.append(("delete_image", image_id))

    def get_image(self, image_id: int):
        from clipsearch.indexer.errors import NotFound

        raise NotFound(f"no image with id {image_id}")

    image_vector = get_image
    thumbnail_path = get_image
    file_path = get_image
    open_thumbnail = get_image
    open_file = get_image

    def list_images(self, offset: int = 0, limit: int = 50, state=None, after=None):
        return [], 0

    def browse_images(
        self, limit=50, state=None, filters=None, sort="id", after=None, after_key=None
    ):
        return [], 0, None, None

    def timeline(self, state=None, filters=None, sort: str = "date_desc", limit: int = 1200):
        from clipsearch.indexer.browse import Timeline

        self.calls.append(("timeline", (state, filters, sort, limit)))
        return Timeline(months=[], undated=False, undated_after_key=None, more=False)

    def image_text(self, image_id: int):
        return self.get_image(image_id)

    def list_removed(self, limit: int = 50, before=None, within=None):
        return []

    def get_removed(self, removed_id: int):
        from clipsearch.indexer.errors import NotFound

        raise NotFound(f"no removed image with id {removed_id}")

    open_removed_thumbnail = get_removed
    restore = get_removed
    restore_image = get_image

    def add_watched_folder(self, path: str, recursive: bool = True):
        self.calls.append(("add_watched_folder", (path, recursive)))
        raise NotImplementedError("FakeLibrary watches no folder")

    def list_watched_folders(self):
        return []

    def remove_watched_folder(self, folder_id: int):
        from clipsearch.indexer.errors import NotFound

        raise NotFound(f"no watched folder with id {folder_id}")

    def scan_watched_folder(self, folder_id: int, sub_path=None):
        return self.remove_watched_folder(folder_id)

    def watched_folder_problems(self, folder_id: int, limit: int = 100, after=None):
        return self.remove_watched_folder(folder_id)

    def submit_ocr(self, force: bool = False, folder=None):
        self.calls.append(("submit_ocr", (force, folder)))
        return _job(3, "ocr", {"force": force, "folder": folder})

    def close(self) -> None:
        pass

    def list_jobs(self, limit: int = 50, before=None):
        return []

    def get_job(self, job_id: int):
        from clipsearch.indexer.errors import NotFound

        raise NotFound(f"no job with id {job_id}")

    def stats(self):
        from clipsearch.indexer.stats import LibraryStats

        return LibraryStats()  # an empty library, no index yet

    def mutations(self) -> list[tuple[str, Any]]:
        return [c for c in self.calls if c[0] != "search"]


if TYPE_CHECKING:  # the stand-in must offer what the service asks of a library
    from sqlalchemy.orm import Session, sessionmaker

    from clipsearch.indexer.facade import LibraryFacade

    _fake_is_a_library: type[LibraryFacade] = FakeLibrary


def _job(job_id: int, kind: str, params: dict):
    from clipsearch.indexer.types import JobInfo

    return JobInfo(
        id=job_id, kind=kind, state="queued", params=params, total=None, done=0, failed=0, errors=[]
    )


def ingest_now(library: Any, folder: Path, recursive: bool = True) -> Any:
    """Submit an ingest job through the Library, then run it in this process with the indexer's
    own task functions (no broker round trip): what a worker does, deterministically."""
    from clipsearch.indexer import runs
    from clipsearch.indexer.context import WorkerContext

    job = library.submit_ingest(str(folder), recursive=recursive)
    ctx = WorkerContext(library.config.worker_config())
    try:
        for batch in runs.run_ingest(ctx, None, job.id):
            runs.run_embed_batch(ctx, job.id, batch)
    finally:
        ctx.dispose()
    library.refresh_index()
    return library.get_job(job.id)


def write_dated_jpeg(path: Path, when: str, colour: tuple[int, int, int] = (90, 60, 30)) -> Path:
    """A JPEG with EXIF DateTimeOriginal (``YYYY:MM:DD HH:MM:SS``)."""
    from PIL import Image

    img = Image.new("RGB", (40, 40), colour)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = when
    exif[0x0132] = when
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", exif=exif.tobytes())
    return path


RED, BLUE, GREEN, YELLOW = (230, 20, 20), (20, 40, 230), (20, 200, 60), (240, 220, 20)


def two_colour(size: tuple[int, int], left: tuple = RED, right: tuple = BLUE) -> Any:
    """Left half one colour (red by default), right half another (blue): where each ends up
    in a preview tells its orientation, and whose picture it is."""
    from PIL import Image

    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img
