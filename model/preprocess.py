"""CLIP's image preprocessing with PIL and torch, and safe image loading.

:class:`Preprocess` reproduces the reference eval transform (torchvision's ``Resize(R, bicubic)``,
``CenterCrop(R)``, convert to RGB, ``ToTensor``, ``Normalize(mean, std)``) on PIL images:

- the short side is resized to ``R`` and the long side to ``int(R * long / short)`` (truncated),
  with PIL's own bicubic filter, in the image's own mode (so a palette image is resized with
  nearest neighbour and an RGBA image in premultiplied alpha, as the reference does);
- the crop offsets are ``int(round((size - R) / 2))`` (for aspect ratios beyond 16:1 only the
  kept region is resized, PIL's ``box``, which bounds the work on slivers and panoramas);
- RGB conversion, scaling to [0, 1] and normalisation with the mean/std.

Other model families were trained with other transforms, which ``resize_mode`` and
``interpolation`` select the way open_clip's ``image_transform`` does: ``"squash"`` resizes the
whole image to ``R x R`` ignoring its aspect ratio (SigLIP, SigLIP 2), ``"shortest"`` is the
resize-and-crop above (CLIP, MobileCLIP, XLM-RoBERTa CLIP); the filter is PIL's ``"bicubic"``
or ``"bilinear"``.

:func:`load_image` opens a file (path or binary file object) with the decompression-bomb guard
on, applies the EXIF orientation and returns an RGB image; with ``draft_size`` a large JPEG is
decoded at a reduced scale by the DCT (much faster; the drift is measured in bench/preprocess.py).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from clipsearch.model.errors import ModelError

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Modes whose samples are wider than 8 bits: PIL's convert("RGB") clips them (a 16-bit grey
# photo would come out white), so they are scaled to 8 bits first.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


# Beyond this aspect ratio only the region the crop keeps is resized.
_BOX_RESIZE_ASPECT = 16

RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
}


class ImageDecodeError(ModelError):
    """A file is not an image, is truncated or damaged, or is too large to decode safely."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """An 8-bit grey ("L") image from a 16/32-bit integer or float one, keeping its tonal range."""
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max(initial=0.0))
        scale = 255.0 if top <= 1.0 else 255.0 / top
    else:
        arr = arr.astype(np.float64)
        top = float(arr.max(initial=0.0))
        # 16-bit data (the usual case) maps by its full range; integer data that already fits in
        # 8 bits stays as is; anything wider is scaled by its maximum.
        if top <= 255:
            scale = 1.0
        elif top <= 65535:
            scale = 255.0 / 65535.0
        else:
            scale = 255.0 / top
    out = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _rgb(img: Image.Image) -> Image.Image:
    """RGB as the reference gets it (PIL's convert), wide modes scaled to 8 bits first."""
    if img.mode in _WIDE_MODES:
        img = _to_8bit(img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


class Preprocess:
    """PIL image -> FloatTensor[3, R, R]: the reference resize, center crop and normalisation."""

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        resize_mode: str = "shortest",
        interpolation: str = "bicubic",
    ) -> None:
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ModelError(f"image_size must be a positive integer, got {image_size!r}")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ModelError(f"mean and std need 3 values each, std positive; got {mean}, {std}")
        if resize_mode not in RESIZE_MODES:
            raise ModelError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        if interpolation not in INTERPOLATIONS:
            raise ModelError(
                f"interpolation must be one of {tuple(INTERPOLATIONS)}, got {interpolation!r}"
            )
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.interpolation = interpolation
        self._filter = INTERPOLATIONS[interpolation]
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # (x / 255 - mean) / std as one multiply-add per pixel, in numpy (no torch thread pool).
        self._scale = (1.0 / (255.0 * np.asarray(self.std, dtype=np.float64))).astype(np.float32)
        self._offset = (np.asarray(self.mean) / np.asarray(self.std)).astype(np.float32)

    def __repr__(self) -> str:
        extra = ""
        if (self.resize_mode, self.interpolation) != ("shortest", "bicubic"):
            extra = f", resize_mode={self.resize_mode!r}, interpolation={self.interpolation!r}"
        return f"Preprocess(image_size={self.image_size}, mean={self.mean}, std={self.std}{extra})"

    def resize_crop(self, img: Image.Image) -> Image.Image:
        """The short-side resize and center crop (or the squash resize), as an RGB PIL image of
        R x R."""
        if not isinstance(img, Image.Image):
            raise ModelError(f"preprocess takes a PIL image, got {type(img).__name__}")
        if img.mode in _WIDE_MODES:
            img = _to_8bit(img)
        size = self.image_size
        w, h = img.size
        if w < 1 or h < 1:
            raise ModelError(f"cannot preprocess an empty image ({w}x{h})")
        if self.resize_mode == "squash":  # torchvision's Resize((R, R)): aspect ratio not kept
            return _rgb(img.resize((size, size), self._filter))
        # torchvision's Resize(int): short side -> size, long side truncated with int().
        if w <= h:
            new_w, new_h = size, int(size * h / w)
        else:
            new_w, new_h = int(size * w / h), size
        # torchvision's CenterCrop offsets (new sizes are >= size, so no padding is needed).
        left = round((new_w - size) / 2.0)
        top = round((new_h - size) / 2.0)
        if max(new_w, new_h) <= _BOX_RESIZE_ASPECT * size:
            out = img.resize((new_w, new_h), self._filter)
            out = out.crop((left, top, left + size, top + size))
        else:
            # A panorama or a sliver: resizing all of it would make a huge intermediate image
            # (a 1x100000 strip -> 224 x 22 million pixels), so only the region the crop keeps
            # is resized (PIL's box). Same source mapping and filter; the two separable passes
            # round differently, so pixels may differ from resize-then-crop by 1/255.
            sx, sy = w / new_w, h / new_h
            box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
            out = img.resize((size, size), self._filter, box=box)
        return _rgb(out)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        rgb = self.resize_crop(img)
        arr = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32, order="C")
        arr *= self._scale[:, None, None]
        arr -= self._offset[:, None, None]
        return torch.from_numpy(arr)


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str) else "<image data>"


def load_image(
    path_or_file: str | os.PathLike[str] | BinaryIO | bytes, draft_size: int | None = None
) -> Image.Image:
    """Open an image file as an EXIF-oriented RGB ``PIL.Image``.

    ``path_or_file`` is a path, a binary file object or the file's bytes. With ``draft_size``, a
    JPEG at least twice that size on its short side is decoded at a reduced scale (DCT scaling)
    that still leaves its short side >= ``draft_size``. Raises :class:`ImageDecodeError` (a
    :class:`ModelError`) naming the file when it is missing, not an image, truncated or damaged,
    or larger than Pillow's decompression-bomb limit.
    """
    what = _describe(path_or_file)
    source: str | BinaryIO
    if isinstance(path_or_file, bytes):
        source = io.BytesIO(path_or_file)
    elif isinstance(path_or_file, (str, os.PathLike)):
        path = Path(os.fspath(path_or_file)).expanduser()
        if not path.is_file():
            reason = "is a folder" if path.is_dir() else "does not exist or is not a regular file"
            raise ImageDecodeError(f"{what}: cannot open image: the path {reason}")
        source = str(path)
    elif hasattr(path_or_file, "read"):
        source = path_or_file
    else:
        raise ModelError(
            f"load_image takes a path, bytes or a binary file, got {type(path_or_file).__name__}"
        )
    if draft_size is not None and (not isinstance(draft_size, int) or draft_size < 1):
        raise ModelError(f"draft_size must be a positive integer, got {draft_size!r}")
    try:
        img = Image.open(source)  # DecompressionBombError beyond 2 x Image.MAX_IMAGE_PIXELS
        if draft_size is not None and img.format == "JPEG":
            w, h = img.size
            if min(w, h) >= 2 * draft_size:
                img.draft("RGB", (draft_size, draft_size))
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"{what}: image is too large to decode safely ({exc}); downscale it below "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{what}: not an image file Pillow can read") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"{what}: image is truncated or damaged ({exc})") from exc
    except Exception as exc:  # a hostile file can trip odd errors deep inside a decoder
        raise ImageDecodeError(f"{what}: image is damaged ({type(exc).__name__}: {exc})") from exc
    return _flatten_to_rgb(_apply_exif_orientation(img, what), what)


def _apply_exif_orientation(img: Image.Image, what: str) -> Image.Image:
    try:
        oriented = ImageOps.exif_transpose(img)
    except Exception as exc:  # malformed EXIF must not cost the image
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", what, exc)
        return img
    return oriented if oriented is not None else img


def _flatten_to_rgb(img: Image.Image, what: str) -> Image.Image:
    """RGB; transparent pixels become black, as the reference's premultiplied resize makes them."""
    try:
        if (img.mode == "P" and "transparency" in img.info) or img.mode in ("PA", "LA", "La"):
            img = img.convert("RGBA")
        if img.mode == "RGBA":
            img = img.convert("RGBa").convert("RGBA")
        return _rgb(img)
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"{what}: cannot convert image of mode {img.mode} to RGB") from exc
