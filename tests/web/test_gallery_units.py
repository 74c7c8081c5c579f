"""The gallery's small pure helpers (URL and filter round trips, the relevance cut in the store,
safe URLs, sizes, languages) under node's own test runner: `node --test tests/web/node/`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = Path(__file__).resolve().parent / "node"


def test_the_gallery_helpers_pass_their_node_tests() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node 20 or later: apt-get install nodejs npm)")
    files = sorted(UNITS.glob("*.test.js"))
    assert len(files) >= 3
    done = subprocess.run(
        [node, "--test", *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    summary = dict(
        line[2:].split(" ", 1)
        for line in done.stdout.splitlines()
        if line.startswith("# ") and " " in line[2:]
    )
    assert int(summary["pass"]) >= 15 and summary["fail"] == "0", done.stdout[-2000:]
