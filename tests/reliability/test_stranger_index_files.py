"""Issue 22, items 9 and 10: damaged index files never stop the library, and ``reindex`` rebuilds
over them (they are derived from the catalog).

A real library (SQLite + FAISS files) is ingested and indexed, then its ``index/`` folder is
damaged the way a stranger or a bad disk would: one byte of invalid UTF-8 in ``manifest.json``, a
regular file where the folder should be. A library opened on it (what ``serve`` does at start)
serves exact search from the catalog and says the index is damaged; a re-index rebuilds it, the
damaged thing set aside (renamed, never deleted), and the rebuilt index is served again.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "indexer") not in sys.path:
    sys.path.append(str(REPO / "tests" / "indexer"))

from workerutil import Env, make_images  # noqa: E402

pytestmark = pytest.mark.slow


def _invalid_utf8(index: Path) -> None:
    manifest = index / "manifest.json"
    raw = bytearray(manifest.read_bytes())
    raw[raw.index(b'"versions"') + 2] = 0xFF  # one byte, inside a key
    manifest.write_bytes(bytes(raw))


def _file_for_folder(index: Path) -> None:
    shutil.rmtree(index)
    index.write_bytes(b"not a folder")


@pytest.mark.parametrize("damage", [_invalid_utf8, _file_for_folder])
def test_damaged_index_files_are_served_exactly_and_rebuilt_by_reindex(
    damage: Any, tmp_path: Path, tiny_model_dir: Path
) -> None:
    photos = tmp_path / "photos"
    make_images(photos, 12, seed=4)
    env = Env(tmp_path / "data", tiny_model_dir, None)
    try:
        env.ingest(photos)
        env.reindex()
        ids = env.ids_by_name()
        probe = next(iter(ids.values()))
        vec = env.lib.image_vector(probe)
        expected = [h.id for h in env.lib.search(vec, k=5)]
        assert expected[0] == probe
        index = env.lib.data_dir / "index"
        assert (index / "manifest.json").is_file()
    finally:
        env.close()

    damage(index)
    env = Env(tmp_path / "data", tiny_model_dir, None)  # a fresh start on the damaged files
    try:
        got = [h.id for h in env.lib.search(np.asarray(vec), k=5)]
        assert got == expected  # exact search from the catalog's vectors
        damaged = env.lib.stats().index.damaged
        assert damaged, "the damage is not reported"

        env.reindex()  # rebuilds over the damage
        env.lib.refresh_index()
        assert [h.id for h in env.lib.search(np.asarray(vec), k=5)] == expected
        assert env.lib.stats().index.damaged is None
        assert (index / "manifest.json").is_file()
        aside = [p.name for p in index.parent.iterdir() if ".damaged-" in p.name] + [
            p.name for p in index.iterdir() if ".damaged-" in p.name
        ]
        assert len(aside) == 1, aside  # set aside, not deleted
    finally:
        env.close()

    env = Env(
        tmp_path / "data", tiny_model_dir, None
    )  # and the next start serves the rebuilt files
    try:
        assert [h.id for h in env.lib.search(np.asarray(vec), k=5)] == expected
        assert env.lib.stats().index.damaged is None
    finally:
        env.close()
