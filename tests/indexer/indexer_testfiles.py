"""Real image files for the indexer tests: every format we read (with EXIF where it matters), and
a corpus of bad files. Imported by the tests as a plain module."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_IFD = 0x8769


def pattern(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A distinct, deterministic RGB picture (different seeds give different content)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=(3,), dtype=np.uint8)
    arr = np.empty((h, w, 3), dtype=np.uint8)
    arr[:] = base
    arr[: h // 2, : w // 2] = 255 - base
    arr += rng.integers(0, 8, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def make_exif(orientation: int | None = None, taken: str | None = None) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if taken is not None:
        exif.get_ifd(EXIF_IFD)[0x9003] = taken
    return exif


def write_image(
    path: Path | str | bytes,
    seed: int = 0,
    fmt: str = "JPEG",
    size: tuple[int, int] = (64, 48),
    **save: object,
) -> Path | bytes:
    """Write a real image file (any path type, bytes names included) and return its path."""
    img = pattern(seed, size)
    if fmt == "GIF":
        frames = [img.convert("P"), pattern(seed + 1000, size).convert("P")]
        with open(path, "wb") as fh:
            frames[0].save(fh, "GIF", save_all=True, append_images=frames[1:], duration=100)
        return path  # type: ignore[return-value]
    if fmt == "PNG" and save.pop("alpha", False):
        img = img.convert("RGBA")
    with open(path, "wb") as fh:
        img.save(fh, fmt, **save)
    return path  # type: ignore[return-value]


def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def bad_corpus(folder: Path) -> dict[str, str]:
    """Bad files in ``folder``: name -> the problem code decode reports for it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    good = folder / "_tmp.jpg"
    write_image(good, seed=99, size=(320, 240), quality=95)
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    good.unlink()
    (folder / "notes.jpg").write_text("this is a text file, not a photo\n")
    bomb_png(folder / "bomb.png")
    os.symlink(folder / "does-not-exist.jpg", folder / "dangling.jpg")
    return {
        "empty.jpg": "empty",
        "truncated.jpg": "truncated",
        "notes.jpg": "not_image",
        "bomb.png": "too_many_pixels",
    }
