"""Ingestion's device decode path: JPEGs decoded, resized and normalised on the model's GPU.

On a GPU host the CPU decode pool is what limits ingestion (deploy/SCALING.md). With this path
the pool still does everything but the full-size decode of a JPEG (reading and hashing the file,
its EXIF, the thumbnail from a DCT-reduced decode, OCR), and the pixels the model sees are
decoded by nvJPEG on the device and preprocessed there (model/device_preprocess.py), in bf16
batches. Other formats, and any JPEG the device path cannot take, go through the pool's usual
full decode. The embeddings agree with the CPU path's to a cosine measured in bench/gpu.py and
tests/indexer/test_device_embed.py.

``CLIPSEARCH_DEVICE_DECODE``: ``auto`` (default: on when the model runs on CUDA and torchvision's
nvJPEG decoder is installed, ``pip install clipsearch[gpu]``), ``on`` (always, also on the CPU,
where Pillow decodes on the host and torch resizes: for tests and comparisons), ``off``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsearch.indexer.decode import DecodeResult, read_file
from clipsearch.indexer.decode_pool import DecodePool, decode_many
from clipsearch.indexer.errors import IndexerError

if TYPE_CHECKING:
    from clipsearch.model.base import EmbeddingModel

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")


def wanted(model: EmbeddingModel, mode: str = "auto") -> bool:
    """Whether this model's batches take the device path; ``mode`` is the worker's
    ``device_decode`` setting (CLIPSEARCH_DEVICE_DECODE: auto, on or off)."""
    if mode not in MODES:
        raise IndexerError(f"CLIPSEARCH_DEVICE_DECODE={mode!r}: use auto, on or off")
    if mode == "off" or not hasattr(model, "preprocessor"):
        return False
    if mode == "on":
        return True
    from clipsearch.model.device_preprocess import nvjpeg_available

    device = getattr(model, "device", None)
    return device is not None and nvjpeg_available(device)


def embed_decoded(
    model: EmbeddingModel,
    decoded: list[DecodeResult],
    have: set[str],
    *,
    expect: Mapping[str, tuple[int, int]],
    roots: Sequence[str] | None,
    pool: DecodePool | None,
    batch_size: int,
) -> tuple[dict[str, np.ndarray], list[DecodeResult]]:
    """Embed the decoded (pixel-less) results on the device.

    Returns the vectors by sha256 for the JPEGs embedded here, and ``decoded`` with pixels filled
    in by the pool for the rest (or their failure, when the file changed meanwhile).
    """
    import torch

    from clipsearch.model.device_preprocess import (
        DevicePreprocess,
        decode_on_device,
        nvjpeg_available,
    )
    from clipsearch.model.preprocess import ImageDecodeError

    device = torch.device(getattr(model, "device", "cpu"))
    use_nvjpeg = nvjpeg_available(device)
    prep = DevicePreprocess.like(model.preprocessor)
    jpegs: list[tuple[str, bytes]] = []
    host: list[int] = []  # positions in decoded that need the pool's full decode
    seen: set[str] = set()
    for i, d in enumerate(decoded):
        if not d.ok or not d.sha256 or d.sha256 in have or d.sha256 in seen:
            continue
        seen.add(d.sha256)
        if d.format != "JPEG":
            host.append(i)
            continue
        data = read_file(d.path, roots, expect.get(d.path))
        if isinstance(data, DecodeResult) or hashlib.sha256(data).hexdigest() != d.sha256:
            host.append(i)  # changed since the pool read it: the pool decides (and reports)
            continue
        jpegs.append((d.sha256, data))

    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(jpegs), batch_size):
        chunk = jpegs[start : start + batch_size]
        images: list[Any] = []
        keys: list[str] = []
        try:
            images = decode_on_device([c[1] for c in chunk], device, use_nvjpeg=use_nvjpeg)
            keys = [c[0] for c in chunk]
        except ImageDecodeError:
            for sha, data in chunk:  # find the one the host cannot decode either
                try:
                    images += decode_on_device([data], device, use_nvjpeg=use_nvjpeg)
                    keys.append(sha)
                except ImageDecodeError:
                    host += [i for i, d in enumerate(decoded) if d.sha256 == sha][:1]
        if not images:
            continue
        pixels = prep(images)
        out = model.embed_pixels(pixels, batch_size=batch_size)
        vectors.update(zip(keys, np.asarray(out, dtype=np.float32), strict=True))
        del images, pixels

    if host:
        paths = [decoded[i].path for i in host]
        full = decode_many(
            paths,
            int(model.image_size),
            None,  # the thumbnail was written by the first pass
            pool=pool or DecodePool(1),
            preprocess=model.preprocessor,
            roots=roots,
            expect=[expect[p] for p in paths],
        )
        for i, again in zip(host, full, strict=True):
            d = decoded[i]
            if again.ok and again.sha256 == d.sha256:
                d.pixels = again.pixels
            else:  # changed between the two reads: report it like any changed file
                decoded[i] = again if not again.ok else _changed(d)
    return vectors, decoded


def _changed(d: DecodeResult) -> DecodeResult:
    return DecodeResult(
        path=d.path,
        ok=False,
        problem="changed",
        reason="the file changed while it was being read (replaced or still being written); "
        "ingest the folder again",
    )
