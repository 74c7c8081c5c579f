"""The device preprocessing path (GPU hosts) gives the CPU path's pixels and embeddings.

Run here on the CPU device: the same tensor code runs on CUDA; nvJPEG itself is measured by
bench/gpu.py on a GPU host.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from clipsearch.model.api import build
from clipsearch.model.clip import CLIPConfig, TextConfig, VisionConfig
from clipsearch.model.device_preprocess import (
    DevicePreprocess,
    decode_on_device,
    exif_orientation,
    orient,
)
from clipsearch.model.errors import ModelError
from clipsearch.model.preprocess import ImageDecodeError, Preprocess, load_image


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack(
        [127 + 100 * np.sin(x / (w / 7)), 127 + 100 * np.cos(y / (h / 5)), (x + y) % 256], -1
    )
    rgb = rgb + rng.normal(0, 20, (h, w, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy())


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    cfg = CLIPConfig(
        embed_dim=128,
        vision=VisionConfig(image_size=224, width=128, layers=2, patch_size=32, heads=2),
        text=TextConfig(width=32, heads=2, layers=1),
    )
    return build(cfg, seed=3)


@pytest.mark.parametrize("mode", ["shortest", "squash"])
@pytest.mark.parametrize("size", [(640, 480), (480, 640), (224, 224), (100, 60), (3000, 2000)])
def test_device_pixels_and_embeddings_match_the_cpu_path(vit, mode, size) -> None:
    img = _photo(*size)
    cpu = Preprocess(224, resize_mode=mode)
    want = cpu(img).unsqueeze(0)
    got = DevicePreprocess.like(cpu)([_tensor(img)])
    assert got.shape == want.shape == (1, 3, 224, 224)
    levels = (got - want).abs() * torch.tensor(cpu.std).view(1, 3, 1, 1) * 255
    assert levels.mean().item() < 0.5  # a fraction of one 8-bit level on average
    assert levels.max().item() <= 8  # PIL rounds between its passes; we round once
    with torch.no_grad():
        cos = F.cosine_similarity(vit.encode_image(got), vit.encode_image(want)).item()
    assert cos > 0.9999


def test_a_batch_of_mixed_sizes_is_one_tensor_in_the_model_dtype() -> None:
    dev = DevicePreprocess(64)
    out = dev([_tensor(_photo(90, 70)), _tensor(_photo(70, 200)), _tensor(_photo(20, 20))])
    assert out.shape == (3, 3, 64, 64) and out.dtype == torch.float32
    assert dev([_tensor(_photo(90, 70))], dtype=torch.bfloat16).dtype == torch.bfloat16


def test_a_sliver_is_bounded_and_close() -> None:
    img = _photo(5000, 40)
    cpu = Preprocess(224)
    got = DevicePreprocess.like(cpu)([_tensor(img)])
    levels = (got - cpu(img).unsqueeze(0)).abs() * torch.tensor(cpu.std).view(1, 3, 1, 1) * 255
    assert got.shape == (1, 3, 224, 224) and levels.mean().item() < 1.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow(orientation) -> None:
    img = _photo(60, 40, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="PNG", exif=exif.tobytes())  # lossless: exact pixels compared
    data = buf.getvalue()
    assert exif_orientation(data) == orientation
    want = _tensor(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert torch.equal(orient(_tensor(img), orientation), want)
    # the host fallback of decode_on_device (what non-JPEGs take on a GPU host) is upright too
    (decoded,) = decode_on_device([data], "cpu", use_nvjpeg=False)
    assert torch.equal(decoded, _tensor(load_image(data)))


def test_a_damaged_file_is_a_clear_error_not_a_crash() -> None:
    with pytest.raises(ImageDecodeError):
        decode_on_device([b"\xff\xd8\xff\xe0 not really a jpeg"], "cpu", use_nvjpeg=False)
    with pytest.raises(ModelError, match="no images"):
        DevicePreprocess(32)([])
    assert exif_orientation(b"garbage") == 1
