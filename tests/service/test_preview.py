"""GET /api/images/{id}/preview: a JPEG a browser can show, for TIFF, HEIC and very large
originals; real files ingested by the real library, the API through its app."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from svc_testlib import BLUE, GREEN, RED, TOKEN, ingest_now, two_colour

from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings


def _near(pixel: Any, colour: tuple[int, int, int]) -> bool:
    return all(abs(int(a) - b) < 40 for a, b in zip(pixel[:3], colour, strict=True))


@pytest.fixture()
def served(
    tmp_path: Path, tiny_model_dir: Path
) -> Iterator[tuple[TestClient, dict[str, int], Path]]:
    import pillow_heif

    photos = tmp_path / "photos"
    photos.mkdir()
    two_colour((600, 400)).save(photos / "scan.tif", "TIFF")
    heif = pillow_heif.from_pillow(two_colour((320, 200), GREEN, RED))
    heif.save(str(photos / "phone.heic"), quality=90)
    # 4000 x 3000 as stored, EXIF orientation 6 (turn 90 degrees clockwise to display)
    exif = Image.Exif()
    exif[0x0112] = 6
    two_colour((4000, 3000)).save(photos / "big.jpg", "JPEG", quality=80, exif=exif)
    Image.new("RGB", (80, 60), GREEN).save(photos / "small.png")
    # a decompression bomb: 400 megapixels in a few hundred KB
    Image.new("1", (20000, 20000)).save(photos / "bomb.png", optimize=True)
    settings = Settings(
        data_dir=tmp_path / "data",
        model=str(tiny_model_dir),
        images=[photos],
        api_token=TOKEN,
        public_read=True,
    )
    lib = build_library(settings)
    try:
        ingest_now(lib, photos)
        items, _ = lib.list_images(limit=50)
        ids = {Path(i.path).name: i.id for i in items}
        with TestClient(create_app(settings, library=lib)) as client:
            yield client, ids, photos
    finally:
        lib.close()


def _jpeg(response: Any) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-content-type-options"] == "nosniff"
    img = Image.open(io.BytesIO(response.content))
    assert img.format == "JPEG"
    return img.convert("RGB")


def test_previews_of_tiff_heic_and_a_large_rotated_jpeg(
    served: tuple[TestClient, dict[str, int], Path], tmp_path: Path
) -> None:
    client, ids, photos = served
    listed = client.get(f"/api/images/{ids['scan.tif']}").json()
    assert listed["preview_url"].endswith(f"/api/v1/images/{ids['scan.tif']}/preview")

    # TIFF and HEIC, which browsers do not show: a JPEG of the same size and picture
    for name, size, left, right in (
        ("scan.tif", (600, 400), RED, BLUE),
        ("phone.heic", (320, 200), GREEN, RED),
    ):
        img = _jpeg(client.get(f"/api/images/{ids[name]}/preview"))
        assert img.size == size, name
        assert _near(img.getpixel((5, size[1] // 2)), left), name
        assert _near(img.getpixel((size[0] - 5, size[1] // 2)), right), name
    heic = client.get(f"/api/images/{ids['phone.heic']}").json()
    assert heic["format"] == "HEIF" and heic["state"] == "ready"
    # a HEIC photo is also a query: the same picture comes first
    upload = (photos / "phone.heic").read_bytes()
    found = client.post("/api/search/image", files={"file": ("q.heic", upload)}, params={"k": 1})
    assert found.status_code == 200, found.text
    assert found.json()["results"][0]["id"] == ids["phone.heic"]

    # 12 megapixels, stored sideways: shown upright, the longest side capped at 2048
    big = _jpeg(client.get(f"/api/images/{ids['big.jpg']}/preview"))
    assert big.size == (1536, 2048)
    assert _near(big.getpixel((768, 10)), RED)  # the stored left half is on top once turned
    assert _near(big.getpixel((768, 2038)), BLUE)

    # a small image is not enlarged
    assert _jpeg(client.get(f"/api/images/{ids['small.png']}/preview")).size == (80, 60)

    # cached once per content under the data folder, answered with an ETag
    sha = client.get(f"/api/images/{ids['big.jpg']}").json()["sha256"]
    cached = tmp_path / "data" / "previews" / sha[:2] / f"{sha}-2048.jpg"
    assert cached.is_file()
    first = client.get(f"/api/images/{ids['big.jpg']}/preview")
    assert first.content == cached.read_bytes()
    again = client.get(
        f"/api/images/{ids['big.jpg']}/preview", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304


def test_a_bomb_gets_a_reason_and_a_swapped_file_no_preview(
    served: tuple[TestClient, dict[str, int], Path], tmp_path: Path
) -> None:
    client, ids, photos = served
    bomb = client.get(f"/api/images/{ids['bomb.png']}/preview")
    assert bomb.status_code == 422
    assert "download the original" in bomb.json()["detail"]

    # rendered once; then the file is swapped for a link to a file outside the library
    assert client.get(f"/api/images/{ids['scan.tif']}/preview").status_code == 200
    secret = tmp_path / "secret.tif"
    two_colour((600, 400)).save(secret, "TIFF")
    os.unlink(photos / "scan.tif")
    os.symlink(secret, photos / "scan.tif")
    swapped = client.get(f"/api/images/{ids['scan.tif']}/preview")
    assert swapped.status_code == 404, swapped.text
    assert client.get(f"/api/images/{ids['scan.tif']}/file").status_code == 404


def test_a_preview_is_refused_from_the_header_above_the_pixel_limit(tmp_path: Path) -> None:
    from clipsearch.indexer.decode_preview import PreviewError, render_preview

    path = tmp_path / "wide.png"
    two_colour((2000, 1500)).save(path)
    with path.open("rb") as fh, pytest.raises(PreviewError, match="too many pixels"):
        render_preview(fh, max_pixels=1_000_000)
    with path.open("rb") as fh:
        shown = Image.open(io.BytesIO(render_preview(fh, max_side=400)))
    assert shown.size == (400, 300) and shown.format == "JPEG"
