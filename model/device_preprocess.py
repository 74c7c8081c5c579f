"""Image preprocessing on the model's device, for GPU hosts where the CPU decode pool is the limit.

:class:`DevicePreprocess` does what :class:`model.preprocess.Preprocess` does (short-side resize,
centre crop or squash, scale to [0, 1], normalise), on uint8 image tensors that are already on
the device, and batches the result. The resize is ``torch.nn.functional.interpolate`` with
antialiasing, which approximates PIL's bicubic/bilinear filters: the pixels differ by a few
levels where PIL rounds to 8 bits between its two passes, and the embeddings agree to a cosine
measured in tests/model/test_device_preprocess.py and bench/gpu.py.

:func:`decode_on_device` turns encoded files into such tensors: JPEGs on a CUDA device go
through nvJPEG (``torchvision.io.decode_jpeg(..., device="cuda")``; torchvision is an optional
extra, ``pip install clipsearch[gpu]``, never needed on the CPU path); anything else, and every
file when nvJPEG is unavailable, is decoded by Pillow on the host and copied over, pinned. The
EXIF orientation is read from the header on the host and applied on the device.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipsearch.model.errors import ModelError
from clipsearch.model.preprocess import (
    _BOX_RESIZE_ASPECT,
    OPENAI_MEAN,
    OPENAI_STD,
    Preprocess,
    load_image,
)

_ORIENTATION = 0x0112


class DevicePreprocess:
    """uint8 tensors [3, H, W] (any sizes, on one device) -> float batch [N, 3, R, R]."""

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        resize_mode: str = "shortest",
        interpolation: str = "bicubic",
    ) -> None:
        # the CPU transform's own checks (size, mean/std, resize mode, filter), one set of rules
        Preprocess(image_size, mean, std, resize_mode, interpolation)
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.interpolation = interpolation
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @classmethod
    def like(cls, preprocess: Preprocess) -> DevicePreprocess:
        """The device twin of a :class:`model.preprocess.Preprocess` (a model's ``preprocessor``)."""
        return cls(
            int(preprocess.image_size),
            mean=preprocess.mean,
            std=preprocess.std,
            resize_mode=getattr(preprocess, "resize_mode", "shortest"),
            interpolation=getattr(preprocess, "interpolation", "bicubic"),
        )

    def _resize_crop(self, img: torch.Tensor) -> torch.Tensor:
        """[3, H, W] uint8 -> [3, R, R] float in 0..255, the reference geometry."""
        size = self.image_size
        _, h, w = img.shape
        if h < 1 or w < 1:
            raise ModelError(f"cannot preprocess an empty image ({w}x{h})")
        x = img.unsqueeze(0).float()
        if self.resize_mode == "squash":
            out = F.interpolate(
                x, size=(size, size), mode=self.interpolation, antialias=True, align_corners=False
            )
            return out[0]
        if w <= h:
            new_w, new_h = size, int(size * h / w)
        else:
            new_w, new_h = int(size * w / h), size
        left = round((new_w - size) / 2.0)
        top = round((new_h - size) / 2.0)
        if max(new_w, new_h) > _BOX_RESIZE_ASPECT * size:
            # A sliver: resize only the source region the crop keeps (as Preprocess does).
            sx, sy = w / new_w, h / new_h
            x0, y0 = int(left * sx), int(top * sy)
            x1 = min(w, max(x0 + 1, round((left + size) * sx)))
            y1 = min(h, max(y0 + 1, round((top + size) * sy)))
            x = x[:, :, y0:y1, x0:x1]
            new_w = new_h = size
            left = top = 0
        out = F.interpolate(
            x, size=(new_h, new_w), mode=self.interpolation, antialias=True, align_corners=False
        )
        return out[0, :, top : top + size, left : left + size]

    def __call__(
        self, images: Sequence[torch.Tensor], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        if not images:
            raise ModelError("no images to preprocess")
        device = images[0].device
        batch = torch.stack([self._resize_crop(im) for im in images])
        batch = batch.clamp_(0.0, 255.0).round_()  # PIL hands back 8-bit pixels: so do we
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1) * 255.0
        return ((batch - mean) / std).to(dtype)


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1..8) from a file's header, 1 when absent; the pixels are not read."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            value = img.getexif().get(_ORIENTATION, 1)
    except Exception:
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to a [3, H, W] tensor (what PIL's ImageOps.exif_transpose does)."""
    if orientation == 2:
        return img.flip(-1)
    if orientation == 3:
        return img.flip(-1).flip(-2)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:
        return img.transpose(-1, -2)
    if orientation == 6:
        return img.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return img.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return img.transpose(-1, -2).flip(-2)
    return img


def nvjpeg_available(device: torch.device | str) -> bool:
    """Whether JPEGs can be decoded on ``device`` (CUDA with torchvision's nvJPEG decoder)."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401  # optional: the gpu extra
    except Exception:
        return False
    return True


def _host_decode(data: bytes, pin: bool) -> torch.Tensor:
    rgb = load_image(io.BytesIO(data))  # bomb guard and EXIF orientation as on the CPU path
    arr = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()
    t = torch.from_numpy(arr)
    return t.pin_memory() if pin else t


def decode_on_device(
    datas: Sequence[bytes], device: torch.device | str, use_nvjpeg: bool | None = None
) -> list[torch.Tensor]:
    """Encoded files -> uint8 [3, H, W] tensors on ``device``, upright.

    JPEGs go through nvJPEG when ``use_nvjpeg`` (default: when available); a JPEG nvJPEG
    refuses (progressive with odd sampling, CMYK, damaged) falls back to Pillow on the host,
    as does every other format. Raises :class:`model.preprocess.ImageDecodeError` for a file
    neither can decode.
    """
    device = torch.device(device)
    if use_nvjpeg is None:
        use_nvjpeg = nvjpeg_available(device)
    pin = device.type == "cuda"
    out: list[torch.Tensor | None] = [None] * len(datas)
    jpeg_at = [i for i, d in enumerate(datas) if use_nvjpeg and d[:3] == b"\xff\xd8\xff"]
    if jpeg_at:
        from torchvision.io import ImageReadMode, decode_jpeg  # optional: the gpu extra

        encoded = [torch.frombuffer(bytearray(datas[i]), dtype=torch.uint8) for i in jpeg_at]
        try:
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = []
            for t in encoded:  # one bad file must not send the whole batch to the host
                try:
                    decoded.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    decoded.append(None)
        for i, img in zip(jpeg_at, decoded, strict=True):
            if img is not None:
                out[i] = orient(img, exif_orientation(datas[i]))
    for i, data in enumerate(datas):
        if out[i] is None:
            out[i] = _host_decode(data, pin).to(device, non_blocking=pin)
    return [t for t in out if t is not None]
