"""The timeline in a real browser (Chromium via Playwright) against a live server holding 2,500
pictures: 2,480 JPEGs whose EXIF says when they were taken, spread over four years, and 20 PNGs
without a date. At 1280 x 800 and at 390 x 844: the home view walks the library newest first under
month and day headings in order, the date scrubber jumps to a month, a scroll reaches the last
picture (the undated ones, under their own heading) without an error, and the phone's top bar is
one row of labelled, non-overlapping controls. Expected dates come from the files the test wrote.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

TOKEN = "timeline-test-token-8e2d41"
DATED = 2480
UNDATED = 20
NEWEST = dt.datetime(2024, 12, 28, 18, 0, 0)
STEP = dt.timedelta(hours=14)  # 2,480 steps: four years, several pictures on most days
VIEWPORTS = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 1,
        "is_mobile": True,
        "has_touch": True,
    },
}


def _taken(i: int) -> dt.datetime:
    return NEWEST - i * STEP


def _write(folder: Path) -> dict[str, dt.datetime | None]:
    """The pictures: small JPEGs with EXIF DateTimeOriginal, and PNGs without a date."""
    from PIL import Image

    folder.mkdir(parents=True)
    taken: dict[str, dt.datetime | None] = {}
    for i in range(DATED):
        when = _taken(i)
        img = Image.new("RGB", (32, 24), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
        name = f"shot-{i:04d}.jpg"
        img.save(folder / name, "JPEG", quality=80, exif=exif)
        taken[name] = when
    for i in range(UNDATED):
        name = f"scan-{i:02d}.png"
        Image.new("RGB", (24, 32), (200, (i * 11) % 256, 90)).save(folder / name)
        taken[name] = None
    return taken


@pytest.fixture(scope="module")
def timeline_server(
    tmp_path_factory: pytest.TempPathFactory, start_serve: Any
) -> Iterator[tuple[str, dict[str, dt.datetime | None]]]:
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model

    base = tmp_path_factory.mktemp("timeline")
    photos = base / "library" / "photos"
    taken = _write(photos)
    model_dir = save_pretrained(tiny_model(seed=0), base / "model")
    env = dict(
        CLIPSEARCH_API_TOKEN=TOKEN,
        CLIPSEARCH_CACHE=str(base / "cache"),
        CLIPSEARCH_DEVICE="cpu",
        CLIPSEARCH_OCR="off",
        CLIPSEARCH_GALLERY_MIN_RELEVANCE="0",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    args = ["--images", str(photos), "--model", str(model_dir), "--data-dir", str(base / "data")]

    def get(url: str, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.get(url + path, params=params, headers=headers, timeout=30).json()

    def all_ready(url: str) -> bool:
        jobs = get(url, "/api/jobs")
        if not jobs or any(j["state"] in ("queued", "running") for j in jobs):
            return False
        return int(get(url, "/api/images", limit=1, state="ready")["total"]) == len(taken)

    ready = [("waiting for the 2,500 pictures to be ingested", all_ready)]
    with start_serve(args, env, base / "serve.log", ready, deadline_s=900.0) as url:
        yield url, taken


@pytest.fixture(params=sorted(VIEWPORTS))
def tab(
    request: pytest.FixtureRequest, browser: Any, timeline_server: Any
) -> Iterator[tuple[Any, str]]:
    url, _ = timeline_server
    context = browser.new_context(base_url=url, **VIEWPORTS[request.param])
    assert context.request.post("/api/session", data={"token": TOKEN}).ok
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page, request.param
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _grid_sequence(page: Any) -> list[tuple[str, str]]:
    """The grid in order: ("month", "2024-12"), ("day", "2024-12-28"), ("tile", "shot-0000.jpg")."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#results > li')).flatMap((li) => {
            if (li.classList.contains('month-head')) return [['month', li.dataset.month]];
            if (li.classList.contains('day-head')) return [['day', li.dataset.day]];
            const b = li.querySelector('.tile-btn');
            return b ? [['tile', b.getAttribute('aria-label')]] : [];
        })"""
    )


def _check_grouping(sequence: list[tuple[str, str]], taken: dict[str, Any]) -> list[str]:
    """The tiles' names, after checking that each sits under its own month and day headings,
    headings newest first, each once, and the undated pictures last under "Undated"."""
    month = day = None
    months: list[str] = []
    days: list[str] = []
    names: list[str] = []
    for kind, value in sequence:
        if kind == "month":
            month = value
            months.append(value)
        elif kind == "day":
            day = value
            days.append(value)
        else:
            names.append(value)
            when = taken[value]
            if when is None:
                assert month == "undated", f"{value} has no date but sits under {month}"
            else:
                assert (month, day) == (when.strftime("%Y-%m"), when.strftime("%Y-%m-%d")), value
    dated_months = [m for m in months if m != "undated"]
    assert dated_months == sorted(set(dated_months), reverse=True), "months out of order"
    assert days == sorted(set(days), reverse=True), "days out of order"
    assert months.count("undated") <= 1 and (not months or "undated" not in months[:-1])
    return names


def test_the_timeline_is_newest_first_under_month_and_day_headings(
    tab: tuple[Any, str], timeline_server: Any
) -> None:
    page, _ = tab
    _, taken = timeline_server
    page.goto("/")
    expect(page.locator("#results .month-head").first).to_have_attribute("data-month", "2024-12")
    page.wait_for_function(  # the first page has landed (and nothing is loading)
        "() => document.querySelectorAll('#results .tile-btn').length >= 40"
        " && document.getElementById('results').getAttribute('aria-busy') === 'false'"
    )
    names = _check_grouping(_grid_sequence(page), taken)
    newest = sorted((n for n, t in taken.items() if t), key=lambda n: taken[n], reverse=True)
    assert names == newest[: len(names)] and len(names) >= 40
    expect(page.locator("#results .month-head h2").first).to_have_text("December 2024")
    # tiles show the picture only: no number, no name, no badge drawn over it
    first = page.locator("#results .tile").first
    assert first.locator(".tile-btn").inner_text().strip() == ""
    assert page.locator("#results .score, #results .match-badge, #results .name").count() == 0
    # its actions show on hover (and keyboard focus), with words for screen readers
    actions = first.locator(".tile-actions")
    assert actions.evaluate("e => getComputedStyle(e).opacity") == "0"
    first.hover()
    expect(actions).to_have_css("opacity", "1")
    expect(first.locator(".tile-like")).to_have_attribute("aria-label", re.compile(r"^More like "))


def test_the_scrubber_jumps_to_a_month(tab: tuple[Any, str], timeline_server: Any) -> None:
    page, _ = tab
    _, taken = timeline_server
    page.goto("/")
    scrubber = page.locator("#scrubber")
    expect(scrubber).to_be_visible()
    wanted = sorted({t.strftime("%Y-%m") for t in taken.values() if t}, reverse=True)
    listed = [b.get_attribute("data-month") for b in scrubber.locator(".scrub-month").all()]
    assert listed == [*wanted, "undated"]

    target = scrubber.locator('.scrub-month[data-month="2022-03"]')
    target.scroll_into_view_if_needed()
    target.click()
    expect(page.locator("#status")).to_contain_text("from March 2022")
    first_month = page.locator("#results .month-head").first
    expect(first_month).to_have_attribute("data-month", "2022-03")
    names = _check_grouping(_grid_sequence(page), taken)
    in_march = sorted(
        (n for n, t in taken.items() if t and t.strftime("%Y-%m") == "2022-03"),
        key=lambda n: taken[n],
        reverse=True,
    )
    shown = min(len(names), len(in_march))  # the first page, or the whole month
    assert shown >= 40 and names[:shown] == in_march[:shown]  # from its newest picture on

    # and back to the newest: the scrubber's first month
    scrubber.locator(".scrub-month").first.click()
    expect(page.locator("#results .month-head").first).to_have_attribute("data-month", "2024-12")


def test_scrolling_reaches_the_last_of_2500_pictures_without_an_error(
    tab: tuple[Any, str], timeline_server: Any
) -> None:
    page, _ = tab
    _, taken = timeline_server
    page.goto("/")
    tiles = page.locator("#results .tile-btn")
    expect(tiles.first).to_be_visible()
    seen = 0
    reloads = 0
    for _ in range(600):  # 63 pages of 40; each scroll asks for at most one
        count = tiles.count()
        if count == len(taken):
            break
        if count < seen:  # the grid started over (new pictures arrived while at its top)
            reloads += 1
            assert reloads <= 2, "the timeline keeps starting over while scrolled"
        seen = count
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        page.wait_for_timeout(60)
    expect(tiles).to_have_count(len(taken))
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#load-more")).to_be_hidden()
    names = _check_grouping(_grid_sequence(page), taken)
    assert sorted(names) == sorted(taken)  # each picture once
    assert names[-UNDATED:] == sorted(n for n, t in taken.items() if t is None)
    expect(page.locator("#results .month-head").last).to_have_text("Undated")


def _overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"] - 0.5
        and b["x"] < a["x"] + a["width"] - 0.5
        and a["y"] < b["y"] + b["height"] - 0.5
        and b["y"] < a["y"] + a["height"] - 0.5
    )


def test_the_top_bar_is_one_row_of_labelled_controls_that_do_not_overlap(
    tab: tuple[Any, str], timeline_server: Any
) -> None:
    page, kind = tab
    page.goto("/")
    expect(page.locator("#results .tile-btn").first).to_be_visible()
    # every visible control of the bar, measured at one instant (and again until the layout is
    # still: buttons other views add may appear once their data has loaded)
    measure = """() => Array.from(document.querySelectorAll(
        'header.topbar .brand, header.topbar .search-box, header.topbar > button,'
        + ' header.topbar .actions > button')).filter((e) => e.checkVisibility())
        .map((e) => { const r = e.getBoundingClientRect();
          return { x: r.x, y: r.y, width: r.width, height: r.height,
                   button: e.tagName === 'BUTTON', words: e.innerText.trim() }; })"""
    controls = page.evaluate(measure)
    for _ in range(20):
        page.wait_for_timeout(300)
        again = page.evaluate(measure)
        if again == controls:
            break
        controls = again
    bar = page.locator("header.topbar").bounding_box()
    assert bar is not None and bar["height"] <= 64, bar
    boxes = []
    for box in controls:
        # inside the bar, on its one row
        assert box["y"] >= bar["y"] - 0.5, box
        assert box["y"] + box["height"] <= bar["y"] + bar["height"] + 0.5, box
        assert box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"], box
        if box["button"]:
            assert box["words"], f"a button in the top bar shows no words: {box}"
        boxes.append(box)
    assert len(boxes) >= 3
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not _overlaps(a, b), (a, b)

    if kind == "phone":  # the other actions are in the labelled Menu, each with its words
        menu = page.locator("#menu-toggle")
        expect(menu).to_have_accessible_name("Menu")
        expect(page.locator("#ingest-toggle")).to_be_hidden()
        menu.click()
        expect(menu).to_have_attribute("aria-expanded", "true")
        items = page.locator("#actions > button")
        for label in ("Duplicates", "Removed", "Add folder"):
            expect(items.filter(has_text=label)).to_be_visible()
        item_boxes = [b.bounding_box() for b in items.all()]
        for i, a in enumerate(item_boxes):
            for b in item_boxes[i + 1 :]:
                assert not _overlaps(a, b), (a, b)
        page.keyboard.press("Escape")
        expect(menu).to_have_attribute("aria-expanded", "false")
