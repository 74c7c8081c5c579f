"""Words inside pictures through the API and the CLI: `mode` on the searches, each hit's `match`
and `words`, the recognised text of one image, the OCR job, and health's OCR report, on SQLite
and PostgreSQL with the real Tesseract and a tiny random CLIP."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFont
from svc_testlib import TOKEN, ingest_now

from clipsearch.service.app import build_library, create_app
from clipsearch.service.settings import Settings

pytestmark = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="needs Tesseract: apt-get install tesseract-ocr tesseract-ocr-eng",
)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
REPO = Path(__file__).resolve().parents[2]


def sign(path: Path, lines: list[str]) -> None:
    """Dark words on a light panel over a coloured picture (a sign, a slip)."""
    img = Image.new("RGB", (700, 100 + 90 * max(1, len(lines))), (110, 160, 200))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, 44)
    y = 40
    for line in lines:
        draw.rectangle((20, y - 14, 680, y + 66), fill=(250, 250, 245))
        draw.text((50, y), line, fill=(15, 15, 15), font=font)
        y += 90
    img.save(path)


def photos(root: Path) -> Path:
    folder = root / "photos"
    folder.mkdir(parents=True)
    sign(folder / "shop.png", ["ZORBLAX CAFE"])
    sign(folder / "slip.png", ["RECEIPT", "Mungberry tea 4.20"])
    sign(folder / "wombat_party.png", [])
    rng = np.random.default_rng(5)
    for i in range(8):
        pixels = rng.integers(0, 255, size=(12, 16, 3)).astype(np.uint8)
        Image.fromarray(pixels).resize((320, 240), Image.NEAREST).save(folder / f"DSC{i:03d}.jpg")
    return folder


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'catalog.sqlite'}"


def _settings(tmp_path: Path, database_url: str, model: Path, root: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        model=str(model),
        images=[root],
        api_token=TOKEN,
        public_read=True,
        batch_window_ms=0.5,
    )


def _ids(client: TestClient) -> dict[str, int]:
    page = client.get("/api/images", params={"limit": 100}).json()
    return {Path(i["path"]).name: i["id"] for i in page["items"]}


def test_modes_match_reasons_text_and_the_ocr_job(
    database_url: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    root = photos(tmp_path)
    settings = _settings(tmp_path, database_url, tiny_model_dir, root)
    lib = build_library(settings)
    try:
        assert ingest_now(lib, root).state == "done"
        with TestClient(create_app(settings, library=lib)) as client:
            ids = _ids(client)
            health = client.get("/api/health").json()
            assert health["ocr"]["available"] is True and "tesseract" in health["ocr"]["engine"]

            # the default mode is hybrid (the library has keywords); the sign is first
            r = client.get("/api/search", params={"q": "zorblax", "k": 5}).json()
            assert r["query"]["mode"] == "hybrid"
            top = r["results"][0]
            assert top["id"] == ids["shop.png"]
            assert "text" in top["match"] and top["words"] == ["zorblax"]
            # a partial word through POST, the keyword index alone
            r = client.post("/api/search", json={"text": "mungber", "mode": "text"}).json()
            assert [h["id"] for h in r["results"]] == [ids["slip.png"]]
            assert r["results"][0]["words"] == ["mungberry"]
            # a file-name word
            r = client.get("/api/search", params={"q": "wombat", "k": 3}).json()
            assert r["results"][0]["id"] == ids["wombat_party.png"]
            assert "filename" in r["results"][0]["match"]
            # the vectors alone: every hit is semantic, none carries words
            r = client.get(
                "/api/search",
                params={"q": "zorblax", "mode": "semantic", "k": 20, "min_relevance": 0},
            )
            assert r.status_code == 200
            assert all(h["match"] == ["semantic"] and h["words"] == [] for h in r.json()["results"])
            assert len(r.json()["results"]) == len(ids)
            bad = client.get("/api/search", params={"q": "zorblax", "mode": "words"})
            assert bad.status_code == 422 and "mode" in bad.text

            # the detail view's text
            text = client.get(f"/api/images/{ids['slip.png']}/text").json()
            assert text["ocr_state"] == "done" and "Mungberry" in text["text"]
            assert client.get("/api/images/999999/text").status_code == 404

            # the OCR job: the token, then checked input, then 202 and a job that runs
            assert client.post("/api/ocr", json={}).status_code == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            r = client.post("/api/ocr", json={"folder": "rel/path"}, headers=auth)
            assert r.status_code == 400 and "absolute" in r.json()["detail"]
            r = client.post("/api/ocr", json={"folder": "/a\u0000b"}, headers=auth)
            assert r.status_code == 400
            r = client.post("/api/ocr", json={"force": True, "folder": str(root)}, headers=auth)
            assert r.status_code == 202 and r.json()["kind"] == "ocr"
            from clipsearch.indexer.ocr_job import run_ocr
            from clipsearch.indexer.worker import WorkerContext

            ctx = WorkerContext(lib.config.worker_config())
            try:
                assert run_ocr(ctx, r.json()["id"]) == len(ids)
            finally:
                ctx.dispose()
            job = client.get(f"/api/jobs/{r.json()['id']}", headers=auth).json()
            assert job["state"] == "done" and job["done"] == len(ids)
    finally:
        lib.close()


def test_missing_tesseract_is_reported_in_health_and_ingestion_goes_on(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPSEARCH_TESSERACT", str(tmp_path / "nowhere" / "tesseract"))
    root = photos(tmp_path)
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite'}", tiny_model_dir, root)
    lib = build_library(settings)
    try:
        job = ingest_now(lib, root)
        assert (job.state, job.failed) == ("done", 0)
        with TestClient(create_app(settings, library=lib)) as client:
            health = client.get("/api/health").json()
            assert health["status"] == "ok"
            assert health["ocr"]["available"] is False
            assert "Tesseract was not found" in health["ocr"]["error"]
            assert health["images"]["ready"] == len(_ids(client))
            # words in pictures are not known yet; file names are
            assert (
                client.get("/api/search", params={"q": "zorblax", "mode": "text"}).json()["results"]
                == []
            )
            r = client.get("/api/search", params={"q": "wombat"}).json()
            assert r["results"][0]["match"][-1] == "filename"
    finally:
        lib.close()


def test_cli_search_mode_and_ocr(tmp_path: Path, tiny_model_dir: Path) -> None:
    import os

    root = photos(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env.update(
        CLIPSEARCH_DATA_DIR=str(tmp_path / "data"),
        CLIPSEARCH_MODEL=str(tiny_model_dir),
        CLIPSEARCH_TESSERACT=str(tmp_path / "missing"),  # ingest without OCR first
    )

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clipsearch.service.cli", *args],
            env={**env, **extra},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    proc = cli("ingest", str(root), "--wait", "--quiet", "--timeout", "200")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cli("search", "zorblax", "--mode", "text").stdout.startswith("no results")
    real: dict[str, Any] = {"CLIPSEARCH_TESSERACT": "tesseract"}
    proc = cli("ocr", "--wait", "--quiet", "--timeout", "200", **real)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(ocr): done" in proc.stdout
    out = cli("search", "zorblax", "-k", "3", **real)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert "shop.png" in first and "[text: zorblax]" in first
    bad = cli("search", "zorblax", "--mode", "words")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
