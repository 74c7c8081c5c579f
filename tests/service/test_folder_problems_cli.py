"""`clipsearch folders --problems` (issue 24): a watched folder's files that could not be added,
each once however many rescans met them, in words and as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

from svc_testlib import write_images
from test_cli import _env, assert_user_error, run


def test_folders_problems_lists_each_problem_once_after_rescans(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    photos = tmp_path / "photos"
    write_images(photos, {"red": (220, 30, 30), "blue": (30, 40, 220)})
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a picture")
    write_images(tmp_path / "outside", {"white": (250, 250, 250)})
    os.symlink(tmp_path / "outside" / "white.jpg", photos / "link.jpg")
    env = _env(tmp_path / "data", tiny_model_dir)
    for _ in range(2):  # watching it again re-scans it
        proc = run(["watch", str(photos), "--wait", "--quiet", "--timeout", "150"], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    listed = run(["folders", "--problems"], env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[0] == f"{photos.resolve()} (folder 1): 2 files could not be added"
    assert [ln.split(":")[0].strip() for ln in lines[1:]] == [
        str(photos.resolve() / "corrupt.jpg"),
        str(photos.resolve() / "link.jpg"),
    ]
    assert all(ln.split(": ", 1)[1].strip() for ln in lines[1:])  # a reason for each

    as_json = run(["folders", "--problems", "--json", "--limit", "1"], env)
    assert as_json.returncode == 0, as_json.stderr
    [page] = json.loads(as_json.stdout)
    assert (page["folder_id"], page["total"], len(page["items"])) == (1, 2, 1)
    assert page["items"][0]["path"].endswith("corrupt.jpg") and page["items"][0]["reason"]
    assert page["next_after"] == "corrupt.jpg"

    # the next page: the command the 'more:' line gives
    first = run(["folders", "--problems", "--limit", "1"], env)
    more = first.stdout.strip().splitlines()[-1].strip()
    assert more == "more: clipsearch folders --problems --folder 1 --after corrupt.jpg"
    second = run(["folders", "--problems", "--limit", "1", *more.split()[3:]], env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[1].startswith(f"  {photos.resolve() / 'link.jpg'}: ")
    assert_user_error(run(["folders", "--problems", "--after", "x.jpg"], env), "--folder")

    assert_user_error(run(["folders", "--problems", "--limit", "0"], env), "limit")
