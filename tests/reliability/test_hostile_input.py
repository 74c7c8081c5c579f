"""Hostile and broken input, end to end.

One folder holds good photos beside every kind of bad file we could think of (zero bytes,
truncated, wrong extension, decompression bombs, symlink loops and escapes, unreadable entries,
names no UTF-8 decoder accepts, ...). It is ingested ONCE through the real API by a real worker
process (embedded SQLite broker, tiny CLIP from model.testing), then the API and the CLI are fed
hostile paths, uploads, queries and bodies. Each input must end as a recorded failure reason or a
4xx JSON error; no response may be a 5xx, no good image may be lost, and after each group the
service still answers searches with every good image ready.

``CLIPSEARCH_HOSTILE_REPORT=FILE`` writes what each input got (the table of RELIABILITY.md).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipsearch.indexer.catalog import path_to_db
from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".venv" / "bin" / "clipsearch"
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "clipsearch.service.cli"]
IS_ROOT = os.geteuid() == 0
# the real defaults: the default-limit cases run against what a user gets
_LIMITS = Settings.model_fields["limits"].annotation.model_fields  # type: ignore[union-attr]
UPLOAD_LIMIT = _LIMITS["max_upload_bytes"].default
PIXEL_LIMIT = _LIMITS["max_upload_pixels"].default
INGEST_TIMEOUT_S = 150.0

# --- files ------------------------------------------------------------------------------------


def picture(seed: int, size: tuple[int, int] = (56, 40)) -> Image.Image:
    """A distinct RGB picture per seed (its own colours, so each embeds to its own vector)."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.empty((h, w, 3), np.uint8)
    arr[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    arr[: h // 2, : w // 3] = rng.integers(0, 256, 3, dtype=np.uint8)
    arr += rng.integers(0, 12, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def encoded(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (56, 40)) -> bytes:
    buf = io.BytesIO()
    picture(seed, size).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few dozen bytes whose header claims width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def png_deflate_bomb(side: int = 20_000) -> bytes:
    """A complete 1-bit PNG of side x side pixels, all black: ~50 MB of rows deflated to ~50 KB."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 200) for _ in range(side // 200)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is patched to claim width x height."""
    data = bytearray(encoded(90, "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def flat_png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Layout:
    """What the hostile folder holds, and what a user must get for each entry."""

    good: dict[str, Path] = field(default_factory=dict)  # label -> path: ends "ready"
    bad: dict[str, tuple[Path, str]] = field(default_factory=dict)  # -> (path, reason words)
    scan_problems: dict[str, tuple[Path, str]] = field(default_factory=dict)  # job errors, no row
    silent: dict[str, Path] = field(default_factory=dict)  # neither a row nor an error


def build_folder(root: Path, outside: Path) -> Layout:
    L = Layout()
    root.mkdir(parents=True)
    outside.mkdir(parents=True)
    (outside / "outside.jpg").write_bytes(encoded(80))
    (outside / "secret.jpg").write_text("root:x:0:0:not for the API\n")
    rb = os.fsencode(root)
    seed = iter(range(1, 1000))

    def good(label: str, name: str | bytes, fmt: str = "JPEG") -> None:
        path = (rb + b"/" + name) if isinstance(name, bytes) else (root / name)
        p = Path(os.fsdecode(path))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encoded(next(seed), fmt))
        L.good[label] = p

    def bad(label: str, name: str, data: bytes, reason: str) -> None:
        (root / name).write_bytes(data)
        L.bad[label] = (root / name, reason)

    # good photos, plain and under every odd name
    good("plain JPEG", "good-red.jpg")
    good("plain PNG", "good-green.png", "PNG")
    good("JPEG two folders down", "sub/deeper/good-blue.jpg")
    good("PNG named .jpg", "png-named.jpg", "PNG")
    good("JPEG named .png", "jpeg-named.png")
    good("JPEG without extension", "no-extension")
    good("name with spaces", "with  spaces .jpg")
    good("name with a leading space", " leading-space.jpg")
    good("name with a leading dash", "-leading-dash.jpg")
    good("name that is a CLI flag", "--help.jpg")
    good("name with a newline", "new\nline.jpg")
    good("name with tab and CR", "tab\tand\rcr.jpg")
    good("name with quotes and HTML", "quote\"'<b>&amp;.jpg")
    good("name with shell syntax", "$(touch pwned);`id`.jpg")
    good("name with %2e%2e%2f", "%2e%2e%2fescape.jpg")
    good("name with a backslash", "back\\slash.jpg")
    good("unicode name (NFC)", "caf\u00e9 \u2603 \U0001f4f7.jpg")
    good("same name in NFD", "cafe\u0301 \u2603 \U0001f4f7.jpg")
    good("right-to-left override", "\u202egpj.exe.jpg")
    good("non-UTF-8 name b'\\xff\\xfe.jpg'", b"\xff\xfe.jpg")
    good("Latin-1 name", b"latin1-\xe9t\xe9.jpg")
    good("255-byte name", "n" * 251 + ".jpg")
    good("folder named x.jpg", "folder.jpg/inside.jpg")
    os.symlink("good-red.jpg", root / "alias.jpg")  # a link to a file inside the root
    L.good["symlink to a photo inside the root"] = root / "alias.jpg"

    # broken files: each fails with a reason
    full = encoded(500, "JPEG", (320, 240))
    bad("zero bytes", "empty.jpg", b"", "empty file")
    bad("truncated JPEG", "truncated.jpg", full[: len(full) // 3], "truncated")
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (96, 96, 3), np.uint8)).save(
        noisy, "PNG"
    )
    bad("truncated PNG", "truncated.png", noisy.getvalue()[:3000], "truncated")
    bad(
        "JPEG magic, then garbage", "garbage.jpg", b"\xff\xd8\xff\xe0" + os.urandom(2000), "corrupt"
    )
    bad("text named .jpg", "text.jpg", b"this is a text file, not a photo\n", "not an image")
    bad("SVG with script named .jpg", "svg.jpg", b"<svg onload=alert(1)></svg>", "not an image")
    bad(
        "PNG header 100000x100000",
        "header-bomb.png",
        png_header_only(100_000, 100_000),
        "too many pixels",
    )
    bad("PNG deflate bomb 20000x20000", "deflate-bomb.png", png_deflate_bomb(), "too many pixels")
    bad(
        "JPEG header 65000x65000",
        "jpeg-65000.jpg",
        jpeg_claiming(65_000, 65_000),
        "too many pixels",
    )
    bad("PNG header 0x0", "zero-size.png", png_header_only(0, 0), "corrupt")
    sparse = root / "huge-sparse.jpg"
    with open(sparse, "wb") as fh:  # 2 GiB, no blocks on disk
        fh.truncate(2 << 30)
    L.bad["2 GiB sparse file"] = (sparse, "too large")

    # entries a scan cannot follow: reported as job errors, no image row
    os.symlink(root / "missing.jpg", root / "dangling.jpg")
    L.scan_problems["dangling symlink"] = (root / "dangling.jpg", "broken symbolic link")
    os.symlink(rb + b"/missing-\xfe", rb + b"/\xfe-dangling.jpg")
    L.scan_problems["dangling symlink, non-UTF-8 name"] = (
        Path(os.fsdecode(rb + b"/\xfe-dangling.jpg")),
        "broken symbolic link",
    )
    os.symlink("selfloop.jpg", root / "selfloop.jpg")
    L.scan_problems["symlink to itself"] = (root / "selfloop.jpg", "too many levels")
    os.symlink("loop-b.jpg", root / "loop-a.jpg")
    os.symlink("loop-a.jpg", root / "loop-b.jpg")
    L.scan_problems["two symlinks pointing at each other"] = (
        root / "loop-a.jpg",
        "too many levels",
    )
    L.scan_problems["two symlinks pointing at each other (b)"] = (
        root / "loop-b.jpg",
        "too many levels",
    )
    os.symlink(outside, root / "escape-dir")
    os.symlink(outside / "outside.jpg", root / "escape.jpg")
    os.symlink("/etc/passwd", root / "passwd.jpg")
    for label, name in (
        ("symlink to a folder outside the root", "escape-dir"),
        ("symlink to a photo outside the root", "escape.jpg"),
        ("symlink to /etc/passwd", "passwd.jpg"),
    ):
        L.scan_problems[label] = (root / name, "outside the folders")

    # a loop back to the root, a FIFO, a text file: no row, no error, the walk goes on
    os.symlink(root, root / "sub" / "loop-to-root")
    L.silent["symlink loop back to the root"] = root / "sub" / "loop-to-root"
    os.mkfifo(root / "pipe.jpg")
    L.silent["FIFO named .jpg"] = root / "pipe.jpg"
    (root / "notes.txt").write_text("holiday notes")
    L.silent["text file without an image name"] = root / "notes.txt"

    # unreadable: chmod 000. Root reads it anyway (CI runs as root): then it is a good photo.
    as_root = " (run as root, who reads it anyway)" if IS_ROOT else ""
    locked, in_locked = f"chmod 000 file{as_root}", f"photo in a chmod 000 folder{as_root}"
    good(locked, "locked.jpg")
    good(in_locked, "locked-dir/in-locked.jpg")
    os.chmod(root / "locked.jpg", 0)
    os.chmod(root / "locked-dir", 0)
    if not IS_ROOT:  # the scan cannot even read their first bytes: named in the job's errors
        L.scan_problems[locked] = (L.good.pop(locked), "permission denied")
        L.good.pop(in_locked)
        L.scan_problems["chmod 000 folder"] = (root / "locked-dir", "permission denied")
    return L


# --- the running service ----------------------------------------------------------------------


@dataclass
class Site:
    base: Path
    root: Path
    outside: Path
    layout: Layout
    settings: Settings
    lib: Any
    client: TestClient
    worker: Any
    model_dir: Path
    job: dict[str, Any] = field(default_factory=dict)
    observed: list[dict[str, Any]] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    ready_ids: set[int] = field(default_factory=set)

    def record(self, group: str, label: str, outcome: str) -> None:
        self.observed.append({"group": group, "input": label, "outcome": outcome})

    def call(
        self,
        group: str,
        label: str,
        method: str,
        url: str,
        expect: int | tuple[int, ...],
        **kwargs: Any,
    ) -> httpx.Response:
        """One request: a status in ``expect``; an error must be JSON with a useful detail."""
        r = self.client.request(method, url, **kwargs)
        allowed = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in allowed, (label, r.status_code, r.text[:500])
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/json"), (label, r.headers)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and len(detail) >= 9, (label, detail)
            self.record(group, label, f"{r.status_code}: {detail[:90]}")
        else:
            self.record(group, label, str(r.status_code))
        return r

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if not self.worker.is_alive():
                raise AssertionError(f"the worker died while waiting for {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s: {what}\n{self.log()}")
            time.sleep(0.1)

    def search_ids(self, q: str = "a photo") -> set[int]:
        r = self.client.get("/api/search", params={"q": q, "k": 500, "min_relevance": 0})
        assert r.status_code == 200, r.text
        return {h["id"] for h in r.json()["results"]}

    def log(self) -> str:
        path = self.worker.log_path
        return Path(path).read_text(errors="replace")[-4000:] if path else "(no log)"

    def assert_healthy(self) -> None:
        """The service still serves: health ok, a search works, every good image is ready and
        searchable, the worker lives, and no response so far was a 5xx."""
        assert self.server_errors == [], self.server_errors
        assert self.worker.is_alive(), self.log()
        health = self.client.get("/api/health")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        assert health.json()["images"]["ready"] == len(self.ready_ids)
        # searchable within the index's refresh interval (the served index follows the catalog)
        self.wait_for(
            lambda: self.search_ids() >= self.ready_ids, 30, "every ready image to be searchable"
        )
        ready = self.client.get("/api/images", params={"state": "ready", "limit": 500})
        assert {i["id"] for i in ready.json()["items"]} == self.ready_ids


def _cli_env(site: Site) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env["CLIPSEARCH_DATA_DIR"] = str(site.settings.data_dir)
    env["CLIPSEARCH_MODEL"] = str(site.model_dir)
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model

    base = tmp_path_factory.mktemp("hostile")
    model_dir = base / "tiny-clip"
    save_pretrained(tiny_model(seed=0), model_dir)
    root, outside = base / "photos", base / "outside"
    layout = build_folder(root, outside)
    settings = Settings(
        data_dir=base / "data",
        model=str(model_dir),
        allowed_roots=[root],
        allowed_hosts=["testserver"],  # the in-process TestClient's Host header
        batch_window_ms=0.5,
    )
    lib = build_library(settings)
    worker = lib.start_embedded_worker(
        device="cpu",
        batch_size=16,
        decode_workers=2,  # real decoder processes: a hostile file may only ever kill one
        extra_env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    client = TestClient(create_app(settings, library=lib), raise_server_exceptions=False)
    client.__enter__()
    s = Site(base, root, outside, layout, settings, lib, client, worker, model_dir)

    def count_5xx(response: httpx.Response) -> None:
        if response.status_code >= 500:
            response.read()
            s.server_errors.append(
                f"{response.request.method} {response.request.url}: {response.status_code} "
                f"{response.text[:200]}"
            )

    client.event_hooks["response"].append(count_5xx)
    try:
        worker.wait_ready(90)
        s.job = ingest_hostile_folder(s)
        ready = client.get("/api/images", params={"state": "ready", "limit": 500})
        s.ready_ids = {i["id"] for i in ready.json()["items"]}
        yield s
    finally:
        client.__exit__(None, None, None)
        lib.close()  # stops the worker
        os.chmod(root / "locked-dir", 0o755)  # so that pytest can remove its temporary folder
        os.chmod(root / "locked.jpg", 0o644)
        out = os.environ.get("CLIPSEARCH_HOSTILE_REPORT")
        if out:
            Path(out).write_text(json.dumps(s.observed, ensure_ascii=False, indent=1))


# --- 1. one ingest of the hostile folder ------------------------------------------------------


def ingest_hostile_folder(site: Site) -> dict[str, Any]:
    """POST /api/ingest of the whole folder; the worker process runs it. Returns the final job."""
    r = site.call(
        "ingest",
        "POST /api/ingest of the hostile folder",
        "POST",
        "/api/ingest",
        202,
        json={"path": str(site.root)},
    )
    job_id = r.json()["id"]

    def finished() -> dict[str, Any] | None:
        job = site.client.get(f"/api/jobs/{job_id}")
        assert job.status_code == 200, job.text  # the job is readable while it runs
        body = job.json()
        return body if body["state"] in ("done", "failed") else None

    return site.wait_for(finished, INGEST_TIMEOUT_S, "the hostile folder's ingest job to finish")  # type: ignore[no-any-return]


def test_one_ingest_of_the_hostile_folder_keeps_every_good_photo(site: Site) -> None:
    L = site.layout
    job = site.job
    assert job["state"] == "done", job
    assert (job["done"], job["failed"]) == (len(L.good), len(L.bad)), job

    images = site.client.get("/api/images", params={"limit": 500}).json()["items"]
    by_path = {i["path"]: i for i in images}
    # every good photo: ready, with its thumbnail and its exact bytes served by id
    for label, path in L.good.items():
        item = by_path.get(path_to_db(path))
        assert item is not None, (label, path, sorted(by_path))
        assert item["state"] == "ready" and item["error"] is None, (label, item)
        assert item["id"] in site.ready_ids
        f = site.client.get(f"/api/images/{item['id']}/file")
        assert f.status_code == 200, (label, f.status_code, f.text[:200])
        assert f.content == path.read_bytes(), label
        assert f.headers["x-content-type-options"] == "nosniff"
        t = site.client.get(f"/api/images/{item['id']}/thumbnail")
        assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg", label
        site.record("file in the ingested folder", label, "ready, searchable")
    assert site.ready_ids == {by_path[path_to_db(p)]["id"] for p in L.good.values()}
    assert by_path[path_to_db(L.good["PNG named .jpg"])]["format"] == "PNG"
    png_id = by_path[path_to_db(L.good["PNG named .jpg"])]["id"]
    png_file = site.client.get(f"/api/images/{png_id}/file")
    assert png_file.headers["content-type"] == "image/png"  # the content decides, not the name

    # every broken file: failed, with a reason a user understands, and no thumbnail
    for label, (path, words) in L.bad.items():
        item = by_path.get(path_to_db(path))
        assert item is not None, (label, path)
        assert item["state"] == "failed" and words in (item["error"] or ""), (label, item)
        t = site.client.get(f"/api/images/{item['id']}/thumbnail")
        assert t.status_code == 404 and "thumbnail" in t.json()["detail"], (label, t.text)
        if path.stat().st_size < 1 << 20:  # the original is still served by id, inert
            f = site.client.get(f"/api/images/{item['id']}/file")
            assert f.status_code == 200 and f.headers["x-content-type-options"] == "nosniff"
        site.record("file in the ingested folder", label, f"failed: {item['error'][:90]}")

    # entries the scan could not follow: named in the job's errors, never catalogued
    errors = {e["path"]: e["reason"] for e in job["errors"]}
    for label, (path, words) in L.scan_problems.items():
        reason = errors.get(path_to_db(path))
        assert reason is not None and words in reason, (label, path, errors)
        assert path_to_db(path) not in by_path, label
        site.record("file in the ingested folder", label, f"job error: {reason[:90]}")
    for label, path in L.silent.items():
        assert path_to_db(path) not in by_path and path_to_db(path) not in errors, label
        site.record("file in the ingested folder", label, "skipped, not catalogued")

    # nothing outside the allowed root was read, catalogued or can be served
    assert len(images) == len(L.good) + len(L.bad)
    for item in images:
        assert item["path"].startswith(str(site.root) + "/"), item["path"]
    assert not any("outside" in p or "passwd" in p for p in by_path)

    # every good photo is searchable (the API's index picks the new vectors up by itself)
    site.wait_for(
        lambda: site.search_ids() >= site.ready_ids, 30, "every ready photo in the search results"
    )
    # the same photo uploaded finds itself first
    png_photo = by_path[path_to_db(L.good["plain PNG"])]["id"]
    hit = site.client.post(
        "/api/search/image",
        files={"file": ("x.png", L.good["plain PNG"].read_bytes(), "image/png")},
        params={"k": 1},
    )
    assert hit.status_code == 200 and hit.json()["results"][0]["id"] == png_photo
    site.assert_healthy()


# --- 2. paths -----------------------------------------------------------------------------------


def test_paths_from_the_api_cannot_leave_the_allowed_root(site: Site) -> None:
    root = str(site.root)
    jobs_before = len(site.client.get("/api/jobs").json())
    attacks: list[tuple[str, Any, int]] = [
        ("'..' out of the root", f"{root}/../outside", 403),
        ("'..' deep", f"{root}/sub/../../../../../../etc", 403),
        ("absolute path outside", "/etc", 403),
        ("filesystem root", "/", 403),
        ("'//etc'", "//etc", 403),
        ("sibling sharing the root's prefix", f"{root}-evil", 403),
        ("symlink in the root pointing out", f"{root}/escape-dir", 403),
        ("symlink in the root pointing out, trailing slash", f"{root}/escape-dir/", 403),
        ("symlink to /etc/passwd", f"{root}/passwd.jpg", 403),
        ("relative '../'", "../", 400),
        ("relative name", "photos", 400),
        ("'~/'", "~/", 400),
        ("UNC path", "\\\\server\\share", 400),
        ("file:// URL", "file:///etc", 400),
        ("NUL byte", f"{root}/sub\x00/../../outside", 400),
        ("'%2e%2e' (not decoded: a literal name)", f"{root}/%2e%2e/%2e%2e/etc", 404),
        ("'..%2f' (not decoded)", f"{root}/..%2f..%2fetc", 404),
        ("missing folder in the root", f"{root}/nope", 404),
        ("a file, not a folder", f"{root}/good-red.jpg", 404),
        ("300-byte path component", f"{root}/{'a' * 300}", 400),
        ("4096-char path", root + "/a" * ((4096 - len(root)) // 2), (400, 404)),
        ("4097+ chars", "/" + "a/" * 3000, 422),
        ("path is a number", 5, 422),
        ("path is a list", ["/etc"], 422),
        ("empty path", "", 422),
        ("lone surrogate (JSON \\ud800)", None, 422),
    ]
    for label, path, status in attacks:
        if path is None:
            kwargs: dict[str, Any] = {
                "content": b'{"path": "/tmp/\\ud800"}',
                "headers": {"content-type": "application/json"},
            }
        else:
            kwargs = {"json": {"path": path}}
        site.call("POST /api/ingest path", label, "POST", "/api/ingest", status, **kwargs)
    site.call(
        "POST /api/ingest path",
        "unknown extra field",
        "POST",
        "/api/ingest",
        422,
        json={"path": root, "follow": "../.."},
    )
    assert len(site.client.get("/api/jobs").json()) == jobs_before  # none was queued

    for label, spec in (
        ("model path outside", "/etc/passwd"),
        ("model path with '..'", f"{root}/../outside/secret.jpg"),
        ("model path relative", "../../x"),
    ):
        site.call(
            "POST /api/reindex model", label, "POST", "/api/reindex", 403, json={"model": spec}
        )
    site.call(
        "POST /api/reindex model", "NUL byte", "POST", "/api/reindex", 400, json={"model": "a\x00b"}
    )
    assert len(site.client.get("/api/jobs").json()) == jobs_before

    ids = [
        ("not an int", "abc", 422),
        ("float", "1.5", 422),
        ("exponent", "1e3", 422),
        ("negative", "-1", 422),
        ("zero", "0", 422),
        ("2**63", str(2**63), 422),
        ("encoded traversal", "..%2F..%2Fetc%2Fpasswd", (404, 422)),
        ("encoded absolute path", "%2Fetc%2Fpasswd", (404, 422)),
        ("NUL", "1%00", 422),
        ("SQL in the id", "1%20OR%201=1", 422),
        ("no such image", str(2**62), 404),
    ]
    for label, raw, status in ids:
        for what in ("file", "thumbnail", "similar"):
            r = site.call(
                f"GET /api/images/{{id}}/{what}", label, "GET", f"/api/images/{raw}/{what}", status
            )
            assert "root:x" not in r.text
    site.call("DELETE /api/images/{id}", "not an int", "DELETE", "/api/images/abc", 422)
    site.call("GET /api/jobs/{id}", "not an int", "GET", "/api/jobs/..%2F1", (404, 422))

    # search filters take a folder: a filter on the catalog, never a read of the file system
    for label, folder, status in (
        ("filters.folder outside", "/etc", 200),
        ("filters.folder with '..'", f"{root}/../outside", 200),
        ("filters.folder NUL", "a\x00b", 422),
    ):
        r = site.call(
            "POST /api/search filters.folder",
            label,
            "POST",
            "/api/search",
            status,
            json={"text": "a photo", "filters": {"folder": folder}},
        )
        if r.status_code == 200:
            assert r.json()["results"] == [], label
    # the upload's file name is only echoed, never used as a path
    r = site.call(
        "POST /api/search/image filename",
        "'../../etc/passwd' as the name",
        "POST",
        "/api/search/image",
        200,
        files={
            "file": ("../../etc/passwd", site.layout.good["plain JPEG"].read_bytes(), "image/jpeg")
        },
    )
    assert r.json()["query"]["image"] == "../../etc/passwd"
    site.assert_healthy()


# --- 3. uploads ---------------------------------------------------------------------------------


def test_hostile_uploads_get_4xx_and_a_good_one_still_searches(site: Site) -> None:
    uploads: list[tuple[str, bytes, str, int, str]] = [
        ("over the byte limit", os.urandom(UPLOAD_LIMIT + 1), "image/jpeg", 413, "bytes"),
        (
            "over the pixel limit (4000x3001 PNG, decoded at full size)",
            flat_png((4000, PIXEL_LIMIT // 4000 + 1)),
            "image/png",
            413,
            "pixels",
        ),
        ("PNG header 100000x100000", png_header_only(100_000, 100_000), "image/png", 413, "pixels"),
        ("PNG deflate bomb", png_deflate_bomb(), "image/png", 413, "pixels"),
        ("JPEG header 65000x65000", jpeg_claiming(65_000, 65_000), "image/jpeg", 413, "pixels"),
        ("shell script as image/jpeg", b"#!/bin/sh\nrm -rf /\n", "image/jpeg", 415, "not an image"),
        ("SVG", b"<svg onload=alert(1)></svg>", "image/svg+xml", 415, "not an image"),
        ("truncated PNG", encoded(4, "PNG", (200, 200))[:300], "image/png", 400, "decoded"),
        ("PNG header 0x0", png_header_only(0, 0), "image/png", 415, "not an image"),
        ("zero bytes", b"", "image/png", 400, "empty"),
    ]
    for label, data, ctype, status, words in uploads:
        r = site.call(
            "POST /api/search/image",
            label,
            "POST",
            "/api/search/image",
            status,
            files={"file": ("upload", data, ctype)},
        )
        assert words in r.json()["detail"], (label, r.text)

    def no_length() -> Iterator[bytes]:  # chunked: counted while it streams
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        for _ in range(UPLOAD_LIMIT // 1000 + 80):
            yield b"\xff" * 1000

    site.call(
        "POST /api/search/image",
        "over the limit without Content-Length",
        "POST",
        "/api/search/image",
        413,
        content=no_length(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    site.call(
        "POST /api/search/image",
        "no file field",
        "POST",
        "/api/search/image",
        422,
        data={"nofile": "1"},
    )
    site.call(
        "POST /api/search/image",
        "JSON instead of multipart",
        "POST",
        "/api/search/image",
        422,
        json={"file": "x"},
    )
    ok = site.call(
        "POST /api/search/image",
        "PNG sent as image/jpeg named .gif",
        "POST",
        "/api/search/image",
        200,
        params={"k": 3, "min_relevance": 0},  # every result: the tiny model scores low
        files={"file": ("a.gif", site.layout.good["plain PNG"].read_bytes(), "image/jpeg")},
    )
    assert len(ok.json()["results"]) == 3
    site.assert_healthy()


# --- 4. queries and bodies ----------------------------------------------------------------------


def test_hostile_queries_and_bodies_get_4xx_or_a_normal_answer(site: Site) -> None:
    get = "GET /api/search"
    for label, params, status in [
        ("q missing", {}, 422),
        ("q empty", {"q": ""}, 422),
        ("q only spaces", {"q": "   "}, 400),
        ("q only a negative term", {"q": "-people"}, 200),
        ("q 1000 chars (the limit)", {"q": "sunset " * 142 + "sunse"}, 200),
        ("q 1001 chars", {"q": "a" * 1001}, 422),
        ("q 10000 chars", {"q": "a" * 10_000}, 422),
        ("q with control characters", {"q": "a\x00b\x07\x1b[31m\r\n"}, 200),
        ("q emoji and right-to-left override", {"q": "\U0001f305 \u202e sunset \u200b"}, 200),
        ("k = 0", {"q": "a", "k": 0}, 422),
        ("k = -1", {"q": "a", "k": -1}, 422),
        ("k = 10**30", {"q": "a", "k": 10**30}, 422),
        ("k = 'ten'", {"q": "a", "k": "ten"}, 422),
        ("k = 1.5", {"q": "a", "k": "1.5"}, 422),
        ("offset = -1", {"q": "a", "offset": -1}, 422),
        ("offset = 10**30", {"q": "a", "offset": 10**30}, 422),
        ("offset past the results", {"q": "a", "offset": 10_000}, 200),
        ("min_score = nan", {"q": "a", "min_score": "nan"}, 422),
        ("min_score = inf", {"q": "a", "min_score": "inf"}, 422),
    ]:
        site.call(get, label, "GET", "/api/search", status, params=params)
    for label, raw in (
        ("q non-UTF-8 bytes %FF%FE", "q=%FF%FE"),
        ("q encoded surrogate %ED%A0%80", "q=%ED%A0%80"),
        ("q with %00", "q=a%00b"),
        ("q repeated twice", "q=a&q=b"),
    ):
        site.call(get, label, "GET", f"/api/search?{raw}", 200)

    post = "POST /api/search"
    json_h = {"content-type": "application/json"}
    for label, body, status in [
        ("text control characters as JSON escapes", b'{"text": "a\\u0000b\\u001b[0m"}', 200),
        ("text lone surrogate \\ud800", b'{"text": "a \\ud800 b"}', 422),
        ("raw non-UTF-8 bytes in the body", b'{"text": "a \xff\xfe b"}', (400, 422)),
        ("UTF-8 BOM before the JSON", b'\xef\xbb\xbf{"text": "a"}', (200, 400, 422)),
        ("truncated JSON", b'{"text": "a', 422),
        ("not JSON", b"text=a", 422),
        ("JSON array", b"[]", 422),
        ("JSON string", b'"a photo"', 422),
        ("JSON null", b"null", 422),
        ("nested 100000 deep", b"[" * 100_000 + b"]" * 100_000, (400, 422)),
        ("duplicate keys", b'{"text": "a", "text": "b"}', 200),
        ("k as 1e308", b'{"text": "a", "k": 1e308}', 422),
        ("k as 10**26", b'{"text": "a", "k": 100000000000000000000000000}', 422),
        ("k negative", b'{"text": "a", "k": -5}', 422),
        ("offset huge", b'{"text": "a", "offset": 99999999999}', 422),
        ("min_score NaN", b'{"text": "a", "min_score": NaN}', 422),
        ("weights NaN", b'{"text": "a", "weights": [NaN]}', 422),
        ("weights 1e400", b'{"text": "a", "weights": [1e400]}', 422),
        ("weights count wrong", b'{"text": "a -b", "weights": [1]}', 422),
        ("100 negative terms", json.dumps({"text": "a", "negative": ["x"] * 100}).encode(), 422),
        ("unknown field", b'{"text": "a", "sql": "1; DROP TABLE images"}', 422),
        ("text 1001 chars", json.dumps({"text": "a" * 1001}).encode(), 422),
        ("text 10001 chars", json.dumps({"text": "a" * 10_001}).encode(), 422),
        ("body of 1 MiB + 1", json.dumps({"text": "a" * (1 << 20)}).encode(), 413),
        (
            "filters.date_from not a date",
            b'{"text": "a", "filters": {"date_from": "yesterday"}}',
            422,
        ),
        (
            "filters.date_from after date_to",
            b'{"text": "a", "filters": {"date_from": "2024-02-01", "date_to": "2024-01-01"}}',
            422,
        ),
        (
            "filters.formats of 1000 items",
            json.dumps({"text": "a", "filters": {"formats": ["JPEG"] * 1000}}).encode(),
            422,
        ),
    ]:
        site.call(post, label, "POST", "/api/search", status, content=body, headers=json_h)
    for label, ctype, status in (
        ("text/plain content type", "text/plain", (200, 415, 422)),
        ("form content type", "application/x-www-form-urlencoded", (415, 422)),
        ("multipart content type without a boundary", "multipart/form-data", (400, 415, 422)),
        ("no content type", None, (200, 415, 422)),
    ):
        headers = {} if ctype is None else {"content-type": ctype}
        site.call(
            post, label, "POST", "/api/search", status, content=b'{"text": "a"}', headers=headers
        )
    site.call("PUT /api/search", "wrong method", "PUT", "/api/search", 405, json={"text": "a"})
    site.call(
        "GET /api/images", "limit = 10**30", "GET", "/api/images", 422, params={"limit": 10**30}
    )
    site.call(
        "GET /api/images", "offset = 2**63", "GET", "/api/images", 422, params={"offset": 2**63}
    )
    site.call(
        "GET /api/images",
        "unknown state",
        "GET",
        "/api/images",
        422,
        params={"state": "'; DROP TABLE images; --"},
    )
    site.call("GET /api/jobs", "limit = -1", "GET", "/api/jobs", 422, params={"limit": -1})
    long = site.client.get(
        "/api/search", params={"q": "sunset " * 142 + "sunse", "min_relevance": 0}
    )
    assert long.json()["results"], "a query at the limit is answered (cut to 77 tokens)"
    site.assert_healthy()


# --- 5. the command line ------------------------------------------------------------------------


def _run(
    site: Site, args: list[str | bytes], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=_cli_env(site),
        cwd=site.base,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )


def test_cli_path_arguments(site: Site) -> None:
    def user_error(label: str, args: list[str | bytes], words: str) -> None:
        proc = _run(site, args)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("clipsearch: error:")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (label, proc.stderr)
        assert len(lines) == 1 and words in lines[0], (label, proc.stderr)
        site.record(
            "clipsearch CLI", label, f"exit 2: {lines[0][len('clipsearch: error: ') :][:90]}"
        )

    user_error("ingest a missing folder", ["ingest", "/nonexistent/../nope"], "no such folder")
    user_error("ingest a file", ["ingest", str(site.layout.good["plain JPEG"])], "not a folder")
    user_error("ingest a 300-byte path component", ["ingest", "/tmp/" + "a" * 300], "too long")
    user_error("ingest a 5000-char path", ["ingest", "/" + "a/" * 2500], "too long")
    user_error("ingest a FIFO", ["ingest", str(site.root / "pipe.jpg")], "not a folder")
    user_error("ingest an empty path", ["ingest", ""], "no folder given")
    user_error("search an empty query", ["search", " "], "empty")
    usage = _run(site, ["ingest", "-leading-dash"])  # argparse: an option, not a folder
    assert usage.returncode == 2 and "Traceback" not in usage.stderr, usage.stderr
    site.record(
        "clipsearch CLI",
        "ingest '-leading-dash' (no '--')",
        "exit 2: argparse usage error (pass it as ./-leading-dash or after --)",
    )

    # odd folder names are ingested by a local user (the CLI is not confined to the roots); the
    # running worker picks the job up from the shared catalog and broker
    odd = os.fsencode(site.base / "cli") + b"/-dash \xff\xfe \xe2\x98\x83"
    os.makedirs(odd)
    for i in range(2):
        Path(os.fsdecode(odd + f"/p{i}.jpg".encode())).write_bytes(encoded(700 + i))
    os.symlink(b"/nonexistent", odd + b"/\xff-dangling.jpg")
    proc = _run(site, ["ingest", "--", odd])
    assert proc.returncode == 0, proc.stderr
    job_id = int(proc.stdout.split()[1])

    def done() -> dict[str, Any] | None:
        r = site.client.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200, r.text  # a non-UTF-8 folder name must not break the API
        return r.json() if r.json()["state"] in ("done", "failed") else None

    job = site.wait_for(done, 90, "the CLI's ingest of a non-UTF-8 folder")
    assert (job["state"], job["done"], job["failed"]) == ("done", 2, 0), job
    assert job["params"]["path"] == path_to_db(os.fsdecode(odd))
    assert [e["reason"] for e in job["errors"]] == [
        "it disappeared while scanning, or is a broken symbolic link"
    ]
    site.record(
        "clipsearch CLI",
        "ingest -- '<-dash \\xff\\xfe ☃>' (non-UTF-8 folder)",
        "exit 0: 2 photos ready, the dangling link named in the job errors",
    )
    items = site.client.get("/api/images", params={"state": "ready", "limit": 500}).json()["items"]
    new = [i for i in items if i["path"].startswith(path_to_db(os.fsdecode(odd)))]
    assert len(new) == 2
    for item in new:
        assert site.client.get(f"/api/images/{item['id']}/file").status_code == 200
        site.ready_ids.add(item["id"])
    site.wait_for(
        lambda: site.search_ids("x") >= site.ready_ids,
        30,
        "the CLI-ingested photos searchable through the API",
    )
    site.assert_healthy()
