"""The gallery's Duplicates view in Chromium against a real `clipsearch serve`: a copy added to
the library is grouped with its original (found by the job a finished ingest queues); the group's
compare view shows them side by side with resolution, file size, date, format and folder, the
suggested keeper first (the API's rule: the largest original, then the earliest date); "Keep this
one, remove the others" asks once and removes the copy through the remove API; and the jobs
panel names a file that failed with its reason. The library is put back as it was at the end
(restore, then the files go)."""

from __future__ import annotations

import os
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
        job = server.api(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.25)


def _wait_groups(server: Any, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        page = server.api("/api/v1/duplicates", limit=200).json()
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
    shutil.copy(folder / original, folder / copy)  # the same bytes, a newer file
    old = time.mktime((2020, 1, 1, 12, 0, 0, 0, 0, -1))
    os.utime(folder / original, (old, old))  # the original is the older file: the keeper
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    try:
        job = _post(live_server, "/api/v1/ingest", {"path": str(folder)})
        done = _wait_job(live_server, job["id"])
        assert done["state"] == "done" and done["failed"] == 1, done
        group = _wait_groups(live_server, copy)  # the worker queued the duplicates job itself
        assert group["kind"] == "exact" and len(group["members"]) == 2, group
        copy_id = next(
            m["image"]["id"] for m in group["members"] if m["image"]["path"].endswith(copy)
        )
        # the API names the suggested keeper and lists it first: the same size, the older file
        first = group["members"][0]
        assert first["image"]["path"].endswith("/" + original), group
        assert group["keeper_id"] == first["image"]["id"] != copy_id, group
        assert first["date"].startswith("2020-01-01"), first

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
        # the compare view: side by side, the keeper first and marked, the facts of each
        grp.get_by_role("button", name="Compare").click()
        cards = grp.locator(".dup-card")
        expect(cards).to_have_count(2)
        expect(cards.first.locator("h3")).to_have_text(original)
        expect(cards.first.locator(".dup-keeper")).to_have_text("Suggested keeper")
        expect(cards.nth(1).locator("h3")).to_have_text(copy)
        expect(cards.nth(1).locator(".dup-keeper")).to_have_count(0)
        left, right = (c.bounding_box() for c in cards.all())
        assert left and right and right["x"] >= left["x"] + left["width"] - 1, (left, right)
        assert abs(right["y"] - left["y"]) < 2, (left, right)  # one row
        size = (folder / copy).stat().st_size
        for card in cards.all():
            facts = card.locator(".dup-facts")
            fact = {"Resolution": "160 × 160", "Format": "JPEG", "Folder": str(folder)}
            for label, value in fact.items():
                expect(facts.locator("div", has_text=label).locator("dd")).to_have_text(value)
            expect(facts.locator("div", has_text="File size").locator("dd")).to_have_text(
                f"{size / 1024:.1f} KB" if size < 10 * 1024 else f"{size / 1024:.0f} KB"
            )
        expect(
            cards.first.locator(".dup-facts div", has_text="Date").locator("dd")
        ).to_contain_text("2020")
        # resolve it: one confirmation, and the copy is gone (into Removed)
        asked: list[str] = []
        page.on("dialog", lambda d: (asked.append(d.message), d.accept()))
        cards.first.get_by_role(
            "button", name=f"Keep {original}, remove the others of this group"
        ).click()
        expect(grp).to_have_count(0)
        expect(page.locator("#duplicates-status")).to_contain_text("Removed 1 image")
        assert len(asked) == 1 and copy in asked[0], asked
        assert live_server.api(f"/api/v1/images/{copy_id}").status_code == 404
        assert any(
            r["image_id"] == copy_id for r in live_server.api("/api/v1/removed").json()["items"]
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
        for r in live_server.api("/api/v1/removed").json()["items"]:
            if "/dups/" in r["path"]:
                for j in _post(live_server, f"/api/v1/removed/{r['id']}/restore")["jobs"]:
                    _wait_job(live_server, j["id"])
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        _wait_job(live_server, _post(live_server, "/api/v1/ingest", {"path": str(folder)})["id"])
        folder.rmdir()
