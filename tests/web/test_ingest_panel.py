"""The ingest panel tells the truth (a real browser against the live server of conftest.py):
folders are picked from the server's own folder browser, which lists the allowed roots and the
folders under them with their picture counts and never anything above a root or behind a link
leading out; and a job that finished with files it could not read is amber, with each file and
why, never the green "done" of a clean job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def _browse(server: Any, path: str | None = None) -> httpx.Response:
    params = {} if path is None else {"path": path}
    return httpx.get(
        server.url + "/api/folders/browse",
        params=params,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )


def test_the_folder_browser_walks_the_allowed_roots_and_never_above(
    page: Any, live_server: Any, tmp_path: Path
) -> None:
    lib = live_server.library
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"not listed")
    escape = lib.root / "escape-link"
    escape.symlink_to(outside, target_is_directory=True)
    try:
        # the API: the roots, a root's folders by name with their counts, and refusals
        roots = _browse(live_server).json()
        assert roots["path"] is None and roots["parent"] is None
        assert str(lib.root) in [f["path"] for f in roots["folders"]]
        here = _browse(live_server, str(lib.root)).json()
        names = {f["name"]: f["images"] for f in here["folders"]}
        on_disk = [p for p in lib.incoming.iterdir() if p.suffix in (".png", ".jpg")]
        assert names["incoming"] == len(on_disk) >= lib.incoming_count
        assert "escape-link" not in names  # a link out of the root is never listed
        assert here["parent"] is None  # nothing above a root
        assert not any("." in name for name in names)  # folder names only, no file names
        for above in (str(lib.root / ".."), "/etc", str(escape), "relative/path"):
            refused = _browse(live_server, above)
            assert refused.status_code in (400, 403), (above, refused.text)

        # the panel: Browse, into the root, into a folder, Up, choose
        page.goto("/")
        page.locator("#ingest-toggle").click()
        page.locator("#folder-browse").click()
        browser_box = page.locator("#folder-browser")
        expect(browser_box).to_be_visible()
        up = page.locator("#folder-browser-up")
        expect(up).to_be_hidden()  # the list of roots: nothing above it
        browser_box.locator(f'.folder-entry[data-path="{lib.root}"]').click()
        expect(page.locator("#folder-browser-path")).to_contain_text(str(lib.root))
        incoming = browser_box.locator(f'.folder-entry[data-path="{lib.incoming}"]')
        expect(incoming).to_contain_text(f"{len(on_disk)} pictures")
        expect(browser_box.locator(".folder-entry", has_text="escape-link")).to_have_count(0)
        # Up from a root goes back to the roots, never to the root's parent folder
        up.click()
        expect(up).to_be_hidden()
        expect(browser_box.locator(f'.folder-entry[data-path="{lib.root.parent}"]')).to_have_count(
            0
        )
        browser_box.locator(f'.folder-entry[data-path="{lib.root}"]').click()
        browser_box.locator(f'.folder-entry[data-path="{lib.incoming}"]').click()
        expect(page.locator("#folder-browser-path")).to_contain_text(str(lib.incoming))
        page.locator("#folder-browser-choose").click()
        expect(page.locator("#ingest-path")).to_have_value(str(lib.incoming))
        expect(browser_box).to_be_hidden()
    finally:
        os.unlink(escape)


def test_a_job_with_files_it_could_not_read_is_amber_with_each_file_and_why(
    page: Any, live_server: Any
) -> None:
    from PIL import Image

    folder = live_server.library.root / "half-broken"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (90, 70), (30 + 90 * i, 140, 200)).save(folder / f"fine-{i}.png")
    broken = ["cut-short.jpg", "not-a-picture.png"]
    (folder / broken[0]).write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # a JPEG cut short
    (folder / broken[1]).write_bytes(b"plain text, not an image at all\n" * 4)

    page.goto("/")
    page.locator("#ingest-toggle").click()
    page.locator("#ingest-path").fill(str(folder))
    page.locator("#ingest-watch").uncheck()
    page.locator("#ingest-submit").click()
    expect(page.locator("#ingest-error")).to_be_hidden()
    job = page.locator("#jobs .job").filter(has_text=str(folder)).first
    expect(job).to_have_attribute("data-state", "partial", timeout=180_000)
    expect(job.locator(".job-state")).to_have_text("done with problems")
    # the bar is amber, not the green of a clean job
    warn = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--warn')")
    ok = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--ok')")
    bar_colour = job.locator("progress").evaluate(
        "p => getComputedStyle(p).getPropertyValue('accent-color')"
    )
    swatch = page.evaluate(
        "c => { const d = document.createElement('div'); d.style.color = c;"
        " document.body.append(d); const v = getComputedStyle(d).color; d.remove(); return v; }",
        warn.strip(),
    )
    assert bar_colour == swatch and warn.strip() != ok.strip()
    expect(job.locator(".job-counts")).to_contain_text("2 failed")
    # each file that failed, with why, listed open
    problems = job.locator("details")
    expect(problems).to_have_attribute("open", "")
    expect(problems.locator("summary")).to_have_text("2 files could not be added")
    rows = problems.locator(".job-errors li")
    expect(rows).to_have_count(2)
    for name in broken:
        row = rows.filter(has_text=name)
        expect(row).to_have_count(1)
        assert len(row.inner_text().replace(str(folder / name), "").strip()) > 5  # a reason


def test_a_watched_folders_problems_stay_listed_after_a_rescan_that_found_nothing_new(
    page: Any, live_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Issue 24: a rescan reports only new problems, so the folder's row lists its current ones
    (GET /api/v1/folders/{id}/problems), and the up-to-date line counts as the library does."""
    from PIL import Image

    folder = live_server.library.root / "watched-with-problems"
    folder.mkdir()
    Image.new("RGB", (90, 70), (200, 140, 30)).save(folder / "fine.png")
    (folder / "cut-short.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    outside = tmp_path_factory.mktemp("outside-the-root") / "elsewhere.png"
    Image.new("RGB", (90, 70), (20, 40, 200)).save(outside)
    os.symlink(outside, folder / "link-out.png")  # leads out of the allowed root

    page.goto("/")
    page.locator("#ingest-toggle").click()
    page.locator("#ingest-path").fill(str(folder))
    page.locator("#ingest-watch").check()
    page.locator("#ingest-submit").click()
    expect(page.locator("#ingest-error")).to_be_hidden()
    jobs = page.locator("#jobs .job").filter(has_text=str(folder))
    expect(jobs.first).to_have_attribute("data-state", "partial", timeout=180_000)

    # a second rescan: nothing new to report, so its job lists no problems...
    row = page.locator("#folders .folder").filter(has_text=str(folder))
    expect(row).to_have_count(1)
    folder_id = row.get_attribute("data-id")
    r = httpx.post(
        f"{live_server.url}/api/v1/folders/{folder_id}/scan",
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    expect(jobs).to_have_count(2, timeout=60_000)
    rescan = jobs.first  # the newest first
    expect(rescan).to_have_attribute("data-state", "done", timeout=180_000)
    expect(rescan.locator("details")).to_have_count(0)
    expect(rescan.locator(".job-counts")).to_have_text(
        "Up to date: 1 picture · 1 could not be read · 1 skipped"
    )
    # ...and the folder still says which files are not in the library, and why, each once
    problems = row.locator("details.folder-problems")
    expect(problems.locator("summary")).to_have_text("2 files could not be added")
    problems.locator("summary").click()
    items = problems.locator("li")
    expect(items).to_have_count(2)
    for name in ("cut-short.jpg", "link-out.png"):
        item = items.filter(has_text=name)
        expect(item).to_have_count(1)
        assert len(item.inner_text().split(name, 1)[1].strip()) > 5  # a reason
