"""The gallery in a real browser (Debian's Chromium via Playwright) against a live server.

What a user does: search as they type (and share the URL, go back and forward), open an image,
look at similar ones, search by an image (file picker, drop, paste), add a folder and watch it
being indexed (after the sign-in page), use the keyboard, use a phone. Expected values come
from the files the fixture generated or from the API itself, never from the page under test.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PAGE_SIZE = 40  # the gallery's page (app.js PAGE)
SCORE = re.compile(r"^-?\d\.\d\d$")


def tiles(page: Any) -> Any:
    return page.locator("#results .tile-btn")


def tile_name(label: str) -> str:
    """The file name in a tile's accessible name ("name, relevance 0.31" or "name")."""
    return re.sub(r", relevance -?\d\.\d\d$", "", label)


def tile_names(page: Any) -> list[str]:
    return [tile_name(t.get_attribute("aria-label") or "") for t in tiles(page).all()]


def find_tile(page: Any, name: str) -> Any:
    """The tile of ``name`` in the current grid, loading more pages (Load more) until it shows."""
    busy = page.locator("#results")
    while True:
        # a page may be loading (infinite scroll hides "Load more" meanwhile): let it land first
        expect(busy).to_have_attribute("aria-busy", "false")
        seen = tiles(page).count()
        for t in tiles(page).all():
            if tile_name(t.get_attribute("aria-label") or "") == name:
                return t
        more = page.locator("#load-more")
        if more.is_visible():
            # the scroll observer may start the same page first and hide the button meanwhile:
            # a click then asks for nothing more, and the page lands all the same
            more.dispatch_event("click")
            expect(tiles(page)).not_to_have_count(seen)
            continue
        # hidden: the grid is complete, or the scroll observer started a page just now
        page.wait_for_timeout(300)
        expect(busy).to_have_attribute("aria-busy", "false")
        if tiles(page).count() == seen and not more.is_visible():
            pytest.fail(f"{name!r} is not in the gallery (saw {tile_names(page)})")


def find_tile_soon(page: Any, name: str, timeout_s: float = 15.0) -> Any:
    """The tile of ``name`` once the gallery shows it by itself: it polls the jobs every second
    and refreshes when one finishes, so an image the API already returns may take that long to
    appear (the test never reloads the page for it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return find_tile(page, name)
        except pytest.fail.Exception:
            if time.monotonic() > deadline:
                raise
            page.wait_for_timeout(500)


def library_total(server: Any) -> int:
    return int(server.api("/api/images", limit=1).json()["total"])


def jobs_settled(server: Any, timeout_s: float = 120.0) -> None:
    """Until the server runs no job: a job that ends while a page is open refreshes its grid
    (new pictures), which would start a test's scrolling over from the top."""
    deadline = time.monotonic() + timeout_s
    while any(j["state"] in ("queued", "running") for j in server.api("/api/jobs").json()):
        assert time.monotonic() < deadline, "the server's jobs did not end"
        time.sleep(0.2)


def scroll_to_the_end(page: Any, total: int, timeout_s: float = 30.0) -> None:
    """Scroll to the end of the grid as a person does, again while more pages come, until the
    grid holds ``total`` tiles (never clicking "Load more")."""
    deadline = time.monotonic() + timeout_s
    while tiles(page).count() < total and time.monotonic() < deadline:
        page.locator("#sentinel").scroll_into_view_if_needed()
        page.wait_for_timeout(250)
    expect(tiles(page)).to_have_count(total)


def wait_for_grid(page: Any) -> None:
    expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
    expect(tiles(page).first).to_be_visible()


def columns(page: Any) -> int:
    """Tiles on the first row, measured from their boxes in one look at the page (the grid may
    be redrawn between two looks when a job ends: waits until it holds tiles again)."""
    handle = page.wait_for_function(
        """() => {
            const tops = [...document.querySelectorAll('#results .tile-btn')]
                .slice(0, 12).map(t => Math.round(t.getBoundingClientRect().top));
            return tops.length ? tops.filter(y => y === tops[0]).length : null;
        }"""
    )
    return int(handle.json_value())


def no_horizontal_scroll(page: Any) -> bool:
    return bool(
        page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
            " && document.body.scrollWidth <= document.documentElement.clientWidth"
        )
    )


# --- search -----------------------------------------------------------------------------------


def test_typing_searches_ranks_by_score_and_puts_the_query_in_the_url(
    page: Any, live_server: Any, screenshot: Any
) -> None:
    page.goto("/")
    wait_for_grid(page)
    total = library_total(live_server)
    expect(page.locator("#status")).to_have_text(f"{total} images in the library")

    page.locator("#q").press_sequentially("a red circle", delay=15)
    expect(page).to_have_url(re.compile(r"/\?q=a\+red\+circle$"))
    expect(page.locator("#status")).to_contain_text("for “a red circle”")
    wait_for_grid(page)

    # the server's ranking, in order, every page of it (the grid fetches more as it scrolls)
    api_hits = live_server.api("/api/search", q="a red circle", k=500).json()["results"]
    assert len(api_hits) > PAGE_SIZE
    expect(tiles(page)).to_have_count(len(api_hits))
    assert [t.get_attribute("data-id") for t in tiles(page).all()] == [
        str(h["id"]) for h in api_hits
    ]
    # tiles show the pictures only: no number, bar or badge over them (the numbers are in the
    # detail view, one click away)
    assert page.locator("#results .score, #results .match-badge, #results .name").count() == 0
    assert all(not t.strip() for t in tiles(page).all_inner_texts())
    screenshot(page, "search-results")
    tiles(page).first.click()
    why = page.locator("#detail-why")
    expect(why).to_be_visible()
    first = api_hits[0]
    if "semantic" in first["match"]:  # in words, the band the server decided from the relevance
        assert first["band"] in ("strong", "fair", "weak")
        expect(why.locator(".why-text")).to_contain_text(
            f"looks like what you described: {first['band']}"
        )
    if "filename" in first["match"]:
        expect(why.locator(".why-text")).to_contain_text("the file name")
    numbers = why.locator(".why-numbers")
    expect(numbers).to_be_hidden()
    why.locator("summary").click()
    relevance = numbers.locator("div", has=page.locator("dt", has_text="Relevance")).locator("dd")
    expect(relevance).to_have_text(f"{first['relevance']:.2f}")
    assert SCORE.match(relevance.inner_text())
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()

    # a shared link opens the same search
    page.reload()
    expect(page.locator("#q")).to_have_value("a red circle")
    expect(tiles(page).first).to_have_attribute("data-id", str(api_hits[0]["id"]))

    # a second search is a new history entry: back and forward move between them
    page.locator("#q").fill("blue square")
    expect(page).to_have_url(re.compile(r"/\?q=blue\+square$"))
    expect(page.locator("#status")).to_contain_text("for “blue square”")
    page.go_back()
    expect(page).to_have_url(re.compile(r"/\?q=a\+red\+circle$"))
    expect(page.locator("#q")).to_have_value("a red circle")
    expect(page.locator("#status")).to_contain_text("for “a red circle”")
    page.go_back()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("#q")).to_have_value("")
    expect(page.locator("#status")).to_have_text(
        f"{library_total(live_server)} images in the library"
    )
    page.go_forward()
    expect(page.locator("#q")).to_have_value("a red circle")
    expect(tiles(page).first).to_have_attribute("data-id", str(api_hits[0]["id"]))


def test_a_threshold_nothing_reaches_shows_the_empty_state_and_can_be_reset(
    page: Any, live_server: Any
) -> None:
    assert live_server.api("/api/search", q="a photo", min_score=1.0).json()["results"] == []
    page.goto("/?q=a+photo")
    wait_for_grid(page)
    slider = page.locator("#min-score")
    slider.focus()
    page.keyboard.press("End")  # the slider's maximum: relevance >= 1.00
    expect(page.locator("#min-score-value")).to_have_text("1.00")
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#empty-title")).to_have_text("Nothing above relevance 1.00")
    expect(tiles(page)).to_have_count(0)
    expect(page).to_have_url(re.compile(r"[?&]min=1\.00"))

    page.get_by_role("button", name="Reset threshold").click()
    expect(page.locator("#min-score-value")).to_have_text("any")
    expect(page.locator("#empty")).to_be_hidden()
    expect(tiles(page).first).to_be_visible()
    expect(page).not_to_have_url(re.compile(r"min="))


def test_an_api_error_is_shown_with_the_servers_message(page: Any, live_server: Any) -> None:
    response = live_server.api("/api/images/987654321/similar")
    assert response.status_code == 404
    detail = response.json()["detail"]
    page.goto("/?like=987654321")
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.locator("#error-text")).to_have_text(detail)
    expect(tiles(page)).to_have_count(0)


# --- detail view ------------------------------------------------------------------------------


def test_detail_view_shows_the_full_image_metadata_and_more_like_this(
    page: Any, live_server: Any, screenshot: Any
) -> None:
    lib = live_server.library
    page.goto("/")
    wait_for_grid(page)
    name = "red-circle.png"
    target = find_tile(page, name)
    image_id = target.get_attribute("data-id")
    target.click()

    dialog = page.locator("#detail")
    expect(dialog).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text(name)
    meta = page.locator("#detail-meta")
    width, height = lib.sizes[name]
    size = (lib.photos / name).stat().st_size
    kb = size / 1024
    expect(meta.locator("div", has=page.locator("dt", has_text="Path")).locator("dd")).to_have_text(
        re.compile(re.escape(f"/{name}") + "$")
    )
    expect(
        meta.locator("div", has=page.locator("dt", has_text="Dimensions")).locator("dd")
    ).to_have_text(f"{width} × {height}")
    expect(
        meta.locator("div", has=page.locator("dt", has_text="Format")).locator("dd")
    ).to_have_text("PNG")
    expect(meta.locator("div", has=page.locator("dt", has_text="Size")).locator("dd")).to_have_text(
        f"{kb:.1f} KB" if kb < 10 else f"{kb:.0f} KB"
    )
    expect(meta.locator("dt", has_text="Date")).to_be_visible()

    # the full file, not the thumbnail
    img = page.locator("#detail-img")
    expect(img).to_have_attribute("src", re.compile(rf"/api/v1/images/{image_id}/file$"))
    assert page.evaluate("document.getElementById('detail-img').naturalWidth") == width

    # more like this: the API's neighbours, the image itself left out
    similar = live_server.api(f"/api/images/{image_id}/similar", k=12).json()["results"]
    strip = page.locator("#similar .strip-btn")
    expect(strip).to_have_count(min(12, len(similar)))
    assert image_id not in [b.get_attribute("data-id") for b in strip.all()]
    expect(strip.first).to_have_attribute("data-id", str(similar[0]["id"]))
    screenshot(page, "detail-view")

    strip.first.click()
    expect(page.locator("#detail-title")).to_have_text(similar[0]["path"].rsplit("/", 1)[-1])
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_show_all_similar_lists_neighbours_in_the_grid_with_a_shareable_url(
    page: Any, live_server: Any
) -> None:
    page.goto("/")
    wait_for_grid(page)
    first = tiles(page).first
    image_id = first.get_attribute("data-id")
    name = tile_name(first.get_attribute("aria-label"))
    first.click()
    page.get_by_role("button", name="Show all similar").click()
    expect(page.locator("#detail")).to_be_hidden()
    expect(page).to_have_url(re.compile(rf"/\?like={image_id}$"))
    expect(page.locator("#query-chip-label")).to_have_text(f"Like {name}")
    wait_for_grid(page)
    similar = live_server.api(f"/api/images/{image_id}/similar", k=500).json()["results"]
    expect(tiles(page)).to_have_count(len(similar))
    ids = [t.get_attribute("data-id") for t in tiles(page).all()]
    assert ids == [str(h["id"]) for h in similar]
    assert image_id not in ids

    # clearing the chip goes back to the whole library
    page.get_by_role("button", name="Stop showing similar images").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("#query-chip")).to_be_hidden()
    expect(page.locator("#status")).to_contain_text("images in the library")


# --- search by image --------------------------------------------------------------------------


def same_image(name: str) -> re.Pattern[str]:
    """The tile of the image a query picture is a copy of (its accessible name: the file name;
    the tile itself shows the picture only)."""
    return re.compile("^" + re.escape(name) + "$")


def _file_transfer_js() -> str:
    return """async ([b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, { type: 'image/png' }));
        return dt;
    }"""


def test_search_by_an_image_from_the_picker_a_drop_or_a_paste(page: Any, live_server: Any) -> None:
    lib = live_server.library
    page.goto("/")
    wait_for_grid(page)

    # file picker: a byte-identical copy of red-circle.png finds it first, at relevance ~1
    page.set_input_files("#file-input", str(lib.query_copy))
    expect(page.locator("#query-chip")).to_be_visible()
    expect(page.locator("#query-chip-label")).to_have_text("Like query-image.png")
    expect(tiles(page).first).to_have_attribute("aria-label", same_image("red-circle.png"))
    expect(page.locator("#status")).to_contain_text("like query-image.png")
    # at relevance about 1: its detail view says it looks like the picture, strongly
    tiles(page).first.click()
    expect(page.locator("#detail-why")).to_contain_text("looks like your picture: strong")
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()

    # drag and drop onto the page
    dropped = base64.b64encode((lib.photos / "green-square.png").read_bytes()).decode()
    transfer = page.evaluate_handle(_file_transfer_js(), [dropped, "dropped.png"])
    page.dispatch_event("body", "dragenter", {"dataTransfer": transfer})
    expect(page.locator("#drop-overlay")).to_be_visible()
    page.dispatch_event("body", "drop", {"dataTransfer": transfer})
    expect(page.locator("#drop-overlay")).to_be_hidden()
    expect(page.locator("#query-chip-label")).to_have_text("Like dropped.png")
    expect(tiles(page).first).to_have_attribute("aria-label", same_image("green-square.png"))

    # paste from the clipboard
    pasted = base64.b64encode((lib.photos / "cyan-triangle.png").read_bytes()).decode()
    page.evaluate(
        """async ([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: 'image/png' }));
            document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
        }""",
        [pasted, "pasted.png"],
    )
    expect(page.locator("#query-chip-label")).to_have_text("Like pasted.png")
    expect(tiles(page).first).to_have_attribute("aria-label", same_image("cyan-triangle.png"))

    # back returns to the previous image search
    page.go_back()
    expect(page.locator("#query-chip-label")).to_have_text("Like dropped.png")
    expect(tiles(page).first).to_have_attribute("aria-label", same_image("green-square.png"))


# --- ingest panel -----------------------------------------------------------------------------


def test_sign_in_page_then_ingest_a_folder_from_the_panel_with_progress_to_done(
    signed_out_page: Any, live_server: Any, screenshot: Any
) -> None:
    page = signed_out_page
    lib = live_server.library
    auth = {"Authorization": f"Bearer {live_server.token}"}
    outside = httpx.post(
        live_server.url + "/api/ingest", json={"path": "/etc", "recursive": True}, headers=auth
    )
    assert outside.status_code == 403

    # not signed in: the gallery sends the browser to the sign-in page, photos stay closed
    page.goto("/")
    expect(page).to_have_url(live_server.url + "/signin.html")
    assert page.request.get("/api/images").status == 401
    page.locator("#signin-token").fill("wrong-token-wrong-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("not the server's token")
    page.locator("#signin-token").fill(live_server.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(live_server.url + "/")
    wait_for_grid(page)
    # the session is an HttpOnly cookie: the page's script cannot read it, nor the token
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["clipsearch_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert "clipsearch_session" not in page.evaluate("document.cookie")
    assert live_server.token not in page.evaluate("JSON.stringify(sessionStorage)")

    page.locator("#ingest-toggle").click()
    expect(page.locator("#ingest-panel")).to_be_visible()
    expect(page.locator("#ingest-path")).to_be_focused()
    # signed in: the change goes through (cookie + CSRF header), the server refuses /etc
    page.locator("#ingest-path").fill("/etc")
    page.locator("#ingest-submit").click()
    expect(page.locator("#ingest-error")).to_have_text(outside.json()["detail"])

    # an allowed folder: a job appears and its progress bar runs to done
    before = library_total(live_server)
    page.locator("#ingest-path").fill(str(lib.incoming))
    page.locator("#ingest-submit").click()
    expect(page.locator("#ingest-error")).to_be_hidden()
    job = page.locator("#jobs .job").first
    expect(job.locator(".job-target")).to_contain_text(str(lib.incoming))
    expect(job).to_have_attribute("data-state", "done", timeout=180_000)
    bar = job.locator("progress")
    expect(bar).to_have_attribute("max", str(lib.incoming_count))
    assert bar.evaluate("p => p.value") == lib.incoming_count
    expect(job.locator(".job-counts")).to_have_text(f"{lib.incoming_count} of {lib.incoming_count}")
    expect(page.locator("#jobs-badge")).to_be_hidden()
    screenshot(page, "ingest-panel")

    # the grid and the footer pick up the new images by themselves
    after = library_total(live_server)
    assert after == before + lib.incoming_count
    expect(page.locator("#status")).to_have_text(f"{after} images in the library")
    expect(page.locator("#footer")).to_contain_text(f"{after} images")

    # "Keep watching" was on: the folder is listed as watched, and a photo copied into it
    # shows up in the gallery with no further action (the server's watcher queues the ingest)
    watched = page.locator("#folders .folder").filter(has_text=str(lib.incoming))
    expect(watched).to_have_count(1)
    from PIL import Image as PILImage

    PILImage.new("RGB", (80, 60), (250, 120, 10)).save(lib.incoming / "dropped-later.png")
    # the server first (a failure then says which side missed it), then the page
    deadline = time.monotonic() + 120
    while library_total(live_server) != after + 1:
        if time.monotonic() > deadline:
            pytest.fail(
                "the photo copied into the watched folder never reached the library; jobs: "
                f"{live_server.api('/api/jobs').json()[:4]}, folders: "
                f"{live_server.api('/api/folders').json()}\n{live_server.log_tail()}"
            )
        time.sleep(0.25)
    expect(page.locator("#status")).to_have_text(
        f"{after + 1} images in the library", timeout=30_000
    )
    expect(watched).to_have_attribute("data-state", "watching", timeout=30_000)
    # stop watching: the folder leaves the list, its images stay
    page.get_by_role("button", name=f"Stop watching {lib.incoming}").click()
    expect(watched).to_have_count(0)
    assert library_total(live_server) == after + 1


# --- keyboard ---------------------------------------------------------------------------------


def test_keyboard_only_search_move_open_step_and_close(page: Any, live_server: Any) -> None:
    page.goto("/")
    wait_for_grid(page)
    page.locator("body").click(position={"x": 5, "y": 300})  # focus the page, not an input
    page.keyboard.press("/")
    expect(page.locator("#q")).to_be_focused()
    page.keyboard.type("green")
    expect(page).to_have_url(re.compile(r"/\?q=green$"))
    expect(page.locator("#status")).to_contain_text("for “green”")
    wait_for_grid(page)

    page.keyboard.press("ArrowDown")
    expect(tiles(page).nth(0)).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(tiles(page).nth(1)).to_be_focused()
    cols = columns(page)
    assert cols >= 3
    page.keyboard.press("ArrowDown")
    expect(tiles(page).nth(1 + cols)).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(tiles(page).nth(1)).to_be_focused()

    names = tile_names(page)
    page.keyboard.press("Enter")
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text(names[1])
    page.keyboard.press("ArrowRight")
    expect(page.locator("#detail-title")).to_have_text(names[2])
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#detail-title")).to_have_text(names[0])
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    expect(tiles(page).nth(0)).to_be_focused()


# --- hostile names ----------------------------------------------------------------------------


def test_file_names_with_markup_are_shown_as_text(page: Any, live_server: Any) -> None:
    page.goto("/")
    wait_for_grid(page)
    for name in ("<img src=x onerror=window.__pwned=1>.png", "quote\" ' & <b>bold.png"):
        target = find_tile(page, name)
        target.click()
        expect(page.locator("#detail-title")).to_have_text(name)
        page.keyboard.press("Escape")
        expect(page.locator("#detail")).to_be_hidden()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("#results b, #detail b").count() == 0


def test_remove_an_image_from_the_detail_view(page: Any, live_server: Any) -> None:
    page.goto("/")
    wait_for_grid(page)
    name = "gradient-07.png"
    target = find_tile(page, name)
    image_id = target.get_attribute("data-id")
    target.click()
    expect(page.locator("#detail-title")).to_have_text(name)
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Remove from library").click()
    expect(page.locator("#detail")).to_be_hidden()
    expect(page.locator("#status")).to_have_text(f"Removed {name} from the library.")
    expect(page.locator(f'#results .tile-btn[data-id="{image_id}"]')).to_have_count(0)
    assert live_server.api(f"/api/images/{image_id}").status_code == 404

    # The Removed view lists it with its thumbnail; Restore brings it back (a new id, once the
    # server's worker scanned its folder again), and the view no longer lists it.
    page.get_by_role("button", name="Removed").click()
    row = page.locator("#removed-list li").filter(has_text=name)
    expect(row).to_have_count(1)
    expect(row.locator("img")).to_be_visible()
    row.locator("img").evaluate(  # the kept thumbnail loads (a broken image has no width)
        "img => img.complete && img.naturalWidth > 0 ? true"
        " : new Promise((ok, fail) => { img.onload = () => ok(true); img.onerror = fail; })"
    )
    page.get_by_role("button", name=f"Restore {name}").click()
    expect(row).to_have_count(0)
    expect(page.locator("#status")).to_contain_text(f"Restored {name}")
    page.locator("#removed-close").click()
    deadline = time.monotonic() + 120
    while True:
        items = live_server.api("/api/images", limit=500).json()["items"]
        back = [i for i in items if i["path"].endswith("/" + name) and i["state"] == "ready"]
        if back or time.monotonic() > deadline:
            break
        page.wait_for_timeout(200)
    assert back and str(back[0]["id"]) != image_id, "the restored image did not come back"
    assert live_server.api("/api/removed").json()["items"] == []
    # and it is back in the grid (under its new id) once the gallery saw the restore's job end
    assert find_tile_soon(page, name).get_attribute("data-id") == str(back[0]["id"])


# --- phone ------------------------------------------------------------------------------------


def test_phone_width_fits_without_horizontal_scroll_and_scrolls_for_more(
    phone: Any, live_server: Any, screenshot: Any
) -> None:
    jobs_settled(live_server)  # an earlier test's job ending would refresh the grid mid-scroll
    total = library_total(live_server)
    assert total > PAGE_SIZE  # the library is longer than one page
    phone.goto("/")
    wait_for_grid(phone)
    expect(tiles(phone)).to_have_count(PAGE_SIZE)
    assert columns(phone) == 3
    assert no_horizontal_scroll(phone)
    search_box = phone.locator("#q").bounding_box()
    assert search_box["x"] >= 0 and search_box["x"] + search_box["width"] <= 390

    # infinite scroll: reaching the end of the grid loads the next page
    scroll_to_the_end(phone, total)
    expect(phone.locator("#load-more")).to_be_hidden()
    expect(phone.locator("#status")).to_have_text(f"{total} images in the library")

    phone.locator("#q").fill("a photo")
    wait_for_grid(phone)
    expect(phone.locator("#status")).to_contain_text("for “a photo”")
    assert no_horizontal_scroll(phone)
    screenshot(phone, "phone")

    tiles(phone).first.click()
    dialog = phone.locator("#detail")
    expect(dialog).to_be_visible()
    box = dialog.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    expect(phone.locator("#detail-close")).to_be_in_viewport()
    phone.locator("#detail-close").click()
    expect(dialog).to_be_hidden()

    phone.locator("#menu-toggle").click()  # on a phone the actions are in the labelled Menu
    phone.locator("#ingest-toggle").click()
    panel = phone.locator("#ingest-panel")
    expect(panel).to_be_visible()
    box = panel.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert no_horizontal_scroll(phone)


# --- filters ----------------------------------------------------------------------------------


def _filtered_ids(server: Any, text: str, filters: dict[str, Any]) -> list[str]:
    """What POST /api/search answers for ``text`` under ``filters`` (every result, in order)."""
    response = httpx.post(
        server.url + "/api/search",
        json={"text": text, "k": 500, "filters": filters},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [str(h["id"]) for h in response.json()["results"]]


def url_params(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def tile_ids(page: Any) -> list[str]:
    return [t.get_attribute("data-id") for t in tiles(page).all()]


def test_filters_narrow_a_search_go_into_the_url_survive_a_reload_and_reset(
    page: Any, live_server: Any, screenshot: Any
) -> None:
    lib = live_server.library
    everything = [
        str(h["id"]) for h in live_server.api("/api/search", q="a photo", k=500).json()["results"]
    ]
    in_trips = _filtered_ids(live_server, "a photo", {"folder": str(lib.trips)})
    jpegs = _filtered_ids(live_server, "a photo", {"formats": ["JPEG"]})
    # expected from the files on disk, not from the page
    assert len(in_trips) == len(lib.trip_names) < len(everything)
    jpeg_names = {n for n in lib.names if n.endswith(".jpg")}
    assert len(jpegs) == len(jpeg_names) > 0

    page.goto("/?q=a+photo")
    wait_for_grid(page)
    expect(tiles(page)).to_have_count(len(everything))
    expect(page.locator("#filters")).to_be_hidden()

    # folder: typed into the panel the Filters button opens, applied with Enter
    page.get_by_role("button", name="Filters", exact=True).click()
    toggle = page.locator("#filters-toggle")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    folder = page.get_by_label("Folder", exact=True)
    expect(folder).to_be_focused()
    folder.fill(str(lib.trips))
    folder.press("Enter")
    expect(page).to_have_url(re.compile(r"[?&]folder="))
    assert url_params(page) == {"q": ["a photo"], "folder": [str(lib.trips)]}
    expect(tiles(page)).to_have_count(len(in_trips))
    assert tile_ids(page) == in_trips
    assert set(tile_names(page)) == set(lib.trip_names)
    expect(page.locator("#status")).to_contain_text(f"in {lib.trips}")
    expect(page.locator("#filters-badge")).to_have_text("1")
    screenshot(page, "filters")

    # the link restores the filter and the same results
    page.reload()
    expect(page.locator("#filters")).to_be_visible()
    expect(page.get_by_label("Folder", exact=True)).to_have_value(str(lib.trips))
    expect(page.locator("#q")).to_have_value("a photo")
    expect(tiles(page)).to_have_count(len(in_trips))
    assert tile_ids(page) == in_trips

    # reset: the whole library again, and a clean URL
    page.get_by_role("button", name="Reset filters").click()
    expect(page).to_have_url(re.compile(r"/\?q=a\+photo$"))
    expect(page.get_by_label("Folder", exact=True)).to_have_value("")
    expect(page.locator("#filters-badge")).to_be_hidden()
    expect(tiles(page)).to_have_count(len(everything))

    # formats, keyboard only: Space ticks JPEG, the grid keeps only the JPEG files
    jpeg_box = page.get_by_role("checkbox", name="JPEG")
    jpeg_box.focus()
    page.keyboard.press("Space")
    expect(jpeg_box).to_be_checked()
    expect(page).to_have_url(re.compile(r"[?&]fmt=JPEG$"))
    expect(tiles(page)).to_have_count(len(jpegs))
    assert tile_ids(page) == jpegs
    assert set(tile_names(page)) == jpeg_names
    page.reload()
    expect(page.get_by_role("checkbox", name="JPEG")).to_be_checked()
    expect(tiles(page)).to_have_count(len(jpegs))
    assert tile_ids(page) == jpegs

    # a capture date: the generated files carry none, so nothing is left; the empty state says
    # why and resets the filters
    assert _filtered_ids(live_server, "a photo", {"date_from": "2020-01-01"}) == []
    page.get_by_label("Taken from", exact=True).fill("2020-01-01")
    expect(page).to_have_url(re.compile(r"[?&]from=2020-01-01"))
    expect(page.locator("#empty-title")).to_have_text("No matches for “a photo” with these filters")
    expect(tiles(page)).to_have_count(0)
    page.locator("#empty-action").click()
    expect(page).to_have_url(re.compile(r"/\?q=a\+photo$"))
    expect(page.get_by_role("checkbox", name="JPEG")).not_to_be_checked()
    expect(page.get_by_label("Taken from", exact=True)).to_have_value("")
    expect(tiles(page)).to_have_count(len(everything))

    # Escape closes the panel and gives the focus back to its button
    page.get_by_label("Folder", exact=True).focus()
    page.keyboard.press("Escape")
    expect(page.locator("#filters")).to_be_hidden()
    expect(toggle).to_be_focused()


def test_filters_on_a_phone_from_a_shared_link(
    phone: Any, live_server: Any, screenshot: Any
) -> None:
    webp = _filtered_ids(live_server, "a photo", {"formats": ["WEBP"]})
    webp_names = {n for n in live_server.library.names if n.endswith(".webp")}
    assert len(webp) == len(webp_names) > 0
    phone.goto("/?q=a+photo&fmt=WEBP")
    panel = phone.locator("#filters")
    expect(panel).to_be_visible()  # a link with filters opens the panel
    expect(phone.get_by_role("checkbox", name="WebP")).to_be_checked()
    expect(tiles(phone)).to_have_count(len(webp))
    assert tile_ids(phone) == webp
    assert set(tile_names(phone)) == webp_names
    box = panel.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert no_horizontal_scroll(phone)
    screenshot(phone, "phone-filters")

    # collapsed behind the Filters button, which still shows that one is set
    toggle = phone.locator("#filters-toggle")
    toggle.click()
    expect(panel).to_be_hidden()
    expect(phone.locator("#filters-badge")).to_have_text("1")
    expect(toggle).to_have_attribute("aria-label", "Filters (1 active)")
    assert no_horizontal_scroll(phone)


def test_filters_narrow_more_like_this(page: Any, live_server: Any) -> None:
    """ "More like this" under a format filter: only WebP neighbours, as the API ranks them."""
    example = next(
        item
        for item in live_server.api("/api/images", limit=500).json()["items"]
        if not item["path"].endswith(".webp")
    )
    response = httpx.get(
        f"{live_server.url}/api/images/{example['id']}/similar",
        params={"k": 500, "format": "WEBP"},
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    expected = [str(h["id"]) for h in response.json()["results"]]
    webp_names = {n for n in live_server.library.names if n.endswith(".webp")}
    assert len(expected) == len(webp_names) > 0  # every WebP file, the example is not one

    page.goto(f"/?like={example['id']}&fmt=WEBP")
    expect(tiles(page)).to_have_count(len(expected))
    assert tile_ids(page) == expected
    assert set(tile_names(page)) == webp_names
    expect(page.locator("#status")).to_contain_text("WebP")
