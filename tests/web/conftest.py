"""Fixtures for the gallery's browser tests: a live ``clipsearch serve`` and Debian's Chromium.

The server is the real one, started as a child process exactly as a user starts it
(``python -m service.cli serve --images DIR ...``) with a tiny random-weight CLIP saved to disk,
an API token (so the gallery's token prompt is exercised), and generated image files: distinct
colours and shapes, plus file names that try to inject HTML. The fixture waits until the first
ingestion is searchable. Chromium is driven by Playwright's sync API; never `playwright install`:
the browser is the system's /usr/bin/chromium.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from testkit import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CLIPSEARCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
API_TOKEN = "gallery-test-token-4f1c9a7e2b"
START_DEADLINE_S = 240.0
EXPECT_TIMEOUT_MS = 30_000

# (name, background top colour, shape colour, shape) for the library the server starts with
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
    "magenta": (220, 50, 160),
    "brown": (130, 80, 40),
    "grey": (128, 128, 128),
    "navy": (20, 30, 100),
    "lime": (160, 230, 40),
}
SHAPES = ("circle", "square", "triangle", "stripes")
# Hostile names: they must show up as text, never as markup.
HOSTILE_NAMES = (
    "<img src=x onerror=window.__pwned=1>.png",
    "quote\" ' & <b>bold.png",
)
INCOMING_COUNT = 6  # images in the folder the panel test ingests
# a subfolder of photos/ in other formats, for the gallery's folder and format filters
TRIP_IMAGES = (
    ("harbour-dawn.webp", (250, 150, 90), "circle"),
    ("harbour-dusk.webp", (90, 60, 140), "stripes"),
    ("market-stall.gif", (200, 90, 60), "square"),
)
EXTRA_COUNT = 30  # plain gradients so that the library is more than one page (40) long
# shapes the detail view must show whole: (name, size); the TIFF is shown through its preview
SHAPED_IMAGES = (
    ("panorama-wide.png", (960, 240)),
    ("tower-tall.png", (240, 960)),
    ("scanned-page.tif", (300, 420)),
)
# a model folder whose path is long: the footer names it, and must wrap on a phone
MODEL_FOLDER = "tiny-clip-model-saved-in-a-folder-whose-name-is-long-enough-to-overflow-a-phone"


@dataclass(frozen=True)
class Library:
    """The files on disk the server was pointed at."""

    root: Path  # the allowed root
    photos: Path  # ingested at start (--images)
    trips: Path  # photos/trips: a subfolder of WebP and GIF images, ingested with photos/
    incoming: Path  # ingested by a test through the panel
    dropbox: Path  # a second --images folder, watched by the server from the start
    query_copy: Path  # a byte-identical copy of photos/red-circle.png under another name
    names: tuple[str, ...]  # file names in photos/ and photos/trips/
    trip_names: tuple[str, ...]  # file names in photos/trips/
    sizes: dict[str, tuple[int, int]]  # name -> (width, height)
    incoming_count: int = INCOMING_COUNT


@dataclass(frozen=True)
class LiveServer:
    url: str
    token: str
    library: Library
    log_path: Path

    def api(self, path: str, **params: Any) -> Any:
        """GET an API path directly (what the server says, independently of the gallery)."""
        response = httpx.get(
            self.url + path,
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},  # reads need the token too
            timeout=30,
        )
        return response

    def log_tail(self, n: int = 60) -> str:
        return _log_tail(self.log_path, n)


def _log_tail(log_path: Path, n: int = 60) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no server log)"


def _draw(path: Path, colour: tuple[int, int, int], shape: str, size: tuple[int, int]) -> None:
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    top = tuple(min(255, c + 60) for c in colour)
    bottom = tuple(max(0, c - 70) for c in colour)
    for y in range(h):  # vertical gradient background
        t = y / max(1, h - 1)
        draw.line(
            [(0, y), (w, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    fg = (250, 250, 245) if sum(colour) < 500 else (30, 30, 40)
    box = (w * 0.25, h * 0.2, w * 0.75, h * 0.8)
    if shape == "circle":
        r = min(w, h) * 0.3
        draw.ellipse((w / 2 - r, h / 2 - r, w / 2 + r, h / 2 + r), fill=fg)
    elif shape == "square":
        draw.rectangle(box, fill=fg)
    elif shape == "triangle":
        draw.polygon([(w / 2, h * 0.15), (w * 0.8, h * 0.82), (w * 0.2, h * 0.82)], fill=fg)
    else:
        for i in range(0, w, max(8, w // 10)):
            draw.rectangle((i, 0, i + max(4, w // 20), h), fill=fg)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        img.save(path, "JPEG", quality=88)
    else:
        img.save(path)


def make_library(root: Path) -> Library:
    photos = root / "photos"
    incoming = root / "incoming"
    dropbox = root / "dropbox"
    photos.mkdir(parents=True)
    incoming.mkdir()
    dropbox.mkdir()
    _draw(dropbox / "already-there.png", (70, 120, 200), "circle", (160, 120))
    names: list[str] = []
    sizes: dict[str, tuple[int, int]] = {}
    for i, (colour_name, rgb) in enumerate(COLOURS.items()):
        shape = SHAPES[i % len(SHAPES)]
        ext = ".jpg" if i % 3 == 2 else ".png"
        size = (240 + 8 * i, 180 + 4 * i)  # each image its own dimensions
        name = f"{colour_name}-{shape}{ext}"
        _draw(photos / name, rgb, shape, size)
        names.append(name)
        sizes[name] = size
    for i, name in enumerate(HOSTILE_NAMES):
        _draw(photos / name, (90 + 40 * i, 90, 60), "square", (200, 200))
        names.append(name)
        sizes[name] = (200, 200)
    for i in range(EXTRA_COUNT):
        hue = 2 * math.pi * i / EXTRA_COUNT
        rgb = tuple(int(127 + 100 * math.sin(hue + k * 2.1)) for k in range(3))
        name = f"gradient-{i:02d}.png"
        _draw(photos / name, rgb, SHAPES[i % len(SHAPES)], (160, 120))
        names.append(name)
        sizes[name] = (160, 120)
    for i, (name, size) in enumerate(SHAPED_IMAGES):
        _draw(photos / name, (60 + 70 * i, 150, 200 - 60 * i), SHAPES[i], size)
        names.append(name)
        sizes[name] = size
    trips = photos / "trips"
    trips.mkdir()
    for name, rgb, shape in TRIP_IMAGES:
        _draw(trips / name, rgb, shape, (220, 160))
        names.append(name)
        sizes[name] = (220, 160)
    for i in range(INCOMING_COUNT):
        _draw(incoming / f"new-{i}.png", (30 * i, 200 - 20 * i, 120), "circle", (180, 140))
    query_copy = root / "query-image.png"
    query_copy.write_bytes((photos / "red-circle.png").read_bytes())
    return Library(
        root=root,
        photos=photos,
        trips=trips,
        incoming=incoming,
        dropbox=dropbox,
        query_copy=query_copy,
        names=tuple(names),
        trip_names=tuple(name for name, _, _ in TRIP_IMAGES),
        sizes=sizes,
    )


def _poll(what: str, check: Any, deadline: float, log_path: Path, proc: subprocess.Popen) -> Any:
    """Call ``check()`` until it returns something truthy; fail with the server log on timeout."""
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"clipsearch serve exited ({proc.returncode}) while {what}:\n{_log_tail(log_path)}"
            )
        try:
            result = check()
        except httpx.HTTPError as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"timed out while {what} (last: {last!r}):\n{_log_tail(log_path)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    # the embedded worker dies with its parent; make sure nothing of our process group is left
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def _start_serve(
    args: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    ready: Sequence[tuple[str, Callable[[str], Any]]],
    deadline_s: float = START_DEADLINE_S,
) -> Iterator[str]:
    """``python -m service.cli -v serve --host 127.0.0.1 --port P *args`` on a free loopback port,
    as a user starts it; yields its base URL.

    ``env`` is added to this environment less any ``CLIPSEARCH_*`` variable; the server's output
    goes to ``log_path``. Before yielding, each ``(what, check)`` of ``ready`` in turn is called
    with the base URL until it returns something truthy, all within ``deadline_s``; a server that
    exits or a deadline passed fails the test with the log's tail. On the way out the server and
    its process group are stopped.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    full_env.update(env)
    # -v: the watcher's and the jobs' INFO lines in the log a failing test shows
    cmd = [sys.executable, "-m", "clipsearch.service.cli", "-v", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), *args]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + deadline_s
        for what, check in ready:
            _poll(what, functools.partial(check, url), deadline, log_path, proc)
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def start_serve() -> Any:
    """``start_serve(args, env, log_path, ready)``: a context manager running ``clipsearch serve``
    (see ``_start_serve``) for a test module's own server."""
    return _start_serve


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``clipsearch serve`` on a free loopback port with a tiny model and ~47 ingested images."""
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model

    base = tmp_path_factory.mktemp("gallery")
    library = make_library(base / "library")
    model_dir = save_pretrained(tiny_model(seed=0), base / MODEL_FOLDER)
    data_dir = base / "data"
    env = dict(
        CLIPSEARCH_API_TOKEN=API_TOKEN,
        CLIPSEARCH_CACHE=str(base / "cache"),
        CLIPSEARCH_DEVICE="cpu",
        # a random tiny model makes every query look meaningless: no default relevance cut
        # here (test_gallery_relevance.py moves the slider itself)
        CLIPSEARCH_GALLERY_MIN_RELEVANCE="0",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    log_path = base / "serve.log"
    args = [
        "--images",
        str(library.photos),
        str(library.dropbox),
        "--allowed-root",
        str(library.root),
        "--model",
        str(model_dir),
        "--data-dir",
        str(data_dir),
    ]

    def at(url: str) -> LiveServer:
        return LiveServer(url, API_TOKEN, library, log_path)

    def healthy(url: str) -> bool:
        return at(url).api("/api/health").status_code == 200

    def all_searchable(url: str) -> bool:
        server = at(url)
        jobs = server.api("/api/jobs").json()
        if any(j["state"] in ("queued", "running") for j in jobs) or not jobs:
            return False
        hits = server.api("/api/search", q="a photo", k=200).json()["results"]
        return len(hits) >= len(library.names)

    ready = [
        ("waiting for /api/health", healthy),
        ("waiting for the first ingestion to become searchable", all_searchable),
    ]
    with _start_serve(args, env, log_path, ready) as url:
        yield at(url)


# --- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test file. Not longer: while Playwright's sync API is open it keeps an
    event loop running on the test thread, so a later file in the same process that runs asyncio
    (``asyncio.run``) or opens Playwright itself would fail."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set CLIPSEARCH_CHROMIUM)"
        )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class PageErrors(list):
    """Uncaught exceptions in the page; a test fails if there are any."""


def _new_page(
    browser: Any, server: LiveServer, signed_in: bool = True, **context_args: Any
) -> tuple[Any, Any, PageErrors]:
    """A new browser context; ``signed_in``: with the session cookie the sign-in page would set
    (got from POST /api/v1/session, as the page does; test_sign_in_page_* goes through the page)."""
    context = browser.new_context(base_url=server.url, **context_args)
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    if signed_in:
        response = context.request.post("/api/v1/session", data={"token": server.token})
        assert response.ok, response.text()
    page = context.new_page()
    errors = PageErrors()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page, errors


@pytest.fixture()
def page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    """A fresh desktop-size tab (own cookies and sessionStorage) on the live server."""
    context, pg, errors = _new_page(browser, live_server, viewport={"width": 1280, "height": 800})
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture()
def signed_out_page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    """A desktop tab that has not signed in."""
    context, pg, errors = _new_page(
        browser, live_server, signed_in=False, viewport={"width": 1280, "height": 800}
    )
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture()
def phone(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    """A phone-size tab: 390 x 844 CSS pixels, touch, mobile viewport meta honoured."""
    context, pg, errors = _new_page(
        browser,
        live_server,
        viewport={"width": 390, "height": 844},
        device_scale_factor=1,
        is_mobile=True,
        has_touch=True,
    )
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


SCREENSHOT_MAX_BYTES = 150_000


def _screenshot(page: Any, name: str) -> None:
    """Save ``name``.png into $CLIPSEARCH_SCREENSHOTS (docs/screenshots) when that is set.

    A PNG over 150 KB is scaled down in 10% steps until it fits (a palette would band the
    gradients), and only as a last resort reduced to 256 colours.
    """
    folder = os.environ.get("CLIPSEARCH_SCREENSHOTS")
    if not folder:
        return
    from PIL import Image

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    page.screenshot(path=str(path))
    if path.stat().st_size <= SCREENSHOT_MAX_BYTES:
        return
    with Image.open(path) as shot:
        original = shot.convert("RGB")
    scale = 1.0
    while path.stat().st_size > SCREENSHOT_MAX_BYTES and scale > 0.55:
        scale -= 0.1
        size = (round(original.width * scale), round(original.height * scale))
        original.resize(size, Image.Resampling.LANCZOS).save(path, optimize=True)
    if path.stat().st_size > SCREENSHOT_MAX_BYTES:
        original.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


@pytest.fixture()
def screenshot() -> Any:
    """``screenshot(page, name)``: docs/screenshots material, only when $CLIPSEARCH_SCREENSHOTS is set."""
    return _screenshot
