"""The gallery fits the screen and keeps up by itself, in Debian's Chromium against a live server
(tests/web/conftest.py): the detail view shows the whole picture (a wide, a tall and a TIFF shown
through its preview) at desktop and phone sizes; on a phone a long model path in the footer
does not widen the page; a file copied into a watched folder shows up in the search results;
the Add images panel says where folders may come from."""

from __future__ import annotations

import re
import shutil
from typing import Any
from urllib.parse import quote

import pytest
from PIL import Image
from playwright.sync_api import expect
from test_gallery import find_tile, no_horizontal_scroll, tile_names, tiles, wait_for_grid

pytestmark = pytest.mark.browser

WIDE, TALL, TIFF = "panorama-wide.png", "tower-tall.png", "scanned-page.tif"

GEOMETRY = """() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return { x: r.x, y: r.y, w: r.width, h: r.height }; };
  const img = document.getElementById('detail-img');
  return {
    img: box(img), media: box(img.parentElement), dialog: box(document.getElementById('detail')),
    natural: [img.naturalWidth, img.naturalHeight], vw: innerWidth, vh: innerHeight,
  };
}"""


def _inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return (
        inner["x"] >= outer["x"] - 0.5
        and inner["y"] >= outer["y"] - 0.5
        and inner["x"] + inner["w"] <= outer["x"] + outer["w"] + 0.5
        and inner["y"] + inner["h"] <= outer["y"] + outer["h"] + 0.5
    )


def _check_whole_image(page: Any, live_server: Any, name: str) -> None:
    width, height = live_server.library.sizes[name]
    page.goto("/")
    wait_for_grid(page)
    find_tile(page, name).click()
    expect(page.locator("#detail-title")).to_have_text(name)
    img = page.locator("#detail-img")
    # the full picture has replaced the blurred thumbnail
    expect(img).not_to_have_class(re.compile(r"(^|\s)preview(\s|$)"))
    page.wait_for_function(
        "([w, h]) => { const i = document.getElementById('detail-img');"
        " return i.complete && i.naturalWidth === w && i.naturalHeight === h; }",
        arg=[width, height],
    )
    g = page.evaluate(GEOMETRY)
    box = g["img"]
    viewport = {"x": 0, "y": 0, "w": g["vw"], "h": g["vh"]}
    assert _inside(box, viewport), g
    assert _inside(box, g["dialog"]), g
    assert _inside(box, g["media"]), g
    # its own shape (not cropped, not stretched), as large as the view allows
    assert abs(box["w"] * height - box["h"] * width) <= 1.5 * max(width, height), g
    assert abs(box["w"] - g["media"]["w"]) <= 1.5 or abs(box["h"] - g["media"]["h"]) <= 1.5, g
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()


@pytest.mark.parametrize("name", [WIDE, TALL, TIFF])
def test_the_detail_view_shows_the_whole_image_on_a_desktop(
    page: Any, live_server: Any, name: str
) -> None:
    page.set_viewport_size({"width": 1280, "height": 860})
    _check_whole_image(page, live_server, name)


@pytest.mark.parametrize("name", [WIDE, TALL])
def test_the_detail_view_shows_the_whole_image_on_a_phone(
    phone: Any, live_server: Any, name: str
) -> None:
    _check_whole_image(phone, live_server, name)


def test_a_tiff_is_shown_through_its_preview_and_the_original_stays_a_download(
    page: Any, live_server: Any
) -> None:
    page.goto("/")
    wait_for_grid(page)
    tile = find_tile(page, TIFF)
    image_id = tile.get_attribute("data-id")
    tile.click()
    img = page.locator("#detail-img")
    expect(img).to_have_attribute("src", re.compile(rf"/api/v1/images/{image_id}/preview$"))
    expect(img).not_to_have_class(re.compile(r"(^|\s)preview(\s|$)"))
    link = page.locator("#detail-open")
    expect(link).to_have_text("Download original")
    expect(link).to_have_attribute("href", re.compile(rf"/api/v1/images/{image_id}/file$"))
    expect(link).to_have_attribute("download", TIFF)
    # the link gives the original's bytes
    original = page.request.get(link.get_attribute("href"))
    assert original.ok and original.body() == (live_server.library.photos / TIFF).read_bytes()


def test_a_phone_with_a_long_model_path_does_not_scroll_sideways(
    phone: Any, live_server: Any
) -> None:
    phone.goto("/")
    wait_for_grid(phone)
    model = live_server.api("/api/health").json()["model"]
    assert len(model) > 60  # the fixture's model folder has a long name
    footer = phone.locator("#footer")
    expect(footer).to_contain_text(model)
    assert no_horizontal_scroll(phone)
    box = footer.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390

    phone.locator("#menu-toggle").click()  # on a phone the actions are in the labelled Menu
    phone.locator("#ingest-toggle").click()
    expect(phone.locator("#ingest-panel")).to_be_visible()
    close = phone.locator("#ingest-close")
    expect(close).to_be_in_viewport(ratio=1)
    box = close.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert no_horizontal_scroll(phone)
    close.click()
    expect(phone.locator("#ingest-panel")).to_be_hidden()


def test_a_file_copied_into_a_watched_folder_appears_in_the_search_results(
    page: Any, live_server: Any, tmp_path: Any
) -> None:
    dropbox = live_server.library.dropbox
    page.goto(f"/?q={quote('a photo')}&folder={quote(str(dropbox))}")
    wait_for_grid(page)
    before = sorted(p.name for p in dropbox.iterdir())
    expect(tiles(page)).to_have_count(len(before))
    assert sorted(tile_names(page)) == before

    # made elsewhere, then copied in, as a user drops a photo into the folder
    made = tmp_path / "lighthouse-at-noon.png"
    Image.new("RGB", (200, 150), (240, 200, 60)).save(made)
    shutil.copy(made, dropbox / made.name)
    # no reload, no API call: the page sees the watcher's ingest finish and searches again
    expect(tiles(page)).to_have_count(len(before) + 1, timeout=120_000)
    assert sorted(tile_names(page)) == sorted([*before, made.name])


def test_the_add_images_panel_says_which_folders_are_allowed(page: Any, live_server: Any) -> None:
    root = str(live_server.library.root)
    page.goto("/")
    wait_for_grid(page)
    page.locator("#ingest-toggle").click()
    hint = page.locator("#ingest-hint")
    expect(hint).to_contain_text(root)
    expect(hint.locator("code").filter(has_text=re.compile(f"^{re.escape(root)}$"))).to_have_count(
        1
    )
    # a folder outside them: the server's refusal, naming the allowed folders, is shown
    page.locator("#ingest-path").fill("/etc")
    page.locator("#ingest-submit").click()
    error = page.locator("#ingest-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(root)
