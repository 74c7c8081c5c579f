"""The types are checked in CI, not only by `make lint`: mypy with the project's configuration
(pyproject.toml: every per-module option of `mypy --strict` on clipsearch.indexer and
clipsearch.service) finds no error in the installed package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mypy_passes_with_the_strict_options_on_indexer_and_service() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "error:" not in proc.stdout
