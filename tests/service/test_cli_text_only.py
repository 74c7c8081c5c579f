"""`clipsearch search` on its own embeds query texts only: it reads the text tower of the
library's model and leaves the image tower on disk (model.lazy_tower), with the same results as a
search by a process that loaded the whole model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from svc_testlib import write_images

from clipsearch.model.lazy_tower import LazyTower
from clipsearch.service.cli import build_parser
from clipsearch.service.cli_common import open_library
from clipsearch.service.cli_search import search_local
from clipsearch.service.settings import settings_from_args

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "clipsearch.service.cli"]


def _env(data_dir: Path, model_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env["CLIPSEARCH_DATA_DIR"] = str(data_dir)
    env["CLIPSEARCH_MODEL"] = str(model_dir)
    return env


def test_a_search_on_its_own_leaves_the_image_tower_on_disk(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "photos"
    write_images(photos)
    env = _env(tmp_path / "data", tiny_model_dir)
    ingest = subprocess.run(
        [*CLI, "ingest", str(photos), "--wait", "--quiet", "--timeout", "150"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    # A first search by a separate process (the whole model) measures and saves the calibration.
    whole = subprocess.run(
        [
            *CLI,
            "search",
            "a red square",
            "-k",
            "4",
            "--mode",
            "semantic",
            "--min-relevance",
            "0",
            "--json",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert whole.returncode == 0, whole.stderr
    expected = [hit["id"] for hit in json.loads(whole.stdout)]
    assert len(expected) == 4

    for key in [k for k in os.environ if k.startswith("CLIPSEARCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLIPSEARCH_MODEL", str(tiny_model_dir))
    args = build_parser(["search"]).parse_args(
        ["search", "a red square", "-k", "4", "--mode", "semantic", "--min-relevance", "0"]
    )
    settings = settings_from_args(args)
    lib = open_library(settings, image_tower="on_demand")
    try:
        page = search_local(lib, settings, args)
        assert [hit["id"] for hit in page.hits] == expected  # the same ids in the same order
        visual = lib.model.visual
        assert isinstance(visual, LazyTower) and not visual.loaded  # never read for a text query
    finally:
        lib.close()
