"""Background pairs: meaningless images captioned with meaningless text.

A CLIP trained only on captions that describe its images has never seen a text that describes
nothing: a query made of unknown words ("zzzz qqqq") lands anywhere in its embedding space and
scores as high as a real caption (measured on the demo model: cosine up to 0.95, the range of
true matches). Mixing a small share of these pairs into training (noise images, each captioned
with random letters) gives such texts a place of their own, far from every real picture, so
that their best matches in a library score low and a relevance threshold can hide them.

Every item is a pure function of ``(seed, index)``, like :mod:`model.finetune.synthetic`.
"""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

import numpy as np
from PIL import Image

from .data import Pair
from .synthetic import PNG_LEVEL


def random_text(rng: random.Random) -> str:
    """One to four "words" of two to nine random lower-case letters."""
    return " ".join(
        "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
        for _ in range(rng.randint(1, 4))
    )


def noise_image(rng: random.Random, size: int) -> Image.Image:
    """Pixel noise, coarse blocky noise or smooth colour fields (never a shape on a plain ground)."""
    gen = np.random.default_rng(rng.getrandbits(32))
    kind = rng.randrange(3)
    if kind == 0:
        pixels = gen.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        return Image.fromarray(pixels)
    cells = rng.choice((2, 3, 4, 6, 8)) if kind == 1 else rng.choice((2, 3))
    small = gen.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    resample = Image.Resampling.NEAREST if kind == 1 else Image.Resampling.BICUBIC
    return Image.fromarray(small).resize((size, size), resample)


def write_background(
    folder: str | os.PathLike[str], n: int, size: int, seed: int = 1
) -> list[Pair]:
    """Write ``n`` noise images (PNG) into ``folder`` and return them as pairs with random-letter
    captions. Idempotent: existing files of the same name are kept."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    pairs: list[Pair] = []
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        caption = random_text(rng)
        path = out / f"bg{i:05d}.png"
        if not path.is_file():
            tmp = path.with_name(path.name + ".tmp")
            noise_image(rng, size).save(tmp, format="PNG", compress_level=PNG_LEVEL)
            os.replace(tmp, path)
        pairs.append(Pair(path=path, caption=caption, key=f"background/{path.name}"))
    return pairs
