"""Ingestion's device decode path (CLIPSEARCH_DEVICE_DECODE): same library, same vectors.

On this CPU machine ``on`` runs the path with Pillow decoding on the host and torch resizing;
on a GPU host nvJPEG decodes (bench/gpu.py measures that)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from indexer_testfiles import make_exif, write_image  # type: ignore[import-not-found]

from clipsearch.indexer import device_embed
from clipsearch.indexer.catalog import (
    Embedding,
    Image,
    create_job,
    ensure_model,
    init_db,
    session_factory,
)
from clipsearch.indexer.errors import IndexerError
from clipsearch.indexer.ingest import job_progress, plan_ingest, process_batch
from clipsearch.model.testing import tiny_model


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_model(seed=1, image_size=64)


def _library(folder: Path) -> list[Path]:
    folder.mkdir()
    files = []
    for i in range(10):  # JPEGs of several sizes and orientations, and other formats
        size = [(640, 480), (300, 500), (64, 64), (1500, 1000)][i % 4]
        files.append(
            write_image(
                folder / f"p{i}.jpg",
                seed=i,
                size=size,
                quality=92,
                exif=make_exif(orientation=(1, 6, 3, 8)[i % 4]).tobytes(),
            )
        )
    files.append(write_image(folder / "a.png", seed=50, fmt="PNG", size=(200, 120)))
    files.append(write_image(folder / "b.webp", seed=51, fmt="WEBP", size=(120, 200)))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 300)
    return files


def _ingest(
    tmp: Path, name: str, model: Any, folder: Path, device_decode: str
) -> tuple[Any, dict[str, np.ndarray], dict]:
    sessions = session_factory(init_db(f"sqlite:///{tmp / (name + '.db')}"))
    with sessions() as s:
        job_id = create_job(s, "ingest", {"path": str(folder), "recursive": True}).id
    model_id = ensure_model(sessions, model)
    thumbs = tmp / f"thumbs-{name}"
    plan = plan_ingest(sessions, job_id, model_id=model_id, batch_size=4, thumb_dir=thumbs)
    for batch in plan.batches:
        process_batch(
            sessions,
            model,
            job_id,
            batch,
            thumbs,
            model_id=model_id,
            embed_batch_size=3,
            device_decode=device_decode,
        )
    with sessions() as s:
        vecs = {
            r.sha256: np.frombuffer(r.vector, dtype=np.float32)
            for r in s.execute(sa.select(Embedding.sha256, Embedding.vector))
        }
        images = {
            Path(r.path).name: (r.state, r.sha256, r.thumbnail, r.width, r.height)
            for r in s.execute(
                sa.select(
                    Image.path,
                    Image.state,
                    Image.sha256,
                    Image.thumbnail,
                    Image.width,
                    Image.height,
                )
            )
        }
    return job_progress(sessions, job_id), vecs, images


def test_device_path_ingests_the_same_library_with_the_same_vectors(
    tmp_path: Path, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    _library(folder)
    cpu_job, cpu_vecs, cpu_images = _ingest(tmp_path, "cpu", model, folder, "off")
    assert device_embed.wanted(model, "on")
    dev_job, dev_vecs, dev_images = _ingest(tmp_path, "dev", model, folder, "on")

    assert (dev_job.done, dev_job.failed) == (cpu_job.done, cpu_job.failed) == (12, 1)
    # same rows: states, content hashes, displayed sizes, a thumbnail for every ready image
    assert {k: v[:2] + v[3:] for k, v in dev_images.items()} == {
        k: v[:2] + v[3:] for k, v in cpu_images.items()
    }
    assert all(v[2] for k, v in dev_images.items() if v[0] == "ready")
    assert dev_vecs.keys() == cpu_vecs.keys() and len(dev_vecs) == 12
    cos = [float(dev_vecs[k] @ cpu_vecs[k]) for k in dev_vecs]
    # the CPU path decodes big JPEGs at a reduced DCT scale; the device path at full size
    assert min(cos) > 0.995, cos


def test_a_jpeg_replaced_between_the_two_reads_is_reported_not_mixed_up(
    tmp_path: Path, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    target = write_image(folder / "x.jpg", seed=3, size=(320, 240))
    write_image(folder / "y.jpg", seed=4, size=(320, 240))
    real_read = device_embed.read_file

    def swap_then_read(path: str, *a: Any) -> Any:
        if path.endswith("x.jpg"):  # another program rewrites it after the pool's pass
            write_image(target, seed=99, size=(321, 240))
        return real_read(path, *a)

    monkeypatch.setattr(device_embed, "read_file", swap_then_read)
    job, vecs, images = _ingest(tmp_path, "swap", model, folder, "on")
    assert images["y.jpg"][0] == "ready"
    state, sha = images["x.jpg"][:2]
    assert state == "failed"
    assert sha not in vecs  # no vector stored under the old content's hash
    assert len(vecs) == 1 and job.failed == 1


def test_a_bad_setting_says_what_to_use(monkeypatch: pytest.MonkeyPatch, model: Any) -> None:
    from clipsearch.indexer.settings import LibrarySettings

    with pytest.raises(
        IndexerError, match="CLIPSEARCH_DEVICE_DECODE: Input should be 'auto', 'on'"
    ):
        LibrarySettings.from_env({"CLIPSEARCH_DEVICE_DECODE": "gpu-please"})
    with pytest.raises(IndexerError, match="use auto, on or off"):
        device_embed.wanted(model, "gpu-please")
    config = LibrarySettings.from_env({"CLIPSEARCH_DEVICE_DECODE": " AUTO "}).worker_config()
    assert config.device_decode == "auto"
    assert not device_embed.wanted(model, config.device_decode)  # nvJPEG: CUDA devices only
