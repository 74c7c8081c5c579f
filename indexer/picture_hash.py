"""The picture hash the duplicates job compares: a 64-bit difference hash (dHash)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import PIL.Image


def dhash(image: PIL.Image.Image) -> int:
    """64-bit difference hash of a PIL image: 9x8 grey, one bit per horizontal gradient sign."""
    from PIL import Image as PILImage

    grey = image.convert("L").resize((9, 8), PILImage.Resampling.BILINEAR)
    px = np.asarray(grey, dtype=np.int16)
    bits = (px[:, 1:] > px[:, :-1]).flatten()
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return value


def hash_distance(a: int, b: int) -> int:
    return bin((a ^ b) & 0xFFFFFFFFFFFFFFFF).count("1")
