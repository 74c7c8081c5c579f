"""Screenshots of the gallery's main views for docs/screenshots/, from a real ``clipsearch serve``.

Uses the demo's offline assets (the synthetic coloured-shapes set and the small CLIP trained on
it, see ``service/demo.py``; trained once and cached under the data folder), so that the pictures
show a model that actually ranks: "two red circles" finds red circles, plus a copy of a few of
them as JPEGs with capture dates over two years (the demo's pictures have none), so that the
timeline has days and months. Then it drives Debian's Chromium with Playwright: the timeline,
search results, the detail view (why a picture is here), the ingest panel with its folder
browser, the Duplicates view (a group compared side by side: the dated JPEG copies are resized,
re-encoded copies of their PNG originals), the Tags and Albums views, and phone width.

    .venv/bin/python -m bench.gallery_screenshots [--data-dir DIR] [--out docs/screenshots]

Each PNG is kept under 150 KB (scaled down in 10% steps when needed). Nothing is measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
MAX_BYTES = 150_000
QUERY = "two red circles"
# resolves when the images on screen have loaded (lazy ones below the fold never do), or after 10 s
VISIBLE_IMAGES_LOADED = """() => Promise.race([
  Promise.all([...document.images]
    .filter((i) => { const r = i.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight && !i.complete; })
    .map((i) => new Promise((res) => { i.addEventListener('load', res); i.addEventListener('error', res); }))),
  new Promise((res) => setTimeout(res, 10000)),
])"""

log = logging.getLogger("gallery_screenshots")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Any, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"clipsearch serve exited ({proc.returncode}) while {what}")
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.5)
    raise SystemExit(f"timed out while {what}")


# (scale, colours) tried in order until the PNG fits: full quality first, then smaller, then a
# palette (the demo's noisy backgrounds compress badly, a palette helps them most)
FIT_STEPS = (
    (1.0, 0),
    (0.9, 0),
    (1.0, 256),
    (0.9, 256),
    (0.8, 128),
    (0.8, 64),
    (0.7, 64),
    (0.6, 64),
    (0.6, 32),
    (0.5, 32),
)


def save(page: Any, path: Path) -> None:
    from PIL import Image

    page.screenshot(path=str(path))
    with Image.open(path) as shot:
        original = shot.convert("RGB")
    for scale, colours in FIT_STEPS:
        if path.stat().st_size <= MAX_BYTES:
            return
        img = original
        if scale < 1.0:
            img = img.resize(
                (round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS
            )
        if colours:
            img = img.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        img.save(path, optimize=True)


def write_dated(images_dir: Path, folder: Path, n: int = 240) -> Path:
    """JPEG copies of ``n`` demo pictures with EXIF capture dates: four on a day, a day every
    three, over half a year (what a phone's camera roll looks like)."""
    import datetime as dt

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    newest = dt.datetime(2025, 6, 21, 17, 30)
    for i, src in enumerate(sorted(images_dir.glob("*.png"))[:n]):
        target = folder / f"IMG_{i:04d}.jpg"
        exif = Image.Exif()
        when = newest - dt.timedelta(days=3 * (i // 4), hours=2 * (i % 4))
        exif.get_ifd(0x8769)[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
        with Image.open(src) as img:
            img.convert("RGB").resize((192, 192)).save(target, "JPEG", quality=85, exif=exif)
    return folder


def shoot(url: str, out: Path, images_dir: Path, chromium: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(url + "/")
        expect(page.locator("#results .month-head").first).to_be_visible()
        expect(page.locator("#scrubber")).to_be_visible()
        page.evaluate(VISIBLE_IMAGES_LOADED)
        save(page, out / "timeline.png")

        page.goto(url + "/?q=" + QUERY.replace(" ", "+"))
        expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
        expect(page.locator("#results .tile-btn").first).to_be_visible()
        page.evaluate(VISIBLE_IMAGES_LOADED)
        save(page, out / "search-results.png")

        page.locator("#results .tile-btn").first.click()
        expect(page.locator("#similar .strip-btn").first).to_be_visible()
        expect(page.locator("#detail-img")).to_have_attribute("src", re.compile(r"/file$"))
        expect(page.locator("#detail-why")).to_be_visible()
        save(page, out / "detail-view.png")
        page.keyboard.press("Escape")

        page.goto(url + "/")
        expect(page.locator("#results .tile-btn").first).to_be_visible()
        page.locator("#ingest-toggle").click()
        expect(page.locator("#jobs .job").first).to_have_attribute("data-state", "done")
        page.locator("#folder-browse").click()
        expect(page.locator("#folder-browser .folder-entry").first).to_be_visible()
        page.locator("#folder-browser .folder-entry").first.click()
        expect(page.locator("#folder-browser-up")).to_be_visible()
        save(page, out / "ingest-panel.png")

        # the Duplicates view: the dated JPEG copies and their PNG originals, one group compared
        page.goto(url + "/")
        expect(page.locator("#results .tile-btn").first).to_be_visible()
        page.get_by_role("button", name="Duplicates", exact=True).click()
        dialog = page.locator("#duplicates-view")
        expect(dialog.locator(".dup-group").first).to_be_visible()
        group = dialog.locator(".dup-group").first
        group.get_by_role("button", name="Compare").click()
        expect(group.locator(".dup-card").first).to_be_visible()
        page.evaluate(VISIBLE_IMAGES_LOADED)
        save(page, out / "duplicates.png")
        page.keyboard.press("Escape")

        # Tags (the starter vocabulary, defined in words) and Albums
        page.goto(url + "/")
        expect(page.locator("#results .tile-btn").first).to_be_visible()
        page.locator("#tags-toggle").click()
        expect(page.locator("#tags-view")).to_be_visible()
        page.evaluate(VISIBLE_IMAGES_LOADED)
        save(page, out / "tags.png")
        page.keyboard.press("Escape")
        page.locator("#albums-toggle").click()
        expect(page.locator("#albums-view")).to_be_visible()
        save(page, out / "albums.png")
        page.keyboard.press("Escape")

        phone = browser.new_page(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
        )
        phone.goto(url + "/")
        expect(phone.locator("#results .tile-btn").first).to_be_visible()
        phone.evaluate(VISIBLE_IMAGES_LOADED)
        phone.locator("#menu-toggle").click()
        expect(phone.locator("#ingest-toggle")).to_be_visible()
        save(phone, out / "phone.png")
        browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "clipsearch-screenshots"
    )
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    ap.add_argument(
        "--chromium", default=os.environ.get("CLIPSEARCH_CHROMIUM", "/usr/bin/chromium")
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from clipsearch.service.demo import prepare_demo

    data_dir = args.data_dir.resolve()
    assets = prepare_demo(data_dir / "demo", progress=False)
    log.info(
        "demo assets: %s, %s (trained now: %s)", assets.images, assets.model, assets.trained_now
    )

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env.update(OMP_NUM_THREADS="1", CLIPSEARCH_CACHE=str(data_dir / "cache"))
    serve_data = data_dir / "serve"
    if serve_data.exists():  # a fresh catalog each run: the jobs panel shows one ingestion
        shutil.rmtree(serve_data)
    dated = write_dated(assets.images, data_dir / "dated")
    cmd = [
        sys.executable, "-m", "clipsearch.service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--images", str(assets.images), str(dated), "--model", str(assets.model), "--data-dir", str(serve_data),
    ]  # fmt: skip
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until("starting", lambda: httpx.get(url + "/api/health").status_code == 200, 300, proc)

        def ingested() -> bool:
            jobs = httpx.get(url + "/api/jobs").json()
            return bool(jobs) and all(j["state"] in ("done", "failed") for j in jobs)

        wait_until("ingesting the demo images", ingested, 900, proc)
        args.out.mkdir(parents=True, exist_ok=True)
        shoot(url, args.out, assets.images, args.chromium)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    for png in sorted(args.out.glob("*.png")):
        log.info("%s: %d bytes", png, png.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
