"""`clipsearch demo` says how to reach the library it made from the command line, and the command
it prints works; with its output going to a file or a pipe it says what it is doing in plain
lines (a second run, that it reuses the model it trained); and `serve` without a downloadable
model names the demo's model as the way to search a folder now. Run as a user runs them
(subprocesses), with a quick demo (few images, steps)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from test_cli import _env, run


def test_the_demo_prints_a_cli_command_that_reaches_the_same_library(tmp_path: Path) -> None:
    demo_dir = tmp_path / "my demo"  # a space: the printed command must quote it
    env = _env(tmp_path / "default-data", CLIPSEARCH_OFFLINE="1")
    args = ["--images", "200", "--steps", "5", "--timeout", "300"]
    proc = run(["demo", "--no-serve", "--data-dir", str(demo_dir), *args], env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # output captured (not a terminal): progress as plain lines, from the start to the end
    assert proc.stdout.startswith("clipsearch demo: making 200 pictures"), proc.stdout
    assert re.search(r"^fine-tuning: step 5 of 5, loss \d", proc.stderr, re.M), proc.stderr
    ingesting = re.findall(
        r"^clipsearch demo: ingesting, (\d+) of 200 pictures$", proc.stdout, re.M
    )
    assert len(ingesting) >= 2 and ingesting[-1] == "200", proc.stdout

    found = re.search(r"command line: (clipsearch search .*?) \(", proc.stderr)
    assert found, proc.stderr
    words = shlex.split(found.group(1))
    assert words[words.index("--data-dir") + 1] == str(demo_dir)

    # the printed command, as a user pastes it (no --model: the library remembers its model)
    searched = run([*words[1:], "-k", "3"], env)
    assert searched.returncode == 0, searched.stdout + searched.stderr
    # three results, each a picture of the demo's own set
    shown = re.findall(re.escape(str(demo_dir / "synthetic")) + r"/(\S+\.png)", searched.stdout)
    assert len(shown) == 3, searched.stdout
    assert all((demo_dir / "synthetic" / n).is_file() for n in shown), searched.stdout

    # run again: the first line says the model trained above is reused, not that it trains one
    again = run(["demo", "--no-serve", "--data-dir", str(demo_dir), *args], env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    first_line = again.stdout.splitlines()[0]
    assert first_line.startswith("clipsearch demo: reusing the small CLIP trained before in "), (
        again.stdout
    )
    assert str(demo_dir / "model") in first_line and "training" not in first_line, first_line
    assert "fine-tuning: step" not in again.stderr, again.stderr
    assert "cached model" in again.stderr, again.stderr


def test_serve_offline_names_the_demo_model_as_the_way_to_search_now(tmp_path: Path) -> None:
    photos = tmp_path / "My Pictures"
    photos.mkdir()
    xdg = tmp_path / "xdg"
    env = _env(tmp_path / "data", CLIPSEARCH_OFFLINE="1", XDG_DATA_HOME=str(xdg))
    proc = run(["serve", "--images", str(photos), "--port", "0"], env, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    demo_model = xdg / "clipsearch" / "demo" / "model"
    said = f"clipsearch serve --images {shlex.quote(str(photos))} --model {demo_model}"
    assert said in proc.stderr, proc.stderr
    assert "clipsearch demo --no-serve" in proc.stderr  # not trained yet: how to get it
