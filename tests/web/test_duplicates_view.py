"""The gallery's Duplicates view in Chromium against a real `clipsearch serve`: a copy added to
the library is grouped with its original (found by the job a finished ingest queues), "Keep this
one" removes the copy through the remove API, and the jobs panel names a file that failed with
its reason. The library is put back as it was at the end (restore, then the files go)."""

from __future__ import annotations

import re
import shutil
import time
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def _photo(seed: int, size: int = 160) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    arr = np.zeros((size, size, 3))
    for c in range(3):
        a, b, p = rng.uniform(-2, 2, 3)
        arr[..., c] = 0.5 + 0.4 * np.sin(4 * (a * x + b * y) + 6 * p)
    return Image.fromarray((arr * 255).clip(0, 255).astype(np.uint8), "RGB")


def _post(server: Any, path: str, json: Any = None) -> Any:
    r = httpx.post(
        server.url + path,
        json=json,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert r.status_code in (200, 202), r.text
    return r.json()


def _wait_job(server: Any, job_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = server.api(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.25)


def _wait_groups(server: Any, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        page = server.api("/api/duplicates", limit=200).json()
        for g in page["items"]:
            mine = any(m["image"]["path"].endswith("/" + name) for m in g["members"])
            if mine and not page["stale"]:
                return g
        if time.monotonic() > deadline:
            pytest.fail(
                f"no duplicates group with {name} (last page: {page}):\n{server.log_tail()}"
            )
        time.sleep(0.25)


def test_keep_one_of_a_copy_and_see_why_a_file_failed(page: Any, live_server: Any) -> None:
    lib = live_server.library
    folder = lib.root / "dups"
    folder.mkdir()
    # a textured picture of its own (the fixture's flat drawings are alike to the tiny model and
    # to a picture hash, so they may group with each other as near duplicates)
    original = "sunset.jpg"
    copy = "sunset (copy).jpg"
    _photo(5).save(folder / original, quality=90)
    shutil.copy(folder / original, folder / copy)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    try:
        job = _post(live_server, "/api/ingest", {"path": str(folder)})
        done = _wait_job(live_server, job["id"])
        assert done["state"] == "done" and done["failed"] == 1, done
        group = _wait_groups(live_server, copy)  # the worker queued the duplicates job itself
        assert group["kind"] == "exact" and len(group["members"]) == 2, group
        copy_id = next(
            m["image"]["id"] for m in group["members"] if m["image"]["path"].endswith(copy)
        )

        page.goto("/")
        # the jobs panel: the failed file with its path and reason
        page.locator("#ingest-toggle").click()
        row = page.locator("#jobs li.job").filter(has_text=str(folder)).first
        expect(row).to_contain_text("1 failed")
        # finished with a file it could not read: amber, its problems listed open
        expect(row).to_have_attribute("data-state", "partial")
        expect(row.locator("details")).to_have_attribute("open", "")
        failure = row.locator(".job-errors li")
        expect(failure).to_contain_text("broken.jpg")
        assert len(failure.inner_text().strip()) > len(str(folder / "broken.jpg")) + 3  # a reason

        # the Duplicates view: the copy and its original in one group, with why
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Duplicates", exact=True).click()
        dialog = page.locator("#duplicates-view")
        expect(dialog).to_be_visible()
        grp = dialog.locator(".dup-group").filter(has_text=copy)
        expect(grp).to_have_count(1)
        expect(grp.locator(".dup-kind")).to_have_text("Exact copies")
        expect(grp).to_contain_text("the same file content as image")
        expect(grp.locator(".dup-name")).to_have_count(2)
        # how "the same picture" was decided for this library, in words (measured on its own
        # pictures, or exact copies only where its model cannot tell them apart)
        how = dialog.locator("#duplicates-how")
        expect(how).to_be_visible()
        expect(how).to_have_text(re.compile(r"measured on your own pictures|Only exact copies"))
        assert "copies" in (how.get_attribute("title") or "")
        grp.locator("img").first.evaluate(
            "img => img.complete && img.naturalWidth > 0 ? true"
            " : new Promise((ok, fail) => { img.onload = () => ok(true); img.onerror = fail; })"
        )
        page.once("dialog", lambda d: d.accept())
        grp.get_by_role("button", name=f"Keep {original}, remove the others of this group").click()
        expect(grp).to_have_count(0)
        expect(page.locator("#duplicates-status")).to_contain_text("Removed 1 image")
        assert live_server.api(f"/api/images/{copy_id}").status_code == 404
        assert any(
            r["image_id"] == copy_id for r in live_server.api("/api/removed").json()["items"]
        )
        # similar shots are a tab of their own
        dialog.get_by_role("button", name="Similar shots").click()
        expect(dialog.get_by_role("button", name="Similar shots")).to_have_attribute(
            "aria-pressed", "true"
        )
        page.locator("#duplicates-close").click()
        expect(dialog).to_be_hidden()
    finally:
        # put the library back: restore the removal, then drop the files and rescan
        for r in live_server.api("/api/removed").json()["items"]:
            if "/dups/" in r["path"]:
                for j in _post(live_server, f"/api/removed/{r['id']}/restore")["jobs"]:
                    _wait_job(live_server, j["id"])
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        _wait_job(live_server, _post(live_server, "/api/ingest", {"path": str(folder)})["id"])
        folder.rmdir()
