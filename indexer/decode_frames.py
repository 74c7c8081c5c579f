"""Turning a decoded frame into what is shown: EXIF orientation and capture time read from the
header, a big picture reduced in its own mode right after decoding (so nothing after the decode
works on all its pixels), and any mode flattened to 8-bit RGB on white."""

from __future__ import annotations

import contextlib
import datetime as dt

import numpy as np
from PIL import Image

from clipsearch.indexer.decode_limits import REDUCIBLE_MODES

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME_DIGITIZED = 0x9004
_ORIENTATION = 0x0112


def exif_info(img: Image.Image) -> tuple[int, dt.datetime | None]:
    """(orientation 1..8, capture time) from EXIF; (1, None) when absent or malformed."""
    try:
        exif = img.getexif()
    except Exception:
        return 1, None
    orientation = 1
    with contextlib.suppress(Exception):
        o = int(exif.get(_ORIENTATION, 1))
        orientation = o if 1 <= o <= 8 else 1
    taken: dt.datetime | None = None
    with contextlib.suppress(Exception):
        sub = exif.get_ifd(_EXIF_IFD)
        for tag in (_DATETIME_ORIGINAL, _DATETIME_DIGITIZED):
            taken = _parse_exif_time(sub.get(tag))
            if taken is not None:
                break
    return orientation, taken


def _parse_exif_time(value: object) -> dt.datetime | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip().strip("\x00").strip()
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        with contextlib.suppress(ValueError):
            t = dt.datetime.strptime(value[:19] if "S" in fmt else value[:16], fmt)
            if 1800 <= t.year <= 2200:
                return t
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for any mode: transparency flattened onto white, 16-bit and float scaled to 8 bits."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        hi = 65535.0 if img.mode.startswith("I;16") or float(arr.max(initial=0)) > 255 else 255.0
        if img.mode == "F":
            hi = max(float(arr.max(initial=1.0)), 1e-6)
        img = Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def load_full(img: Image.Image) -> Image.Image:
    img.load()
    return img


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orient(img: Image.Image, orientation: int) -> Image.Image:
    """``img`` as displayed for the EXIF ``orientation`` read from its header (a reduced image
    no longer carries its EXIF), as ``ImageOps.exif_transpose`` turns it."""
    method = _TRANSPOSE.get(orientation)
    return img if method is None else img.transpose(method)


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """``img.reduce(factor)``; with an alpha channel, strip by strip (Pillow reduces those through
    a full-size premultiplied copy: 324 MB more for an 81-megapixel RGBA picture)."""
    if img.mode not in ("LA", "RGBA"):
        return img.reduce(factor)
    w, h = img.size
    out = Image.new(img.mode, (-(-w // factor), -(-h // factor)))
    step = factor * max(1, (8 << 20) // max(1, 4 * w * factor))  # strips of about 8 MB
    for top in range(0, h, step):
        strip = img.crop((0, top, w, min(top + step, h)))
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def load_reduced(img: Image.Image, short_side: int, long_side: int) -> Image.Image:
    """Load ``img`` (its first frame) and reduce it in its own mode by the largest whole factor
    that keeps at least twice ``short_side`` on its short side and twice ``long_side`` on its
    long side (Pillow's ``reducing_gap`` of 2: the final resize still antialiases), so nothing
    after the decode works on all the pixels of a huge picture. Palette, 1-bit and 16-bit images
    are converted first (16-bit grey to 8 bits, scaled by 65535 as :func:`to_rgb` does)."""
    img.load()
    sixteen = img.mode.startswith("I;16")
    if sixteen:
        img = img.convert("I")  # reduced, then scaled to 8 bits below
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode not in REDUCIBLE_MODES:
        img = img.convert("RGBA" if "A" in img.mode else "RGB")
    w, h = img.size
    short, long_ = (w, h) if w <= h else (h, w)
    factor = min(short // max(1, 2 * short_side), long_ // max(1, 2 * long_side))
    if factor >= 2:
        img = _reduce(img, factor)
    if sixteen and img.mode == "I":
        arr = np.asarray(img, dtype=np.float32) * (255.0 / 65535.0)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    return img
