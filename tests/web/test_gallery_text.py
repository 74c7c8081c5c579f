"""The gallery and words in pictures, in a real browser against a real ``clipsearch serve``
(with the real Tesseract): a search for a word on a sign shows that picture first with a badge
saying it was found by its text, and its detail view shows the text read in it with the word
marked. Its own small server: pictures with rendered words do not belong in the shared library
the other gallery tests count."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from playwright.sync_api import expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs Tesseract"),
]

TOKEN = "gallery-text-token-7d2e91c4a0"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def _sign(path: Path, lines: list[str]) -> None:
    img = Image.new("RGB", (700, 100 + 90 * len(lines)), (110, 160, 200))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, 44)
    y = 40
    for line in lines:
        draw.rectangle((20, y - 14, 680, y + 66), fill=(250, 250, 245))
        draw.text((50, y), line, fill=(15, 15, 15), font=font)
        y += 90
    img.save(path)


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory, start_serve: Any) -> Iterator[str]:
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model

    base = tmp_path_factory.mktemp("gallery-text")
    photos = base / "photos"
    photos.mkdir()
    _sign(photos / "cafe.png", ["ZORBLAX CAFE"])
    _sign(photos / "slip.png", ["RECEIPT", "Mungberry tea 4.20"])
    rng = np.random.default_rng(2)
    for i in range(6):
        pixels = rng.integers(0, 255, size=(12, 16, 3)).astype(np.uint8)
        Image.fromarray(pixels).resize((320, 240), Image.NEAREST).save(photos / f"DSC{i}.jpg")
    model_dir = save_pretrained(tiny_model(seed=0), base / "model")
    env = dict(CLIPSEARCH_API_TOKEN=TOKEN, CLIPSEARCH_DEVICE="cpu", OMP_NUM_THREADS="1")
    args = ["--images", str(photos), "--model", str(model_dir), "--data-dir", str(base / "data")]
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def all_read(url: str) -> bool:
        r = httpx.get(f"{url}/api/images", params={"limit": 50}, headers=headers)
        ready = [i for i in r.json().get("items", []) if i["state"] == "ready"]
        if len(ready) != 8:
            return False
        cafe = next(i["id"] for i in ready if i["path"].endswith("cafe.png"))
        text = httpx.get(f"{url}/api/images/{cafe}/text", headers=headers).json()
        return text.get("ocr_state") == "done"

    def all_searchable(url: str) -> bool:  # the served index follows the catalog within seconds
        # every image, whatever the server's default cut
        params: dict[str, Any] = {"q": "a photo", "k": 50, "mode": "semantic", "min_relevance": 0}
        r = httpx.get(f"{url}/api/search", params=params, headers=headers)
        return len(r.json().get("results", [])) == 8

    waits = [
        ("waiting for the images and the sign's text to be read", all_read),
        ("waiting for the served index to hold every image", all_searchable),
    ]
    with start_serve(args, env, base / "serve.log", waits) as url:
        yield url


@pytest.fixture()
def text_page(browser: Any, text_server: str) -> Iterator[Any]:
    context = browser.new_context(base_url=text_server, viewport={"width": 1280, "height": 800})
    assert context.request.post("/api/session", data={"token": TOKEN}).ok
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


def test_a_word_on_a_sign_finds_it_with_its_reason_and_text(text_page: Any) -> None:
    page = text_page
    page.goto("/?q=zorblax")
    first = page.locator("#results .tile-btn").first
    expect(first).to_have_attribute("aria-label", re.compile(r"^cafe\.png(,|$)"))
    expect(first).to_have_attribute("aria-description", 'text in picture: "zorblax"')
    # the tile is the picture only: why it matched is said in the detail view, in words
    expect(page.locator("#results .match-badge")).to_have_count(0)
    assert first.inner_text().strip() == ""

    first.click()
    why = page.locator("#detail-why .why-text")
    expect(why).to_contain_text("the words “zorblax” read in the picture")
    box = page.locator("#detail-text")
    expect(box).to_be_visible()
    expect(box).not_to_contain_text("Found by its words")
    expect(box.locator(".detail-text-body")).to_contain_text("ZORBLAX CAFE")
    expect(box.locator("mark")).to_have_text("ZORBLAX")

    # a picture without text says so, and a partial word finds the receipt
    page.keyboard.press("Escape")
    page.goto("/?q=mungber&min=0")  # weaker results shown too: the second tile is one
    first = page.locator("#results .tile-btn").first
    expect(first).to_have_attribute("aria-label", re.compile(r"^slip\.png(,|$)"))
    page.locator("#results .tile-btn").nth(1).click()
    expect(page.locator("#detail-text")).to_be_hidden()
