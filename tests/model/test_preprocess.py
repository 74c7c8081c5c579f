"""Preprocessing and image loading: reference pixels, orientation, modes, draft decode, bad files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clipsearch.model.errors import ModelError
from clipsearch.model.preprocess import (
    OPENAI_MEAN,
    OPENAI_STD,
    ImageDecodeError,
    Preprocess,
    load_image,
)

CASES = ["openai_vit_jit", "openai_rn_state_dict", "open_clip_vit_gelu"]


@pytest.mark.parametrize("case", CASES)
def test_reference_pixels(fixture_data: Path, case: str) -> None:
    folder = fixture_data / "parity" / case
    spec = json.loads((folder / "case.json").read_text())
    expected = load_file(str(folder / "expected.safetensors"))["pixels"]
    prep = Preprocess(spec["vision_cfg"]["image_size"])
    assert len(spec["images"]) == expected.shape[0]
    for i, name in enumerate(spec["images"]):
        with Image.open(fixture_data / "parity" / "images" / name) as img:
            got = prep(img)
        assert got.shape == expected[i].shape
        assert got.dtype == torch.float32
        diff = (got - expected[i]).abs().max().item()
        assert diff < 1e-2, f"{case}/{name}: max pixel difference {diff}"


def _pixel(x: torch.Tensor, y: int, col: int) -> list[int]:
    """Back to 0..255 RGB at one position of a normalised tensor."""
    mean = torch.tensor(OPENAI_MEAN)
    std = torch.tensor(OPENAI_STD)
    return [round(v) for v in ((x[:, y, col] * std + mean) * 255).tolist()]


def test_short_side_resized_then_center_cropped() -> None:
    # 400x100: red, then green from x=100 to 300, then blue. Short side 100 -> 32, so the image
    # becomes 128x32 and the 32x32 center crop sees source columns 150..250: green only.
    img = Image.new("RGB", (400, 100), (255, 0, 0))
    img.paste((0, 255, 0), (100, 0, 300, 100))
    img.paste((0, 0, 255), (300, 0, 400, 100))
    x = Preprocess(32)(img)
    assert x.shape == (3, 32, 32)
    assert _pixel(x, 16, 16) == [0, 255, 0]
    assert _pixel(x, 0, 0) == [0, 255, 0]  # nothing of the red or blue survives the crop
    assert _pixel(x, 31, 31) == [0, 255, 0]


def test_panorama_sliver_is_bounded_and_centered() -> None:
    # A 1 x 40000 strip would be 40000 x 224 x 224 pixels if resized whole.
    strip = np.zeros((1, 40000, 3), dtype=np.uint8)
    strip[:, 19900:20100] = (200, 100, 50)
    x = Preprocess(224)(Image.fromarray(strip))
    assert x.shape == (3, 224, 224)
    assert _pixel(x, 100, 112) == pytest.approx([200, 100, 50], abs=2)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F", "1", "RGB"])
def test_any_mode_gives_rgb_pixels(mode: str) -> None:
    img = Image.new("RGB", (64, 48), (200, 120, 40)).convert(mode) if mode != "I;16" else None
    if mode == "I;16":  # 16-bit grey at 50%: must not come out white as a plain convert would
        img = Image.fromarray(np.full((48, 64), 32768, dtype=np.uint16))
        assert img.mode == "I;16"
    assert img is not None
    x = Preprocess(32)(img)
    assert x.shape == (3, 32, 32)
    assert torch.isfinite(x).all()
    if mode == "I;16":
        assert _pixel(x, 5, 5) == pytest.approx([128, 128, 128], abs=1)
    if mode in ("RGB", "RGBA", "CMYK"):
        assert _pixel(x, 5, 5) == pytest.approx([200, 120, 40], abs=2)


def _jpeg_with_orientation(orientation: int) -> bytes:
    # 400x200: left quarter blue, the rest red.
    img = Image.new("RGB", (400, 200), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 100, 200))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg_with_orientation(6))  # 6: shown rotated 90 degrees clockwise
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.size == (200, 400)
    r, _, b = img.getpixel((100, 20))
    assert b > 200 and r < 60  # the blue quarter is now on top
    r, _, b = img.getpixel((100, 380))
    assert r > 200 and b < 60


def test_load_image_takes_path_file_and_bytes(tmp_path: Path) -> None:
    data = _jpeg_with_orientation(1)
    path = tmp_path / "plain.jpg"
    path.write_bytes(data)
    sizes = {load_image(str(path)).size, load_image(io.BytesIO(data)).size, load_image(data).size}
    assert sizes == {(400, 200)}


def test_load_image_makes_rgb_from_other_modes(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (10, 10), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (250, 250, 250, 0))  # fully transparent
    rgba.save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.mode == "RGB"
    assert img.getpixel((5, 5)) == (10, 20, 30)
    assert img.getpixel((0, 0)) == (0, 0, 0)  # as the reference's premultiplied resize gives
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "w16.png")
    assert load_image(tmp_path / "w16.png").getpixel((1, 1)) == (255, 255, 255)


def test_draft_decode_is_at_least_the_target_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=(1500, 2000, 3), dtype=np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr).save(path, quality=90)
    exact = load_image(path)
    assert exact.size == (2000, 1500)
    for target in (224, 336, 700):
        fast = load_image(path, draft_size=target)
        assert min(fast.size) >= target
        assert fast.size[0] < 2000  # actually reduced: every target here is <= a half
        assert Preprocess(target)(fast).shape == (3, target, target)
    # Not at least twice larger than needed: decoded at full size.
    assert load_image(path, draft_size=800).size == (2000, 1500)


def test_draft_ignores_non_jpeg(tmp_path: Path) -> None:
    Image.new("RGB", (1000, 800), (1, 2, 3)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", draft_size=100).size == (1000, 800)


def test_bad_files_raise_model_errors_naming_them(tmp_path: Path) -> None:
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("shopping list")
    with pytest.raises(ImageDecodeError, match=r"notes\.jpg.*not an image"):
        load_image(not_image)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(_jpeg_with_orientation(1)[:600])
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg.*truncated"):
        load_image(truncated)
    with pytest.raises(ModelError, match=r"missing\.png.*does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ModelError, match="is a folder"):
        load_image(tmp_path)
    with pytest.raises(ModelError, match="takes a path"):
        load_image(12345)  # type: ignore[arg-type]


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch) -> None:
    Image.new("L", (200, 200)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40000 px > 2 x 1000
    with pytest.raises(ImageDecodeError, match=r"bomb\.png.*too large"):
        load_image(tmp_path / "bomb.png")


def test_preprocess_rejects_bad_arguments() -> None:
    with pytest.raises(ModelError):
        Preprocess(0)
    with pytest.raises(ModelError):
        Preprocess(32, std=(0.0, 1.0, 1.0))
    with pytest.raises(ModelError, match="PIL image"):
        Preprocess(32)("not an image")  # type: ignore[arg-type]
