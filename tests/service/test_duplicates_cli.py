"""`clipsearch duplicates` as a user runs it: ingest a folder with copies, look for duplicates,
keep one with `clipsearch remove`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_cli import _env, run
from test_duplicates_api import _photo


def test_duplicates_scan_list_and_keep_one(tmp_path: Path, tiny_model_dir: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "old").mkdir(parents=True)
    for i in range(3):
        _photo(60 + i).save(photos / f"p{i}.jpg", quality=92)
    shutil.copy(photos / "p0.jpg", photos / "old" / "p0 (copy).jpg")
    env = _env(tmp_path / "data", tiny_model_dir)

    never = run(["duplicates"], env)
    assert never.returncode == 0, never.stderr
    assert "clipsearch duplicates --scan --wait" in never.stdout

    assert (
        run(["ingest", str(photos), "--wait", "--quiet", "--timeout", "150"], env).returncode == 0
    )
    proc = run(["duplicates", "--scan", "--wait", "--quiet", "--timeout", "150"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(duplicates): done" in proc.stdout
    assert "(exact, 2 images)" in proc.stdout
    assert "p0 (copy).jpg" in proc.stdout and "the same file content as image" in proc.stdout
    assert "clipsearch remove ID" in proc.stdout

    listed = json.loads(run(["duplicates", "--json"], env).stdout)
    (group,) = listed["items"]
    copy = next(m for m in group["members"] if "/old/" in m["image"]["path"])
    assert run(["remove", str(copy["image"]["id"])], env).returncode == 0
    after = run(["duplicates"], env)
    assert "no duplicates groups" in after.stdout
    assert (photos / "old" / "p0 (copy).jpg").exists()  # removed from the library, not the disk

    bad = run(["duplicates", "--kind", "bursts"], env)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
